//! Augmentations on [`Image`]s, each a small [`Augmentation`], and [`Pipeline`]s of them.
//!
//! All randomness comes from the `rng` argument, so a seeded generator reproduces a view.
//! Values stay in `[0, 1]` until [`Normalize`].

use rand::{Rng, RngCore};
use selfsup_core::config::ensure;
use selfsup_core::{Augmentation, Image, Image8, Result, ViewGenerator};
use serde::{Deserialize, Serialize};

fn coin(rng: &mut dyn RngCore, p: f32) -> bool {
    p > 0.0 && (p >= 1.0 || rng.random::<f32>() < p)
}

fn uniform(rng: &mut dyn RngCore, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f32>()
    } else {
        lo
    }
}

/// Resampling of the region `(top, left, h, w)` of `img` to `out_h` x `out_w` (half-pixel
/// centres, as PyTorch's `align_corners=False`). Enlarging is bilinear; shrinking along an
/// axis widens the triangle filter by the shrink factor (antialiasing, as PIL and
/// torchvision's `antialias=True` do), so a 500-pixel photo cropped to 96 does not alias.
pub fn resize_region(
    img: &Image,
    top: f32,
    left: f32,
    h: f32,
    w: f32,
    out_h: usize,
    out_w: usize,
) -> Image {
    if h > out_h as f32 || w > out_w as f32 {
        return resize_region_antialiased(img, top, left, h, w, out_h, out_w);
    }
    let mut out = Image::zeros(img.channels, out_h, out_w);
    let (sy, sx) = (h / out_h as f32, w / out_w as f32);
    let (ih, iw) = (img.height as isize, img.width as isize);
    // Source columns and weights are the same for every row and channel: compute them once.
    let cols: Vec<(usize, usize, f32)> = (0..out_w)
        .map(|ox| {
            let x = (left + (ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (iw - 1) as f32);
            let x0 = x.floor() as isize;
            let x1 = (x0 + 1).min(iw - 1);
            (x0 as usize, x1 as usize, x - x0 as f32)
        })
        .collect();
    let (hw_in, hw_out) = (img.height * img.width, out_h * out_w);
    for oy in 0..out_h {
        let y = (top + (oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (ih - 1) as f32);
        let y0 = y.floor() as isize;
        let y1 = (y0 + 1).min(ih - 1);
        let fy = y - y0 as f32;
        for c in 0..img.channels {
            let plane = &img.data[c * hw_in..(c + 1) * hw_in];
            let r0 = &plane[y0 as usize * img.width..(y0 as usize + 1) * img.width];
            let r1 = &plane[y1 as usize * img.width..(y1 as usize + 1) * img.width];
            let dst = &mut out.data[c * hw_out + oy * out_w..c * hw_out + (oy + 1) * out_w];
            for (o, &(x0, x1, fx)) in dst.iter_mut().zip(&cols) {
                let top_v = r0[x0] * (1.0 - fx) + r0[x1] * fx;
                let bot_v = r1[x0] * (1.0 - fx) + r1[x1] * fx;
                *o = top_v * (1.0 - fy) + bot_v * fy;
            }
        }
    }
    out
}

/// The taps of one output axis: for each output position, the first source index and the
/// normalized weights of the consecutive source pixels it averages. The triangle filter is
/// widened by the shrink factor (`span / out`, at least 1), as PIL's bilinear resampling.
fn taps(start: f32, span: f32, out: usize, len: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = span / out as f32;
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let centre = start + (o as f32 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0) as usize).min(len - 1);
            let hi = ((centre + support).ceil().max(1.0) as usize).min(len);
            let mut w: Vec<f32> = (lo..hi.max(lo + 1))
                .map(|x| (1.0 - ((x as f32 + 0.5 - centre) / support).abs()).max(0.0))
                .collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // The region lies past the image's edge: take the nearest pixel.
                w.iter_mut().for_each(|v| *v = 0.0);
                w[0] = 1.0;
            }
            (lo, w)
        })
        .collect()
}

/// The source columns `[lo, hi)` that an axis's taps read (at least one).
fn source_span(taps: &[(usize, Vec<f32>)]) -> (usize, usize) {
    let lo = taps.iter().map(|(s, _)| *s).min().unwrap_or(0);
    let hi = taps.iter().map(|(s, t)| s + t.len()).max().unwrap_or(0);
    (lo, hi.max(lo + 1))
}

/// [`resize_region`] when shrinking: separable, columns first (each output row a weighted sum
/// of whole source rows, over only the columns the output needs: contiguous, so it
/// vectorizes), then rows (short dot products per output pixel). Measured on the 96-px loader
/// bench: the other order (a dot product per source row and output column) was 27 % of the
/// time of a batch.
fn resize_region_antialiased(
    img: &Image,
    top: f32,
    left: f32,
    h: f32,
    w: f32,
    out_h: usize,
    out_w: usize,
) -> Image {
    let xs = taps(left, w, out_w, img.width);
    let ys = taps(top, h, out_h, img.height);
    let (x_lo, x_hi) = source_span(&xs);
    let cols = x_hi - x_lo;
    let mut out = Image::zeros(img.channels, out_h, out_w);
    let mut mid = vec![0f32; cols];
    let (hw_in, hw_out) = (img.height * img.width, out_h * out_w);
    for c in 0..img.channels {
        let plane = &img.data[c * hw_in..(c + 1) * hw_in];
        let dst = &mut out.data[c * hw_out..(c + 1) * hw_out];
        for (oy, (s, t)) in ys.iter().enumerate() {
            mid.iter_mut().for_each(|m| *m = 0.0);
            for (k, &kv) in t.iter().enumerate() {
                let row = &plane[(s + k) * img.width + x_lo..(s + k) * img.width + x_hi];
                for (m, v) in mid.iter_mut().zip(row) {
                    *m += kv * v;
                }
            }
            let row = &mut dst[oy * out_w..(oy + 1) * out_w];
            for (o, (xs0, xt)) in row.iter_mut().zip(&xs) {
                *o = xt.iter().zip(&mid[xs0 - x_lo..]).map(|(k, v)| k * v).sum();
            }
        }
    }
    out
}

