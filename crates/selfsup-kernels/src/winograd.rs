//! Winograd's minimal filtering F(m x m, 3 x 3) for 3x3 convolutions with stride 1 and no
//! dilation (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Every m x m output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, with `d` the (m + 2) x (m + 2) input
//! tile and `g` the 3x3 kernel. Summed over input channels, the element-wise products become
//! `(m + 2)²` independent GEMMs `M[e] = U[e] · V[e]` (`U[e]: cout x cin` from the kernels,
//! `V[e]: cin x tiles` from the input). F(2x2, 3x3) needs 16 multiplications per 4 outputs and
//! F(4x4, 3x3) 36 per 16, against 9 per output for im2col: 2.25 and 4 times fewer. Most of
//! ResNet's convolutions, and (as forward convolutions) their input gradients, are of this kind;
//! the weight gradient follows from the same transforms.

use crate::conv::{ConvGeometry, Plan, with_scratch};
use crate::gemm::{View, sgemm};
use crate::par::{SharedMut, sum_partials, written_by};
use crate::simd::{WideKernel, run_wide};
use rayon::prelude::*;
use std::ops::Range;

/// The transforms of F(M x M, 3 x 3), whose input tiles are `T = M + 2` wide.
pub(crate) struct Family<const M: usize, const T: usize> {
    /// `Bᵀ`, `T x T`: input tile to the transformed domain.
    bt: [[f32; T]; T],
    /// `G`, `T x 3`: kernel to the transformed domain.
    g: [[f32; 3]; T],
    /// `Aᵀ`, `M x T`: transformed domain back to an output tile.
    at: [[f32; T]; M],
}

/// F(2x2, 3x3): exact in floating point (its coefficients are 0, ±1 and ±½).
pub(crate) const F2: Family<2, 4> = Family {
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
};

/// F(4x4, 3x3) with the points 0, ±1, ±2 and ∞: 1.78 times fewer multiplications than F(2x2,
/// 3x3) for more rounding error: on a 256-channel 8x8 layer, forward errors up to 7e-5 of the
/// largest output against 3e-6 (weight gradient: 1e-6 against 3e-7). That is far below the
/// bf16 rounding mixed-precision training lives with (4e-3).
pub(crate) const F4: Family<4, 6> = Family {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// Whether [`forward`] and [`weight_gradient`] serve this convolution: a 3x3 kernel, stride 1,
/// dilation 1, at least 4 input channels.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    // Fewer than 4 input channels (a grey or RGB first layer) go through im2col: Winograd's
    // per-tile transforms then cost more than the 9-27-long products they replace. The SimCLR
    // ConvNet-32 step on 1x28x28 (2 threads, 30 steps, 3 pairs interleaved): 1,375 images/s
    // against 1,225 (forward 31.7 ms against 37.4); the ResNet-18 CIFAR step, whose 3-channel
    // stem moved too, 53.9 against 53.3 (within the noise).
    transformable(g) && g.cin >= 4
}

/// Whether the transforms compute this convolution at all: a 3x3 kernel, stride 1, dilation 1
/// (any number of channels; [`applies`] adds when they pay).
fn transformable(g: &ConvGeometry) -> bool {
    g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1]
}

/// Whether F(4x4) moves fewer transformed elements than F(2x2) for this output size (on 32x32
/// maps 2,304 against 4,096 per channel; on 2x2 maps 36 against 16).
fn larger_tiles_pay(g: &ConvGeometry) -> bool {
    let cost = |m: usize, t: usize| g.output[0].div_ceil(m) * g.output[1].div_ceil(m) * t * t;
    cost(4, 6) < cost(2, 4)
}

/// The convolution of `x` with `w` (`[cout, cin, 3, 3]`) for a geometry that [`applies`], in
/// blocks of images whose transformed inputs take at most `block_elems` elements.
pub(crate) fn forward(x: &[f32], w: &[f32], g: &ConvGeometry, block_elems: usize) -> Vec<f32> {
    if larger_tiles_pay(g) {
        F4.forward(x, w, g, block_elems)
    } else {
        F2.forward(x, w, g, block_elems)
    }
}

