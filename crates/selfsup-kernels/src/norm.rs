//! Training-mode batch normalization on contiguous `[batch, channels, spatial]` `f32` buffers, in
//! two passes forward (statistics, then the affine map) and two backward (two sums per channel,
//! then the input gradient), where burn's generic version makes about eight and twelve.
//!
//! Forward, per channel `c` over its `m = batch * spatial` values:
//! `μ = Σx / m`, `σ² = Σ(x - μ)² / m` (biased, as burn's running statistics expect),
//! `y = γ (x - μ) / √(σ² + ε) + β`.
//!
//! Backward, with `x̂ = (x - μ) / √(σ² + ε)`:
//! `dβ = Σ dy`, `dγ = Σ dy x̂`, `dx = γ / √(σ² + ε) · (dy - dβ / m - x̂ dγ / m)`.

use crate::par::written_by;
use crate::simd::{WideKernel, run_wide};
use rayon::prelude::*;

/// The layout of a normalized tensor: `batch` blocks of `channels` runs of `spatial` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormGeometry {
    /// Leading dimension.
    pub batch: usize,
    /// Normalized channels (dimension 1).
    pub channels: usize,
    /// Product of the dimensions after the channels (1 for `[batch, channels]`).
    pub spatial: usize,
}

impl NormGeometry {
    fn count(&self) -> usize {
        self.batch * self.spatial
    }

