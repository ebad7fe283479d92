//! The [`Encoder`] trait: images in, features out.

use burn::module::{Module, ModuleDisplay, ParamId};
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

    /// Residual blocks that fine-tuning can drop (stochastic depth) and decay the learning
    /// rate across (layer-wise decay): a ViT's transformer blocks. 0 for encoders without
    /// such a stack, which then take neither.
    fn blocks(&self) -> usize {
        0
    }

    /// Features for fine-tuning (MAE's protocol): [`Encoder::features`], or with
    /// `global_pool` the mean of the last block's patch tokens before the final norm (the
    /// classifier normalizes them with its own `fc_norm`). `keep[b]` `[N]` multiplies block
    /// `b`'s residual branches sample by sample (stochastic depth: 0 drops the branch,
    /// `1 / (1 - p)` keeps it); empty in evaluation. Default: [`Encoder::features`].
    fn finetune_features(
        &self,
        images: Tensor<4>,
        _global_pool: bool,
        _keep: &[Tensor<1>],
    ) -> Tensor<2> {
        self.features(images)
    }

    /// For layer-wise learning-rate decay: each parameter's layer (0 for the embeddings, `b +
    /// 1` for block `b`; a parameter not listed is in the top layer, `blocks() + 1`, with the
    /// classifier's head) and whether weight decay applies to it (MAE's recipe exempts the
    /// class token and the position embeddings). Default: none listed.
    fn param_layers(&self) -> Vec<(ParamId, usize, bool)> {
        Vec::new()
    }
}