/// [`resize_region`] of an 8-bit interleaved image, straight into channel-major floats in
/// `[0, 1]`: the cut of a streamed original, so only the pixels under the crop are read and
/// only the view becomes floats. One separable triangle filter for both directions (its
/// support is the bilinear one when enlarging, so the taps give the same weights as
/// [`resize_region`]'s bilinear path, clamped borders included). Columns first over the
/// interleaved source rows (contiguous bytes: converts and accumulates in vector registers),
/// then rows, each output pixel's channels together, written to their planes.
pub fn resize_region8(
    img: &Image8,
    top: f32,
    left: f32,
    h: f32,
    w: f32,
    out_h: usize,
    out_w: usize,
) -> Image {
    let ch = img.channels;
    let xs = taps(left, w, out_w, img.width);
    let mut ys = taps(top, h, out_h, img.height);
    // The scale to [0, 1] rides on the first pass's weights.
    for (_, t) in &mut ys {
        t.iter_mut().for_each(|v| *v *= 1.0 / 255.0);
    }
    let (x_lo, x_hi) = source_span(&xs);
    let span = (x_lo * ch)..(x_hi * ch);
    // Every output column's taps padded with zero weights to the longest, so the second pass
    // runs a fixed-length loop with a chain per channel (measured: the variable-length,
    // channel-at-a-time sums were a quarter of a 96-px loader batch); `mid` gets as many
    // zeros past its end.
    let taps_x = xs.iter().map(|(_, t)| t.len()).max().unwrap_or(1);
    let wx: Vec<f32> = xs
        .iter()
        .flat_map(|(_, t)| t.iter().copied().chain(std::iter::repeat(0.0)).take(taps_x))
        .collect();
    let starts: Vec<usize> = xs.iter().map(|(s, _)| (s - x_lo) * ch).collect();
    let hw_out = out_h * out_w;
    let mut out = vec![0f32; ch * hw_out];
    let mut mid = vec![0f32; span.len() + taps_x * ch];
    // Compiled for the widest vectors the CPU has (the default build targets SSE2).
    selfsup_kernels::run_wide(Rows8 {
        img,
        span,
        ys: &ys,
        starts: &starts,
        weights: &wx,
        taps: taps_x,
        mid: &mut mid,
        out: &mut out,
        out_w,
    });
    Image::new(ch, out_h, out_w, out)
}

/// Both passes of [`resize_region8`] over every output row.
struct Rows8<'a> {
    img: &'a Image8,
    /// The source columns read (in samples: `x * channels`).
    span: std::ops::Range<usize>,
    /// Each output row's first source row and weights.
    ys: &'a [(usize, Vec<f32>)],
    /// Each output column's first `mid` index and its `taps` weights.
    starts: &'a [usize],
    weights: &'a [f32],
    taps: usize,
    mid: &'a mut [f32],
    out: &'a mut [f32],
    out_w: usize,
}

impl selfsup_kernels::WideKernel for Rows8<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let img = self.img;
        let stride = img.width * img.channels;
        let hw_out = self.out.len() / img.channels;
        let n = self.span.len();
        for (oy, (s, t)) in self.ys.iter().enumerate() {
            let m = &mut self.mid[..n];
            let row = |k: usize| &img.data[(s + k) * stride..][self.span.clone()];
            // The first tap sets the row (no zero-fill pass), the others add to it.
            for (m, &v) in m.iter_mut().zip(row(0)) {
                *m = t[0] * v as f32;
            }
            for (k, &kv) in t.iter().enumerate().skip(1) {
                for (m, &v) in m.iter_mut().zip(row(k)) {
                    *m += kv * v as f32;
                }
            }
            let at = oy * self.out_w;
            let (mid, out) = (&*self.mid, &mut *self.out);
            let (starts, w, taps) = (self.starts, self.weights, self.taps);
            match img.channels {
                3 => columns::<3>(mid, starts, w, taps, out, at, hw_out),
                1 => columns::<1>(mid, starts, w, taps, out, at, hw_out),
                _ => unreachable!("images have 1 or 3 channels"),
            }
        }
    }
}

/// The second pass of [`resize_region8`] for one output row: output column `o` of channel `c`
/// is `sum_j w[o][j] * mid[starts[o] + j * C + c]`, written at `out[c * plane + at + o]`.
#[inline(always)]
fn columns<const C: usize>(
    mid: &[f32],
    starts: &[usize],
    w: &[f32],
    taps: usize,
    out: &mut [f32],
    at: usize,
    plane: usize,
) {
    for (o, (&s, w)) in starts.iter().zip(w.chunks_exact(taps)).enumerate() {
        let src = &mid[s..s + taps * C];
        let mut acc = [0f32; C];
        for (px, &k) in src.chunks_exact(C).zip(w) {
            for c in 0..C {
                acc[c] += k * px[c];
            }
        }
        for (c, v) in acc.into_iter().enumerate() {
            out[c * plane + at + o] = v;
        }
    }
}

/// Crops a random region of random area and aspect ratio and resizes it to `size` x `size`.
/// Works for any input size: a region smaller than `size` is enlarged.
#[derive(Clone, Debug)]
pub struct RandomResizedCrop {
    /// Output side length.
    pub size: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f32, f32),
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    /// The region `(top, left, h, w)` of an `height` x `width` image to crop, drawn as
    /// torchvision's `RandomResizedCrop.get_params` does: up to 10 tries of an area fraction
    /// in `scale` and a log-uniform aspect ratio in `ratio`, then the largest centred crop
    /// within the ratio bounds.
    pub fn sample(&self, height: usize, width: usize, rng: &mut dyn RngCore) -> [f32; 4] {
        let (hh, ww) = (height as f32, width as f32);
        let area = hh * ww;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, lr0, lr1).exp();
            let w = (target * aspect).sqrt().round();
            let h = (target / aspect).sqrt().round();
            if w >= 1.0 && h >= 1.0 && w <= ww && h <= hh {
                let top = (rng.random::<f32>() * (hh - h + 1.0)).floor().min(hh - h);
                let left = (rng.random::<f32>() * (ww - w + 1.0)).floor().min(ww - w);
                return [top, left, h, w];
            }
        }
        let r = ww / hh;
        let (w, h) = if r < self.ratio.0 {
            (ww, (ww / self.ratio.0).round().max(1.0))
        } else if r > self.ratio.1 {
            ((hh * self.ratio.1).round().max(1.0), hh)
        } else {
            (ww, hh)
        };
        [((hh - h) / 2.0).floor(), ((ww - w) / 2.0).floor(), h, w]
    }
}

