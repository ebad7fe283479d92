//! Convolution, batch normalization and the pieces of a transformer block for burn's CPU
//! backend (`flex`) at GEMM speed.
//!
//! burn 0.22's flex backend runs a convolution as one small GEMM per image and output tile, its
//! weight gradient as a dilated convolution, and batch normalization as about eight tensor passes
//! forward and twelve backward (`shared/notes/cpu-performance.md`). Here a 3x3 stride-1
//! convolution runs through Winograd's transforms (`winograd.rs`), forward and both gradients;
//! any other is one im2col GEMM over a block of whole images for the forward pass, one for the
//! weight gradient and one for the input gradient (a stride-2 one's im2col and col2im through a
//! column-parity split of each plane, `stride2.rs`); batch normalization is two passes each way.
//! For transformers (`transformer.rs`): layer normalization in one pass each way, a vectorized
//! exact GELU, and multi-head self-attention read in place from the fused `[q | k | v]`
//! projection. They are a burn backend extension ([`GemmKernels`]) with their own backward
//! passes on `Autodiff<Flex>`.
//!
//! [`conv2d`], [`batch_norm`] and [`layer_norm`] take burn's own modules (same parameters, same
//! records); they, [`gelu`] and [`self_attention`] run our kernels only on flex devices; `wgpu`
//! and `cuda` tensors go to burn's native operations. [`linear`] folds a `Linear`'s leading
//! dimensions into one GEMM on every device, and on flex writes its products straight into
//! their outputs.
//! Setting the environment variable `SELFSUP_KERNELS=burn` sends flex to burn's kernels too (to
//! compare, or to rule ours out when hunting a bug).

mod activation;
#[cfg(feature = "mimalloc")]
mod allocator;
mod conv;
mod extension;
mod gemm;
mod linear;
mod norm;
mod par;
mod simd;
mod stride2;
mod transformer;
mod winograd;

pub use activation::{leaky_relu_backward, leaky_relu_forward};
#[cfg(feature = "mimalloc")]
pub use allocator::{BIG_BLOCK, BigBlocks, StepAllocator, big_blocks, keep_freed_memory};
pub use conv::{ConvGeometry, conv2d_backward, conv2d_forward};
pub use extension::GemmKernels;
pub use linear::{LinearGeometry, linear_backward, linear_forward};
pub use norm::{
    NormGeometry, batch_norm_backward, batch_norm_forward, batch_norm_relu_backward,
    batch_norm_relu_forward,
};
pub use simd::{Isa, WideKernel, isa, run_wide};
pub use transformer::{
    AttentionGeometry, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward,
};

use burn::backend::Dispatch;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, LayerNorm, Linear, PaddingConfig2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Bool, DType, Device, Tensor};
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet (read `SELFSUP_KERNELS` on first use), 1: ours, 2: burn's.
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Whether our kernels serve tensors on `device`: flex (with or without autodiff), unless
/// `SELFSUP_KERNELS=burn` is set or [`use_ours`] said otherwise.
pub fn serves(device: &Device) -> bool {
    let choice = match CHOICE.load(Ordering::Relaxed) {
        0 => {
            let burn =
                std::env::var("SELFSUP_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("burn"));
            let c = if burn { 2 } else { 1 };
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    };
    choice == 1 && device.clone().inner() == Device::flex()
}

/// Chooses our kernels (`true`) or burn's (`false`) on flex from now on, for the whole process
/// (benchmarks compare the two this way).
pub fn use_ours(ours: bool) {
    CHOICE.store(if ours { 1 } else { 2 }, Ordering::Relaxed);
}

/// Padding `(begin, end)` per spatial dimension, as burn's `Conv2d` computes it.
fn padding(conv: &Conv2d, height: usize, width: usize) -> [(usize, usize); 2] {
    // "Same": the output has ceil(size / stride) positions; any odd extra goes after.
    let same = |k: usize, s: usize, size: usize| {
        let out = size.div_ceil(s);
        let total = if out > 0 {
            ((out - 1) * s + k).saturating_sub(size)
        } else {
            0
        };
        (total / 2, total - total / 2)
    };
    match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => [
            same(conv.kernel_size[0], conv.stride[0], height),
            same(conv.kernel_size[1], conv.stride[1], width),
        ],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
    }
}

/// `conv.forward(x)`, through our kernels on flex.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if !serves(&x.device()) || conv.groups != 1 || x.dtype() != DType::F32 {
        return conv.forward(x);
    }
    let [_, _, h, w] = x.dims();
    let options = ConvOptions::new_with_padding(conv.stride, padding(conv, h, w), conv.dilation, 1);
    let out = <Dispatch as GemmKernels>::gemm_conv2d(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        options,
    );
    let out = Tensor::<4>::from_dispatch(out);
    match &conv.bias {
        Some(bias) => {
            let c = bias.dims()[0];
            out + bias.val().reshape([1, c, 1, 1])
        }
        None => out,
    }
}