    /// The runs of channel `c`: one contiguous range of `spatial` values per image.
    fn runs(&self, c: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.batch).map(move |b| {
            let start = (b * self.channels + c) * self.spatial;
            start..start + self.spatial
        })
    }

    /// Sums over channel `c` of `f(a, b)` for the pairs of `a` and `b` values (two sums, one
    /// pass), accumulated per run in `f32` lanes and across runs in `f64`.
    #[inline(always)]
    fn channel_sums(
        &self,
        c: usize,
        [a, b, m]: [&[f32]; 3],
        f: impl Fn(f32, f32, f32) -> [f32; 2],
    ) -> [f64; 2] {
        let mut total = [0.0f64; 2];
        for run in self.runs(c) {
            let s = lane_sums(&a[run.clone()], &b[run.clone()], &m[run], &f);
            total[0] += s[0] as f64;
            total[1] += s[1] as f64;
        }
        total
    }

    /// [`NormGeometry::channel_sums`] of every channel, `f(a, b, p[c])` with one parameter per
    /// channel; with a `mask`, `a` counts as 0 where the mask is not above 0 (the gradient
    /// through a ReLU whose output is the mask). Short runs (fewer than [`ROWWISE_BELOW`] values
    /// per image: the head's `[batch, features]` BatchNorm has runs of one, a ResNet's last layer
    /// 16) are summed image by image over whole rows instead, so the loop runs along
    /// `channels * spatial` contiguous values and vectorizes; per channel they had been a
    /// strided scalar loop (perf: ~12 % of the ConvNet-32 step in scalar `subss`).
    fn all_channel_sums(
        &self,
        a: &[f32],
        b: &[f32],
        mask: Option<&[f32]>,
        p: &[f32],
        f: impl Fn(f32, f32, f32) -> [f32; 2] + Sync,
    ) -> Vec<[f64; 2]> {
        match mask {
            // The unused third slice is `a` again; its loads are dead code once inlined.
            None => self.sums_of([a, b, a], p, |u, v, _, k| f(u, v, k)),
            Some(m) => self.sums_of([a, b, m], p, |u, v, m, k| {
                f(if m > 0.0 { u } else { 0.0 }, v, k)
            }),
        }
    }

    /// [`NormGeometry::all_channel_sums`] of `f(a, b, m, p[c])`.
    fn sums_of(
        &self,
        [a, b, m]: [&[f32]; 3],
        p: &[f32],
        f: impl Fn(f32, f32, f32, f32) -> [f32; 2] + Sync,
    ) -> Vec<[f64; 2]> {
        if self.spatial >= ROWWISE_BELOW {
            return (0..self.channels)
                .into_par_iter()
                .map(|c| {
                    let pc = p[c];
                    run_wide(ChannelSums {
                        geometry: self,
                        c,
                        src: [a, b, m],
                        f: |u, v, w| f(u, v, w, pc),
                    })
                })
                .collect();
        }
        let width = self.channels * self.spatial;
        // Each channel's parameter repeated over its run.
        let params: Vec<f32> = (0..width).map(|i| p[i / self.spatial.max(1)]).collect();
        let tasks = rayon::current_num_threads().clamp(1, self.batch.max(1));
        let per = self.batch.div_ceil(tasks).max(1);
        let parts: Vec<Vec<[f64; 2]>> = (0..self.batch)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                run_wide(RowSums {
                    geometry: self,
                    images: start..(start + per).min(self.batch),
                    src: [a, b, m],
                    params: &params,
                    f: &f,
                })
            })
            .collect();
        let mut out = vec![[0.0f64; 2]; self.channels];
        for part in parts {
            for (i, t) in part.iter().enumerate() {
                let c = i / self.spatial.max(1);
                out[c][0] += t[0];
                out[c][1] += t[1];
            }
        }
        out
    }

    /// Sums of `f(a, b, params)` over whole rows of `images`, per position of a row: the short-run
    /// path of [`NormGeometry::all_channel_sums`]. Blocks of images are summed in `f32`, blocks
    /// added in `f64` (as runs are in the other path).
    #[inline(always)]
    fn row_sums(
        &self,
        images: std::ops::Range<usize>,
        [a, b, m]: [&[f32]; 3],
        params: &[f32],
        f: impl Fn(f32, f32, f32, f32) -> [f32; 2],
    ) -> Vec<[f64; 2]> {
        let width = self.channels * self.spatial;
        let mut total = vec![[0.0f64; 2]; width];
        let mut acc = [vec![0.0f32; width], vec![0.0f32; width]];
        for block in images.clone().step_by(ROW_BLOCK) {
            acc[0].fill(0.0);
            acc[1].fill(0.0);
            for img in block..(block + ROW_BLOCK).min(images.end) {
                let (ra, rb) = (&a[img * width..][..width], &b[img * width..][..width]);
                let rm = &m[img * width..][..width];
                let [s0, s1] = &mut acc;
                for i in 0..width {
                    let [u, v] = f(ra[i], rb[i], rm[i], params[i]);
                    s0[i] += u;
                    s1[i] += v;
                }
            }
            for (t, (&u, &v)) in total.iter_mut().zip(acc[0].iter().zip(&acc[1])) {
                t[0] += u as f64;
                t[1] += v as f64;
            }
        }
        total
    }

    /// `out = x * scale[c] + shift[c]` (and `+ z * zscale[c]` when `z` is given), channel-wise,
    /// images in parallel.
    fn affine(
        &self,
        out: &mut [f32],
        x: &[f32],
        scale: &[f32],
        shift: &[f32],
        z: Option<(&[f32], &[f32])>,
        mask: Option<&[f32]>,
    ) {
        self.affine_relu(out, (x, mask), scale, shift, z, false)
    }

    /// [`NormGeometry::affine`], then `max(0, ·)` when `relu`. Writes every element of `out`.
    fn affine_relu(
        &self,
        out: &mut [f32],
        x: (&[f32], Option<&[f32]>),
        scale: &[f32],
        shift: &[f32],
        z: Option<(&[f32], &[f32])>,
        relu: bool,
    ) {
        let block = (self.channels * self.spatial).max(1);
        out.par_chunks_mut(block).enumerate().for_each(|(b, dst)| {
            run_wide(AffineImage {
                geometry: self,
                b,
                dst,
                x,
                scale,
                shift,
                z,
                relu,
            })
        });
    }

    /// [`NormGeometry::affine`] of image `b` into `dst`; with a mask, `x` counts as 0 where
    /// the mask is not above 0.
    #[inline(always)]
    fn affine_image(
        &self,
        b: usize,
        dst: &mut [f32],
        (x, mask): (&[f32], Option<&[f32]>),
        scale: &[f32],
        shift: &[f32],
        z: Option<(&[f32], &[f32])>,
    ) {
        match mask {
            // The unused mask is `x` again; its loads are dead code once inlined.
            None => self.affine_image_of(b, dst, [x, x], scale, shift, z, |v, _| v),
            Some(m) => self.affine_image_of(b, dst, [x, m], scale, shift, z, |v, m| {
                if m > 0.0 { v } else { 0.0 }
            }),
        }
    }

    /// [`NormGeometry::affine_image`] of `pick(x, m)`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn affine_image_of(
        &self,
        b: usize,
        dst: &mut [f32],
        [x, m]: [&[f32]; 2],
        scale: &[f32],
        shift: &[f32],
        z: Option<(&[f32], &[f32])>,
        pick: impl Fn(f32, f32) -> f32,
    ) {
        for (c, run) in dst.chunks_mut(self.spatial.max(1)).enumerate() {
            let start = (b * self.channels + c) * self.spatial;
            let src = &x[start..start + self.spatial];
            let msrc = &m[start..start + self.spatial];
            let (s, t) = (scale[c], shift[c]);
            match z {
                None => {
                    for ((o, &v), &mv) in run.iter_mut().zip(src).zip(msrc) {
                        *o = pick(v, mv) * s + t;
                    }
                }
                Some((z, zs)) => {
                    let (zsrc, u) = (&z[start..start + self.spatial], zs[c]);
                    for (((o, &v), &mv), &w) in run.iter_mut().zip(src).zip(msrc).zip(zsrc) {
                        *o = pick(v, mv) * s + w * u + t;
                    }
                }
            }
        }
    }
}