/// The weight gradient of [`forward`] for the output gradient `dy`.
pub(crate) fn weight_gradient(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    block_elems: usize,
) -> Vec<f32> {
    if larger_tiles_pay(g) {
        F4.weight_gradient(x, dy, g, block_elems)
    } else {
        F2.weight_gradient(x, dy, g, block_elems)
    }
}

/// Tile columns transformed at a time: their temporaries (T² rows of CHUNK) stay in L1/L2.
const CHUNK: usize = 128;

/// Kernels per rayon task of the kernel transforms (a multiple of [`CHUNK`]). Run on the
/// calling thread alone, they were most of its 2 % of wide-kernel samples (under the Winograd
/// forward pass and weight gradient) in the DINO ResNet-18 step with 2 threads, the workers
/// waiting (a 512 x 512 layer's transformed kernels are 38 MB).
const TASK_KERNELS: usize = 8 * CHUNK;

/// `dst = Σ_q coefs[q] · src(q)[..dst.len()]`, skipping zero coefficients: the transforms are
/// sums of a few rows scaled by small constants, done over many tiles at once.
#[inline(always)]
fn combine<'a>(dst: &mut [f32], coefs: &[f32], src: impl Fn(usize) -> &'a [f32]) {
    let mut first = true;
    for (q, &coef) in coefs.iter().enumerate() {
        if coef == 0.0 {
            continue;
        }
        let s = &src(q)[..dst.len()];
        if first {
            for (d, v) in dst.iter_mut().zip(s) {
                *d = coef * v;
            }
            first = false;
        } else {
            for (d, v) in dst.iter_mut().zip(s) {
                *d += coef * v;
            }
        }
    }
    if first {
        dst.fill(0.0);
    }
}

impl<const M: usize, const T: usize> Family<M, T> {
    /// Output tiles (rows, columns): M x M each, the last row and column possibly cut.
    fn tiles(&self, g: &ConvGeometry) -> [usize; 2] {
        [g.output[0].div_ceil(M), g.output[1].div_ceil(M)]
    }

    /// `U[e][o][c] = (G g Gᵀ)[e]` for every kernel `g = w[o][c]`: `T² x cout x cin`, the
    /// kernels split among the threads.
    fn transformed_kernels(&self, w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
        let n = cout * cin;
        let fill = |u: &mut [f32]| {
            let u = SharedMut::new(u);
            (0..n.div_ceil(TASK_KERNELS))
                .into_par_iter()
                .for_each(|task| {
                    let kernels = task * TASK_KERNELS..n.min((task + 1) * TASK_KERNELS);
                    let work = KernelTransform::Forward {
                        w,
                        n,
                        kernels,
                        u: &u,
                    };
                    run_wide(Job { family: self, work });
                });
        };
        // SAFETY: the tasks cover every kernel, and each writes all T² values of its kernels.
        unsafe { written_by(T * T * n, fill) }
    }

    /// The `kernels` of [`Family::transformed_kernels`] (of `n` in all), written into `u`.
    #[inline(always)]
    fn transform_kernels(&self, w: &[f32], n: usize, kernels: Range<usize>, u: &SharedMut) {
        // Kernels as [tap][kernel] and G g as [i][s][kernel], CHUNK kernels at a time.
        let mut taps = vec![0.0f32; 9 * CHUNK];
        let mut gk = vec![0.0f32; T * 3 * CHUNK];
        for k0 in kernels.clone().step_by(CHUNK) {
            let len = CHUNK.min(kernels.end - k0);
            for (i, kernel) in w[k0 * 9..(k0 + len) * 9].chunks(9).enumerate() {
                for (tap, &val) in kernel.iter().enumerate() {
                    taps[tap * CHUNK + i] = val;
                }
            }
            for i in 0..T {
                for s in 0..3 {
                    combine(&mut gk[(i * 3 + s) * CHUNK..][..len], &self.g[i], |r| {
                        &taps[(r * 3 + s) * CHUNK..]
                    });
                }
            }
            for i in 0..T {
                for j in 0..T {
                    // SAFETY: the tasks' kernel ranges are disjoint.
                    let dst = unsafe { u.slice((i * T + j) * n + k0, len) };
                    combine(dst, &self.g[j], |s| &gk[(i * 3 + s) * CHUNK..]);
                }
            }
        }
    }

