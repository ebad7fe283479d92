//! Images on the CPU and the [`Augmentation`] / [`ViewGenerator`] traits.

use rand::RngCore;

/// One image on the CPU: channel-major (`[C, H, W]`) `f32` values, in `[0, 1]` until normalized.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Number of channels (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `channels * height * width` values, channel-major.
    pub data: Vec<f32>,
}

impl Image {
    /// A new image; panics only on a programming error (length mismatch).
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), channels * height * width, "image data length");
        Self {
            channels,
            height,
            width,
            data,
        }
    }

    /// An image of zeros.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Self::new(
            channels,
            height,
            width,
            vec![0.0; channels * height * width],
        )
    }

    /// From 8-bit channel-major pixels, scaled to `[0, 1]`.
    pub fn from_u8(channels: usize, height: usize, width: usize, bytes: &[u8]) -> Self {
        Self::new(
            channels,
            height,
            width,
            bytes.iter().map(|&b| b as f32 / 255.0).collect(),
        )
    }

    /// Index of pixel `(c, y, x)` in `data`.
    #[inline]
    pub fn idx(&self, c: usize, y: usize, x: usize) -> usize {
        (c * self.height + y) * self.width + x
    }

    /// Value of pixel `(c, y, x)`.
    #[inline]
    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[self.idx(c, y, x)]
    }

    /// One channel's plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// An image as a decoder writes it: 8-bit samples, pixel-interleaved (`[H, W, C]`). Streamed
/// originals stay in this form until their crops are cut, so only the pixels a view needs
/// become floats (measured on the 96-px loader bench: converting a whole 500x375 photo to
/// floats first was 11 % of a batch).
#[derive(Clone, Debug, PartialEq)]
pub struct Image8 {
    /// Number of channels (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `height * width * channels` samples, row by row, a pixel's channels together.
    pub data: Vec<u8>,
}

impl Image8 {
    /// A new image; panics only on a programming error (length mismatch).
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), channels * height * width, "image data length");
        Self {
            channels,
            height,
            width,
            data,
        }
    }

    /// As channel-major floats in `[0, 1]`.
    pub fn to_image(&self) -> Image {
        let c = self.channels;
        // One pass per plane, each written in order: no zero-fill, no bounds checks (measured:
        // an indexed single pass was 9 % of a 96-px loader batch).
        let mut out = Vec::with_capacity(self.data.len());
        for k in 0..c {
            out.extend(self.data.chunks_exact(c).map(|px| px[k] as f32 / 255.0));
        }
        Image::new(c, self.height, self.width, out)
    }
}

/// A random transformation of one image, drawing its randomness from `rng` only,
/// so a seeded `rng` reproduces it.
pub trait Augmentation: Send + Sync {
    /// Transforms `image`.
    fn apply(&self, image: Image, rng: &mut dyn RngCore) -> Image;

    /// For a crop: the region `[top, left, height, width]` of a `height` x `width` image it
    /// cuts and the side it resizes to, drawn from `rng` exactly as [`Augmentation::apply`]
    /// draws it, so a streamed image can be decoded at the resolution its crops need before
    /// they are cut. `None` (drawing nothing) for anything else, the default.
    fn crop_region(
        &self,
        _height: usize,
        _width: usize,
        _rng: &mut dyn RngCore,
    ) -> Option<([f32; 4], usize)> {
        None
    }
}

/// Turns one image into the views a method trains on (2 for SimCLR, 2 global + K local for
/// DINO). Every view of a given index has the same shape.
pub trait ViewGenerator: Send + Sync {
    /// The views of `image`, in a fixed order.
    fn views(&self, image: &Image, rng: &mut dyn RngCore) -> Vec<Image>;

    /// How many views each image gives.
    fn num_views(&self) -> usize;

    /// The views of an image not decoded yet, `height` x `width` (`dims`): `load(k)` decodes
    /// it at about `1/k` of its size (`k` of 1, 2, 4 or 8; a decoder that cannot reduce gives
    /// the full size). The default decodes it whole and calls [`ViewGenerator::views`]; a
    /// generator whose views are crops can ask for less.
    fn views_of(
        &self,
        dims: (usize, usize),
        load: &mut dyn FnMut(u32) -> crate::Result<Image8>,
        rng: &mut dyn RngCore,
    ) -> crate::Result<Vec<Image>> {
        let _ = dims;
        let image = load(1)?.to_image();
        Ok(self.views(&image, rng))
    }
}
