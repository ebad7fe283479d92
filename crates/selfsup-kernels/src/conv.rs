//! 2-D convolution (one group) on contiguous NCHW `f32` buffers, lowered to GEMMs over blocks of
//! whole images: the im2col matrix of a block has one row per (input channel, kernel row, kernel
//! column) and one column per (image, output pixel), so every layer, even a 4x4 one, multiplies
//! matrices thousands of columns wide.
//!
//! - forward: `out[o, (b, p)] = W[o, k] · col[k, (b, p)]`
//! - weight gradient: `dW[o, k] = Σ_blocks dY[o, (b, p)] · col[k, (b, p)]ᵀ`
//! - input gradient, stride 1: the forward convolution of `dY` with the kernel flipped in space
//!   and its channel axes swapped (padding `dilation * (k - 1) - pad`), so it runs at forward
//!   speed with no scatter;
//! - input gradient, other strides: `dcol[k, (b, p)] = Wᵀ[k, o] · dY[o, (b, p)]`, scattered back
//!   by col2im.

use crate::gemm::{View, sgemm};
use crate::par::{SharedMut, sum_partials, written_by};
use crate::{stride2, winograd};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Elements of one task's im2col block (4 MiB of `f32`): wide enough for efficient GEMMs, small
/// enough to stay in cache between im2col and the GEMM that reads it (on ResNet-18's layers,
/// 2 MiB to 8 MiB blocks were within the noise of each other; 64 MiB was clearly slower).
const BLOCK_ELEMS: usize = 1 << 20;

/// The cap on an im2col block, elements (1 MiB of `f32`, the L2 cache of a core on the Zen 5
/// here). Measured on the SimCLR ConvNet-32 step at 28 px, whose three stride-2 layers go
/// through im2col (2 threads, 33 steps, three runs interleaved): 4.30 s with 4 MiB blocks, 4.02 s
/// with 1 MiB, 4.04 s with 512 KiB. Winograd keeps [`BLOCK_ELEMS`]: its ResNet-18 step was no
/// faster with the smaller blocks (52.1 against 50.2 images/s, within the noise).
const IM2COL_BLOCK_ELEMS: usize = 1 << 18;

/// Shapes and options of a convolution with one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Padding before the first row and column (the padding after only changes the output size).
    pub pad: [usize; 2],
    /// Dilation (height, width).
    pub dilation: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

impl ConvGeometry {
    /// The geometry of `x: [batch, cin, h, w]` convolved with `w: [cout, cin, kh, kw]` with padding
    /// `(begin, end)` per spatial dimension. `None` when the kernel (dilated) does not fit the
    /// padded input.
    pub fn new(
        x: [usize; 4],
        w: [usize; 4],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        dilation: [usize; 2],
    ) -> Option<Self> {
        let mut output = [0; 2];
        for d in 0..2 {
            let span = dilation[d] * (w[2 + d].checked_sub(1)?) + 1;
            let padded = x[2 + d] + padding[d].0 + padding[d].1;
            if stride[d] == 0 || padded < span {
                return None;
            }
            output[d] = (padded - span) / stride[d] + 1;
        }
        Some(Self {
            batch: x[0],
            cin: x[1],
            input: [x[2], x[3]],
            cout: w[0],
            kernel: [w[2], w[3]],
            stride,
            pad: [padding[0].0, padding[1].0],
            dilation,
            output,
        })
    }

    /// Rows of the im2col matrix: `cin * kh * kw`.
    pub fn patch(&self) -> usize {
        self.cin * self.kernel[0] * self.kernel[1]
    }

    /// For a stride-1 convolution whose padding is at most the dilated kernel's reach, the
    /// geometry of its input gradient as a forward convolution: `dY` convolved with
    /// [`transposed_kernel`], producing `dX`. `None` for other convolutions.
    fn input_gradient(&self) -> Option<Self> {
        if self.stride != [1, 1] {
            return None;
        }
        let reach = |d: usize| (self.dilation[d] * (self.kernel[d] - 1)).checked_sub(self.pad[d]);
        let pad = [reach(0)?, reach(1)?];
        Some(Self {
            batch: self.batch,
            cin: self.cout,
            input: self.output,
            cout: self.cin,
            kernel: self.kernel,
            stride: [1, 1],
            pad,
            dilation: self.dilation,
            output: self.input,
        })
    }

    pub(crate) fn in_pixels(&self) -> usize {
        self.input[0] * self.input[1]
    }