    /// `dw[o][c] = Gᵀ dU[o][c] G` for the gradients `dU` (`T² x cout x cin`) of the transformed
    /// kernels: the weight gradient `[cout, cin, 3, 3]`, the kernels split among the threads.
    fn gathered_kernels(&self, du: &[f32], cout: usize, cin: usize) -> Vec<f32> {
        let n = cout * cin;
        let mut dw = vec![0.0f32; n * 9];
        dw.par_chunks_mut(TASK_KERNELS * 9)
            .enumerate()
            .for_each(|(task, dw)| {
                let first = task * TASK_KERNELS;
                let work = KernelTransform::Gather { du, n, first, dw };
                run_wide(Job { family: self, work });
            });
        dw
    }

    /// The kernels `first..first + dw.len() / 9` of [`Family::gathered_kernels`] (of `n` in
    /// all), written into `dw`.
    #[inline(always)]
    fn gather_kernels(&self, du: &[f32], n: usize, first: usize, dw: &mut [f32]) {
        let kernels = first..first + dw.len() / 9;
        // G's columns; Gᵀ dU as [r][j][kernel]; Gᵀ dU G as [r][s][kernel].
        let gcol: [[f32; T]; 3] = std::array::from_fn(|r| std::array::from_fn(|i| self.g[i][r]));
        let mut gu = vec![0.0f32; 3 * T * CHUNK];
        let mut taps = vec![0.0f32; 9 * CHUNK];
        for k0 in kernels.clone().step_by(CHUNK) {
            let len = CHUNK.min(kernels.end - k0);
            for r in 0..3 {
                for j in 0..T {
                    combine(&mut gu[(r * T + j) * CHUNK..][..len], &gcol[r], |i| {
                        &du[(i * T + j) * n + k0..]
                    });
                }
            }
            for r in 0..3 {
                for s in 0..3 {
                    combine(&mut taps[(r * 3 + s) * CHUNK..][..len], &gcol[s], |j| {
                        &gu[(r * T + j) * CHUNK..]
                    });
                }
            }
            let at = (k0 - first) * 9;
            for (i, kernel) in dw[at..at + len * 9].chunks_mut(9).enumerate() {
                for (tap, val) in kernel.iter_mut().enumerate() {
                    *val = taps[tap * CHUNK + i];
                }
            }
        }
    }

