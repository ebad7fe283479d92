//! MAE's light decoder: the encoder's visible tokens projected to a narrower width, a learned
//! mask token in every hidden place, its own fixed position embeddings, a few transformer
//! blocks, and a linear map to each patch's pixels.

use crate::masking::gather_tokens;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use selfsup_encoders::vit::{LinearInit, TokenNorm, TransformerBlock, sincos_position_embedding};
use selfsup_kernels::linear;

/// The decoder.
#[derive(Module, Debug)]
pub struct MaeDecoder {
    embed: Linear,
    mask_token: Param<Tensor<3>>,
    blocks: Vec<TransformerBlock>,
    norm: TokenNorm,
    pred: Linear,
    grid: usize,
    dim: usize,
}

impl MaeDecoder {
    /// A decoder from encoder width `encoder_dim` to patches of `patch_values` values on a
    /// `grid x grid` patch grid; `dim` wide (a multiple of 4), `depth` blocks of `heads` heads.
    pub fn new(
        encoder_dim: usize,
        patch_values: usize,
        grid: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        device: &Device,
    ) -> Self {
        Self {
            embed: LinearInit::Xavier.linear(encoder_dim, dim, device),
            mask_token: Param::from_tensor(Tensor::random(
                [1, 1, dim],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            blocks: (0..depth)
                .map(|_| TransformerBlock::new(dim, heads, 4 * dim, LinearInit::Xavier, device))
                .collect(),
            norm: TokenNorm::new(dim, device),
            pred: LinearInit::Xavier.linear(dim, patch_values, device),
            grid,
            dim,
        }
    }

    /// Predicted pixels `[N, L, patch_values]` for every patch, from the encoder's outputs
    /// `[N, 1 + keep, encoder_dim]` (class token first, kept patches in shuffled order) and the
    /// masking's `restore` order `[N, L]`.
    pub fn forward(&self, latent: Tensor<3>, restore: Tensor<2, Int>) -> Tensor<3> {
        let device = latent.device();
        let x = linear(&self.embed, latent);
        let [n, t, d] = x.dims();
        let l = self.grid * self.grid;
        let cls = x.clone().slice([0..n, 0..1, 0..d]);
        let visible = x.slice([0..n, 1..t, 0..d]);
        let masks = self.mask_token.val().expand([n, l + 1 - t, d]);
        // Kept tokens then mask tokens, in shuffled order; `restore` puts them in patch order.
        let patches = gather_tokens(Tensor::cat(vec![visible, masks], 1), restore);
        let pos = Tensor::<3>::from_data(
            TensorData::new(
                sincos_position_embedding(self.grid, self.dim),
                [1, l + 1, self.dim],
            ),
            &device,
        )
        .cast(cls.dtype());
        let mut x = Tensor::cat(vec![cls, patches], 1) + pos;
        for block in &self.blocks {
            x = block.forward(x).0;
        }
        let out = linear(&self.pred, self.norm.forward(x));
        let values = out.dims()[2];
        out.slice([0..n, 1..l + 1, 0..values])
    }
}
