//! ResNet-18/34/50 (He et al.), with the CIFAR stem option for small images.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use selfsup_core::Encoder;
use selfsup_kernels::{batch_norm, batch_norm_relu, conv2d};

/// A convolution without bias followed by BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// `k` x `k` convolution from `cin` to `cout` channels with `stride`, padding `k / 2`.
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Self {
        let p = k / 2;
        Self {
            conv: Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    /// Convolution then normalization.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(&self.bn, conv2d(&self.conv, x))
    }

    /// Convolution, normalization, ReLU (the last two fused on flex in training).
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm_relu(&self.bn, conv2d(&self.conv, x))
    }
}

/// Two 3x3 convolutions with a shortcut (ResNet-18/34).
#[derive(Module, Debug)]
pub struct BasicBlock {
    c1: ConvBn,
    c2: ConvBn,
    down: Option<ConvBn>,
}

/// 1x1, 3x3, 1x1 convolutions with a shortcut, expansion 4 (ResNet-50).
#[derive(Module, Debug)]
pub struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    down: Option<ConvBn>,
}

/// A residual block of either kind.
// Built once per network; the size difference costs nothing and burn's derive has no Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    /// ResNet-18/34 block.
    Basic(BasicBlock),
    /// ResNet-50 block.
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::Basic(b) => {
                let short = match &b.down {
                    Some(d) => d.forward(x.clone()),
                    None => x.clone(),
                };
                let y = b.c1.forward_relu(x);
                relu(b.c2.forward(y).add(short))
            }
            Block::Bottleneck(b) => {
                let short = match &b.down {
                    Some(d) => d.forward(x.clone()),
                    None => x.clone(),
                };
                let y = b.c1.forward_relu(x);
                let y = b.c2.forward_relu(y);
                relu(b.c3.forward(y).add(short))
            }
        }
    }
}

/// Depth of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    /// Basic blocks [2, 2, 2, 2], 512 features.
    R18,
    /// Basic blocks [3, 4, 6, 3], 512 features.
    R34,
    /// Bottleneck blocks [3, 4, 6, 3], 2048 features.
    R50,
}

/// A ResNet without its classifier: pooled features of width 512 (18/34) or 2048 (50).
#[derive(Module, Debug)]
pub struct ResNet {
    stem: ConvBn,
    pool: Option<MaxPool2d>,
    blocks: Vec<Block>,
    dim: usize,
}

impl ResNet {
    /// A ResNet for `channels`-channel images. With `cifar_stem` the stem is a 3x3 stride-1
    /// convolution without max-pool (for 32-pixel images); otherwise 7x7 stride 2 and max-pool.
    pub fn new(depth: ResNetDepth, channels: usize, cifar_stem: bool, device: &Device) -> Self {
        let (layers, bottleneck) = match depth {
            ResNetDepth::R18 => ([2, 2, 2, 2], false),
            ResNetDepth::R34 => ([3, 4, 6, 3], false),
            ResNetDepth::R50 => ([3, 4, 6, 3], true),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let (stem, pool) = if cifar_stem {
            (ConvBn::new(channels, 64, 3, 1, device), None)
        } else {
            (
                ConvBn::new(channels, 64, 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            )
        };
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, &n) in layers.iter().enumerate() {
            let width = 64 << stage;
            for i in 0..n {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let cout = width * expansion;
                let down =
                    (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device));
                blocks.push(if bottleneck {
                    Block::Bottleneck(Bottleneck {
                        c1: ConvBn::new(cin, width, 1, 1, device),
                        c2: ConvBn::new(width, width, 3, stride, device),
                        c3: ConvBn::new(width, cout, 1, 1, device),
                        down,
                    })
                } else {
                    Block::Basic(BasicBlock {
                        c1: ConvBn::new(cin, width, 3, stride, device),
                        c2: ConvBn::new(width, width, 3, 1, device),
                        down,
                    })
                });
                cin = cout;
            }
        }
        Self {
            stem,
            pool,
            blocks,
            dim: cin,
        }
    }

    /// The last feature map `[N, D, h, w]`.
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward_relu(x);
        if let Some(p) = &self.pool {
            x = p.forward(x);
        }
        for b in &self.blocks {
            x = b.forward(x);
        }
        x
    }
}

/// Global average pooling `[N, C, H, W]` to `[N, C]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    x.mean_dim(3).mean_dim(2).flatten(1, 3)
}

impl Encoder for ResNet {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        global_avg_pool(self.feature_map(images))
    }

    fn output_dim(&self) -> usize {
        self.dim
    }

    fn feature_map(&self, images: Tensor<4>) -> Option<Tensor<4>> {
        Some(ResNet::feature_map(self, images))
    }
}