    /// Fills `v` (`T² x cin x (images * tiles)`) with `Bᵀ d B` for every input tile of `images`
    /// images of `x` from image `first`, the input zero outside its bounds.
    #[inline(always)]
    fn transform_input(
        &self,
        x: &[f32],
        g: &ConvGeometry,
        first: usize,
        images: usize,
        v: &mut [f32],
    ) {
        let [th, tw] = self.tiles(g);
        let [ih, iw] = g.input;
        let (cin, in_px, tiles) = (g.cin, g.in_pixels(), th * tw);
        let ncols = images * tiles;
        // Tiles [r][q][col] and Bᵀ d as [k][q][col], for CHUNK columns at a time.
        let mut d = vec![0.0f32; T * T * CHUNK];
        let mut bd = vec![0.0f32; T * T * CHUNK];
        for c in 0..cin {
            for c0 in (0..ncols).step_by(CHUNK) {
                let len = CHUNK.min(ncols - c0);
                for (i, col) in (c0..c0 + len).enumerate() {
                    let (b, t) = (col / tiles, col % tiles);
                    let plane = &x[((first + b) * cin + c) * in_px..][..in_px];
                    let (y0, x0) = ((t / tw) * M, (t % tw) * M);
                    let inside = y0 >= g.pad[0]
                        && x0 >= g.pad[1]
                        && y0 + T <= ih + g.pad[0]
                        && x0 + T <= iw + g.pad[1];
                    if inside {
                        let (iy, ix) = (y0 - g.pad[0], x0 - g.pad[1]);
                        for r in 0..T {
                            let src = &plane[(iy + r) * iw + ix..][..T];
                            for (q, &val) in src.iter().enumerate() {
                                d[(r * T + q) * CHUNK + i] = val;
                            }
                        }
                        continue;
                    }
                    for r in 0..T {
                        let iy = (y0 + r).wrapping_sub(g.pad[0]);
                        for q in 0..T {
                            let ix = (x0 + q).wrapping_sub(g.pad[1]);
                            d[(r * T + q) * CHUNK + i] = if iy < ih && ix < iw {
                                plane[iy * iw + ix]
                            } else {
                                0.0
                            };
                        }
                    }
                }
                for k in 0..T {
                    for q in 0..T {
                        combine(&mut bd[(k * T + q) * CHUNK..][..len], &self.bt[k], |r| {
                            &d[(r * T + q) * CHUNK..]
                        });
                    }
                }
                for k in 0..T {
                    for j in 0..T {
                        let dst = &mut v[((k * T + j) * cin + c) * ncols + c0..][..len];
                        combine(dst, &self.bt[j], |q| &bd[(k * T + q) * CHUNK..]);
                    }
                }
            }
        }
    }

    /// Writes `Aᵀ m A` of every tile in `m` (`T² x cout x (images * tiles)`) into `out`, the
    /// `[images, cout, oh, ow]` output of the block.
    #[inline(always)]
    fn transform_output(&self, m: &[f32], g: &ConvGeometry, images: usize, out: &mut [f32]) {
        let [th, tw] = self.tiles(g);
        let [oh, ow] = g.output;
        let (cout, out_px, tiles) = (g.cout, g.out_pixels(), th * tw);
        let ncols = images * tiles;
        // m A as [k][j][col], Aᵀ (m A) as [i][j][col].
        let mut ma = vec![0.0f32; T * M * CHUNK];
        let mut y = vec![0.0f32; M * M * CHUNK];
        for o in 0..cout {
            for c0 in (0..ncols).step_by(CHUNK) {
                let len = CHUNK.min(ncols - c0);
                for k in 0..T {
                    for j in 0..M {
                        combine(&mut ma[(k * M + j) * CHUNK..][..len], &self.at[j], |q| {
                            &m[((k * T + q) * cout + o) * ncols + c0..]
                        });
                    }
                }
                for i in 0..M {
                    for j in 0..M {
                        combine(&mut y[(i * M + j) * CHUNK..][..len], &self.at[i], |k| {
                            &ma[(k * M + j) * CHUNK..]
                        });
                    }
                }
                for (n, col) in (c0..c0 + len).enumerate() {
                    let (b, t) = (col / tiles, col % tiles);
                    let plane = &mut out[(b * cout + o) * out_px..][..out_px];
                    let (y0, x0) = ((t / tw) * M, (t % tw) * M);
                    for i in 0..M.min(oh - y0) {
                        for j in 0..M.min(ow - x0) {
                            plane[(y0 + i) * ow + x0 + j] = y[(i * M + j) * CHUNK + n];
                        }
                    }
                }
            }
        }
    }