    pub(crate) fn out_pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The output positions `o` along dimension `d` whose input index `o * stride + offset - pad`
    /// lies inside the input, as a half-open range.
    fn valid(&self, d: usize, offset: usize) -> (usize, usize) {
        let (s, pad, len, out) = (self.stride[d], self.pad[d], self.input[d], self.output[d]);
        // o * s + offset >= pad  and  o * s + offset < pad + len
        let lo = pad.saturating_sub(offset).div_ceil(s);
        let hi = if pad + len > offset {
            (pad + len - offset).div_ceil(s)
        } else {
            0
        };
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }
}

/// Fills `col` (`patch x (images * out_pixels)`, row-major) with the patches of `images`
/// consecutive images of `x` starting at image `first`. Writes every element.
fn im2col(x: &[f32], g: &ConvGeometry, first: usize, images: usize, col: &mut [f32]) {
    if stride2::applies(g) {
        stride2::im2col(x, g, first, images, col);
    } else {
        im2col_general(x, g, first, images, col);
    }
}

/// [`im2col`] for any geometry.
pub(crate) fn im2col_general(
    x: &[f32],
    g: &ConvGeometry,
    first: usize,
    images: usize,
    col: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    let ow = g.output[1];
    let iw = g.input[1];
    let (in_px, out_px) = (g.in_pixels(), g.out_pixels());
    let width = images * out_px;
    for (row, dst) in col[..g.patch() * width].chunks_mut(width).enumerate() {
        let c = row / (kh * kw);
        let i = (row / kw) % kh;
        let j = row % kw;
        let (ylo, yhi) = g.valid(0, i * g.dilation[0]);
        let (xlo, xhi) = g.valid(1, j * g.dilation[1]);
        for b in 0..images {
            let plane = &x[((first + b) * g.cin + c) * in_px..][..in_px];
            let out = &mut dst[b * out_px..][..out_px];
            out[..ylo * ow].fill(0.0);
            out[yhi * ow..].fill(0.0);
            if xlo == xhi {
                out[ylo * ow..yhi * ow].fill(0.0);
                continue;
            }
            let x0 = xlo * g.stride[1] + j * g.dilation[1] - g.pad[1];
            for y in ylo..yhi {
                let iy = y * g.stride[0] + i * g.dilation[0] - g.pad[0];
                let src = &plane[iy * iw..][..iw];
                let line = &mut out[y * ow..][..ow];
                line[..xlo].fill(0.0);
                line[xhi..].fill(0.0);
                gather(&mut line[xlo..xhi], &src[x0..], g.stride[1]);
            }
        }
    }
}

/// `dst[k] = src[k * stride]` for every `k` of `dst`. Strides 1 and 2 (every layer of the
/// ConvNet and ResNets) are written so the compiler sees the slice lengths and drops the bounds
/// checks, and so stride 2 vectorizes as a de-interleave; they had been a sixth of the ConvNet-32
/// step (perf, im2col 17 % of the samples).
///
/// Compiled for the baseline (SSE2) on purpose, unlike the other kernels (`simd::run_wide`):
/// the AVX-512 copy of im2col and col2im made the ConvNet-32 step slower, 83.0 against 78.5 ms
/// (30 steps, 2 threads, Zen 5, 2026-12-05): on its 14- and 7-pixel rows the 8-wide loops leave
/// most of each row to the scalar tail, and the stride-2 scatter became `vscatterqps`. Blocks of
/// four written out by hand were slower still (85-88 ms, a masked load stalling).
#[inline(always)]
fn gather(dst: &mut [f32], src: &[f32], stride: usize) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    match stride {
        1 => dst.copy_from_slice(&src[..n]),
        2 => {
            for (d, pair) in dst[..n - 1]
                .iter_mut()
                .zip(src[..2 * (n - 1)].chunks_exact(2))
            {
                *d = pair[0];
            }
            dst[n - 1] = src[2 * (n - 1)];
        }
        s => {
            let src = &src[..s * (n - 1) + 1];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = src[k * s];
            }
        }
    }
}

