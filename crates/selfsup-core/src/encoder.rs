//! The [`Encoder`] trait: images in, features out.

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

/// A backbone that turns a batch of images `[N, C, H, W]` into features.
///
/// Every method is written against this trait, so any backbone (ResNet, ViT, a user's own)
/// serves any method whose needs it meets.
pub trait Encoder: Module + ModuleDisplay {
    /// Pooled features `[N, output_dim()]`: what kNN, linear probes and projection heads use.
    fn features(&self, images: Tensor<4>) -> Tensor<2>;

    /// Width of the pooled features.
    fn output_dim(&self) -> usize;

    /// Token features `[N, T, D]` for transformer encoders (MAE, DINO attention);
    /// `None` for convolutional backbones.
    fn tokens(&self, _images: Tensor<4>) -> Option<Tensor<3>> {
        None
    }

    /// The last feature map `[N, C, h, w]`, before pooling (a ConvNet's last block, a ViT's
    /// patch tokens on their grid): for evaluations that keep some of its spatial layout
    /// (pooled to a grid of cells rather than one average). `None` for encoders without one.
    fn feature_map(&self, _images: Tensor<4>) -> Option<Tensor<4>> {
        None
    }
}
