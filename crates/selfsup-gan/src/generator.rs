//! The DCGAN generator: noise through a projection and transposed convolutions up to an image.

use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Device, Tensor};
use selfsup_core::{Error, Result};
use selfsup_kernels::batch_norm_relu;

/// How the generator grows an image of side `size`: from `start` x `start` through
/// `upsamplings` doublings. The most doublings (up to 4) that leave a start of at least 4
/// pixels: 28 -> 7 (2), 32 -> 4 (3), 64 -> 4 (4), 48 -> 6 (3).
pub fn growth(size: usize) -> Result<(usize, usize)> {
    (1..=4)
        .rev()
        .find(|&l| size.is_multiple_of(1 << l) && size >> l >= 4)
        .map(|l| (size >> l, l))
        .ok_or_else(|| {
            Error::config(
                "augment.crop_size",
                format!(
                    "a GAN's generator doubles its image side in every layer, so images of {size} pixels cannot be made: use an even size of at least 8 (28 and 32 work; crop_size sets it)"
                ),
            )
        })
}

/// A transposed 4x4 stride-2 convolution (doubling the side), BatchNorm, ReLU.
#[derive(Module, Debug)]
struct UpBlock {
    conv: ConvTranspose2d,
    bn: Option<BatchNorm>,
}

/// BatchNorm (when there is one), then ReLU.
fn norm_relu<const D: usize>(bn: &Option<BatchNorm>, x: Tensor<D>) -> Tensor<D> {
    match bn {
        Some(bn) => batch_norm_relu(bn, x),
        None => relu(x),
    }
}

fn up_conv(cin: usize, cout: usize, bias: bool, device: &Device) -> ConvTranspose2d {
    ConvTranspose2dConfig::new([cin, cout], [4, 4])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_bias(bias)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
}

/// `z [N, noise_dim]` -> Linear -> `[N, w 2^(L-1), s, s]` -> BatchNorm, ReLU -> (L - 1) x
/// (transposed conv, BatchNorm, ReLU), halving the channels -> transposed conv to the image's
/// channels -> tanh: images in `[-1, 1]`, the range the real images are normalized to.
/// Without BatchNorm (`gan.generator_batch_norm = false`) the projection and the
/// convolutions get biases instead.
#[derive(Module, Debug)]
pub struct Generator {
    project: Linear,
    bn0: Option<BatchNorm>,
    ups: Vec<UpBlock>,
    out: ConvTranspose2d,
    noise_dim: usize,
    start: usize,
    start_channels: usize,
}

impl Generator {
    /// A generator of `channels` x `size` x `size` images from `noise_dim` numbers, with
    /// `width` channels before the last layer, with BatchNorm after every hidden layer when
    /// `batch_norm` is set. Fails (naming `augment.crop_size`) for sizes [`growth`] cannot
    /// reach.
    pub fn new(
        noise_dim: usize,
        channels: usize,
        size: usize,
        width: usize,
        batch_norm: bool,
        device: &Device,
    ) -> Result<Self> {
        let (start, layers) = growth(size)?;
        let start_channels = width << (layers - 1);
        let project = LinearConfig::new(noise_dim, start_channels * start * start)
            .with_bias(!batch_norm)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            })
            .init(device);
        let ups = (0..layers - 1)
            .map(|i| {
                let cin = start_channels >> i;
                UpBlock {
                    conv: up_conv(cin, cin / 2, !batch_norm, device),
                    bn: batch_norm.then(|| BatchNormConfig::new(cin / 2).init(device)),
                }
            })
            .collect();
        Ok(Self {
            project,
            bn0: batch_norm.then(|| BatchNormConfig::new(start_channels).init(device)),
            ups,
            out: up_conv(width, channels, true, device),
            noise_dim,
            start,
            start_channels,
        })
    }

    /// Length of the noise vectors it takes.
    pub fn noise_dim(&self) -> usize {
        self.noise_dim
    }

    /// Images `[N, C, H, W]` in `[-1, 1]` from noise `[N, noise_dim]`.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        let n = z.dims()[0];
        let x = self
            .project
            .forward(z)
            .reshape([n, self.start_channels, self.start, self.start]);
        let mut x = norm_relu(&self.bn0, x);
        for up in &self.ups {
            x = norm_relu(&up.bn, up.conv.forward(x));
        }
        tanh(self.out.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_picks_the_most_doublings_from_at_least_4_pixels() {
        assert_eq!(growth(28).unwrap(), (7, 2));
        assert_eq!(growth(32).unwrap(), (4, 3));
        assert_eq!(growth(64).unwrap(), (4, 4));
        assert_eq!(growth(48).unwrap(), (6, 3));
        assert_eq!(growth(8).unwrap(), (4, 1));
        let err = growth(27).unwrap_err().to_string();
        assert!(err.contains("augment.crop_size"), "{err}");
        assert!(growth(6).is_err());
    }

    #[test]
    fn output_has_the_data_shape_and_range() {
        let dev = Device::flex();
        for (c, size) in [(1, 28), (3, 32)] {
            let g = Generator::new(16, c, size, 8, true, &dev).unwrap();
            let z =
                Tensor::<2>::random([5, 16], burn::tensor::Distribution::Normal(0.0, 3.0), &dev);
            let x = g.forward(z);
            assert_eq!(x.dims(), [5, c, size, size]);
            let v = x.into_data().try_to_vec::<f32>().unwrap();
            assert!(
                v.iter().all(|p| (-1.0..=1.0).contains(p)),
                "outside [-1, 1]"
            );
            // Not a constant picture.
            let (lo, hi) = v
                .iter()
                .fold((1f32, -1f32), |(a, b), &p| (a.min(p), b.max(p)));
            assert!(hi - lo > 1e-3);
        }
    }
}