impl Augmentation for RandomResizedCrop {
    fn apply(&self, img: Image, rng: &mut dyn RngCore) -> Image {
        let [top, left, h, w] = self.sample(img.height, img.width, rng);
        resize_region(&img, top, left, h, w, self.size, self.size)
    }

    fn crop_region(
        &self,
        height: usize,
        width: usize,
        rng: &mut dyn RngCore,
    ) -> Option<([f32; 4], usize)> {
        Some((self.sample(height, width, rng), self.size))
    }
}

/// Resizes the whole image to `size` x `size` (evaluation).
#[derive(Clone, Debug)]
pub struct Resize {
    /// Output side length.
    pub size: usize,
}

impl Augmentation for Resize {
    fn apply(&self, img: Image, _rng: &mut dyn RngCore) -> Image {
        if img.height == self.size && img.width == self.size {
            return img;
        }
        let (h, w) = (img.height as f32, img.width as f32);
        resize_region(&img, 0.0, 0.0, h, w, self.size, self.size)
    }
}

/// Evaluation of photos of any size: the shorter side resized to `size / ratio`, then the
/// centred `size` x `size` square (torchvision's `Resize(256)` + `CenterCrop(224)` is ratio
/// 0.875). An image already `size` x `size` is left as it is.
#[derive(Clone, Debug)]
pub struct ResizeCenterCrop {
    /// Output side length.
    pub size: usize,
    /// Fraction of the resized shorter side kept, in `(0, 1]`.
    pub ratio: f32,
}

impl Augmentation for ResizeCenterCrop {
    fn apply(&self, img: Image, _rng: &mut dyn RngCore) -> Image {
        if img.height == self.size && img.width == self.size {
            return img;
        }
        let (h, w) = (img.height as f32, img.width as f32);
        // The kept square, in source pixels: `ratio` of the shorter side.
        let side = h.min(w) * self.ratio;
        let (top, left) = ((h - side) / 2.0, (w - side) / 2.0);
        resize_region(&img, top, left, side, side, self.size, self.size)
    }
}

/// Mirrors the image left-right with probability `p`.
#[derive(Clone, Debug)]
pub struct HorizontalFlip {
    /// Probability of flipping.
    pub p: f32,
}

impl Augmentation for HorizontalFlip {
    fn apply(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        if coin(rng, self.p) {
            let w = img.width;
            for row in img.data.chunks_mut(w) {
                row.reverse();
            }
        }
        img
    }
}

fn luminance(img: &Image) -> Vec<f32> {
    if img.channels == 3 {
        let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
        r.iter()
            .zip(g)
            .zip(b)
            .map(|((r, g), b)| 0.299 * r + 0.587 * g + 0.114 * b)
            .collect()
    } else {
        img.plane(0).to_vec()
    }
}

/// One colour change of [`ColorJitter`] with its drawn factor.
#[derive(Clone, Copy, Debug)]
enum Colour {
    /// `v * f`.
    Brightness(f32),
    /// `f * v + (1 - f) * mean luminance`.
    Contrast(f32),
    /// `f * v + (1 - f) * the pixel's luminance` (3 channels).
    Saturation(f32),
    /// The hue turned by a fraction of the wheel (3 channels).
    Hue(f32),
}

/// The drawn colour changes applied in order to one image, compiled for the widest vectors
/// the CPU has: each a branch-free loop over the planes (no luminance buffer, no per-pixel
/// branch on the hue sector). Measured on the 96-px loader bench: the colour jitter with
/// per-pixel branches and a luminance buffer per change was 13 % of a batch.
struct Jitter<'a> {
    img: &'a mut Image,
    ops: &'a [Colour],
}

impl selfsup_kernels::WideKernel for Jitter<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let hw = self.img.height * self.img.width;
        let data = &mut self.img.data;
        for &op in self.ops {
            match op {
                Colour::Brightness(f) => {
                    data.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0))
                }
                Colour::Contrast(f) => {
                    let mean = if data.len() == 3 * hw {
                        let (r, rest) = data.split_at(hw);
                        let (g, b) = rest.split_at(hw);
                        r.iter()
                            .zip(g)
                            .zip(b)
                            .map(|((r, g), b)| 0.299 * r + 0.587 * g + 0.114 * b)
                            .sum::<f32>()
                    } else {
                        data.iter().sum::<f32>()
                    } / hw.max(1) as f32;
                    let m = (1.0 - f) * mean;
                    data.iter_mut()
                        .for_each(|v| *v = (f * *v + m).clamp(0.0, 1.0));
                }
                Colour::Saturation(f) => {
                    let (r, rest) = data.split_at_mut(hw);
                    let (g, b) = rest.split_at_mut(hw);
                    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                        let l = (1.0 - f) * (0.299 * *r + 0.587 * *g + 0.114 * *b);
                        *r = (f * *r + l).clamp(0.0, 1.0);
                        *g = (f * *g + l).clamp(0.0, 1.0);
                        *b = (f * *b + l).clamp(0.0, 1.0);
                    }
                }
                Colour::Hue(shift) => {
                    let (r, rest) = data.split_at_mut(hw);
                    let (g, b) = rest.split_at_mut(hw);
                    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                        [*r, *g, *b] = turn_hue([*r, *g, *b], shift);
                    }
                }
            }
        }
    }
}

