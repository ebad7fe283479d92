//! The non-GEMM parts of a transformer block on flex, each one pass forward and one backward:
//! layer normalization, GELU, and the core of multi-head self-attention (scores, softmax,
//! weighted sum) read straight from the fused `[q | k | v]` projection.
//!
//! burn 0.22 runs layer normalization under autodiff as nine recorded tensor operations, GELU
//! through a scalar `erf`, and attention as reshapes, copies to and from the head layout, a
//! batched matmul per head and a softmax of five passes; on the MAE step of issue 5 that was
//! more than half of the time outside the GEMMs of the linear layers.

use crate::gemm::{View, sgemm, sgemm_strided};
use crate::par::{sum_partials, written_by};
use crate::simd::{WideKernel, run_wide};
use rayon::prelude::*;

/// Values handled per rayon task by the row-wise and element-wise kernels.
const TASK_ELEMS: usize = 1 << 14;

/// `Σ a[i]`, in eight lanes so the compiler vectorizes it.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    tail + acc.iter().sum::<f32>()
}

/// `Σ a[i] b[i]`, in eight lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let whole = n - n % 8;
    for (x, y) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    tail + acc.iter().sum::<f32>()
}

/// `e^a` for `a <= 0` (inputs below -87 give about `e^-87`), branch-free so it vectorizes:
/// `a = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial for `e^r` (relative
/// error under 2e-7) and `2^n` from the exponent bits.
#[inline(always)]
fn exp_nonpositive(a: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let a = a.clamp(-87.0, 0.0);
    // Round to nearest by truncating a non-negative value.
    let n = -((-a * std::f32::consts::LOG2_E + 0.5) as i32);
    let nf = n as f32;
    let r = a - nf * LN2_HI - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// `(Φ(x), φ(x))`: the standard normal distribution function and density. `Φ(x) = (1 +
/// erf(x/√2)) / 2`, with `erf` by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7):
/// `erf(z) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{-z²}`, `t = 1 / (1 + p |z|)`,
/// mirrored for negative `z`. The `e^{-x²/2}` is shared with the density.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let e = exp_nonpositive(-0.5 * x * x);
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf = (1.0 - poly * e).copysign(x);
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    (0.5 + 0.5 * erf, INV_SQRT_2PI * e)
}

/// GELU, `x Φ(x)` (the exact form, not the tanh approximation), element-wise.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let fill = |y: &mut [f32]| {
        y.par_chunks_mut(TASK_ELEMS)
            .zip(x.par_chunks(TASK_ELEMS))
            .for_each(|(y, x)| run_wide(GeluForward { y, x }))
    };
    // SAFETY: every chunk's kernel writes each of its elements.
    unsafe { written_by(x.len(), fill) }
}

/// The input gradient of [`gelu_forward`]: `dy (Φ(x) + x φ(x))`.
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "gelu_backward: shapes differ");
    let fill = |dx: &mut [f32]| {
        dx.par_chunks_mut(TASK_ELEMS)
            .zip(x.par_chunks(TASK_ELEMS).zip(dy.par_chunks(TASK_ELEMS)))
            .for_each(|(dx, (x, dy))| run_wide(GeluBackward { dx, x, dy }))
    };
    // SAFETY: every chunk's kernel writes each of its elements.
    unsafe { written_by(x.len(), fill) }
}

/// Rows per task for rows of `dim` values.
fn rows_per_task(dim: usize) -> usize {
    (TASK_ELEMS / dim.max(1)).max(1)
}

/// Layer normalization over the last dimension (`gamma.len()` values per row): `y = (x - μ) /
/// √(σ² + ε) γ + β`, with the row's mean `μ` and biased variance `σ²`. Returns `y` and, for the
/// backward pass, each row's `μ` and `1 / √(σ² + ε)`.
pub fn layer_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dim = gamma.len();
    assert!(
        dim > 0 && beta.len() == dim && x.len().is_multiple_of(dim),
        "layer_norm: {} values do not make rows of {dim}",
        x.len()
    );
    let rows = x.len() / dim;
    let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
    let per = rows_per_task(dim);
    let fill = |y: &mut [f32]| {
        y.par_chunks_mut(per * dim)
            .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
            .zip(x.par_chunks(per * dim))
            .for_each(|((y, (mean, rstd)), x)| {
                run_wide(LayerNormRows {
                    y,
                    mean,
                    rstd,
                    x,
                    gamma,
                    beta,
                    epsilon,
                })
            })
    };
    // SAFETY: every row's kernel writes each of its values.
    let y = unsafe { written_by(x.len(), fill) };
    (y, mean, rstd)
}