/// Runs shorter than this are summed row by row ([`NormGeometry::all_channel_sums`]).
const ROWWISE_BELOW: usize = 64;

/// Images summed in `f32` before their sums are added in `f64`.
const ROW_BLOCK: usize = 64;

/// Two sums of `f(a_i, b_i, m_i)` over a run, in 16 independent lanes so the loop vectorizes.
#[inline(always)]
fn lane_sums(a: &[f32], b: &[f32], m: &[f32], f: &impl Fn(f32, f32, f32) -> [f32; 2]) -> [f32; 2] {
    const L: usize = 16;
    let mut acc = [[0.0f32; L]; 2];
    let (ac, bc, mc) = (a.chunks_exact(L), b.chunks_exact(L), m.chunks_exact(L));
    let (ar, br, mr) = (ac.remainder(), bc.remainder(), mc.remainder());
    for ((ca, cb), cm) in ac.zip(bc).zip(mc) {
        for l in 0..L {
            let [u, v] = f(ca[l], cb[l], cm[l]);
            acc[0][l] += u;
            acc[1][l] += v;
        }
    }
    let mut out = [acc[0].iter().sum::<f32>(), acc[1].iter().sum::<f32>()];
    for ((&x, &y), &z) in ar.iter().zip(br).zip(mr) {
        let [u, v] = f(x, y, z);
        out[0] += u;
        out[1] += v;
    }
    out
}

// The loops below run through `run_wide`, so that they are compiled for the CPU's widest
// vectors (as closures they had been compiled for SSE2 alone; see `WideKernel`).

/// [`NormGeometry::channel_sums`] of one channel.
struct ChannelSums<'a, F> {
    geometry: &'a NormGeometry,
    c: usize,
    src: [&'a [f32]; 3],
    f: F,
}

impl<F: Fn(f32, f32, f32) -> [f32; 2]> WideKernel for ChannelSums<'_, F> {
    type Output = [f64; 2];

    #[inline(always)]
    fn run(self) -> [f64; 2] {
        self.geometry.channel_sums(self.c, self.src, self.f)
    }
}

/// [`NormGeometry::row_sums`] of a range of images.
struct RowSums<'a, F> {
    geometry: &'a NormGeometry,
    images: std::ops::Range<usize>,
    src: [&'a [f32]; 3],
    params: &'a [f32],
    f: &'a F,
}