/// `bn.forward(x)`, through our kernels on flex when training (an autodiff device and the
/// layer's training flag on), updating the running statistics exactly as burn does.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    normalize(bn, x, false)
}

/// `relu(batch_norm(bn, x))` in one operation on flex in training (one pass forward, and one
/// tensor fewer kept for the backward pass per convolution block); elsewhere the two in turn.
pub fn batch_norm_relu<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    normalize(bn, x, true)
}

fn normalize<const D: usize>(bn: &BatchNorm, x: Tensor<D>, relu: bool) -> Tensor<D> {
    let device = x.device();
    let training = device.is_autodiff() && bn.training.is_enabled();
    let then_relu = |y: Tensor<D>| {
        if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        }
    };
    if training && D >= 2 && matches!(x.dtype(), DType::BF16 | DType::F16) {
        return then_relu(batch_norm_f32(bn, x));
    }
    if !training || !serves(&device) || x.dtype() != DType::F32 || D < 2 {
        return then_relu(bn.forward(x));
    }
    let fused = if relu {
        <Dispatch as GemmKernels>::fused_batch_norm_relu
    } else {
        <Dispatch as GemmKernels>::fused_batch_norm
    };
    let (out, mean, var) = fused(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, var) = (
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(var),
    );
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    let running_var = running_var
        .mul_scalar(1.0 - m)
        .add(var.detach().mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    Tensor::<D>::from_dispatch(out)
}

/// Training-mode BatchNorm of a reduced-precision `x` (mixed precision) computed in `f32` and
/// returned in `x`'s type, as PyTorch's autocast does: in `bf16` or `f16` the backward pass's
/// `g - mean(g) - x_hat * mean(g * x_hat)` cancels away most of its digits.
fn batch_norm_f32<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let (dtype, device, dims) = (x.dtype(), x.device(), x.dims());
    let (n, c) = (dims[0], dims[1]);
    let rest = dims[2..].iter().product::<usize>();
    let x = x.cast(DType::F32).reshape([n, c, rest]);
    let mean = x.clone().mean_dim(2).mean_dim(0);
    let centred = x - mean.clone();
    let var = centred.clone().square().mean_dim(2).mean_dim(0);
    let gamma = bn.gamma.val().cast(DType::F32).reshape([1, c, 1]);
    let beta = bn.beta.val().cast(DType::F32).reshape([1, c, 1]);
    let out = centred.div(var.clone().add_scalar(bn.epsilon).sqrt()) * gamma + beta;
    let m = bn.momentum;
    let stat = |running: &burn::module::RunningState<Tensor<1>>, batch: Tensor<3>| {
        let old = running.value_sync().to_device(&device);
        let new = old
            .clone()
            .mul_scalar(1.0 - m)
            .add(batch.detach().reshape([c]).cast(old.dtype()).mul_scalar(m));
        running.update(new.detach());
    };
    stat(&bn.running_mean, mean);
    stat(&bn.running_var, var);
    out.reshape(dims).cast(dtype)
}

/// `norm.forward(x)` over the last dimension, in one pass each way on flex (`f32`, a layer with
/// a bias). `epsilon` must be the one the layer was configured with (burn keeps it private).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let Some(beta) = &norm.beta else {
        return norm.forward(x);
    };
    if !serves(&x.device()) || x.dtype() != DType::F32 {
        return norm.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as GemmKernels>::fused_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        epsilon,
    ))
}

/// GELU, `x Φ(x)` (exact form), vectorized on flex (`f32`); burn's elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !serves(&x.device()) || x.dtype() != DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as GemmKernels>::fused_gelu(x.into_dispatch()))
}