    /// Fills `d` (`T² x cout x (images * tiles)`) with `A dy Aᵀ` for every M x M tile of the
    /// output gradient `dy` of `images` images from image `first` (zero beyond the output).
    #[inline(always)]
    fn transform_gradient(
        &self,
        dy: &[f32],
        g: &ConvGeometry,
        first: usize,
        images: usize,
        d: &mut [f32],
    ) {
        let [th, tw] = self.tiles(g);
        let [oh, ow] = g.output;
        let (cout, out_px, tiles) = (g.cout, g.out_pixels(), th * tw);
        let ncols = images * tiles;
        // A's rows are Aᵀ's columns.
        let a: [[f32; M]; T] = std::array::from_fn(|i| std::array::from_fn(|p| self.at[p][i]));
        // Tiles as [p][q][col], A dy as [i][q][col].
        let mut tile = vec![0.0f32; M * M * CHUNK];
        let mut ad = vec![0.0f32; T * M * CHUNK];
        for o in 0..cout {
            for c0 in (0..ncols).step_by(CHUNK) {
                let len = CHUNK.min(ncols - c0);
                for (n, col) in (c0..c0 + len).enumerate() {
                    let (b, t) = (col / tiles, col % tiles);
                    let plane = &dy[((first + b) * cout + o) * out_px..][..out_px];
                    let (y0, x0) = ((t / tw) * M, (t % tw) * M);
                    for p in 0..M {
                        for q in 0..M {
                            let (yy, xx) = (y0 + p, x0 + q);
                            tile[(p * M + q) * CHUNK + n] = if yy < oh && xx < ow {
                                plane[yy * ow + xx]
                            } else {
                                0.0
                            };
                        }
                    }
                }
                for i in 0..T {
                    for q in 0..M {
                        combine(&mut ad[(i * M + q) * CHUNK..][..len], &a[i], |p| {
                            &tile[(p * M + q) * CHUNK..]
                        });
                    }
                }
                for i in 0..T {
                    for j in 0..T {
                        let dst = &mut d[((i * T + j) * cout + o) * ncols + c0..][..len];
                        combine(dst, &a[j], |q| &ad[(i * M + q) * CHUNK..]);
                    }
                }
            }
        }
    }

    fn forward(&self, x: &[f32], w: &[f32], g: &ConvGeometry, block_elems: usize) -> Vec<f32> {
        debug_assert!(transformable(g));
        let (cin, cout, out_px) = (g.cin, g.cout, g.out_pixels());
        let [th, tw] = self.tiles(g);
        let (per_image, e_count) = (th * tw, T * T);
        let u = self.transformed_kernels(w, cout, cin);
        let plan = Plan::with_image_size(g.batch, e_count * cin.max(cout) * per_image, block_elems);
        let fill = |out: &mut [f32]| {
            let shared = SharedMut::new(out);
            plan.run(|_, first, images| {
                let ncols = images * per_image;
                // SAFETY: blocks cover disjoint image ranges.
                let dst = unsafe { shared.slice(first * cout * out_px, images * cout * out_px) };
                with_scratch(e_count * cin * ncols, e_count * cout * ncols, |v, m| {
                    let input = BlockTransform::Input {
                        x,
                        g,
                        first,
                        images,
                        v: &mut *v,
                    };
                    run_wide(Job {
                        family: self,
                        work: input,
                    });
                    for e in 0..e_count {
                        let a = View::rows(&u[e * cout * cin..][..cout * cin], cin);
                        let b = View::rows(&v[e * cin * ncols..][..cin * ncols], ncols);
                        let dst = &mut m[e * cout * ncols..][..cout * ncols];
                        sgemm(cout, ncols, cin, dst, false, a, b, plan.parallelism);
                    }
                    let output = BlockTransform::Output {
                        m,
                        g,
                        images,
                        out: &mut *dst,
                    };
                    run_wide(Job {
                        family: self,
                        work: output,
                    });
                });
            });
        };
        // SAFETY: the blocks cover every image and the output transform writes every pixel of
        // its block (the tiles cover the output, clipped at its edges).
        unsafe { written_by(g.batch * cout * out_px, fill) }
    }

