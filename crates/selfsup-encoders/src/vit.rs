//! Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words"): images cut into
//! patches, each patch a token, a class token in front, position embeddings, pre-norm
//! transformer blocks. MAE feeds it only the visible patches ([`VisionTransformer::embed`] then
//! [`VisionTransformer::encode`]); DINO draws the last block's attention.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use selfsup_core::config::ensure;
use selfsup_core::grads::param_ids;
use selfsup_core::{Encoder, Result};
use selfsup_kernels::{gelu, linear};
use serde::{Deserialize, Serialize};

/// How tokens learn where they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbed {
    /// Fixed 2-D sine-cosine embeddings (MAE's choice; nothing to learn).
    Sincos,
    /// Learned embeddings, initialised from N(0, 0.02²).
    Learned,
}

/// Which vector stands for the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The class token's output.
    Cls,
    /// The mean of the patch tokens' outputs.
    Mean,
}

/// ViT settings: free, or from the [`VitConfig::tiny`] and [`VitConfig::small`] presets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VitConfig {
    /// Side of the (square) input images in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels; must divide `image_size`.
    pub patch_size: usize,
    /// Token width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads; must divide `dim`.
    pub heads: usize,
    /// Hidden width of each block's MLP as a multiple of `dim`.
    pub mlp_ratio: f64,
    /// Position embeddings.
    pub pos_embed: PosEmbed,
    /// Pooled output.
    pub pool: Pool,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self::tiny(32, 4)
    }
}

impl VitConfig {
    /// ViT-Tiny: width 192, 12 blocks, 3 heads, MLP ratio 4.
    pub fn tiny(image_size: usize, patch_size: usize) -> Self {
        Self {
            image_size,
            patch_size,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp_ratio: 4.0,
            pos_embed: PosEmbed::Sincos,
            pool: Pool::Cls,
        }
    }