/// `dst[k * stride] += src[k]` for every `k` of `src` (the transpose of [`gather`]).
#[inline(always)]
fn scatter_add(dst: &mut [f32], src: &[f32], stride: usize) {
    let n = src.len();
    if n == 0 {
        return;
    }
    match stride {
        1 => {
            for (d, v) in dst[..n].iter_mut().zip(src) {
                *d += v;
            }
        }
        2 => {
            for (pair, v) in dst[..2 * (n - 1)].chunks_exact_mut(2).zip(&src[..n - 1]) {
                pair[0] += v;
            }
            dst[2 * (n - 1)] += src[n - 1];
        }
        s => {
            let dst = &mut dst[..s * (n - 1) + 1];
            for (k, v) in src.iter().enumerate() {
                dst[k * s] += v;
            }
        }
    }
}

/// Writes into `dx`, the gradient of `images` images, the sum of the patches in `col` (the
/// transpose of [`im2col`]). Writes every element.
fn col2im(col: &[f32], g: &ConvGeometry, images: usize, dx: &mut [f32]) {
    if stride2::applies(g) {
        stride2::col2im(col, g, images, dx);
    } else {
        col2im_general(col, g, images, dx);
    }
}

/// [`col2im`] for any geometry.
pub(crate) fn col2im_general(col: &[f32], g: &ConvGeometry, images: usize, dx: &mut [f32]) {
    dx.fill(0.0);
    let [kh, kw] = g.kernel;
    let ow = g.output[1];
    let iw = g.input[1];
    let (in_px, out_px) = (g.in_pixels(), g.out_pixels());
    let width = images * out_px;
    for b in 0..images {
        for c in 0..g.cin {
            let plane = &mut dx[(b * g.cin + c) * in_px..][..in_px];
            for i in 0..kh {
                let (ylo, yhi) = g.valid(0, i * g.dilation[0]);
                for j in 0..kw {
                    let (xlo, xhi) = g.valid(1, j * g.dilation[1]);
                    if xlo == xhi {
                        continue;
                    }
                    let row = (c * kh + i) * kw + j;
                    let src = &col[row * width + b * out_px..][..out_px];
                    let x0 = xlo * g.stride[1] + j * g.dilation[1] - g.pad[1];
                    for y in ylo..yhi {
                        let iy = y * g.stride[0] + i * g.dilation[0] - g.pad[0];
                        let dst = &mut plane[iy * iw..][..iw];
                        let line = &src[y * ow..][..ow];
                        scatter_add(&mut dst[x0..], &line[xlo..xhi], g.stride[1]);
                    }
                }
            }
        }
    }
}

/// `w: [cout, cin, kh, kw]` flipped in both spatial axes with its channel axes swapped:
/// `[cin, cout, kh, kw]`, the kernel of the stride-1 input gradient.
fn transposed_kernel(w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let taps = kh * kw;
    let mut out = vec![0.0f32; w.len()];
    for o in 0..g.cout {
        for c in 0..g.cin {
            let src = &w[(o * g.cin + c) * taps..][..taps];
            let dst = &mut out[(c * g.cout + o) * taps..][..taps];
            for (t, v) in dst.iter_mut().enumerate() {
                *v = src[taps - 1 - t];
            }
        }
    }
    out
}

thread_local! {
    /// Per-thread im2col and GEMM-output buffers, kept between calls: allocating them afresh
    /// for every layer costs page faults on each first touch.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with this thread's scratch buffers grown to at least `a` and `b` elements (their
/// contents are whatever the last call left).
pub(crate) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (col, tmp) = &mut *bufs;
            if col.len() < a {
                col.resize(a, 0.0);
            }
            if tmp.len() < b {
                tmp.resize(b, 0.0);
            }
            f(&mut col[..a], &mut tmp[..b])
        }
        // Re-entered (a nested rayon task on this thread): use fresh buffers.
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// How the batch is shared out: one contiguous range of images per task, each task running
/// single-threaded GEMMs over blocks of its images. With one task (a single image), the GEMMs
/// use every thread instead.
pub(crate) struct Plan {
    ranges: Vec<(usize, usize)>,
    block: usize,
    pub(crate) parallelism: Parallelism,
}

impl Plan {
    fn new(g: &ConvGeometry, block_elems: usize) -> Self {
        Self::with_image_size(g.batch, g.patch() * g.out_pixels(), block_elems)
    }

    /// The plan for `batch` images of `per_image` scratch elements each, in blocks of at most
    /// `block_elems` elements (at least one image).
    pub(crate) fn with_image_size(batch: usize, per_image: usize, block_elems: usize) -> Self {
        let tasks = rayon::current_num_threads().clamp(1, batch.max(1));
        let per = batch.div_ceil(tasks).max(1);
        let ranges: Vec<(usize, usize)> = (0..batch)
            .step_by(per)
            .map(|s| (s, per.min(batch - s)))
            .collect();
        Self {
            block: (block_elems / per_image.max(1)).clamp(1, per),
            parallelism: if ranges.len() > 1 {
                Parallelism::None
            } else {
                Parallelism::Rayon(0)
            },
            ranges,
        }
    }

