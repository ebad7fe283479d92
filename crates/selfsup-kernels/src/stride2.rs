//! im2col and col2im for stride-2 convolutions (dilation 1): the downsampling layers of the
//! ConvNet and the ResNets, whose planes are small (28, 14, 7 pixels on the ConvNet-32 at 28 px).
//!
//! Each input plane is first split by column parity into a zero-padded copy, `even[r][k]` =
//! padded column `2k` of padded row `r`, `odd[r][k]` = column `2k + 1`. Kernel tap `(i, j)` of
//! output row `y` then reads `ow` consecutive values of one of the two, at row `2y + i` and
//! column `j / 2`, with no padding checks and no stride: a plain copy, unrolled for the row
//! widths of our layers. col2im adds the taps into the split copy the same way, then interleaves
//! it back into the plane, every input-gradient value receiving its terms in the same order as
//! the general path's (so the results match it bit for bit).
//!
//! Why by hand: the general path ([`crate::conv`]) gathers every 4- to 14-pixel output row with
//! a stride and two padding fills, and was 18 % of the ConvNet-32 step's perf samples (im2col
//! 12.5 %, col2im 6.1 %). Per element written, one thread of the Zen 4 here, blocks of the
//! step's sizes (28, 14 and 7 pixels): im2col 0.41 / 0.87 / 1.08 ns before, 0.20 / 0.45 / 0.66
//! after; col2im 0.37 / 0.60 / 1.11 before, 0.27 / 0.48 / 0.69 with its additions still scalar
//! (a plain copy of the same size: 0.09-0.13 ns). The whole SimCLR ConvNet-32 step (2 threads,
//! 30 steps, three pairs interleaved, 2026-12-06): fastest step 125.5 / 126.5 / 126.8 ms before,
//! 115.7 / 117.0 / 117.7 after. col2im writing every value also spares the zero fill of the
//! input gradient.
//!
//! The column split, the interleave back and the additions use SSE2 (baseline x86-64, so no
//! dispatch): the compiler left them one value at a time, the split being 40 % of the stride-2
//! im2col's samples in the one-thread probe above.

use crate::conv::ConvGeometry;

/// Whether the stride-2 path serves `g`.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.stride == [2, 2] && g.dilation == [1, 1]
}

/// The shape of the column-split padded plane of `g`: `rows` padded rows of `half` values in
/// each of the even and odd halves.
struct Split {
    rows: usize,
    half: usize,
}

impl Split {
    fn new(g: &ConvGeometry) -> Self {
        // Every row and column a tap reads, and every input row and column.
        let rows = (2 * (g.output[0] - 1) + g.kernel[0]).max(g.input[0] + g.pad[0]);
        let cols = (2 * (g.output[1] - 1) + g.kernel[1]).max(g.input[1] + g.pad[1]);
        Self {
            rows,
            half: cols.div_ceil(2),
        }
    }

    /// Zeroed even and odd halves.
    fn buffers(&self) -> (Vec<f32>, Vec<f32>) {
        (
            vec![0.0; self.rows * self.half],
            vec![0.0; self.rows * self.half],
        )
    }
}