/// A pixel's hue turned by `shift` (a fraction of the wheel) in HSV, saturation and value
/// kept. Branch-free so the loop vectorizes: the hue from the channel that is the maximum
/// (selects, not branches), then each channel as `v - (v - min) * clamp(min(k, 4 - k), 0, 1)`
/// with `k = (n + 6h) mod 6`, `n` = 5, 3, 1 for red, green, blue (the sector formula of
/// HSV to RGB without the sector switch). Grey pixels (no chroma) stay as they are.
#[inline(always)]
fn turn_hue([r, g, b]: [f32; 3], shift: f32) -> [f32; 3] {
    let max = r.max(g).max(b);
    let d = max - r.min(g).min(b);
    let dd = if d > 0.0 { d } else { 1.0 };
    let h6 = if max == r {
        let x = (g - b) / dd;
        if x < 0.0 { x + 6.0 } else { x }
    } else if max == g {
        (b - r) / dd + 2.0
    } else {
        (r - g) / dd + 4.0
    };
    // The turned hue in [0, 1): `h` is in [-0.5, 1.5), so `h + 1` truncates as the floor.
    let h = h6 / 6.0 + shift;
    let h = h - (((h + 1.0) as i32) as f32 - 1.0);
    let channel = |n: f32| {
        let k = n + h * 6.0;
        let k = if k >= 6.0 { k - 6.0 } else { k };
        max - d * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    if d > 0.0 {
        [channel(5.0), channel(3.0), channel(1.0)]
    } else {
        [r, g, b]
    }
}

/// Random brightness, contrast, saturation and hue, in random order, with probability `p`.
/// Saturation and hue leave single-channel images unchanged.
#[derive(Clone, Debug)]
pub struct ColorJitter {
    /// Probability of jittering at all.
    pub p: f32,
    /// Brightness factor drawn from `[1 - b, 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn from `[1 - c, 1 + c]`.
    pub contrast: f32,
    /// Saturation factor drawn from `[1 - s, 1 + s]`.
    pub saturation: f32,
    /// Hue shift drawn from `[-h, h]` (fraction of the colour wheel, at most 0.5).
    pub hue: f32,
}

impl Augmentation for ColorJitter {
    fn apply(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        if !coin(rng, self.p) {
            return img;
        }
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let mut ops = Vec::with_capacity(4);
        for op in order {
            match op {
                0 if self.brightness > 0.0 => ops.push(Colour::Brightness(uniform(
                    rng,
                    (1.0 - self.brightness).max(0.0),
                    1.0 + self.brightness,
                ))),
                1 if self.contrast > 0.0 => ops.push(Colour::Contrast(uniform(
                    rng,
                    (1.0 - self.contrast).max(0.0),
                    1.0 + self.contrast,
                ))),
                2 if self.saturation > 0.0 && img.channels == 3 => ops.push(Colour::Saturation(
                    uniform(rng, (1.0 - self.saturation).max(0.0), 1.0 + self.saturation),
                )),
                3 if self.hue > 0.0 && img.channels == 3 => {
                    ops.push(Colour::Hue(uniform(rng, -self.hue, self.hue)))
                }
                _ => {}
            }
        }
        selfsup_kernels::run_wide(Jitter {
            img: &mut img,
            ops: &ops,
        });
        img
    }
}

/// Replaces the colours by their luminance (kept as 3 channels) with probability `p`.
#[derive(Clone, Debug)]
pub struct RandomGrayscale {
    /// Probability of graying.
    pub p: f32,
}

impl Augmentation for RandomGrayscale {
    fn apply(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        if coin(rng, self.p) && img.channels == 3 {
            let l = luminance(&img);
            let hw = l.len();
            for c in 0..3 {
                img.data[c * hw..(c + 1) * hw].copy_from_slice(&l);
            }
        }
        img
    }
}

/// Separable Gaussian blur with `sigma` drawn from a range, with probability `p`.
/// The kernel spans about a tenth of the image (at least 3 pixels), as in SimCLR.
#[derive(Clone, Debug)]
pub struct GaussianBlur {
    /// Probability of blurring.
    pub p: f32,
    /// Range of the standard deviation, in pixels.
    pub sigma: (f32, f32),
}

fn reflect(i: isize, n: isize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m >= n { period - m } else { m }) as usize
}

impl Augmentation for GaussianBlur {
    fn apply(&self, img: Image, rng: &mut dyn RngCore) -> Image {
        if !coin(rng, self.p) {
            return img;
        }
        let sigma = uniform(rng, self.sigma.0, self.sigma.1).max(1e-3);
        let side = img.height.min(img.width);
        let radius = (((side as f32 * 0.1).round() as isize) / 2).max(1);
        let k: Vec<f32> = (-radius..=radius)
            .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let sum: f32 = k.iter().sum();
        let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
        let rows = blur_pass(&img, &k, false);
        let mut out = blur_pass(&rows, &k, true);
        // A weighted mean stays within its inputs' range; rounding can step over by an ulp.
        let (lo, hi) = img
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        out.data.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        out
    }
}

/// One separable pass of the kernel `k` (odd length), along columns if `vertical`, else rows,
/// with reflected borders. Rows are padded once and the taps run over contiguous slices, so
/// the inner loops vectorize; the sum runs over the taps in order, as a direct loop would.
fn blur_pass(img: &Image, k: &[f32], vertical: bool) -> Image {
    let radius = (k.len() / 2) as isize;
    let (h, w) = (img.height, img.width);
    let hw = h * w;
    let mut out = Image::zeros(img.channels, h, w);
    for c in 0..img.channels {
        let src = &img.data[c * hw..(c + 1) * hw];
        let dst = &mut out.data[c * hw..(c + 1) * hw];
        if vertical {
            for y in 0..h {
                let row = &mut dst[y * w..(y + 1) * w];
                for (t, &kv) in k.iter().enumerate() {
                    let sy = reflect(y as isize + t as isize - radius, h as isize);
                    for (o, &v) in row.iter_mut().zip(&src[sy * w..(sy + 1) * w]) {
                        *o += kv * v;
                    }
                }
            }
        } else {
            let mut padded = vec![0f32; w + 2 * radius as usize];
            for y in 0..h {
                let line = &src[y * w..(y + 1) * w];
                for (i, p) in padded.iter_mut().enumerate() {
                    *p = line[reflect(i as isize - radius, w as isize)];
                }
                let row = &mut dst[y * w..(y + 1) * w];
                for (t, &kv) in k.iter().enumerate() {
                    for (o, &v) in row.iter_mut().zip(&padded[t..t + w]) {
                        *o += kv * v;
                    }
                }
            }
        }
    }
    out
}

/// Inverts values at or above `threshold` with probability `p`.
#[derive(Clone, Debug)]
pub struct Solarize {
    /// Probability of solarizing.
    pub p: f32,
    /// Values at or above this are inverted.
    pub threshold: f32,
}

