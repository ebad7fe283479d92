//! A text transformer for CLIP-style training (Radford et al., "Learning Transferable Visual
//! Models From Natural Language Supervision"): token and learned position embeddings, pre-norm
//! blocks with a causal mask (each token sees only the ones before it), a final layer norm,
//! and the output at the end-of-text token standing for the whole caption.

use crate::vit::{LinearInit, TokenNorm, TransformerBlock};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Distribution, Int, Tensor};
use selfsup_core::Result;
use selfsup_core::config::ensure;
use serde::{Deserialize, Serialize};

/// Text transformer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// Tokens per caption, start and end markers included (CLIP: 77).
    pub context: usize,
    /// Token width (CLIP ViT-B: 512).
    pub dim: usize,
    /// Blocks (CLIP: 12).
    pub depth: usize,
    /// Attention heads; `dim` must be a multiple (CLIP: 8).
    pub heads: usize,
    /// MLP width as a multiple of `dim`.
    pub mlp_ratio: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            context: 32,
            dim: 128,
            depth: 4,
            heads: 4,
            mlp_ratio: 4.0,
        }
    }
}

impl TextConfig {
    /// Checks the shape, naming the field under `prefix` (such as `clip.text`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let f = |name: &str| format!("{prefix}.{name}");
        ensure(self.context >= 2, &f("context"), || {
            format!(
                "{} must hold at least the start and end markers (2)",
                self.context
            )
        })?;
        ensure(self.depth >= 1, &f("depth"), || "must be at least 1".into())?;
        ensure(self.heads >= 1, &f("heads"), || "must be at least 1".into())?;
        ensure(
            self.dim >= 1 && self.dim.is_multiple_of(self.heads),
            &f("dim"),
            || {
                format!(
                    "{} must be a positive multiple of heads ({})",
                    self.dim, self.heads
                )
            },
        )?;
        ensure(
            self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0,
            &f("mlp_ratio"),
            || "must be a positive number".into(),
        )
    }

    /// Builds the transformer for `vocab_size` token ids on `device`, or says which setting is
    /// wrong.
    pub fn init(&self, vocab_size: usize, device: &Device) -> Result<TextTransformer> {
        self.validate("text")?;
        ensure(vocab_size >= 1, "text.vocab_size", || {
            "must be at least 1".into()
        })?;
        let hidden = ((self.dim as f64 * self.mlp_ratio).round() as usize).max(1);
        Ok(TextTransformer {
            token: EmbeddingConfig::new(vocab_size, self.dim)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            position: Param::from_tensor(Tensor::random(
                [self.context, self.dim],
                Distribution::Normal(0.0, 0.01),
                device,
            )),
            blocks: (0..self.depth)
                .map(|_| {
                    TransformerBlock::new(self.dim, self.heads, hidden, LinearInit::Default, device)
                })
                .collect(),
            norm: TokenNorm::new(self.dim, device),
            context: self.context,
            dim: self.dim,
        })
    }
}

/// The text tower: `[N, context]` token ids to `[N, dim]` caption features.
#[derive(Module, Debug)]
pub struct TextTransformer {
    token: Embedding,
    position: Param<Tensor<2>>,
    blocks: Vec<TransformerBlock>,
    norm: TokenNorm,
    context: usize,
    dim: usize,
}

impl TextTransformer {
    /// Width of the caption features.
    pub fn output_dim(&self) -> usize {
        self.dim
    }

    /// Tokens per caption.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Every token's output `[N, T, dim]` (normalized) for ids `[N, T]`, `T <= context`.
    pub fn tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = ids.dims();
        assert!(
            t <= self.context,
            "text: {t} tokens per caption, the model takes at most {}",
            self.context
        );
        let mut x = self.token.forward(ids)
            + self
                .position
                .val()
                .slice([0..t, 0..self.dim])
                .unsqueeze_dim::<3>(0);
        for block in &self.blocks {
            x = block.forward_masked(x, true).0;
        }
        self.norm.forward(x)
    }

    /// Caption features `[N, dim]`: the output at each caption's end-of-text position `eot`
    /// (`[N]`), which the causal mask lets see the whole caption.
    pub fn forward(&self, ids: Tensor<2, Int>, eot: Tensor<1, Int>) -> Tensor<2> {
        let out = self.tokens(ids);
        let [n, t, d] = out.dims();
        let rows = Tensor::<1, Int>::arange(0..n as i64, &out.device()).mul_scalar(t as i64) + eot;
        out.reshape([n * t, d]).select(0, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn ids(rows: &[&[i64]]) -> Tensor<2, Int> {
        let t = rows[0].len();
        let v: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(v, [rows.len(), t]), &Device::flex())
    }

    fn small() -> TextTransformer {
        TextConfig {
            context: 6,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_ratio: 2.0,
        }
        .init(20, &Device::flex())
        .unwrap()
    }

    #[test]
    fn pools_at_the_end_token_and_never_looks_ahead() {
        let m = small();
        let a = ids(&[&[1, 5, 7, 2, 0, 0], &[1, 9, 2, 0, 0, 0]]);
        let eot = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 2], [2]), &Device::flex());
        let f = m.forward(a.clone(), eot);
        assert_eq!(f.dims(), [2, 8]);
        let tokens = m.tokens(a);
        let want: Vec<f32> = Tensor::cat(
            vec![
                tokens.clone().slice([0..1, 3..4, 0..8]).reshape([1, 8]),
                tokens.slice([1..2, 2..3, 0..8]).reshape([1, 8]),
            ],
            0,
        )
        .into_data()
        .try_to_vec()
        .unwrap();
        assert_eq!(f.into_data().try_to_vec::<f32>().unwrap(), want);

        // Padding after the end token does not change the caption's features.
        let b = ids(&[&[1, 5, 7, 2, 13, 4]]);
        let one = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64], [1]), &Device::flex());
        let pad = ids(&[&[1, 5, 7, 2, 0, 0]]);
        let x: Vec<f32> = m.forward(b, one.clone()).into_data().try_to_vec().unwrap();
        let y: Vec<f32> = m.forward(pad, one).into_data().try_to_vec().unwrap();
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let bad = |f: fn(&mut TextConfig), field: &str| {
            let mut c = TextConfig::default();
            f(&mut c);
            let err = c.validate("clip.text").unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        bad(|c| c.context = 1, "clip.text.context");
        bad(|c| c.heads = 3, "clip.text.dim");
        bad(|c| c.depth = 0, "clip.text.depth");
        bad(|c| c.mlp_ratio = 0.0, "clip.text.mlp_ratio");
        assert!(TextConfig::default().validate("clip.text").is_ok());
    }
}