impl<F: Fn(f32, f32, f32, f32) -> [f32; 2]> WideKernel for RowSums<'_, F> {
    type Output = Vec<[f64; 2]>;

    #[inline(always)]
    fn run(self) -> Vec<[f64; 2]> {
        let g = self.geometry;
        g.row_sums(self.images, self.src, self.params, self.f)
    }
}

/// [`NormGeometry::affine_image`] of image `b`, then `max(0, ·)` when `relu`.
struct AffineImage<'a> {
    geometry: &'a NormGeometry,
    b: usize,
    dst: &'a mut [f32],
    x: (&'a [f32], Option<&'a [f32]>),
    scale: &'a [f32],
    shift: &'a [f32],
    z: Option<(&'a [f32], &'a [f32])>,
    relu: bool,
}

impl WideKernel for AffineImage<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let dst = self.dst;
        let g = self.geometry;
        g.affine_image(self.b, dst, self.x, self.scale, self.shift, self.z);
        if self.relu {
            for v in dst.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
}

/// Normalizes `x` with its own batch statistics: returns `(y, mean, variance)`.
pub fn batch_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    g: &NormGeometry,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    normalize(x, gamma, beta, epsilon, g, false)
}

/// [`batch_norm_forward`] followed by ReLU in the same pass: `(max(0, y), mean, variance)`.
/// One tensor fewer is written, and kept for the backward pass, per convolution block.
pub fn batch_norm_relu_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    g: &NormGeometry,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    normalize(x, gamma, beta, epsilon, g, true)
}

fn normalize(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    g: &NormGeometry,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(
        x.len(),
        g.batch * g.channels * g.spatial,
        "batch norm: input size"
    );
    assert!(
        gamma.len() == g.channels && beta.len() == g.channels,
        "batch norm: parameter size"
    );
    let m = g.count().max(1) as f64;
    // One pass: sums of (x - k) and (x - k)^2 with k the channel's first value, so the
    // variance E[(x-k)^2] - E[x-k]^2 does not cancel catastrophically when |mean| >> std.
    let shift: Vec<f32> = (0..g.channels)
        .map(|c| {
            g.runs(c)
                .next()
                .map_or(0.0, |r| x.get(r.start).copied().unwrap_or(0.0))
        })
        .collect();
    let sums = g.all_channel_sums(x, x, None, &shift, |v, _, k| {
        let d = v - k;
        [d, d * d]
    });
    let stats: Vec<(f32, f32)> = sums
        .iter()
        .zip(&shift)
        .map(|(&[s1, s2], &k)| {
            let (d1, d2) = (s1 / m, s2 / m);
            ((k as f64 + d1) as f32, (d2 - d1 * d1).max(0.0) as f32)
        })
        .collect();
    let (mean, var): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..g.channels)
        .map(|c| {
            let s = gamma[c] / ((var[c] as f64 + epsilon).sqrt() as f32);
            (s, beta[c] - mean[c] * s)
        })
        .unzip();
    // SAFETY: `affine_relu` writes every element.
    let y = unsafe {
        written_by(x.len(), |y| {
            g.affine_relu(y, (x, None), &scale, &shift, None, relu)
        })
    };
    (y, mean, var)
}

/// Gradients of [`batch_norm_forward`]: `(dx, dgamma, dbeta)`, `dx` only when asked for.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    g: &NormGeometry,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    norm_backward(x, (dy, None), gamma, mean, var, epsilon, g, want_dx)
}

/// Gradients of [`batch_norm_relu_forward`] given its output `y`: [`batch_norm_backward`] of
/// `dy` where `y > 0`, else 0. The mask is applied as the two passes read `dy`, so no masked
/// copy is written: on the 26 MB first-layer maps of the ConvNet-32 step at 28 px a separate
/// masking pass had been a third of this backward pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    g: &NormGeometry,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    assert_eq!(y.len(), dy.len(), "relu backward: gradient size");
    norm_backward(x, (dy, Some(y)), gamma, mean, var, epsilon, g, want_dx)
}