impl Augmentation for Solarize {
    fn apply(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        if coin(rng, self.p) {
            img.data.iter_mut().for_each(|v| {
                if *v >= self.threshold {
                    *v = 1.0 - *v
                }
            });
        }
        img
    }
}

/// Subtracts a per-channel mean and divides by a per-channel standard deviation.
#[derive(Clone, Debug)]
pub struct Normalize {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

impl Augmentation for Normalize {
    fn apply(&self, mut img: Image, _rng: &mut dyn RngCore) -> Image {
        let hw = img.height * img.width;
        for c in 0..img.channels {
            let (m, s) = (self.mean[c % self.mean.len()], self.std[c % self.std.len()]);
            img.data[c * hw..(c + 1) * hw]
                .iter_mut()
                .for_each(|v| *v = (*v - m) / s);
        }
        img
    }
}

/// Augmentations applied in order.
#[derive(Default)]
pub struct Pipeline(pub Vec<Box<dyn Augmentation>>);

impl Pipeline {
    /// Appends a step.
    pub fn then(mut self, a: impl Augmentation + 'static) -> Self {
        self.0.push(Box::new(a));
        self
    }
}

impl Pipeline {
    /// The steps after the first, applied to `img`.
    fn apply_rest(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        for a in self.0.iter().skip(1) {
            img = a.apply(img, rng);
        }
        img
    }
}

impl Augmentation for Pipeline {
    fn apply(&self, mut img: Image, rng: &mut dyn RngCore) -> Image {
        for a in &self.0 {
            img = a.apply(img, rng);
        }
        img
    }
}

/// Settings of one view pipeline: the SimCLR augmentations, each with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Output side length of the random resized crop (0: the image's own size).
    pub crop_size: usize,
    /// Smallest crop area, as a fraction of the image.
    pub crop_min_scale: f64,
    /// Largest crop area, as a fraction of the image.
    pub crop_max_scale: f64,
    /// Probability of a horizontal flip.
    pub flip_prob: f64,
    /// Probability of colour jitter.
    pub jitter_prob: f64,
    /// Colour jitter brightness strength.
    pub brightness: f64,
    /// Colour jitter contrast strength.
    pub contrast: f64,
    /// Colour jitter saturation strength.
    pub saturation: f64,
    /// Colour jitter hue strength (at most 0.5).
    pub hue: f64,
    /// Probability of random grayscale.
    pub grayscale_prob: f64,
    /// Probability of Gaussian blur.
    pub blur_prob: f64,
    /// Smallest blur sigma, pixels.
    pub blur_sigma_min: f64,
    /// Largest blur sigma, pixels.
    pub blur_sigma_max: f64,
    /// Probability of solarization.
    pub solarize_prob: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self::simclr()
    }
}

impl AugmentConfig {
    /// SimCLR's random resized crop (smallest area `min_scale`) and flip, and nothing else:
    /// the augmentation of methods that colour changes would hurt or not help (MAE, CLIP,
    /// RotNet, jigsaw).
    pub fn crops_and_flips(min_scale: f64) -> Self {
        Self {
            crop_min_scale: min_scale,
            jitter_prob: 0.0,
            grayscale_prob: 0.0,
            blur_prob: 0.0,
            solarize_prob: 0.0,
            ..Self::simclr()
        }
    }

    /// SimCLR's augmentations as used for small images (solo-learn's CIFAR preset): no blur,
    /// since blurring a 32-pixel image destroys it.
    pub fn simclr() -> Self {
        Self {
            crop_size: 0,
            crop_min_scale: 0.08,
            crop_max_scale: 1.0,
            flip_prob: 0.5,
            jitter_prob: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_prob: 0.2,
            blur_prob: 0.0,
            blur_sigma_min: 0.1,
            blur_sigma_max: 2.0,
            solarize_prob: 0.0,
        }
    }

    /// Checks ranges, naming fields under `prefix` (for example `augment`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let f = |n: &str| format!("{prefix}.{n}");
        for (name, p) in [
            ("flip_prob", self.flip_prob),
            ("jitter_prob", self.jitter_prob),
            ("grayscale_prob", self.grayscale_prob),
            ("blur_prob", self.blur_prob),
            ("solarize_prob", self.solarize_prob),
        ] {
            ensure((0.0..=1.0).contains(&p), &f(name), || {
                format!("{p} is a probability: use a value in [0, 1]")
            })?;
        }
        ensure(
            0.0 < self.crop_min_scale
                && self.crop_min_scale <= self.crop_max_scale
                && self.crop_max_scale <= 1.0,
            &f("crop_min_scale"),
            || {
                format!(
                    "need 0 < crop_min_scale ({}) <= crop_max_scale ({}) <= 1",
                    self.crop_min_scale, self.crop_max_scale
                )
            },
        )?;
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            ensure(v.is_finite() && v >= 0.0, &f(name), || {
                format!("{v} must be >= 0")
            })?;
        }
        ensure((0.0..=0.5).contains(&self.hue), &f("hue"), || {
            format!("{} must be in [0, 0.5]", self.hue)
        })?;
        ensure(
            0.0 < self.blur_sigma_min && self.blur_sigma_min <= self.blur_sigma_max,
            &f("blur_sigma_min"),
            || "need 0 < blur_sigma_min <= blur_sigma_max".into(),
        )
    }

    /// The pipeline for images of side `image_size`, ending with normalization.
    pub fn pipeline(&self, image_size: usize, mean: Vec<f32>, std: Vec<f32>) -> Pipeline {
        let size = if self.crop_size == 0 {
            image_size
        } else {
            self.crop_size
        };
        Pipeline::default()
            .then(RandomResizedCrop {
                size,
                scale: (self.crop_min_scale as f32, self.crop_max_scale as f32),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            })
            .then(HorizontalFlip {
                p: self.flip_prob as f32,
            })
            .then(ColorJitter {
                p: self.jitter_prob as f32,
                brightness: self.brightness as f32,
                contrast: self.contrast as f32,
                saturation: self.saturation as f32,
                hue: self.hue as f32,
            })
            .then(RandomGrayscale {
                p: self.grayscale_prob as f32,
            })
            .then(GaussianBlur {
                p: self.blur_prob as f32,
                sigma: (self.blur_sigma_min as f32, self.blur_sigma_max as f32),
            })
            .then(Solarize {
                p: self.solarize_prob as f32,
                threshold: 0.5,
            })
            .then(Normalize { mean, std })
    }
}