    /// The ranges' indices.
    pub(crate) fn ranges(&self) -> std::ops::Range<usize> {
        0..self.ranges.len()
    }

    /// Runs `f(range, first, images)` for every block, the ranges in parallel.
    pub(crate) fn run(&self, f: impl Fn(usize, usize, usize) + Sync) {
        self.ranges
            .par_iter()
            .enumerate()
            .for_each(|(range, &(start, len))| {
                for first in (start..start + len).step_by(self.block) {
                    f(range, first, self.block.min(start + len - first));
                }
            });
    }
}

/// `y = conv(x, w)`: `x` is `[batch, cin, h, w]`, `w` is `[cout, cin, kh, kw]`, both contiguous;
/// returns `[batch, cout, oh, ow]`.
pub fn conv2d_forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    forward_in_blocks(x, w, g, BLOCK_ELEMS)
}

fn forward_in_blocks(x: &[f32], w: &[f32], g: &ConvGeometry, block_elems: usize) -> Vec<f32> {
    let (k, out_px, cout) = (g.patch(), g.out_pixels(), g.cout);
    assert_eq!(
        x.len(),
        g.batch * g.cin * g.in_pixels(),
        "conv2d: input size"
    );
    assert_eq!(w.len(), cout * k, "conv2d: weight size");
    if winograd::applies(g) {
        return winograd::forward(x, w, g, block_elems);
    }
    let plan = Plan::new(g, block_elems.min(IM2COL_BLOCK_ELEMS));
    let fill = |out: &mut [f32]| {
        let shared = SharedMut::new(out);
        plan.run(|_, first, images| {
            let width = images * out_px;
            // SAFETY: blocks cover disjoint image ranges.
            let dst = unsafe { shared.slice(first * cout * out_px, images * cout * out_px) };
            let tmp_len = if images > 1 { cout * width } else { 0 };
            with_scratch(k * width, tmp_len, |col, tmp| {
                im2col(x, g, first, images, col);
                let target = if images == 1 { &mut *dst } else { &mut *tmp };
                let (a, b) = (View::rows(w, k), View::rows(col, width));
                sgemm(cout, width, k, target, false, a, b, plan.parallelism);
                if images > 1 {
                    // tmp is [cout, (image, pixel)]; the output wants [image, cout, pixel].
                    for (b, img) in dst.chunks_mut(cout * out_px).enumerate() {
                        for (o, line) in img.chunks_mut(out_px).enumerate() {
                            line.copy_from_slice(&tmp[o * width + b * out_px..][..out_px]);
                        }
                    }
                }
            });
        });
    };
    // SAFETY: the blocks cover every image, and each block's GEMM (one image) or copy (several)
    // writes all of its output.
    unsafe { written_by(g.batch * cout * out_px, fill) }
}

/// Gradients of [`conv2d_forward`] given the output gradient `dy`: `(dx, dw)`, each computed
/// only when asked for.
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    backward_in_blocks(x, w, dy, g, want_dx, want_dw, BLOCK_ELEMS)
}