/// [`crate::conv`]'s im2col for a stride-2 `g`: fills `col` (`patch x (images * out_pixels)`,
/// row-major) with the patches of `images` images of `x` from image `first`.
pub(crate) fn im2col(x: &[f32], g: &ConvGeometry, first: usize, images: usize, col: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let iw = g.input[1];
    let (in_px, out_px) = (g.in_pixels(), g.out_pixels());
    let width = images * out_px;
    let split = Split::new(g);
    let half = split.half;
    // Only the input's rows and columns are written below: the padding stays zero.
    let (mut even, mut odd) = split.buffers();
    for b in 0..images {
        for c in 0..g.cin {
            let plane = &x[((first + b) * g.cin + c) * in_px..][..in_px];
            for (iy, row) in plane.chunks_exact(iw).enumerate() {
                let r = (iy + g.pad[0]) * half;
                let (e, o) = (&mut even[r..r + half], &mut odd[r..r + half]);
                // Input column q is padded column q + pad: even for the q of the pad's parity.
                if g.pad[1].is_multiple_of(2) {
                    deinterleave(row, &mut e[g.pad[1] / 2..], &mut o[g.pad[1] / 2..]);
                } else {
                    deinterleave(row, &mut o[g.pad[1] / 2..], &mut e[g.pad[1].div_ceil(2)..]);
                }
            }
            for i in 0..kh {
                for j in 0..kw {
                    let src = if j % 2 == 0 { &even } else { &odd };
                    let dst = &mut col[((c * kh + i) * kw + j) * width + b * out_px..][..out_px];
                    copy_rows(dst, &src[i * half + j / 2..], ow, 2 * half, oh);
                }
            }
        }
    }
}

/// [`crate::conv`]'s col2im for a stride-2 `g`: writes into `dx` (the gradient of `images`
/// images) the sum of the patches in `col`. Writes every element of `dx`.
pub(crate) fn col2im(col: &[f32], g: &ConvGeometry, images: usize, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let iw = g.input[1];
    let (in_px, out_px) = (g.in_pixels(), g.out_pixels());
    let width = images * out_px;
    let split = Split::new(g);
    let half = split.half;
    let (mut even, mut odd) = split.buffers();
    for b in 0..images {
        for c in 0..g.cin {
            even.fill(0.0);
            odd.fill(0.0);
            for i in 0..kh {
                for j in 0..kw {
                    let dst = if j % 2 == 0 { &mut even } else { &mut odd };
                    let src = &col[((c * kh + i) * kw + j) * width + b * out_px..][..out_px];
                    add_rows(&mut dst[i * half + j / 2..], src, ow, 2 * half, oh);
                }
            }
            let plane = &mut dx[(b * g.cin + c) * in_px..][..in_px];
            for (iy, row) in plane.chunks_exact_mut(iw).enumerate() {
                let r = (iy + g.pad[0]) * half;
                let (e, o) = (&even[r..r + half], &odd[r..r + half]);
                if g.pad[1].is_multiple_of(2) {
                    interleave(&e[g.pad[1] / 2..], &o[g.pad[1] / 2..], row);
                } else {
                    interleave(&o[g.pad[1] / 2..], &e[g.pad[1].div_ceil(2)..], row);
                }
            }
        }
    }
}

/// `a[k] = src[2k]`, `b[k] = src[2k + 1]`.
#[inline(always)]
fn deinterleave(src: &[f32], a: &mut [f32], b: &mut [f32]) {
    let pairs = src.len() / 2;
    let (a, a_tail) = a.split_at_mut(pairs);
    let b = &mut b[..pairs];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
        while done + 4 <= pairs {
            // SAFETY: SSE2 is part of x86-64; reads src[2 done..2 done + 8] and writes
            // a[done..done + 4] and b[done..done + 4], in bounds since done + 4 <= pairs.
            unsafe {
                let lo = _mm_loadu_ps(src.as_ptr().add(2 * done));
                let hi = _mm_loadu_ps(src.as_ptr().add(2 * done + 4));
                _mm_storeu_ps(
                    a.as_mut_ptr().add(done),
                    _mm_shuffle_ps::<0b10_00_10_00>(lo, hi),
                );
                _mm_storeu_ps(
                    b.as_mut_ptr().add(done),
                    _mm_shuffle_ps::<0b11_01_11_01>(lo, hi),
                );
            }
            done += 4;
        }
    }
    for ((pair, a), b) in src[2 * done..2 * pairs]
        .chunks_exact(2)
        .zip(&mut a[done..])
        .zip(&mut b[done..])
    {
        *a = pair[0];
        *b = pair[1];
    }
    if src.len() % 2 == 1 {
        a_tail[0] = src[2 * pairs];
    }
}