    /// ViT-Small: width 384, 12 blocks, 6 heads, MLP ratio 4.
    pub fn small(image_size: usize, patch_size: usize) -> Self {
        Self {
            dim: 384,
            heads: 6,
            ..Self::tiny(image_size, patch_size)
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(self.patch_size >= 1, "vit.patch_size", || {
            "must be at least 1".into()
        })?;
        ensure(
            self.image_size >= self.patch_size && self.image_size.is_multiple_of(self.patch_size),
            "vit.image_size",
            || {
                format!(
                    "{} is not a multiple of the patch size {}",
                    self.image_size, self.patch_size
                )
            },
        )?;
        ensure(self.depth >= 1, "vit.depth", || "must be at least 1".into())?;
        ensure(
            self.heads >= 1 && self.dim.is_multiple_of(self.heads),
            "vit.heads",
            || format!("must divide the width {} (and be at least 1)", self.dim),
        )?;
        ensure(
            self.pos_embed != PosEmbed::Sincos || (self.dim >= 4 && self.dim.is_multiple_of(4)),
            "vit.dim",
            || "sine-cosine position embeddings need a multiple of 4".into(),
        )?;
        ensure(
            self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0,
            "vit.mlp_ratio",
            || "must be a positive number".into(),
        )
    }

    /// Builds the encoder for `channels`-channel images on `device`, or says which setting is
    /// wrong.
    pub fn init(&self, channels: usize, device: &Device) -> Result<VisionTransformer> {
        self.validate()?;
        let (p, d) = (self.patch_size, self.dim);
        let hidden = ((d as f64 * self.mlp_ratio).round() as usize).max(1);
        let tokens = self.grid() * self.grid();
        let normal = |shape: [usize; 3]| {
            Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        // The patch embedding as the reference's: xavier on the weight seen as a matrix, the
        // bias left at PyTorch's default (its `_init_weights` only zeroes `nn.Linear` biases).
        let mut patch = LinearConfig::new(channels * p * p, d).init(device);
        patch.weight = LinearInit::Xavier
            .linear(channels * p * p, d, device)
            .weight;
        Ok(VisionTransformer {
            patch,
            cls: normal([1, 1, d]),
            pos: (self.pos_embed == PosEmbed::Learned).then(|| normal([1, tokens + 1, d])),
            blocks: (0..self.depth)
                .map(|_| TransformerBlock::new(d, self.heads, hidden, LinearInit::Xavier, device))
                .collect(),
            norm: TokenNorm::new(d, device),
            patch_size: p,
            grid: self.grid(),
            dim: d,
            mean_pool: self.pool == Pool::Mean,
        })
    }
}

/// How a transformer's linear layers start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearInit {
    /// Xavier-uniform weights and zero biases: ViT's and MAE's reference
    /// (`_init_weights`: `xavier_uniform_`, bias 0).
    Xavier,
    /// burn's default (uniform in `±1/sqrt(fan_in)` for weights and biases, PyTorch's default
    /// `nn.Linear` init): the text transformer's.
    Default,
}

impl LinearInit {
    /// A `d_in -> d_out` linear layer started this way.
    pub fn linear(self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        match self {
            LinearInit::Default => LinearConfig::new(d_in, d_out).init(device),
            LinearInit::Xavier => {
                let mut l = LinearConfig::new(d_in, d_out)
                    .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                    .init(device);
                l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
                l
            }
        }
    }
}

/// `[N, C, H, W]` images to `[N, (H/p)(W/p), C p p]` patches, row-major over the grid, each
/// patch laid out channel, row, column.
pub fn patchify(images: Tensor<4>, p: usize) -> Tensor<3> {
    let [n, c, h, w] = images.dims();
    let (gh, gw) = (h / p, w / p);
    images
        .reshape([n, c, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([n, gh * gw, c * p * p])
}

/// The inverse of [`patchify`] for `channels`-channel images of `grid x grid` patches.
pub fn unpatchify(patches: Tensor<3>, p: usize, channels: usize, grid: usize) -> Tensor<4> {
    let [n, _, _] = patches.dims();
    patches
        .reshape([n, grid, grid, channels, p, p])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([n, channels, grid * p, grid * p])
}

/// Fixed 2-D sine-cosine position embeddings `[1 + grid², dim]`, the first row (class token)
/// zero: the first half of the width encodes the column, the second the row (the layout of
/// MAE's reference `get_2d_sincos_pos_embed`, whose first half reads `meshgrid(w, h)[0]`),
/// each half `sin(pos ω_k)` then `cos(pos ω_k)` for `ω_k = 10000^(-k / (dim / 4))`.
pub fn sincos_position_embedding(grid: usize, dim: usize) -> Vec<f32> {
    sincos_position_embedding_resized(grid, [grid, grid], dim)
}

/// Sine-cosine embeddings `[1 + rows·cols, dim]` for a `rows x cols` patch grid that covers the
/// same image area as the model's `grid x grid` one (a DINO local crop is a smaller view of the
/// same kind of image): patch `(i, j)` sits at `((i + ½)·grid/rows − ½, (j + ½)·grid/cols − ½)`
/// in the model grid's units, the half-pixel mapping of bicubic resizing. Equal sizes give
/// [`sincos_position_embedding`] exactly.
pub fn sincos_position_embedding_resized(
    grid: usize,
    [rows, cols]: [usize; 2],
    dim: usize,
) -> Vec<f32> {
    let quarter = dim / 4;
    let at = |i: usize, n: usize| {
        if n == grid {
            i as f64
        } else {
            (i as f64 + 0.5) * grid as f64 / n as f64 - 0.5
        }
    };
    let mut out = vec![0.0f32; (rows * cols + 1) * dim];
    for y in 0..rows {
        for x in 0..cols {
            let row = &mut out[(1 + y * cols + x) * dim..][..dim];
            for (half, pos) in [(0, at(x, cols)), (1, at(y, rows))] {
                for k in 0..quarter {
                    let omega = 10000f64.powf(-(k as f64) / quarter as f64);
                    let angle = pos * omega;
                    row[half * 2 * quarter + k] = angle.sin() as f32;
                    row[half * 2 * quarter + quarter + k] = angle.cos() as f32;
                }
            }
        }
    }
    out
}

/// Layer normalization over each token (ε = 1e-6, as ViT and MAE use), through the one-pass
/// kernel of `selfsup-kernels` on flex.
#[derive(Module, Debug)]
pub struct TokenNorm {
    inner: LayerNorm,
}

impl TokenNorm {
    /// The normalization's ε.
    pub const EPSILON: f64 = 1e-6;

    /// A norm over `dim` values (scale 1, shift 0).
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            inner: LayerNormConfig::new(dim)
                .with_epsilon(Self::EPSILON)
                .init(device),
        }
    }

    /// Normalizes the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        selfsup_kernels::layer_norm(&self.inner, Self::EPSILON, x)
    }
}