/// The evaluation transform: resize to `size` (if needed), then normalize. With
/// `center_crop`, photos of any size are resized by their shorter side and centre-cropped
/// ([`ResizeCenterCrop`]); without, the whole image is resized to the square (sets decoded to
/// one size at load, as IDX and CIFAR).
pub fn eval_pipeline(
    size: usize,
    center_crop: Option<f32>,
    mean: Vec<f32>,
    std: Vec<f32>,
) -> Pipeline {
    let p = match center_crop {
        Some(ratio) => Pipeline::default().then(ResizeCenterCrop { size, ratio }),
        None => Pipeline::default().then(Resize { size }),
    };
    p.then(Normalize { mean, std })
}

/// Views from several pipelines: `count` views from each, in order (2 x global then K x local
/// for DINO; 2 of one pipeline for SimCLR).
#[derive(Default)]
pub struct MultiView {
    groups: Vec<(Pipeline, usize)>,
}

impl MultiView {
    /// Adds `count` views drawn through `pipeline`.
    pub fn with(mut self, pipeline: Pipeline, count: usize) -> Self {
        self.groups.push((pipeline, count));
        self
    }
}

impl ViewGenerator for MultiView {
    fn views(&self, image: &Image, rng: &mut dyn RngCore) -> Vec<Image> {
        let mut out = Vec::with_capacity(self.num_views());
        for (p, n) in &self.groups {
            for _ in 0..*n {
                out.push(p.apply(image.clone(), rng));
            }
        }
        out
    }

    fn num_views(&self) -> usize {
        self.groups.iter().map(|(_, n)| n).sum()
    }