    /// Since the output is linear in the transformed kernels `U = G g Gᵀ`,
    /// `dU[e] = Σ_tiles (A dy Aᵀ)[e] · (Bᵀ d B)[e]ᵀ` (T² GEMMs over the tiles) and
    /// `dw = Gᵀ dU G`.
    fn weight_gradient(
        &self,
        x: &[f32],
        dy: &[f32],
        g: &ConvGeometry,
        block_elems: usize,
    ) -> Vec<f32> {
        debug_assert!(transformable(g));
        let (cin, cout) = (g.cin, g.cout);
        let [th, tw] = self.tiles(g);
        let (per_image, e_count) = (th * tw, T * T);
        let plan = Plan::with_image_size(g.batch, e_count * cin.max(cout) * per_image, block_elems);
        let mut partial: Vec<Vec<f32>> = plan
            .ranges()
            .map(|_| vec![0.0f32; e_count * cout * cin])
            .collect();
        let partials: Vec<SharedMut> = partial.iter_mut().map(|p| SharedMut::new(p)).collect();
        plan.run(|range, first, images| {
            let ncols = images * per_image;
            // SAFETY: each range's accumulator is used by that range's task alone.
            let acc = unsafe { partials[range].slice(0, e_count * cout * cin) };
            with_scratch(e_count * cin * ncols, e_count * cout * ncols, |v, d| {
                let both = BlockTransform::InputAndGradient {
                    x,
                    dy,
                    g,
                    first,
                    images,
                    v,
                    d,
                };
                run_wide(Job {
                    family: self,
                    work: both,
                });
                for e in 0..e_count {
                    let a = View::rows(&d[e * cout * ncols..][..cout * ncols], ncols);
                    let b = View::transposed(&v[e * cin * ncols..][..cin * ncols], ncols);
                    let dst = &mut acc[e * cout * cin..][..cout * cin];
                    sgemm(cout, cin, ncols, dst, true, a, b, plan.parallelism);
                }
            });
        });
        let du = sum_partials(partial, e_count * cout * cin);
        self.gathered_kernels(&du, cout, cin)
    }
}

/// A transform of one family, run through [`run_wide`] so that its loops are compiled for the
/// CPU's widest vectors (as a closure it had been compiled for SSE2 alone; see [`WideKernel`]).
struct Job<'a, const M: usize, const T: usize, W> {
    family: &'a Family<M, T>,
    work: W,
}

/// The transforms of a range of the `n` kernels, into `T² x n` or `[n, 3, 3]`.
enum KernelTransform<'a, 'b> {
    /// [`Family::transform_kernels`].
    Forward {
        w: &'a [f32],
        n: usize,
        kernels: Range<usize>,
        u: &'a SharedMut<'b>,
    },
    /// [`Family::gather_kernels`].
    Gather {
        du: &'a [f32],
        n: usize,
        first: usize,
        dw: &'a mut [f32],
    },
}

/// The transforms of one block of images, written into the given buffers.
enum BlockTransform<'a> {
    /// [`Family::transform_input`].
    Input {
        x: &'a [f32],
        g: &'a ConvGeometry,
        first: usize,
        images: usize,
        v: &'a mut [f32],
    },
    /// [`Family::transform_output`].
    Output {
        m: &'a [f32],
        g: &'a ConvGeometry,
        images: usize,
        out: &'a mut [f32],
    },
    /// [`Family::transform_input`] then [`Family::transform_gradient`].
    InputAndGradient {
        x: &'a [f32],
        dy: &'a [f32],
        g: &'a ConvGeometry,
        first: usize,
        images: usize,
        v: &'a mut [f32],
        d: &'a mut [f32],
    },
}