/// Multi-head self-attention with one fused `[q | k | v]` projection, so the attention kernel
/// reads each head in place (no copies to a per-head layout).
#[derive(Module, Debug)]
pub struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl SelfAttention {
    /// Attention of width `dim` (a multiple of `heads`) with `heads` heads, its layers
    /// started as `init` says.
    pub fn new(dim: usize, heads: usize, init: LinearInit, device: &Device) -> Self {
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "attention: width {dim} is not a multiple of {heads} heads"
        );
        Self {
            qkv: init.linear(dim, 3 * dim, device),
            proj: init.linear(dim, dim, device),
            heads,
        }
    }

    /// The attended tokens `[N, T, D]` and the attention `[N, heads, T, T]` (no gradient).
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        self.forward_masked(x, false)
    }

    /// [`SelfAttention::forward`], with each token attending only to itself and earlier ones
    /// when `causal` (a text transformer).
    pub fn forward_masked(&self, x: Tensor<3>, causal: bool) -> (Tensor<3>, Tensor<4>) {
        let qkv = linear(&self.qkv, x);
        let (ctx, probs) = if causal {
            selfsup_kernels::causal_self_attention(qkv, self.heads)
        } else {
            selfsup_kernels::self_attention(qkv, self.heads)
        };
        (linear(&self.proj, ctx), probs)
    }
}

/// A pre-norm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))` with a GELU MLP.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    norm1: TokenNorm,
    attn: SelfAttention,
    norm2: TokenNorm,
    fc1: Linear,
    fc2: Linear,
}

impl TransformerBlock {
    /// A block of width `dim` with `heads` attention heads and an MLP `hidden` wide, its
    /// linear layers started as `init` says.
    pub fn new(dim: usize, heads: usize, hidden: usize, init: LinearInit, device: &Device) -> Self {
        Self {
            norm1: TokenNorm::new(dim, device),
            attn: SelfAttention::new(dim, heads, init, device),
            norm2: TokenNorm::new(dim, device),
            fc1: init.linear(dim, hidden, device),
            fc2: init.linear(hidden, dim, device),
        }
    }

    /// The block's output `[N, T, D]` and its attention `[N, heads, T, T]`.
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        self.forward_masked(x, false)
    }

    /// [`TransformerBlock::forward`], causal or not (see [`SelfAttention::forward_masked`]).
    pub fn forward_masked(&self, x: Tensor<3>, causal: bool) -> (Tensor<3>, Tensor<4>) {
        self.forward_kept(x, causal, None)
    }

    /// [`TransformerBlock::forward_masked`] with both residual branches multiplied sample by
    /// sample by `keep` `[N]` (stochastic depth, "drop path": 0 drops a sample's branches,
    /// `1 / (1 - p)` keeps them at the same expected value).
    pub fn forward_kept(
        &self,
        x: Tensor<3>,
        causal: bool,
        keep: Option<Tensor<1>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let n = x.dims()[0];
        let keep = keep.map(|k| k.reshape([n, 1, 1]));
        let scaled = |branch: Tensor<3>| match &keep {
            Some(k) => branch * k.clone(),
            None => branch,
        };
        let (attended, attention) = self
            .attn
            .forward_masked(self.norm1.forward(x.clone()), causal);
        let x = x + scaled(attended);
        let hidden = gelu(linear(&self.fc1, self.norm2.forward(x.clone())));
        (x + scaled(linear(&self.fc2, hidden)), attention)
    }
}