/// The gradients of [`layer_norm_forward`] for the output gradient `dy`: `(dx, dγ, dβ)`. With
/// `x̂ = (x - μ) s` and `g = dy γ`: `dx = s (g - mean(g) - x̂ mean(g x̂))`, `dγ = Σ dy x̂`,
/// `dβ = Σ dy` (sums over rows).
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dim = gamma.len();
    assert!(
        x.len() == dy.len() && x.len() == mean.len() * dim && mean.len() == rstd.len(),
        "layer_norm_backward: shapes differ"
    );
    let per = rows_per_task(dim);
    let mut partials: Vec<Vec<f32>> = Vec::new();
    let fill = |dx: &mut [f32]| {
        partials = dx
            .par_chunks_mut(per * dim)
            .zip(x.par_chunks(per * dim).zip(dy.par_chunks(per * dim)))
            .zip(mean.par_chunks(per).zip(rstd.par_chunks(per)))
            .map(|((dx, (x, dy)), (mean, rstd))| {
                run_wide(LayerNormGradientRows {
                    dx,
                    x,
                    dy,
                    mean,
                    rstd,
                    gamma,
                })
            })
            .collect()
    };
    // SAFETY: every row's kernel writes each of its values.
    let dx = unsafe { written_by(x.len(), fill) };
    let mut both = sum_partials(partials, 2 * dim);
    let dbeta = both.split_off(dim);
    (dx, both, dbeta)
}

const SERIAL: gemm::Parallelism = gemm::Parallelism::None;

/// Head `h`'s queries, keys and values (`tokens x dh` each) in one sequence's `qkv` (rows of
/// `3 d` values).
fn heads_of(qkv: &[f32], d: usize, dh: usize, h: usize) -> [View<'_>; 3] {
    [0, 1, 2].map(|part| View {
        data: &qkv[part * d + h * dh..],
        rs: 3 * d,
        cs: 1,
    })
}