#[allow(clippy::too_many_arguments)]
fn norm_backward(
    x: &[f32],
    (dy, relu_out): (&[f32], Option<&[f32]>),
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    g: &NormGeometry,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), dy.len(), "batch norm backward: gradient size");
    let m = g.count().max(1) as f64;
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let sums: Vec<(f32, f32)> = g
        .all_channel_sums(dy, x, relu_out, mean, |d, v, mu| [d, d * (v - mu)])
        .iter()
        .zip(&inv_std)
        .map(|(&[dbeta, dxc], &is)| (dbeta as f32, (dxc * is as f64) as f32))
        .collect();
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    let dx = want_dx.then(|| {
        // dx = a dy + b x + k, per channel.
        let mut a = vec![0.0f32; g.channels];
        let mut b = vec![0.0f32; g.channels];
        let mut k = vec![0.0f32; g.channels];
        for c in 0..g.channels {
            a[c] = gamma[c] * inv_std[c];
            b[c] = -a[c] * inv_std[c] * (dgamma[c] as f64 / m) as f32;
            k[c] = -a[c] * (dbeta[c] as f64 / m) as f32 - b[c] * mean[c];
        }
        // SAFETY: `affine` writes every element.
        unsafe {
            written_by(x.len(), |dx| {
                g.affine(dx, dy, &a, &k, Some((x, &b)), relu_out)
            })
        }
    });
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.913).sin() * 2.0 + 0.5)
            .collect()
    }

    #[test]
    fn short_runs_summed_by_rows_match_the_per_channel_sums() {
        // 200 images (several row blocks, split over the threads), runs of 1 and of 3.
        for spatial in [1, 3] {
            let g = NormGeometry {
                batch: 200,
                channels: 7,
                spatial,
            };
            let n = g.batch * g.channels * g.spatial;
            let (a, b) = (values(n, 0.3), values(n, 1.7));
            let p: Vec<f32> = (0..g.channels).map(|c| c as f32 * 0.1).collect();
            let f = |u: f32, v: f32, k: f32| [u - k, u * (v - k)];
            let rows = g.all_channel_sums(&a, &b, None, &p, f);
            for c in 0..g.channels {
                let one = g.channel_sums(c, [&a, &b, &a], |u, v, _| f(u, v, p[c]));
                for i in 0..2 {
                    let tol = 1e-4 * (1.0 + one[i].abs());
                    assert!((rows[c][i] - one[i]).abs() < tol, "{spatial} {c}: {rows:?}");
                }
            }
        }
    }

    #[test]
    fn forward_matches_hand_computed_statistics() {
        // One channel, values 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let g = NormGeometry {
            batch: 2,
            channels: 1,
            spatial: 2,
        };
        let (y, mean, var) = batch_norm_forward(&[1.0, 2.0, 3.0, 6.0], &[2.0], &[1.0], 0.0, &g);
        assert!((mean[0] - 3.0).abs() < 1e-6 && (var[0] - 3.5).abs() < 1e-6);
        let s = 2.0 / 3.5f32.sqrt();
        for (got, x) in y.iter().zip([1.0f32, 2.0, 3.0, 6.0]) {
            assert!((got - ((x - 3.0) * s + 1.0)).abs() < 1e-5);
        }
    }

    #[test]
    fn normalized_channels_have_zero_mean_and_unit_variance() {
        let g = NormGeometry {
            batch: 3,
            channels: 4,
            spatial: 5,
        };
        let x = values(60, 0.0);
        let (y, _, _) = batch_norm_forward(&x, &[1.0; 4], &[0.0; 4], 1e-12, &g);
        for c in 0..4 {
            let vals: Vec<f32> = (0..3)
                .flat_map(|b| y[(b * 4 + c) * 5..][..5].to_vec())
                .collect();
            let mean = vals.iter().sum::<f32>() / 15.0;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 15.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn variance_survives_a_mean_far_larger_than_the_spread() {
        // 1000 + ±1: a one-pass E[x²] - E[x]² in f32 would lose every digit of the variance.
        let g = NormGeometry {
            batch: 4,
            channels: 1,
            spatial: 50,
        };
        let x: Vec<f32> = (0..200)
            .map(|i| 1000.0 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let (_, mean, var) = batch_norm_forward(&x, &[1.0], &[0.0], 1e-5, &g);
        assert!((mean[0] - 1000.0).abs() < 1e-3, "{}", mean[0]);
        assert!((var[0] - 1.0).abs() < 1e-4, "{}", var[0]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let g = NormGeometry {
            batch: 2,
            channels: 3,
            spatial: 4,
        };
        let n = 24;
        let x: Vec<f64> = values(n, 1.0).into_iter().map(f64::from).collect();
        let gamma = [0.5f64, 1.5, -1.0];
        let beta = [0.1f64, -0.2, 0.3];
        let dy: Vec<f64> = values(n, 7.0).into_iter().map(f64::from).collect();
        let eps = 1e-5;
        // The loss <y, dy> in f64, from the definition.
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
            let mut total = 0.0;
            for c in 0..3 {
                let idx: Vec<usize> = (0..2)
                    .flat_map(|b| ((b * 3 + c) * 4)..((b * 3 + c) * 4 + 4))
                    .collect();
                let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / 8.0;
                let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / 8.0;
                for &i in &idx {
                    total += dy[i] * (gamma[c] * (x[i] - mean) / (var + eps).sqrt() + beta[c]);
                }
            }
            total
        };
        let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let (_, mean, var) = batch_norm_forward(&f32v(&x), &f32v(&gamma), &f32v(&beta), eps, &g);
        let (dx, dgamma, dbeta) = batch_norm_backward(
            &f32v(&x),
            &f32v(&dy),
            &f32v(&gamma),
            &mean,
            &var,
            eps,
            &g,
            true,
        );
        let h = 1e-6;
        for i in 0..n {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let want = (loss(&xp, &gamma, &beta) - loss(&xm, &gamma, &beta)) / (2.0 * h);
            assert!(
                (dx.as_ref().unwrap()[i] as f64 - want).abs() < 1e-3,
                "dx[{i}]"
            );
        }
        for c in 0..3 {
            let (mut gp, mut gm) = (gamma, gamma);
            gp[c] += h;
            gm[c] -= h;
            let want = (loss(&x, &gp, &beta) - loss(&x, &gm, &beta)) / (2.0 * h);
            assert!((dgamma[c] as f64 - want).abs() < 1e-3, "dgamma[{c}]");
            let (mut bp, mut bm) = (beta, beta);
            bp[c] += h;
            bm[c] -= h;
            let want = (loss(&x, &gamma, &bp) - loss(&x, &gamma, &bm)) / (2.0 * h);
            assert!((dbeta[c] as f64 - want).abs() < 1e-3, "dbeta[{c}]");
        }
    }

    #[test]
    fn relu_backward_masks_the_gradient_as_it_reads_it() {
        // Long runs (per-channel sums) and short runs (row sums), with ReLU outputs half zero.
        for spatial in [1, 3, 100] {
            let g = NormGeometry {
                batch: 6,
                channels: 5,
                spatial,
            };
            let n = g.batch * g.channels * g.spatial;
            let (x, dy) = (values(n, 0.4), values(n, 2.9));
            let gamma: Vec<f32> = (0..5).map(|c| 0.5 + c as f32 * 0.25).collect();
            let beta = vec![0.1f32; 5];
            let (y, mean, var) = batch_norm_relu_forward(&x, &gamma, &beta, 1e-5, &g);
            assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0));
            let masked: Vec<f32> = dy
                .iter()
                .zip(&y)
                .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
                .collect();
            let want = batch_norm_backward(&x, &masked, &gamma, &mean, &var, 1e-5, &g, true);
            let got = batch_norm_relu_backward(&x, &y, &dy, &gamma, &mean, &var, 1e-5, &g, true);
            assert_eq!(got.0, want.0, "dx, spatial {spatial}");
            assert_eq!(got.1, want.1, "dgamma, spatial {spatial}");
            assert_eq!(got.2, want.2, "dbeta, spatial {spatial}");
        }
    }
}