/// A Vision Transformer encoder.
#[derive(Module, Debug)]
pub struct VisionTransformer {
    patch: Linear,
    cls: Param<Tensor<3>>,
    /// Learned position embeddings `[1, 1 + L, D]`; `None`: fixed sine-cosine ones.
    pos: Option<Param<Tensor<3>>>,
    blocks: Vec<TransformerBlock>,
    norm: TokenNorm,
    patch_size: usize,
    grid: usize,
    dim: usize,
    mean_pool: bool,
}

impl VisionTransformer {
    /// Side of a patch in pixels.
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// Token width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Position embeddings `[1, 1 + L, D]` (class token first).
    pub fn position_embedding(&self, device: &Device) -> Tensor<3> {
        self.position_embedding_for([self.grid, self.grid], device)
    }

    /// Position embeddings `[1, 1 + rows·cols, D]` for images of `rows x cols` patches, which
    /// may differ from the grid the model was built for (DINO's local crops): sine-cosine ones
    /// evaluated at the resized positions ([`sincos_position_embedding_resized`]), learned
    /// ones resized bicubically as a `grid x grid` picture per channel (what DINO does).
    pub fn position_embedding_for(&self, [rows, cols]: [usize; 2], device: &Device) -> Tensor<3> {
        let (g, d) = (self.grid, self.dim);
        match &self.pos {
            Some(p) if [rows, cols] == [g, g] => p.val(),
            Some(p) => {
                let table = p.val();
                let cls = table.clone().slice([0..1, 0..1, 0..d]);
                let patches = table
                    .slice([0..1, 1..1 + g * g, 0..d])
                    .reshape([1, g, g, d])
                    .permute([0, 3, 1, 2]);
                let resized = interpolate(
                    patches,
                    InterpolateOptions::new(InterpolateMode::Bicubic)
                        .with_output_size([rows, cols]),
                )
                .permute([0, 2, 3, 1])
                .reshape([1, rows * cols, d]);
                Tensor::cat(vec![cls, resized], 1)
            }
            // The fixed table, in the type of the weights (a mixed-precision copy's).
            None => Tensor::<3>::from_data(
                TensorData::new(
                    sincos_position_embedding_resized(g, [rows, cols], d),
                    [1, rows * cols + 1, d],
                ),
                device,
            )
            .cast(self.patch.weight.val().dtype()),
        }
    }

    /// Patch tokens with their position embeddings, `[N, L, D]`, no class token: what MAE
    /// subsamples before [`VisionTransformer::encode`]. Images may be any size that is a
    /// multiple of the patch size; other sizes than the model's get resized position
    /// embeddings ([`VisionTransformer::position_embedding_for`]).
    pub fn embed(&self, images: Tensor<4>) -> Tensor<3> {
        let device = images.device();
        let [_, _, h, w] = images.dims();
        let p = self.patch_size;
        assert!(
            h >= p && w >= p && h % p == 0 && w % p == 0,
            "ViT: images of {h}x{w} are not a whole number of {p}x{p} patches"
        );
        let tokens = linear(&self.patch, patchify(images, p));
        let l = (h / p) * (w / p);
        tokens
            + self.position_embedding_for([h / p, w / p], &device).slice([
                0..1,
                1..l + 1,
                0..self.dim,
            ])
    }