/// The transpose of a view.
fn transpose(v: View<'_>) -> View<'_> {
    View {
        data: v.data,
        rs: v.cs,
        cs: v.rs,
    }
}

/// The shape of a self-attention call: `batch` sequences of `tokens` tokens, `heads` heads of
/// `head_dim` values each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionGeometry {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Attention heads.
    pub heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Whether token `i` attends only to tokens `0..=i` (a text transformer's causal mask).
    pub causal: bool,
}

impl AttentionGeometry {
    /// The model width, `heads * head_dim`.
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Multi-head self-attention from the fused projection `qkv` (`[batch, tokens, 3 dim]`: the
/// queries, then the keys, then the values, head `h` at columns `h head_dim..(h + 1)
/// head_dim` of each): `P = softmax(Q Kᵀ / √head_dim)` per head and the context `P V`, heads
/// side by side. Returns the context `[batch, tokens, dim]` and `P` `[batch, heads, tokens,
/// tokens]`. With `g.causal`, scores of later tokens (`j > i`) count as `-∞`: their
/// probabilities are 0, and [`attention_backward`] needs nothing more, since `dS = P ⊙ (..)`.
pub fn attention_forward(qkv: &[f32], g: &AttentionGeometry) -> (Vec<f32>, Vec<f32>) {
    let (t, d, dh) = (g.tokens, g.dim(), g.head_dim);
    assert_eq!(
        qkv.len(),
        g.batch * t * 3 * d,
        "attention: qkv has the wrong size"
    );
    let scale = g.scale();
    let mut ctx = vec![0.0; g.batch * t * d];
    let mut probs = vec![0.0; g.batch * g.heads * t * t];
    if t == 0 || d == 0 {
        return (ctx, probs);
    }
    ctx.par_chunks_mut(t * d)
        .zip(probs.par_chunks_mut(g.heads * t * t))
        .zip(qkv.par_chunks(t * 3 * d))
        .for_each(|((ctx, probs), qkv)| {
            for (h, p) in probs.chunks_exact_mut(t * t).enumerate() {
                let [q, k, v] = heads_of(qkv, d, dh, h);
                // Scores Q Kᵀ, then each row's softmax of the scaled scores.
                sgemm(t, t, dh, p, false, q, transpose(k), SERIAL);
                run_wide(Softmax {
                    p: &mut *p,
                    tokens: t,
                    causal: g.causal,
                    scale,
                });
                let out = &mut ctx[h * dh..];
                sgemm_strided(t, dh, t, out, d, false, View::rows(p, t), v, SERIAL);
            }
        });
    (ctx, probs)
}

/// The gradient of [`attention_forward`]'s context, `dctx` (`[batch, tokens, dim]`), with
/// respect to `qkv`, from `qkv` and the saved `probs`: with `dP = dctx Vᵀ` and `dS = P ⊙ (dP -
/// rowsum(P ⊙ dP))`, `dQ = dS K / √head_dim`, `dK = dSᵀ Q / √head_dim`, `dV = Pᵀ dctx`.
pub fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    dctx: &[f32],
    g: &AttentionGeometry,
) -> Vec<f32> {
    let (t, d, dh) = (g.tokens, g.dim(), g.head_dim);
    assert!(
        qkv.len() == g.batch * t * 3 * d
            && dctx.len() == g.batch * t * d
            && probs.len() == g.batch * g.heads * t * t,
        "attention_backward: shapes differ"
    );
    let scale = g.scale();
    let mut dqkv = vec![0.0; qkv.len()];
    if t == 0 || d == 0 {
        return dqkv;
    }
    dqkv.par_chunks_mut(t * 3 * d)
        .zip(qkv.par_chunks(t * 3 * d))
        .zip(
            probs
                .par_chunks(g.heads * t * t)
                .zip(dctx.par_chunks(t * d)),
        )
        .for_each(|((dqkv, qkv), (probs, dctx))| {
            // dP, then dS in its place.
            let mut ds = vec![0.0f32; t * t];
            for (h, p) in probs.chunks_exact(t * t).enumerate() {
                let [q, k, v] = heads_of(qkv, d, dh, h);
                let dout = View {
                    data: &dctx[h * dh..],
                    rs: d,
                    cs: 1,
                };
                sgemm(t, t, dh, &mut ds, false, dout, transpose(v), SERIAL);
                run_wide(SoftmaxGradient {
                    ds: &mut ds,
                    p,
                    tokens: t,
                    scale,
                });
                let p = View::rows(p, t);
                let dsv = View::rows(&ds, t);
                let rs = 3 * d;
                // dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dctx, each into its columns of dqkv.
                let (dq, dk, dv) = (h * dh, d + h * dh, 2 * d + h * dh);
                sgemm_strided(t, dh, t, &mut dqkv[dq..], rs, false, dsv, k, SERIAL);
                sgemm_strided(
                    t,
                    dh,
                    t,
                    &mut dqkv[dk..],
                    rs,
                    false,
                    transpose(dsv),
                    q,
                    SERIAL,
                );
                sgemm_strided(
                    t,
                    dh,
                    t,
                    &mut dqkv[dv..],
                    rs,
                    false,
                    transpose(p),
                    dout,
                    SERIAL,
                );
            }
        });
    dqkv
}

// The row-wise and element-wise loops run through `run_wide`, so that they are compiled for
// the CPU's widest vectors (as closures they had been compiled for SSE2 alone; see
// `WideKernel`).

/// [`gelu_forward`] of one chunk.
struct GeluForward<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
}

impl WideKernel for GeluForward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (y, &x) in self.y.iter_mut().zip(self.x) {
            *y = x * normal_cdf_pdf(x).0;
        }
    }
}

/// [`gelu_backward`] of one chunk.
struct GeluBackward<'a> {
    dx: &'a mut [f32],
    x: &'a [f32],
    dy: &'a [f32],
}

impl WideKernel for GeluBackward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((dx, &x), &g) in self.dx.iter_mut().zip(self.x).zip(self.dy) {
            let (cdf, pdf) = normal_cdf_pdf(x);
            *dx = g * (cdf + x * pdf);
        }
    }
}

/// [`layer_norm_forward`] of a run of rows (`gamma.len()` values each).
struct LayerNormRows<'a> {
    y: &'a mut [f32],
    mean: &'a mut [f32],
    rstd: &'a mut [f32],
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    epsilon: f64,
}