/// `burn::tensor::activation::leaky_relu(x, slope)`, the same values and gradients, in one
/// parallel pass each way on flex (`f32`; burn's chain elsewhere).
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if !serves(&x.device()) || x.dtype() != DType::F32 {
        return burn::tensor::activation::leaky_relu(x, slope);
    }
    Tensor::from_dispatch(<Dispatch as GemmKernels>::fused_leaky_relu(
        x.into_dispatch(),
        slope as f32,
    ))
}

/// Multi-head self-attention from a fused projection `qkv` `[batch, tokens, 3 dim]` (queries,
/// keys, values; head `h` at columns `h dim / heads..(h + 1) dim / heads` of each):
/// `softmax(Q Kᵀ / √head_dim) V` per head, heads side by side. Returns the context `[batch,
/// tokens, dim]` and the attention probabilities `[batch, heads, tokens, tokens]`, which carry
/// no gradient. One pass over each sequence on flex, burn's tensor operations elsewhere.
///
/// # Panics
/// If the last dimension of `qkv` is not a multiple of `3 * heads`.
pub fn self_attention(qkv: Tensor<3>, heads: usize) -> (Tensor<3>, Tensor<4>) {
    attention(qkv, heads, false)
}

/// [`self_attention`] with a causal mask: token `i` attends only to tokens `0..=i` (a text
/// transformer reading left to right); the probabilities of later tokens are exactly 0.
///
/// # Panics
/// If the last dimension of `qkv` is not a multiple of `3 * heads`.
pub fn causal_self_attention(qkv: Tensor<3>, heads: usize) -> (Tensor<3>, Tensor<4>) {
    attention(qkv, heads, true)
}

fn attention(qkv: Tensor<3>, heads: usize, causal: bool) -> (Tensor<3>, Tensor<4>) {
    let [n, t, three_d] = qkv.dims();
    assert!(
        heads > 0 && three_d.is_multiple_of(3 * heads),
        "self-attention: {three_d} values per token are not 3 x {heads} heads"
    );
    if serves(&qkv.device()) && qkv.dtype() == DType::F32 {
        let (ctx, probs) =
            <Dispatch as GemmKernels>::fused_self_attention(qkv.into_dispatch(), heads, causal);
        return (Tensor::from_dispatch(ctx), Tensor::from_dispatch(probs));
    }
    let d = three_d / 3;
    let dh = d / heads;
    let part = |i: usize| {
        qkv.clone()
            .slice([0..n, 0..t, i * d..(i + 1) * d])
            .reshape([n, t, heads, dh])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
    if causal {
        // `true` strictly above the diagonal: the tokens after each query.
        let later = Tensor::<2, Bool>::tril_mask([t, t], 0, &scores.device())
            .reshape([1, 1, t, t])
            .expand([n, heads, t, t]);
        scores = scores.mask_fill(later, f32::NEG_INFINITY);
    }
    let probs = burn::tensor::activation::softmax(scores, 3);
    let ctx = probs.clone().matmul(v).swap_dims(1, 2).reshape([n, t, d]);
    (ctx, probs.detach())
}

/// `layer.forward(x)` as one GEMM over all leading dimensions. burn 0.22 keeps a `[N, T, D]`
/// input as N products of `T` rows each when folding them would not make the output squarer
/// (a transformer's 65 tokens of 128 values, for example): each packs the weight anew. Folded,
/// the MAE step of issue 5 went from 115 to 160 images/s. On flex (`f32`) the layer is one
/// operation of ours, forward and backward, whose products are written straight into their
/// outputs (`linear.rs`: burn's copied each output once more on the calling thread); the values
/// are burn's, bit for bit.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let ours = serves(&x.device())
        && x.dtype() == DType::F32
        && layer.weight.dtype() == DType::F32
        && layer.bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if D <= 2 && !ours {
        return layer.forward(x);
    }
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let x = x.reshape([rows, d_in]);
    let y = if ours {
        let (x, w) = (x.into_dispatch(), layer.weight.val().into_dispatch());
        Tensor::<2>::from_dispatch(match &layer.bias {
            Some(b) => <Dispatch as GemmKernels>::fused_linear(x, w, b.val().into_dispatch()),
            None => <Dispatch as GemmKernels>::fused_linear_unbiased(x, w),
        })
    } else {
        layer.forward(x)
    };
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}