    /// Runs the class token (with its position embedding) and `tokens` (`[N, L', D]`, already
    /// embedded, any subset of patches) through the blocks: the normalized outputs
    /// `[N, 1 + L', D]` and the last block's attention `[N, heads, 1 + L', 1 + L']`.
    pub fn encode(&self, tokens: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let (x, attention) = self.run_blocks(tokens, &[]);
        (self.norm.forward(x), attention)
    }

    /// [`VisionTransformer::encode`] without the final norm, block `b`'s residual branches
    /// scaled by `keep[b]` where given (stochastic depth; see
    /// [`TransformerBlock::forward_kept`]).
    fn run_blocks(&self, tokens: Tensor<3>, keep: &[Tensor<1>]) -> (Tensor<3>, Tensor<4>) {
        let [n, _, d] = tokens.dims();
        // The sine-cosine table's class row is zero; only learned embeddings move the class token.
        let cls = match &self.pos {
            Some(p) => self.cls.val() + p.val().slice([0..1, 0..1, 0..d]),
            None => self.cls.val(),
        };
        let mut x = Tensor::cat(vec![cls.expand([n, 1, d]), tokens], 1);
        let mut attention = None;
        for (b, block) in self.blocks.iter().enumerate() {
            let (y, a) = block.forward_kept(x, false, keep.get(b).cloned());
            x = y;
            attention = Some(a);
        }
        let attention = attention.expect("a ViT has at least one block");
        (x, attention)
    }

    /// The last block's attention `[N, heads, 1 + L, 1 + L]` over whole images; row 0 is the
    /// class token's attention to every token.
    pub fn last_attention(&self, images: Tensor<4>) -> Tensor<4> {
        self.encode(self.embed(images)).1
    }

    fn pool(&self, out: Tensor<3>) -> Tensor<2> {
        let [n, t, d] = out.dims();
        if self.mean_pool {
            out.slice([0..n, 1..t, 0..d]).mean_dim(1).reshape([n, d])
        } else {
            out.slice([0..n, 0..1, 0..d]).reshape([n, d])
        }
    }
}