impl WideKernel for LayerNormRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Self {
            y,
            mean,
            rstd,
            x,
            gamma,
            beta,
            epsilon,
        } = self;
        let dim = gamma.len();
        for (((y, x), m), r) in y
            .chunks_exact_mut(dim)
            .zip(x.chunks_exact(dim))
            .zip(mean.iter_mut())
            .zip(rstd.iter_mut())
        {
            let mu = sum(x) / dim as f32;
            let mut acc = [0.0f32; 8];
            let chunks = x.chunks_exact(8);
            let tail: f32 = chunks.remainder().iter().map(|v| (v - mu) * (v - mu)).sum();
            for c in chunks {
                for l in 0..8 {
                    acc[l] += (c[l] - mu) * (c[l] - mu);
                }
            }
            let var = (tail + acc.iter().sum::<f32>()) / dim as f32;
            let s = (1.0 / (var as f64 + epsilon).sqrt()) as f32;
            for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (v - mu) * s * g + b;
            }
            (*m, *r) = (mu, s);
        }
    }
}

/// [`layer_norm_backward`] of a run of rows: writes their `dx` and returns their share of dγ
/// then dβ (`2 * gamma.len()` values).
struct LayerNormGradientRows<'a> {
    dx: &'a mut [f32],
    x: &'a [f32],
    dy: &'a [f32],
    mean: &'a [f32],
    rstd: &'a [f32],
    gamma: &'a [f32],
}

impl WideKernel for LayerNormGradientRows<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn run(self) -> Vec<f32> {
        let Self {
            dx,
            x,
            dy,
            mean,
            rstd,
            gamma,
        } = self;
        let dim = gamma.len();
        let mut part = vec![0.0f32; 2 * dim];
        let mut xhat = vec![0.0f32; dim];
        let mut g = vec![0.0f32; dim];
        let (dgamma, dbeta) = part.split_at_mut(dim);
        for ((((dx, x), dy), &mu), &s) in dx
            .chunks_exact_mut(dim)
            .zip(x.chunks_exact(dim))
            .zip(dy.chunks_exact(dim))
            .zip(mean)
            .zip(rstd)
        {
            for ((((h, gv), &v), &d), &gm) in
                xhat.iter_mut().zip(g.iter_mut()).zip(x).zip(dy).zip(gamma)
            {
                *h = (v - mu) * s;
                *gv = d * gm;
            }
            let a = sum(&g) / dim as f32;
            let b = dot(&g, &xhat) / dim as f32;
            for (((dx, &gv), &h), (dg, (db, &d))) in dx
                .iter_mut()
                .zip(&g)
                .zip(&xhat)
                .zip(dgamma.iter_mut().zip(dbeta.iter_mut().zip(dy)))
            {
                *dx = s * (gv - a - h * b);
                *dg += d * h;
                *db += d;
            }
        }
        part
    }
}

/// Each row's softmax of the scaled scores `p` (`tokens x tokens`), in place; with `causal`,
/// the entries after the diagonal become 0.
struct Softmax<'a> {
    p: &'a mut [f32],
    tokens: usize,
    causal: bool,
    scale: f32,
}

impl WideKernel for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (t, scale) = (self.tokens, self.scale);
        for (i, row) in self.p.chunks_exact_mut(t).enumerate() {
            let (p, hidden) = row.split_at_mut(if self.causal { i + 1 } else { t });
            hidden.fill(0.0);
            let max = p.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            for s in p.iter_mut() {
                *s = exp_nonpositive(scale * (*s - max));
            }
            let inv = 1.0 / sum(p);
            for s in p.iter_mut() {
                *s *= inv;
            }
        }
    }
}

/// `dS = scale P ⊙ (dP - rowsum(P ⊙ dP))` in place of `dP` (`ds`), for one head.
struct SoftmaxGradient<'a> {
    ds: &'a mut [f32],
    p: &'a [f32],
    tokens: usize,
    scale: f32,
}