    /// Every view's crop is drawn first (in view order), then the image is decoded once at
    /// the smallest scale that still gives each crop at least its output side in pixels
    /// (JPEG's DCT scaling: a 500x375 photo cropped to 96 px is often decoded at 1/2 or 1/4),
    /// then each view is cut from it and goes through the rest of its pipeline. The draws
    /// are in another order than [`ViewGenerator::views`], so a streamed image's views are
    /// not those of the same image held in memory; both are seeded the same way.
    fn views_of(
        &self,
        dims: (usize, usize),
        load: &mut dyn FnMut(u32) -> Result<Image8>,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<Image>> {
        let (h, w) = dims;
        let mut plans = Vec::with_capacity(self.num_views());
        for (p, n) in &self.groups {
            for _ in 0..*n {
                let first = p.0.first().and_then(|a| a.crop_region(h, w, rng));
                plans.push((p, first));
            }
        }
        // The largest power-of-two reduction every crop allows (1 when a view is no crop).
        let reduce = plans
            .iter()
            .map(|(_, c)| match c {
                Some(([_, _, rh, rw], side)) => {
                    let spare = (rh.min(*rw) / *side as f32).max(1.0);
                    [8u32, 4, 2, 1]
                        .into_iter()
                        .find(|&k| k as f32 <= spare)
                        .unwrap_or(1)
                }
                None => 1,
            })
            .min()
            .unwrap_or(1);
        let img = load(reduce)?;
        let (fy, fx) = (img.height as f32 / h as f32, img.width as f32 / w as f32);
        let mut whole = None;
        Ok(plans
            .into_iter()
            .map(|(p, crop)| match crop {
                Some(([t, l, rh, rw], side)) => {
                    let v = resize_region8(&img, t * fy, l * fx, rh * fy, rw * fx, side, side);
                    p.apply_rest(v, rng)
                }
                None => p.apply(whole.get_or_insert_with(|| img.to_image()).clone(), rng),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(s: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(s)
    }

    fn ramp(c: usize, h: usize, w: usize) -> Image {
        let n = c * h * w;
        Image::new(c, h, w, (0..n).map(|i| i as f32 / n as f32).collect())
    }

    fn in_unit(img: &Image) -> bool {
        img.data.iter().all(|v| (0.0..=1.0).contains(v))
    }

    #[test]
    fn crop_shapes_any_input_size() {
        let crop = RandomResizedCrop {
            size: 16,
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        };
        for (h, w) in [(1, 1), (3, 50), (28, 28), (40, 7)] {
            let out = crop.apply(ramp(3, h, w), &mut rng(1));
            assert_eq!((out.channels, out.height, out.width), (3, 16, 16));
            assert!(in_unit(&out));
        }
    }

    #[test]
    fn full_crop_of_same_size_is_identity() {
        let img = ramp(1, 8, 8);
        let out = resize_region(&img, 0.0, 0.0, 8.0, 8.0, 8, 8);
        assert_eq!(out, img);
    }

    #[test]
    fn flip_mirrors_rows() {
        let img = Image::new(1, 1, 3, vec![0.1, 0.2, 0.3]);
        let out = HorizontalFlip { p: 1.0 }.apply(img.clone(), &mut rng(0));
        assert_eq!(out.data, vec![0.3, 0.2, 0.1]);
        assert_eq!(
            HorizontalFlip { p: 0.0 }.apply(img.clone(), &mut rng(0)),
            img
        );
    }

    #[test]
    fn jitter_gray_blur_solarize_keep_range_and_shape() {
        let img = ramp(3, 12, 12);
        let augs: Vec<Box<dyn Augmentation>> = vec![
            Box::new(ColorJitter {
                p: 1.0,
                brightness: 0.8,
                contrast: 0.8,
                saturation: 0.8,
                hue: 0.5,
            }),
            Box::new(RandomGrayscale { p: 1.0 }),
            Box::new(GaussianBlur {
                p: 1.0,
                sigma: (0.1, 2.0),
            }),
            Box::new(Solarize {
                p: 1.0,
                threshold: 0.5,
            }),
        ];
        for a in &augs {
            for s in 0..5 {
                let out = a.apply(img.clone(), &mut rng(s));
                assert_eq!((out.channels, out.height, out.width), (3, 12, 12));
                assert!(in_unit(&out));
            }
        }
        let g = RandomGrayscale { p: 1.0 }.apply(img.clone(), &mut rng(0));
        assert_eq!(g.plane(0), g.plane(2));
        let gray1 = ColorJitter {
            p: 1.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.9,
            hue: 0.4,
        }
        .apply(ramp(1, 4, 4), &mut rng(0));
        assert_eq!(gray1, ramp(1, 4, 4));
    }

    #[test]
    fn hue_shift_of_full_turn_is_identity() {
        let img = Image::new(3, 1, 2, vec![0.9, 0.1, 0.2, 0.5, 0.3, 0.8]);
        for (s, want) in [(1.0, &img), (0.0, &img)] {
            let mut turned = img.clone();
            selfsup_kernels::run_wide(Jitter {
                img: &mut turned,
                ops: &[Colour::Hue(s)],
            });
            for (a, b) in turned.data.iter().zip(&want.data) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn the_branch_free_hue_turn_equals_the_sector_formula() {
        let img = noise_image(3, 16, 16, 5);
        let mut grey = img.clone();
        grey.data[..16].fill(0.25);
        grey.data[256..272].fill(0.25);
        grey.data[512..528].fill(0.25);
        for shift in [-0.5, -0.3, -0.01, 0.0, 0.07, 0.25, 0.49] {
            for img in [&img, &grey] {
                let (mut a, mut b) = (img.clone(), img.clone());
                selfsup_kernels::run_wide(Jitter {
                    img: &mut a,
                    ops: &[Colour::Hue(shift)],
                });
                shift_hue(&mut b, shift);
                for (x, y) in a.data.iter().zip(&b.data) {
                    assert!((x - y).abs() < 1e-5, "shift {shift}: {x} vs {y}");
                }
            }
        }
    }

    /// The hue turn by HSV's six sectors, as written in textbooks: what [`turn_hue`] must equal.
    fn shift_hue(img: &mut Image, shift: f32) {
        let hw = img.height * img.width;
        for p in 0..hw {
            let (r, g, b) = (img.data[p], img.data[hw + p], img.data[2 * hw + p]);
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            let d = max - min;
            if d <= 0.0 {
                continue;
            }
            let mut h = if max == r {
                ((g - b) / d).rem_euclid(6.0)
            } else if max == g {
                (b - r) / d + 2.0
            } else {
                (r - g) / d + 4.0
            } / 6.0;
            h = (h + shift).rem_euclid(1.0);
            let (s, v) = (d / max, max);
            let hh = h * 6.0;
            let i = hh.floor();
            let f = hh - i;
            let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
            let (r, g, b) = match i as i32 % 6 {
                0 => (v, t, pp),
                1 => (q, v, pp),
                2 => (pp, v, t),
                3 => (pp, q, v),
                4 => (t, pp, v),
                _ => (v, pp, q),
            };
            img.data[p] = r;
            img.data[hw + p] = g;
            img.data[2 * hw + p] = b;
        }
    }

    #[test]
    fn solarize_and_normalize_values() {
        let img = Image::new(1, 1, 3, vec![0.2, 0.5, 0.9]);
        let s = Solarize {
            p: 1.0,
            threshold: 0.5,
        }
        .apply(img, &mut rng(0));
        assert_eq!(s.data, vec![0.2, 0.5, 0.100000024]);
        let n = Normalize {
            mean: vec![0.5],
            std: vec![0.25],
        }
        .apply(s, &mut rng(0));
        assert!((n.data[0] + 1.2).abs() < 1e-6);
    }

    #[test]
    fn blur_of_constant_is_constant() {
        let img = Image::new(1, 10, 10, vec![0.7; 100]);
        let out = GaussianBlur {
            p: 1.0,
            sigma: (1.0, 1.0),
        }
        .apply(img, &mut rng(0));
        assert!(out.data.iter().all(|v| (v - 0.7).abs() < 1e-5));
    }

    #[test]
    fn simclr_views_are_seeded_and_distinct() {
        let views = MultiView::default().with(
            AugmentConfig::simclr().pipeline(28, vec![0.5], vec![0.5]),
            2,
        );
        let img = ramp(1, 28, 28);
        let a = views.views(&img, &mut rng(7));
        let b = views.views(&img, &mut rng(7));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
        assert_eq!((a[0].height, a[0].width), (28, 28));
    }

    #[test]
    fn bad_probability_names_field() {
        let c = AugmentConfig {
            flip_prob: 1.5,
            ..AugmentConfig::simclr()
        };
        assert!(
            c.validate("augment")
                .unwrap_err()
                .to_string()
                .contains("augment.flip_prob")
        );
    }

    fn noise_image(c: usize, h: usize, w: usize, seed_value: u64) -> Image {
        let mut rng = selfsup_core::seed::rng(seed_value, 9, 0, 0);
        Image::new(
            c,
            h,
            w,
            (0..c * h * w).map(|_| rng.random::<f32>()).collect(),
        )
    }

    /// The direct per-pixel formulas the fast paths must reproduce bit for bit.
    fn naive_blur(img: &Image, k: &[f32], vertical: bool) -> Image {
        let r = (k.len() / 2) as isize;
        let mut out = img.clone();
        for c in 0..img.channels {
            for y in 0..img.height {
                for x in 0..img.width {
                    let mut acc = 0.0;
                    for (t, kv) in k.iter().enumerate() {
                        let d = t as isize - r;
                        acc += kv
                            * if vertical {
                                img.get(c, reflect(y as isize + d, img.height as isize), x)
                            } else {
                                img.get(c, y, reflect(x as isize + d, img.width as isize))
                            };
                    }
                    let i = out.idx(c, y, x);
                    out.data[i] = acc;
                }
            }
        }
        out
    }

    fn naive_resize(
        img: &Image,
        top: f32,
        left: f32,
        h: f32,
        w: f32,
        oh: usize,
        ow: usize,
    ) -> Image {
        let mut out = Image::zeros(img.channels, oh, ow);
        let (sy, sx) = (h / oh as f32, w / ow as f32);
        let (ih, iw) = (img.height as isize, img.width as isize);
        for oy in 0..oh {
            let y = (top + (oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (ih - 1) as f32);
            let y0 = y.floor() as isize;
            let y1 = (y0 + 1).min(ih - 1);
            let fy = y - y0 as f32;
            for ox in 0..ow {
                let x = (left + (ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (iw - 1) as f32);
                let x0 = x.floor() as isize;
                let x1 = (x0 + 1).min(iw - 1);
                let fx = x - x0 as f32;
                for c in 0..img.channels {
                    let g = |yy: isize, xx: isize| img.get(c, yy as usize, xx as usize);
                    let t = g(y0, x0) * (1.0 - fx) + g(y0, x1) * fx;
                    let b = g(y1, x0) * (1.0 - fx) + g(y1, x1) * fx;
                    let i = out.idx(c, oy, ox);
                    out.data[i] = t * (1.0 - fy) + b * fy;
                }
            }
        }
        out
    }

    #[test]
    fn fast_blur_and_resize_match_the_direct_formulas() {
        for (c, h, w) in [(3, 17, 23), (1, 5, 4), (3, 1, 9), (1, 40, 2)] {
            let img = noise_image(c, h, w, (c * h * w) as u64);
            for k in [
                vec![1.0],
                vec![0.25, 0.5, 0.25],
                vec![0.1, 0.2, 0.4, 0.2, 0.1],
            ] {
                for vertical in [false, true] {
                    assert_eq!(
                        blur_pass(&img, &k, vertical).data,
                        naive_blur(&img, &k, vertical).data,
                        "{c}x{h}x{w} k={k:?} vertical={vertical}"
                    );
                }
            }
            // Enlarging regions: plain bilinear.
            for (top, left, rh, rw, oh, ow) in [
                (0.0, 0.0, h as f32, w as f32, 2 * h, 2 * w + 1),
                (
                    0.5,
                    1.0,
                    (h as f32 / 2.0).max(1.0),
                    (w as f32 / 3.0).max(1.0),
                    h.max(2),
                    w.max(3),
                ),
                (0.0, 0.0, 1.0, 1.0, 3, 3),
            ] {
                assert_eq!(
                    resize_region(&img, top, left, rh, rw, oh, ow).data,
                    naive_resize(&img, top, left, rh, rw, oh, ow).data
                );
            }
        }
    }

    /// Shrinking averages over the shrink factor: a constant stays constant, a one-pixel
    /// checkerboard halved becomes flat grey (plain bilinear would keep picking one colour),
    /// and each output pixel of a 2x shrink is a weighted mean of its 4x4 neighbourhood.
    #[test]
    fn shrinking_is_antialiased() {
        let flat = Image::new(1, 16, 24, vec![0.3; 16 * 24]);
        let out = resize_region(&flat, 0.0, 0.0, 16.0, 24.0, 5, 7);
        assert!(out.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let checker = Image::new(
            1,
            32,
            32,
            (0..1024).map(|i| ((i / 32 + i % 32) % 2) as f32).collect(),
        );
        let out = resize_region(&checker, 0.0, 0.0, 32.0, 32.0, 16, 16);
        for v in &out.data[16 * 2..16 * 14] {
            assert!((v - 0.5).abs() < 0.02, "{v}");
        }
        let noise = noise_image(3, 20, 30, 5);
        let out = resize_region(&noise, 0.0, 0.0, 20.0, 30.0, 10, 15);
        assert_eq!((out.height, out.width), (10, 15));
        assert!(in_unit(&out));
    }

    /// Views of an image not decoded yet: crops drawn on its full size, one decode at the
    /// largest reduction every crop allows, views of the promised shape; seeded.
    #[test]
    fn views_of_a_large_image_ask_for_a_reduced_decode() {
        let views = MultiView::default().with(
            AugmentConfig {
                crop_min_scale: 0.5,
                ..AugmentConfig::simclr()
            }
            .pipeline(24, vec![0.5; 3], vec![0.5; 3]),
            2,
        );
        let full = noise_image(3, 400, 600, 1);
        let run = |seed| {
            let mut asked = Vec::new();
            let out = views
                .views_of(
                    (400, 600),
                    &mut |k| {
                        asked.push(k);
                        let (h, w) = (400usize.div_ceil(k as usize), 600usize.div_ceil(k as usize));
                        Ok(to8(&resize_region(&full, 0.0, 0.0, 400.0, 600.0, h, w)))
                    },
                    &mut rng(seed),
                )
                .unwrap();
            (out, asked)
        };
        let (a, asked) = run(3);
        assert_eq!(asked, [8], "crops of at least 280 px for 24 px views");
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].channels, a[0].height, a[0].width), (3, 24, 24));
        assert_eq!(a, run(3).0);
        assert_ne!(a, run(4).0);
        // A crop no larger than its output asks for the full size.
        let (_, asked) = {
            let mut asked = Vec::new();
            views
                .views_of(
                    (30, 30),
                    &mut |k| {
                        asked.push(k);
                        Ok(to8(&noise_image(3, 30, 30, 2)))
                    },
                    &mut rng(0),
                )
                .unwrap();
            ((), asked)
        };
        assert_eq!(asked, [1]);
    }

    /// `img` rounded to 8 bits, interleaved.
    fn to8(img: &Image) -> Image8 {
        let (c, hw) = (img.channels, img.height * img.width);
        let px = (0..c * hw)
            .map(|i| (img.data[(i % c) * hw + i / c] * 255.0).round() as u8)
            .collect();
        Image8::new(c, img.height, img.width, px)
    }

    #[test]
    fn an_8_bit_cut_equals_the_float_resize_of_the_same_pixels() {
        // Shrinking (antialiased), enlarging (bilinear), a region over the edge, one channel.
        for (c, top, left, h, w, oh, ow) in [
            (3, 3.0, 5.0, 61.0, 47.0, 16, 12),
            (3, 0.0, 0.0, 7.0, 9.0, 20, 31),
            (3, 30.0, 40.0, 40.0, 30.0, 24, 24),
            (1, 10.5, 2.25, 33.0, 50.0, 9, 40),
        ] {
            let img8 = to8(&noise_image(c, 64, 56, 7));
            let f = img8.to_image();
            let a = resize_region8(&img8, top, left, h, w, oh, ow);
            let b = resize_region(&f, top, left, h, w, oh, ow);
            assert_eq!((a.channels, a.height, a.width), (c, oh, ow));
            for (x, y) in a.data.iter().zip(&b.data) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y} at {top},{left} {h}x{w}");
            }
        }
    }
}