impl<const M: usize, const T: usize> WideKernel for Job<'_, M, T, KernelTransform<'_, '_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        match self.work {
            KernelTransform::Forward { w, n, kernels, u } => {
                self.family.transform_kernels(w, n, kernels, u)
            }
            KernelTransform::Gather { du, n, first, dw } => {
                self.family.gather_kernels(du, n, first, dw)
            }
        }
    }
}

impl<const M: usize, const T: usize> WideKernel for Job<'_, M, T, BlockTransform<'_>> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let f = self.family;
        match self.work {
            BlockTransform::Input {
                x,
                g,
                first,
                images,
                v,
            } => f.transform_input(x, g, first, images, v),
            BlockTransform::Output { m, g, images, out } => f.transform_output(m, g, images, out),
            BlockTransform::InputAndGradient {
                x,
                dy,
                g,
                first,
                images,
                v,
                d,
            } => {
                f.transform_input(x, g, first, images, v);
                f.transform_gradient(dy, g, first, images, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::naive;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.917).sin()).collect()
    }

    type Case = ([usize; 4], usize, [(usize, usize); 2]);

    /// (input `[b, c, h, w]`, output channels, padding): even, odd, unpadded, padded by two,
    /// a single pixel, asymmetric, and 2,400 kernels (the kernel transforms in three tasks, the
    /// last one short of a whole chunk).
    fn cases() -> Vec<Case> {
        vec![
            ([2, 40, 4, 5], 60, [(1, 1), (1, 1)]),
            ([2, 3, 8, 8], 4, [(1, 1), (1, 1)]),
            ([2, 3, 7, 5], 4, [(1, 1), (1, 1)]),
            ([1, 2, 6, 7], 3, [(0, 0), (0, 0)]),
            ([2, 2, 5, 4], 3, [(2, 2), (2, 2)]),
            ([1, 1, 1, 1], 2, [(1, 1), (1, 1)]),
            ([1, 2, 3, 3], 2, [(0, 0), (0, 0)]),
            ([3, 5, 4, 6], 7, [(2, 0), (0, 1)]),
        ]
    }

    #[test]
    fn matches_the_definition_on_odd_even_and_tiny_images() {
        for (x, cout, padding) in cases() {
            let g = ConvGeometry::new(x, [cout, x[1], 3, 3], [1, 1], padding, [1, 1]).unwrap();
            // Few input channels keep the cases small: the transforms are exact for any count
            // (in training, fewer than 4 go through im2col).
            assert_eq!(applies(&g), g.cin >= 4);
            let xs = values(g.batch * g.cin * g.in_pixels(), 0.3);
            let w = values(g.cout * g.cin * 9, 1.7);
            let want = naive(&xs, &w, &g);
            for block in [usize::MAX, 1] {
                for got in [
                    F2.forward(&xs, &w, &g, block),
                    F4.forward(&xs, &w, &g, block),
                    forward(&xs, &w, &g, block),
                ] {
                    assert_eq!(got.len(), want.len());
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// `dw[o][c][i][j] = Σ_{b,y,x} dy[b][o][y][x] · x[b][c][y + i - pad][x + j - pad]`.
    fn naive_weight_gradient(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [ih, iw] = g.input;
        let [oh, ow] = g.output;
        let mut dw = vec![0.0f32; g.cout * g.cin * 9];
        for o in 0..g.cout {
            for c in 0..g.cin {
                for i in 0..3 {
                    for j in 0..3 {
                        let mut s = 0.0f64;
                        for b in 0..g.batch {
                            for y in 0..oh {
                                for xx in 0..ow {
                                    let iy = (y + i).wrapping_sub(g.pad[0]);
                                    let ix = (xx + j).wrapping_sub(g.pad[1]);
                                    if iy < ih && ix < iw {
                                        s += (dy[((b * g.cout + o) * oh + y) * ow + xx]
                                            * x[((b * g.cin + c) * ih + iy) * iw + ix])
                                            as f64;
                                    }
                                }
                            }
                        }
                        dw[((o * g.cin + c) * 3 + i) * 3 + j] = s as f32;
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn weight_gradient_matches_the_definition() {
        for (x, cout, padding) in cases() {
            let g = ConvGeometry::new(x, [cout, x[1], 3, 3], [1, 1], padding, [1, 1]).unwrap();
            let xs = values(g.batch * g.cin * g.in_pixels(), 0.6);
            let dy = values(g.batch * g.cout * g.out_pixels(), 2.9);
            let want = naive_weight_gradient(&xs, &dy, &g);
            for block in [usize::MAX, 1] {
                for got in [
                    F2.weight_gradient(&xs, &dy, &g, block),
                    F4.weight_gradient(&xs, &dy, &g, block),
                    weight_gradient(&xs, &dy, &g, block),
                ] {
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// The largest error against the f64 definition, relative to the largest output.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        err / scale
    }

    #[test]
    fn rounding_stays_small_over_hundreds_of_channels() {
        // A ResNet-18 layer-3 shape (256 -> 256 channels at 8x8) with fewer output channels.
        let g =
            ConvGeometry::new([2, 256, 8, 8], [3, 256, 3, 3], [1, 1], [(1, 1); 2], [1, 1]).unwrap();
        let xs = values(g.batch * g.cin * g.in_pixels(), 0.1);
        let w = values(g.cout * g.cin * 9, 0.2);
        let dy = values(g.batch * g.cout * g.out_pixels(), 0.4);
        let (y, dw) = (naive(&xs, &w, &g), naive_weight_gradient(&xs, &dy, &g));
        let errors = [
            relative_error(&F2.forward(&xs, &w, &g, usize::MAX), &y),
            relative_error(&F4.forward(&xs, &w, &g, usize::MAX), &y),
            relative_error(&F2.weight_gradient(&xs, &dy, &g, usize::MAX), &dw),
            relative_error(&F4.weight_gradient(&xs, &dy, &g, usize::MAX), &dw),
        ];
        println!("relative errors F2, F4 forward; F2, F4 weight gradient: {errors:?}");
        // Measured: 3.0e-6, 7.4e-5, 2.6e-7, 1.2e-6. F(4x4)'s points ±2 scale the transformed
        // input by up to 25 before 256 channels are summed, and its output transform by 8.
        let bounds = [1e-5, 2e-4, 1e-5, 1e-5];
        for (e, bound) in errors.iter().zip(bounds) {
            assert!(*e < bound, "{errors:?}");
        }
    }

    #[test]
    fn four_by_four_tiles_serve_maps_of_four_and_more() {
        let g =
            |s| ConvGeometry::new([1, 1, s, s], [1, 1, 3, 3], [1, 1], [(1, 1); 2], [1, 1]).unwrap();
        assert!(larger_tiles_pay(&g(32)));
        assert!(larger_tiles_pay(&g(4)));
        assert!(!larger_tiles_pay(&g(2)));
        assert!(!larger_tiles_pay(&g(6)));
    }

    #[test]
    fn other_convolutions_are_left_to_im2col() {
        let g = |k, s, d| ConvGeometry::new([1, 4, 9, 9], [1, 4, k, k], s, [(1, 1); 2], d).unwrap();
        assert!(applies(&g(3, [1, 1], [1, 1])));
        let grey = ConvGeometry::new([1, 1, 9, 9], [1, 1, 3, 3], [1, 1], [(1, 1); 2], [1, 1]);
        assert!(
            !applies(&grey.unwrap()),
            "a 1-channel first layer goes through im2col"
        );
        assert!(!applies(&g(3, [2, 2], [1, 1])));
        assert!(!applies(&g(3, [1, 1], [2, 2])));
        assert!(!applies(&g(1, [1, 1], [1, 1])));
        assert!(!applies(&g(5, [1, 1], [1, 1])));
    }
}