/// `dst[2k] = a[k]`, `dst[2k + 1] = b[k]` (the inverse of [`deinterleave`]).
#[inline(always)]
fn interleave(a: &[f32], b: &[f32], dst: &mut [f32]) {
    let pairs = dst.len() / 2;
    let (a, b) = (&a[..pairs + dst.len() % 2], &b[..pairs]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_storeu_ps, _mm_unpackhi_ps, _mm_unpacklo_ps};
        while done + 4 <= pairs {
            // SAFETY: SSE2 is part of x86-64; reads a[done..done + 4] and b[done..done + 4]
            // and writes dst[2 done..2 done + 8], in bounds since done + 4 <= pairs.
            unsafe {
                let va = _mm_loadu_ps(a.as_ptr().add(done));
                let vb = _mm_loadu_ps(b.as_ptr().add(done));
                let out = dst.as_mut_ptr().add(2 * done);
                _mm_storeu_ps(out, _mm_unpacklo_ps(va, vb));
                _mm_storeu_ps(out.add(4), _mm_unpackhi_ps(va, vb));
            }
            done += 4;
        }
    }
    for ((pair, a), b) in dst[2 * done..2 * pairs]
        .chunks_exact_mut(2)
        .zip(&a[done..])
        .zip(&b[done..])
    {
        pair[0] = *a;
        pair[1] = *b;
    }
    if dst.len() % 2 == 1 {
        dst[2 * pairs] = a[pairs];
    }
}

/// `dst[y * w + x] = src[y * stride + x]` for `x < w`, `y < rows`. The widths of the ConvNet's
/// and ResNets' downsampled maps get a copy of a fixed size (a few moves, no `memcpy` call).
fn copy_rows(dst: &mut [f32], src: &[f32], w: usize, stride: usize, rows: usize) {
    #[inline(always)]
    fn fixed<const W: usize>(dst: &mut [f32], src: &[f32], stride: usize, rows: usize) {
        for (y, d) in dst.chunks_exact_mut(W).take(rows).enumerate() {
            let d: &mut [f32; W] = d.try_into().expect("chunks of W");
            *d = src[y * stride..][..W].try_into().expect("W values");
        }
    }
    match w {
        4 => fixed::<4>(dst, src, stride, rows),
        7 => fixed::<7>(dst, src, stride, rows),
        8 => fixed::<8>(dst, src, stride, rows),
        14 => fixed::<14>(dst, src, stride, rows),
        16 => fixed::<16>(dst, src, stride, rows),
        _ => {
            for (y, line) in dst.chunks_exact_mut(w).take(rows).enumerate() {
                line.copy_from_slice(&src[y * stride..][..w]);
            }
        }
    }
}

/// `dst[x] += src[x]` for every `x` of `dst`, four at a time on SSE2 (left to itself the
/// compiler added the 7- and 14-wide rows one value at a time).
#[inline(always)]
fn add_to(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_storeu_ps};
        while done + 4 <= n {
            // SAFETY: SSE2 is part of x86-64; reads and writes [done..done + 4] of slices of
            // length n, in bounds since done + 4 <= n.
            unsafe {
                let d = dst.as_mut_ptr().add(done);
                _mm_storeu_ps(
                    d,
                    _mm_add_ps(_mm_loadu_ps(d), _mm_loadu_ps(src.as_ptr().add(done))),
                );
            }
            done += 4;
        }
    }
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d += s;
    }
}