impl WideKernel for SoftmaxGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (t, scale) = (self.tokens, self.scale);
        for (ds, p) in self.ds.chunks_exact_mut(t).zip(self.p.chunks_exact(t)) {
            let weighted = dot(ds, p);
            for (s, &pj) in ds.iter_mut().zip(p) {
                *s = scale * pj * (*s - weighted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f64) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f64 * 0.7311 + seed).sin() * 2.3) as f32)
            .collect()
    }

    #[test]
    fn exp_matches_std_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=87_000 {
            let a = -(i as f32) / 1000.0;
            let want = (a as f64).exp();
            let got = exp_nonpositive(a) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        // Below the clamp: tiny, finite, never zero or NaN.
        assert!(exp_nonpositive(-1e4) > 0.0 && exp_nonpositive(-1e4) < 1e-37);
    }

    #[test]
    fn gelu_and_its_derivative_match_the_definition() {
        let x: Vec<f32> = (-1200..=1200).map(|i| i as f32 / 100.0).collect();
        let y = gelu_forward(&x);
        let dx = gelu_backward(&x, &vec![1.0; x.len()]);
        for ((&x, &y), &d) in x.iter().zip(&y).zip(&dx) {
            let x64 = x as f64;
            let cdf = 0.5 * (1.0 + libm::erf(x64 / 2f64.sqrt()));
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (y as f64 - x64 * cdf).abs() < 2e-6 * (1.0 + x64.abs()),
                "gelu({x})"
            );
            assert!(
                (d as f64 - (cdf + x64 * pdf)).abs() < 2e-6 * (1.0 + x64.abs()),
                "gelu'({x})"
            );
        }
        // Hand-computed: gelu(1) = Φ(1) = 0.841345, gelu(-1) = -(1 - 0.841345).
        let y = gelu_forward(&[1.0, -1.0, 0.0]);
        assert!((y[0] - 0.841_345).abs() < 1e-6 && (y[1] + 0.158_655).abs() < 1e-6);
        assert_eq!(y[2], 0.0);
    }

    /// f64 layer norm: `(y, x̂, s)`.
    fn naive_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
        let dim = gamma.len();
        x.chunks(dim)
            .flat_map(|row| {
                let mu = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / dim as f64;
                let s = 1.0 / (var + eps).sqrt();
                row.iter()
                    .zip(gamma.iter().zip(beta))
                    .map(move |(&v, (&g, &b))| (v as f64 - mu) * s * g as f64 + b as f64)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn layer_norm_matches_the_definition_and_hand_values() {
        // One row [1, 2, 3, 4]: mean 2.5, variance 1.25, ε = 0: x̂ = [-3, -1, 1, 3] / √5.
        let (y, mean, rstd) = layer_norm_forward(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], &[0.0; 4], 0.0);
        let r5 = 5f32.sqrt();
        for (got, want) in y.iter().zip([-3.0 / r5, -1.0 / r5, 1.0 / r5, 3.0 / r5]) {
            assert!((got - want).abs() < 1e-6);
        }
        assert_eq!(mean, vec![2.5]);
        assert!((rstd[0] - 1.0 / 1.25f32.sqrt()).abs() < 1e-6);

        for dim in [3, 8, 13, 192] {
            let rows = 2 * rows_per_task(dim) + 5;
            let x = values(rows * dim, 0.3);
            let gamma = values(dim, 1.1);
            let beta = values(dim, 2.9);
            let (y, _, _) = layer_norm_forward(&x, &gamma, &beta, 1e-5);
            for (a, b) in y.iter().zip(naive_norm(&x, &gamma, &beta, 1e-5)) {
                assert!((*a as f64 - b).abs() < 1e-5, "dim {dim}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn layer_norm_gradients_match_finite_differences() {
        let (rows, dim) = (5, 7);
        let x = values(rows * dim, 0.1);
        let gamma = values(dim, 0.4);
        let beta = values(dim, 0.8);
        let w = values(rows * dim, 3.3);
        let eps = 1e-5;
        // Loss Σ w ⊙ y: dy = w.
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            naive_norm(x, gamma, beta, eps)
                .iter()
                .zip(&w)
                .map(|(y, &w)| y * w as f64)
                .sum()
        };
        let (_, mean, rstd) = layer_norm_forward(&x, &gamma, &beta, eps);
        let (dx, dgamma, dbeta) = layer_norm_backward(&x, &gamma, &mean, &rstd, &w);
        let h = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..x.len() {
            let n = numeric(&|e| {
                let mut x2 = x.clone();
                x2[i] += e;
                loss(&x2, &gamma, &beta)
            });
            assert!((dx[i] as f64 - n).abs() < 2e-3, "dx[{i}]: {} vs {n}", dx[i]);
        }
        for k in 0..dim {
            let ng = numeric(&|e| {
                let mut g2 = gamma.clone();
                g2[k] += e;
                loss(&x, &g2, &beta)
            });
            let nb = numeric(&|e| {
                let mut b2 = beta.clone();
                b2[k] += e;
                loss(&x, &gamma, &b2)
            });
            assert!((dgamma[k] as f64 - ng).abs() < 2e-3, "dgamma[{k}]");
            assert!((dbeta[k] as f64 - nb).abs() < 2e-3, "dbeta[{k}]");
        }
    }

    /// f64 attention: `(context, probs)`.
    fn naive_attention(qkv: &[f32], g: &AttentionGeometry) -> (Vec<f64>, Vec<f64>) {
        let (t, d, dh) = (g.tokens, g.dim(), g.head_dim);
        let at = |n: usize, i: usize, part: usize, h: usize, c: usize| {
            qkv[n * t * 3 * d + i * 3 * d + part * d + h * dh + c] as f64
        };
        let mut ctx = vec![0.0; g.batch * t * d];
        let mut probs = vec![0.0; g.batch * g.heads * t * t];
        for n in 0..g.batch {
            for h in 0..g.heads {
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            if g.causal && j > i {
                                return f64::NEG_INFINITY;
                            }
                            (0..dh)
                                .map(|c| at(n, i, 0, h, c) * at(n, j, 1, h, c))
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for j in 0..t {
                        let p = e[j] / total;
                        probs[((n * g.heads + h) * t + i) * t + j] = p;
                        for c in 0..dh {
                            ctx[n * t * d + i * d + h * dh + c] += p * at(n, j, 2, h, c);
                        }
                    }
                }
            }
        }
        (ctx, probs)
    }

    #[test]
    fn attention_matches_the_definition() {
        for g in [
            AttentionGeometry {
                batch: 3,
                tokens: 5,
                heads: 2,
                head_dim: 4,
                causal: false,
            },
            AttentionGeometry {
                batch: 2,
                tokens: 17,
                heads: 3,
                head_dim: 11,
                causal: false,
            },
            AttentionGeometry {
                batch: 2,
                tokens: 6,
                heads: 2,
                head_dim: 3,
                causal: true,
            },
        ] {
            let qkv = values(g.batch * g.tokens * 3 * g.dim(), 0.5);
            let (ctx, probs) = attention_forward(&qkv, &g);
            let (want_ctx, want_probs) = naive_attention(&qkv, &g);
            for (a, b) in ctx.iter().zip(&want_ctx) {
                assert!((*a as f64 - b).abs() < 1e-5, "{g:?}: ctx {a} vs {b}");
            }
            for (a, b) in probs.iter().zip(&want_probs) {
                assert!((*a as f64 - b).abs() < 1e-6, "{g:?}: probs {a} vs {b}");
            }
        }
    }

    #[test]
    fn attention_gradient_matches_finite_differences() {
        for causal in [false, true] {
            let g = AttentionGeometry {
                batch: 2,
                tokens: 4,
                heads: 2,
                head_dim: 3,
                causal,
            };
            let qkv: Vec<f32> = values(g.batch * g.tokens * 3 * g.dim(), 0.9)
                .iter()
                .map(|v| v * 0.5)
                .collect();
            let w = values(g.batch * g.tokens * g.dim(), 2.2);
            let loss = |qkv: &[f32]| -> f64 {
                naive_attention(qkv, &g)
                    .0
                    .iter()
                    .zip(&w)
                    .map(|(c, &w)| c * w as f64)
                    .sum()
            };
            let (_, probs) = attention_forward(&qkv, &g);
            let grad = attention_backward(&qkv, &probs, &w, &g);
            let h = 1e-2f32;
            for i in 0..qkv.len() {
                let (mut up, mut down) = (qkv.clone(), qkv.clone());
                up[i] += h;
                down[i] -= h;
                let n = (loss(&up) - loss(&down)) / (2.0 * h as f64);
                assert!(
                    (grad[i] as f64 - n).abs() < 2e-3,
                    "causal {causal}: dqkv[{i}]: {} vs {n}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn causal_attention_never_looks_ahead() {
        let g = AttentionGeometry {
            batch: 1,
            tokens: 5,
            heads: 1,
            head_dim: 2,
            causal: true,
        };
        let qkv = values(5 * 3 * 2, 0.3);
        let (ctx, probs) = attention_forward(&qkv, &g);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(probs[i * 5 + j] == 0.0, j > i, "P[{i}][{j}]");
            }
        }
        // Changing the last token's keys and values leaves every earlier output as it was.
        let mut later = qkv.clone();
        for c in 2..6 {
            later[4 * 6 + c] += 1.0;
        }
        let (ctx2, _) = attention_forward(&later, &g);
        assert_eq!(ctx[..4 * 2], ctx2[..4 * 2]);
        assert_ne!(ctx[4 * 2..], ctx2[4 * 2..]);
    }
}