fn backward_in_blocks(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    want_dx: bool,
    want_dw: bool,
    block_elems: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, out_px, cout) = (g.patch(), g.out_pixels(), g.cout);
    assert_eq!(
        dy.len(),
        g.batch * cout * out_px,
        "conv2d backward: gradient size"
    );
    let in_len = g.cin * g.in_pixels();
    // Stride 1: the input gradient is a forward convolution, computed on its own.
    let as_forward = if want_dx { g.input_gradient() } else { None };
    let mut dx =
        as_forward.map(|gd| forward_in_blocks(dy, &transposed_kernel(w, g), &gd, block_elems));
    // 3x3, stride 1: the weight gradient through Winograd's transforms.
    let mut dw =
        (want_dw && winograd::applies(g)).then(|| winograd::weight_gradient(x, dy, g, block_elems));
    // What is left goes through im2col: the weight gradient and the scattered input gradient.
    let scatter = want_dx && dx.is_none();
    let want_dw = want_dw && dw.is_none();
    if !scatter && !want_dw {
        return (dx, dw);
    }
    let plan = Plan::new(g, block_elems.min(IM2COL_BLOCK_ELEMS));
    // One accumulator of dWᵀ (`k x cout`) per range, summed and transposed at the end.
    let mut partial: Vec<Vec<f32>> = if want_dw {
        plan.ranges.iter().map(|_| vec![0.0f32; cout * k]).collect()
    } else {
        Vec::new()
    };
    let partials: Vec<SharedMut> = partial.iter_mut().map(|p| SharedMut::new(p)).collect();
    let run = |dx: Option<SharedMut>| {
        plan.run(|range, first, images| {
            let width = images * out_px;
            let src = &dy[first * cout * out_px..][..images * cout * out_px];
            let tmp_len = if images > 1 { cout * width } else { 0 };
            with_scratch(k * width, tmp_len, |col, tmp| {
                // dY of the block as [cout, (image, pixel)].
                let dyv: &[f32] = if images == 1 {
                    src
                } else {
                    for b in 0..images {
                        for o in 0..cout {
                            tmp[o * width + b * out_px..][..out_px]
                                .copy_from_slice(&src[(b * cout + o) * out_px..][..out_px]);
                        }
                    }
                    tmp
                };
                if let Some(acc) = partials.get(range) {
                    // SAFETY: each range's accumulator is used by that range's task alone.
                    let acc = unsafe { acc.slice(0, cout * k) };
                    im2col(x, g, first, images, col);
                    // dWᵀ = col · dYᵀ rather than dW = dY · colᵀ: the gemm crate computes a
                    // row-major product as its transpose and copies ("packs") that one's left
                    // operand unless it is column-major. For dW that operand was the whole im2col
                    // block (k x width); for dWᵀ it is dY's block (cout x width), 4.5 to 9 times
                    // smaller on the ConvNet's layers: packing fell from 6.2 to 4.5 % of the
                    // ConvNet-32 step's samples, and the sums are the same, bit for bit here.
                    let (a, b) = (View::rows(col, width), View::transposed(dyv, width));
                    sgemm(k, cout, width, acc, true, a, b, plan.parallelism);
                }
                if let Some(dx) = &dx {
                    let (a, b) = (View::transposed(w, k), View::rows(dyv, width));
                    sgemm(k, width, cout, col, false, a, b, plan.parallelism);
                    // SAFETY: blocks cover disjoint image ranges.
                    let dst = unsafe { dx.slice(first * in_len, images * in_len) };
                    col2im(col, g, images, dst);
                }
            });
        });
    };
    if scatter {
        // SAFETY: the blocks cover every image, and col2im writes all of each block's values.
        dx = Some(unsafe { written_by(g.batch * in_len, |d| run(Some(SharedMut::new(d)))) });
    } else {
        run(None);
    }
    if want_dw {
        let dwt = sum_partials(partial, cout * k);
        let mut out = vec![0.0f32; cout * k];
        // dWᵀ -> dW (`cout x k`, the weight's layout).
        for (kk, row) in dwt.chunks_exact(cout).enumerate() {
            for (o, v) in row.iter().enumerate() {
                out[o * k + kk] = *v;
            }
        }
        dw = Some(out);
    }
    (dx, dw)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The convolution straight from its definition, summed in f64.
    pub(crate) fn naive(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [ih, iw] = g.input;
        let [oh, ow] = g.output;
        let [kh, kw] = g.kernel;
        let mut out = vec![0.0; g.batch * g.cout * oh * ow];
        for b in 0..g.batch {
            for o in 0..g.cout {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = 0.0f64;
                        for c in 0..g.cin {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let ix = (xx * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                        continue;
                                    }
                                    s += (x
                                        [((b * g.cin + c) * ih + iy as usize) * iw + ix as usize]
                                        * w[((o * g.cin + c) * kh + i) * kw + j])
                                        as f64;
                                }
                            }
                        }
                        out[((b * g.cout + o) * oh + y) * ow + xx] = s as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.713).sin()).collect()
    }

    fn geometries() -> Vec<ConvGeometry> {
        vec![
            ConvGeometry::new([2, 3, 7, 6], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ConvGeometry::new([3, 2, 9, 8], [5, 2, 3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
            ConvGeometry::new([2, 4, 5, 5], [3, 4, 1, 1], [2, 2], [(0, 0), (0, 0)], [1, 1]),
            ConvGeometry::new([1, 2, 8, 7], [3, 2, 3, 2], [1, 2], [(2, 0), (0, 1)], [2, 1]),
            ConvGeometry::new([2, 1, 6, 6], [2, 1, 7, 7], [2, 2], [(3, 3), (3, 3)], [1, 1]),
            // Stride 1, so the input gradient runs as a forward convolution: no padding,
            // asymmetric padding with dilation, and a 1x1 kernel (no flip to speak of).
            ConvGeometry::new([2, 3, 6, 5], [2, 3, 3, 3], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            ConvGeometry::new([2, 2, 8, 7], [3, 2, 3, 2], [1, 1], [(2, 1), (0, 1)], [2, 1]),
            ConvGeometry::new([3, 4, 5, 5], [6, 4, 1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            // Stride 1 but padding beyond the kernel's reach: the scatter path again.
            ConvGeometry::new([1, 2, 4, 4], [3, 2, 1, 1], [1, 1], [(1, 1), (1, 1)], [1, 1]),
        ]
        .into_iter()
        .map(Option::unwrap)
        .collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geometries() {
            let x = values(g.batch * g.cin * g.in_pixels(), 0.0);
            let w = values(g.cout * g.patch(), 3.0);
            let got = conv2d_forward(&x, &w, &g);
            let want = naive(&x, &w, &g);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The gradients are the adjoints of the forward: <conv(x, w), dy> is linear in x and in w,
    /// so <dx, e_i> and <dw, e_j> must equal the forward applied to unit vectors.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        for g in geometries() {
            let x = values(g.batch * g.cin * g.in_pixels(), 1.0);
            let w = values(g.cout * g.patch(), 2.0);
            let dy = values(g.batch * g.cout * g.out_pixels(), 5.0);
            let (dx, dw) = conv2d_backward(&x, &w, &dy, &g, true, true);
            let (dx, dw) = (dx.unwrap(), dw.unwrap());
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
            for i in 0..x.len() {
                let mut e = vec![0.0; x.len()];
                e[i] = 1.0;
                let want = dot(&naive(&e, &w, &g), &dy);
                assert!((dx[i] - want).abs() < 1e-4, "{g:?} dx[{i}]");
            }
            for j in 0..w.len() {
                let mut e = vec![0.0; w.len()];
                e[j] = 1.0;
                let want = dot(&naive(&x, &e, &g), &dy);
                assert!((dw[j] - want).abs() < 1e-3, "{g:?} dw[{j}]");
            }
        }
    }

    #[test]
    fn every_block_size_gives_the_same_result() {
        // Stride 1 (Winograd forward and input gradient) and stride 2 (im2col and col2im): one
        // block of all images, blocks of about two images, one image at a time.
        for g in [
            ConvGeometry::new([5, 3, 6, 6], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ConvGeometry::new([5, 3, 7, 6], [4, 3, 3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        ]
        .map(Option::unwrap)
        {
            let per_image = g.patch() * g.out_pixels();
            let x = values(g.batch * g.cin * g.in_pixels(), 0.5);
            let w = values(g.cout * g.patch(), 1.5);
            let dy = values(g.batch * g.cout * g.out_pixels(), 2.5);
            let whole = forward_in_blocks(&x, &w, &g, usize::MAX);
            let (wdx, wdw) = backward_in_blocks(&x, &w, &dy, &g, true, true, usize::MAX);
            for elems in [2 * per_image, 1] {
                let y = forward_in_blocks(&x, &w, &g, elems);
                let (dx, dw) = backward_in_blocks(&x, &w, &dy, &g, true, true, elems);
                for (got, want) in [(&y, &whole), (&dx.unwrap(), wdx.as_ref().unwrap())]
                    .into_iter()
                    .chain([(&dw.unwrap(), wdw.as_ref().unwrap())])
                {
                    for (a, b) in got.iter().zip(want.iter()) {
                        assert!((a - b).abs() < 1e-4, "{g:?}, blocks of {elems}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_stride_one_within_reach_runs_the_input_gradient_forward() {
        let kinds: Vec<bool> = geometries()
            .iter()
            .map(|g| g.input_gradient().is_some())
            .collect();
        assert_eq!(
            kinds,
            [true, false, false, false, false, true, true, true, false]
        );
    }

    #[test]
    fn kernels_larger_than_the_padded_input_are_refused() {
        assert!(
            ConvGeometry::new([1, 1, 2, 2], [1, 1, 5, 5], [1, 1], [(1, 1), (1, 1)], [1, 1])
                .is_none()
        );
    }
}
