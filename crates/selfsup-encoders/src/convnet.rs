//! A small ConvNet for quick CPU runs: four 3x3 conv + BatchNorm + ReLU layers.

use crate::resnet::{ConvBn, global_avg_pool};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_core::Encoder;

/// Channels `c -> w -> 2w -> 4w -> 4w`, strides 1, 2, 2, 2, then global average pooling:
/// `4w` features. With `w = 32` this is the net measured in `shared/notes/cpu-performance.md`.
#[derive(Module, Debug)]
pub struct ConvNet {
    layers: Vec<ConvBn>,
    dim: usize,
}

impl ConvNet {
    /// A ConvNet of base width `width` for `channels`-channel images.
    pub fn new(channels: usize, width: usize, device: &Device) -> Self {
        let chans = [channels, width, 2 * width, 4 * width, 4 * width];
        let strides = [1, 2, 2, 2];
        let layers = (0..4)
            .map(|i| ConvBn::new(chans[i], chans[i + 1], 3, strides[i], device))
            .collect();
        Self {
            layers,
            dim: 4 * width,
        }
    }
}

impl ConvNet {
    fn last_map(&self, images: Tensor<4>) -> Tensor<4> {
        self.layers.iter().fold(images, |x, l| l.forward_relu(x))
    }
}

impl Encoder for ConvNet {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        global_avg_pool(self.last_map(images))
    }

    fn output_dim(&self) -> usize {
        self.dim
    }

    fn feature_map(&self, images: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.last_map(images))
    }
}