/// `dst[y * stride + x] += src[y * w + x]` for `x < w`, `y < rows` (the transpose of
/// [`copy_rows`]).
fn add_rows(dst: &mut [f32], src: &[f32], w: usize, stride: usize, rows: usize) {
    #[inline(always)]
    fn fixed<const W: usize>(dst: &mut [f32], src: &[f32], stride: usize, rows: usize) {
        for (y, s) in src.chunks_exact(W).take(rows).enumerate() {
            add_to(&mut dst[y * stride..][..W], s);
        }
    }
    match w {
        4 => fixed::<4>(dst, src, stride, rows),
        7 => fixed::<7>(dst, src, stride, rows),
        8 => fixed::<8>(dst, src, stride, rows),
        14 => fixed::<14>(dst, src, stride, rows),
        16 => fixed::<16>(dst, src, stride, rows),
        _ => {
            for (y, s) in src.chunks_exact(w).take(rows).enumerate() {
                add_to(&mut dst[y * stride..][..w], s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{col2im_general, im2col_general};

    /// Stride-2 geometries: the ConvNet's and ResNet's layers, odd and even sizes, paddings of
    /// both parities (asymmetric too), kernels from 1x1 to 7x7, and a kernel wider than tall.
    fn geometries() -> Vec<ConvGeometry> {
        let g = |x: [usize; 4], w: [usize; 4], pad: [(usize, usize); 2]| {
            ConvGeometry::new(x, w, [2, 2], pad, [1, 1]).expect("valid geometry")
        };
        vec![
            g([3, 2, 28, 28], [4, 2, 3, 3], [(1, 1), (1, 1)]),
            g([3, 2, 14, 14], [4, 2, 3, 3], [(1, 1), (1, 1)]),
            g([3, 3, 7, 7], [4, 3, 3, 3], [(1, 1), (1, 1)]),
            g([2, 3, 9, 8], [5, 3, 3, 3], [(1, 1), (1, 1)]),
            g([2, 1, 6, 6], [2, 1, 7, 7], [(3, 3), (3, 3)]),
            g([2, 4, 5, 5], [3, 4, 1, 1], [(0, 0), (0, 0)]),
            g([2, 2, 8, 9], [3, 2, 1, 1], [(0, 0), (0, 0)]),
            g([2, 2, 11, 10], [3, 2, 4, 4], [(2, 1), (2, 1)]),
            g([2, 2, 10, 13], [3, 2, 2, 5], [(0, 1), (3, 0)]),
            g([1, 2, 33, 35], [2, 2, 3, 3], [(1, 1), (2, 2)]),
        ]
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn im2col_matches_the_general_path_bit_for_bit() {
        for g in geometries() {
            assert!(applies(&g));
            let x = values(g.batch * g.cin * g.in_pixels(), 1.0);
            for (first, images) in [(0, g.batch), (g.batch - 1, 1)] {
                let n = g.patch() * images * g.out_pixels();
                let (mut want, mut got) = (vec![7.0; n], vec![9.0; n]);
                im2col_general(&x, &g, first, images, &mut want);
                im2col(&x, &g, first, images, &mut got);
                assert_eq!(bits(&got), bits(&want), "{g:?}, images {first}..+{images}");
            }
        }
    }

    #[test]
    fn col2im_matches_the_general_path_bit_for_bit() {
        for g in geometries() {
            let col = values(g.patch() * g.batch * g.out_pixels(), 2.0);
            let n = g.batch * g.cin * g.in_pixels();
            let (mut want, mut got) = (vec![7.0; n], vec![9.0; n]);
            col2im_general(&col, &g, g.batch, &mut want);
            col2im(&col, &g, g.batch, &mut got);
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
    }

    #[test]
    fn only_stride_two_without_dilation_applies() {
        let g = |stride, dilation| {
            ConvGeometry::new([1, 1, 9, 9], [1, 1, 3, 3], stride, [(1, 1); 2], dilation)
                .expect("valid geometry")
        };
        assert!(applies(&g([2, 2], [1, 1])));
        assert!(!applies(&g([1, 1], [1, 1])));
        assert!(!applies(&g([2, 1], [1, 1])));
        assert!(!applies(&g([2, 2], [2, 2])));
    }
}