impl Encoder for VisionTransformer {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.pool(self.encode(self.embed(images)).0)
    }

    fn blocks(&self) -> usize {
        self.blocks.len()
    }

    fn finetune_features(
        &self,
        images: Tensor<4>,
        global_pool: bool,
        keep: &[Tensor<1>],
    ) -> Tensor<2> {
        let (x, _) = self.run_blocks(self.embed(images), keep);
        if global_pool {
            // MAE's `global_pool`: the patch tokens' mean, the final norm left out.
            let [n, t, d] = x.dims();
            x.slice([0..n, 1..t, 0..d]).mean_dim(1).reshape([n, d])
        } else {
            self.pool(self.norm.forward(x))
        }
    }

    /// The patch embedding, class token and position embeddings are layer 0, block `b` layer
    /// `b + 1`, the final norm the top layer (MAE's `get_layer_id_for_vit`); the class token
    /// and position embeddings take no weight decay (its `no_weight_decay`).
    fn param_layers(&self) -> Vec<(ParamId, usize, bool)> {
        let mut out = vec![(self.cls.id, 0, false)];
        if let Some(p) = &self.pos {
            out.push((p.id, 0, false));
        }
        out.extend(param_ids(&self.patch).into_iter().map(|id| (id, 0, true)));
        for (b, block) in self.blocks.iter().enumerate() {
            out.extend(param_ids(block).into_iter().map(|id| (id, b + 1, true)));
        }
        let top = self.blocks.len() + 1;
        out.extend(param_ids(&self.norm).into_iter().map(|id| (id, top, true)));
        out
    }

    fn output_dim(&self) -> usize {
        self.dim
    }

    fn tokens(&self, images: Tensor<4>) -> Option<Tensor<3>> {
        Some(self.encode(self.embed(images)).0)
    }

    /// The patch tokens after the final norm laid out as the `grid x grid` map they came
    /// from, `[N, dim, grid, grid]` (the class token left out): a ViT read like a ConvNet's
    /// last map keeps where each patch was, which pooling to one vector throws away (MAE's
    /// pixel-reconstruction features are measured to gain most from it, `docs/methods/mae.md`).
    fn feature_map(&self, images: Tensor<4>) -> Option<Tensor<4>> {
        let out = self.encode(self.embed(images)).0;
        let [n, t, d] = out.dims();
        let g = self.grid;
        debug_assert_eq!(
            t,
            1 + g * g,
            "a ViT over whole images has grid² patch tokens"
        );
        Some(
            out.slice([0..n, 1..t, 0..d])
                .reshape([n, g, g, d])
                .permute([0, 3, 1, 2]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(pos_embed: PosEmbed, pool: Pool) -> VitConfig {
        VitConfig {
            image_size: 8,
            patch_size: 4,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_ratio: 2.0,
            pos_embed,
            pool,
        }
    }

    #[test]
    fn linear_layers_start_as_the_references() {
        let device = Device::flex();
        let stats = |t: Tensor<2>| {
            let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        };
        // Xavier uniform: std sqrt(2 / (fan_in + fan_out)); zero bias.
        let block = TransformerBlock::new(64, 4, 256, LinearInit::Xavier, &device);
        let (mean, std) = stats(block.fc1.weight.val());
        let want = (2.0f64 / (64.0 + 256.0)).sqrt();
        assert!(
            mean.abs() < 0.01 && (std / want - 1.0).abs() < 0.05,
            "{mean} {std} {want}"
        );
        let bias: Vec<f32> = block
            .fc1
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(bias.iter().all(|&b| b == 0.0));
        // burn's default (the text tower): uniform in ±1/sqrt(fan_in), std 1/sqrt(3 fan_in).
        let text = TransformerBlock::new(64, 4, 256, LinearInit::Default, &device);
        let (_, std) = stats(text.fc1.weight.val());
        let want = 1.0 / (3.0f64 * 64.0).sqrt();
        assert!((std / want - 1.0).abs() < 0.05, "{std} {want}");
    }

    #[test]
    fn patchify_and_unpatchify_round_trip_exactly() {
        let dev = Device::flex();
        let x: Tensor<4> = Tensor::random([2, 3, 8, 12], Distribution::Default, &dev);
        let p = patchify(x.clone(), 4);
        assert_eq!(p.dims(), [2, 6, 48]);
        // Patch (row 1, column 2), channel 1, pixel (3, 0) is image pixel (7, 8).
        let got: Vec<f32> = p.clone().into_data().try_to_vec().unwrap();
        let img: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
        let at_patch = got[(6 + 5) * 48 + 16 + 3 * 4];
        assert_eq!(at_patch, img[((3 + 1) * 8 + 7) * 12 + 8]);
        // Square images go back exactly.
        let sq: Tensor<4> = Tensor::random([2, 3, 8, 8], Distribution::Default, &dev);
        let back = unpatchify(patchify(sq.clone(), 4), 4, 3, 2);
        assert_eq!(
            back.into_data().try_to_vec::<f32>().unwrap(),
            sq.into_data().try_to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn sincos_embeddings_follow_the_formula() {
        let (grid, dim) = (3, 8);
        let e = sincos_position_embedding(grid, dim);
        assert!(
            e[..dim].iter().all(|&v| v == 0.0),
            "class token row is zero"
        );
        // Token (y = 2, x = 1): ω = [1, 0.01]; column half then row half.
        let t = &e[(1 + 2 * grid + 1) * dim..][..dim];
        let want = [
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
        ];
        for (a, b) in t.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn resized_sincos_embeddings_sit_at_the_centres_of_the_smaller_grid() {
        let (grid, dim) = (4, 8);
        assert_eq!(
            sincos_position_embedding_resized(grid, [grid, grid], dim),
            sincos_position_embedding(grid, dim)
        );
        // A 2 x 3 grid over the area of a 4 x 4 one: rows at 0.5 and 2.5, columns at
        // (j + 0.5) * 4/3 - 0.5 = 1/6, 1.5, 17/6.
        let e = sincos_position_embedding_resized(grid, [2, 3], dim);
        assert_eq!(e.len(), (1 + 6) * dim);
        let t = &e[(1 + 3 + 2) * dim..][..dim]; // token (y = 1, x = 2)
        let (y, x) = (2.5f64, 17.0f64 / 6.0);
        let want = [
            x.sin(),
            (x * 0.01).sin(),
            x.cos(),
            (x * 0.01).cos(),
            y.sin(),
            (y * 0.01).sin(),
            y.cos(),
            (y * 0.01).cos(),
        ];
        for (a, b) in t.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn smaller_images_get_resized_position_embeddings() {
        let dev = Device::flex();
        // Built for 8 x 8 images (2 x 2 patches of 4), fed 4 x 4 and 8 x 4 crops.
        for pos in [PosEmbed::Sincos, PosEmbed::Learned] {
            let vit = small(pos, Pool::Cls).init(1, &dev).unwrap();
            for (h, w) in [(4, 4), (8, 4), (8, 8)] {
                let x: Tensor<4> = Tensor::random([2, 1, h, w], Distribution::Default, &dev);
                let tokens = vit.tokens(x.clone()).unwrap();
                assert_eq!(tokens.dims(), [2, 1 + (h / 4) * (w / 4), 8]);
                assert_eq!(vit.features(x).dims(), [2, 8]);
            }
        }
        // Learned embeddings: the model's own grid gives the table itself; bicubic resizing
        // keeps a constant table constant.
        let mut vit = small(PosEmbed::Learned, Pool::Cls).init(1, &dev).unwrap();
        let table = vit.position_embedding(&dev);
        assert_eq!(
            vit.position_embedding_for([2, 2], &dev)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            table.into_data().try_to_vec::<f32>().unwrap()
        );
        vit.pos = Some(Param::from_tensor(Tensor::full([1, 5, 8], 0.25, &dev)));
        let resized: Vec<f32> = vit
            .position_embedding_for([3, 1], &dev)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(resized.len(), 4 * 8);
        assert!(
            resized.iter().all(|v| (v - 0.25).abs() < 1e-6),
            "{resized:?}"
        );
    }

    #[test]
    fn shapes_of_features_tokens_and_attention() {
        let dev = Device::flex();
        let x: Tensor<4> = Tensor::random([3, 2, 8, 8], Distribution::Default, &dev);
        for (pos, pool) in [
            (PosEmbed::Sincos, Pool::Cls),
            (PosEmbed::Learned, Pool::Mean),
        ] {
            let vit = small(pos, pool).init(2, &dev).unwrap();
            assert_eq!(vit.output_dim(), 8);
            assert_eq!(vit.features(x.clone()).dims(), [3, 8]);
            assert_eq!(vit.tokens(x.clone()).unwrap().dims(), [3, 5, 8]);
            let a = vit.last_attention(x.clone());
            assert_eq!(a.dims(), [3, 2, 5, 5]);
            // Each attention row is a distribution over the tokens.
            let sums: Vec<f32> = a.sum_dim(3).into_data().try_to_vec().unwrap();
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
            // A subset of tokens (as MAE feeds it) gives one output per token plus the class.
            let some = vit.embed(x.clone()).slice([0..3, 1..3, 0..8]);
            assert_eq!(vit.encode(some).0.dims(), [3, 3, 8]);
        }
    }

    #[test]
    fn mean_pooling_averages_the_patch_tokens() {
        let dev = Device::flex();
        let x: Tensor<4> = Tensor::random([2, 1, 8, 8], Distribution::Default, &dev);
        let vit = small(PosEmbed::Sincos, Pool::Mean).init(1, &dev).unwrap();
        let tokens = vit.tokens(x.clone()).unwrap();
        let want: Vec<f32> = tokens
            .slice([0..2, 1..5, 0..8])
            .mean_dim(1)
            .into_data()
            .try_to_vec()
            .unwrap();
        let got: Vec<f32> = vit.features(x).into_data().try_to_vec().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn fine_tuning_pools_globally_drops_blocks_and_lists_layers() {
        let dev = Device::flex();
        let x: Tensor<4> = Tensor::random([3, 1, 8, 8], Distribution::Default, &dev);
        let vit = small(PosEmbed::Learned, Pool::Cls).init(1, &dev).unwrap();
        let vals = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let close = |a: Vec<f32>, b: Vec<f32>| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        };
        // Without global pool and nothing dropped: the features.
        close(
            vals(vit.finetune_features(x.clone(), false, &[])),
            vals(vit.features(x.clone())),
        );
        let ones = vec![Tensor::<1>::ones([3], &dev); 2];
        close(
            vals(vit.finetune_features(x.clone(), true, &ones)),
            vals(vit.finetune_features(x.clone(), true, &[])),
        );
        // Every block dropped for every sample: the patch embeddings' mean, no norm.
        let zeros = vec![Tensor::<1>::zeros([3], &dev); 2];
        let embedded = vit.embed(x.clone()).mean_dim(1).reshape([3, 8]);
        close(
            vals(vit.finetune_features(x.clone(), true, &zeros)),
            vals(embedded),
        );
        // Dropping per sample: sample 1's blocks only.
        let mixed = vec![Tensor::<1>::from_floats([1.0, 0.0, 1.0], &dev); 2];
        let got = vals(vit.finetune_features(x.clone(), true, &mixed));
        let full = vals(vit.finetune_features(x.clone(), true, &[]));
        let bare = vals(vit.embed(x).mean_dim(1).reshape([3, 8]));
        close(got[..8].to_vec(), full[..8].to_vec());
        close(got[8..16].to_vec(), bare[8..16].to_vec());
        // Layers: class token and positions at 0 without decay, the patch embedding at 0,
        // the blocks at 1 and 2, the final norm at 3; every parameter once.
        let layers = vit.param_layers();
        assert_eq!(layers.len(), param_ids(&vit).len());
        assert_eq!(layers[0], (vit.cls.id, 0, false));
        assert_eq!(layers[1], (vit.pos.as_ref().unwrap().id, 0, false));
        let of = |ids: Vec<ParamId>| {
            let l: Vec<_> = layers
                .iter()
                .filter(|(id, _, _)| ids.contains(id))
                .map(|&(_, l, d)| (l, d))
                .collect();
            l[0]
        };
        assert_eq!(of(param_ids(&vit.patch)), (0, true));
        assert_eq!(of(param_ids(&vit.blocks[1])), (2, true));
        assert_eq!(of(param_ids(&vit.norm)), (3, true));
        assert_eq!(vit.blocks(), 2);
    }

    #[test]
    fn presets_and_bad_settings() {
        let tiny = VitConfig::tiny(32, 4);
        assert_eq!(
            (tiny.dim, tiny.depth, tiny.heads, tiny.grid()),
            (192, 12, 3, 8)
        );
        let small = VitConfig::small(28, 4);
        assert_eq!((small.dim, small.heads, small.grid()), (384, 6, 7));
        assert!(tiny.validate().is_ok() && small.validate().is_ok());
        let bad = |f: fn(&mut VitConfig), field: &str| {
            let mut c = VitConfig::tiny(32, 4);
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        bad(|c| c.patch_size = 5, "vit.image_size");
        bad(|c| c.patch_size = 0, "vit.patch_size");
        bad(|c| c.heads = 5, "vit.heads");
        bad(|c| c.depth = 0, "vit.depth");
        bad(|c| c.dim = 6 * 3, "vit.dim");
        bad(|c| c.mlp_ratio = f64::NAN, "vit.mlp_ratio");
    }
}
