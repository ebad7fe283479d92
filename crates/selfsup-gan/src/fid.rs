//! The encoder whose feature space the Frechet distance is measured in.
//!
//! No downloaded Inception network: by default the distance uses a RotNet ConvNet-32 that
//! selfsup trained on Fashion-MNIST itself (`configs/rotnet-fashion-mnist.toml`: kNN 84.93 %,
//! linear 87.10 % on the test split), embedded in the crate (968 KB). Its numbers are only
//! comparable with other numbers from the same encoder: not with published FIDs. For other
//! data, pass a run of your own (`gan.fid_encoder`).

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use selfsup_core::{Encoder, Error, Result};
use selfsup_encoders::{Arch, Backbone, EncoderConfig};

/// The built-in encoder's weights: `selfsup pretrain --config configs/rotnet-fashion-mnist.toml`.
const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../assets/fid-rotnet-convnet32-fashion-mnist.bpk");
/// The normalization that run used (Fashion-MNIST's training mean and deviation).
const BUILTIN_MEAN: f32 = 0.286_040_6;
const BUILTIN_STD: f32 = 0.353_024_24;

/// An encoder (for inference) and how images are fed to it.
pub struct FidEncoder<E: Encoder> {
    /// The encoder, an inference copy (`Module::valid`).
    pub encoder: E,
    /// Side length it is fed (images are resized to it).
    pub size: usize,
    /// Its channels: grey images are repeated to 3, colour averaged to 1 as needed.
    pub channels: usize,
    /// Per-channel normalization mean.
    pub mean: Vec<f32>,
    /// Per-channel normalization deviation.
    pub std: Vec<f32>,
    /// What it is, for logs.
    pub name: String,
}

/// The built-in Fashion-MNIST RotNet encoder on `device`.
pub fn builtin(device: &Device) -> Result<FidEncoder<Backbone>> {
    let cfg = EncoderConfig {
        arch: Arch::Convnet,
        width: 32,
        ..EncoderConfig::default()
    };
    let fresh = cfg.init(1, device);
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(BUILTIN_WEIGHTS.to_vec()))
        .map_err(|e| Error::Invalid(format!("the built-in FID encoder: {e}")))?;
    let encoder = fresh
        .try_load_record(record)
        .map_err(|e| Error::Invalid(format!("the built-in FID encoder: {e}")))?
        .valid();
    Ok(FidEncoder {
        encoder,
        size: 28,
        channels: 1,
        mean: vec![BUILTIN_MEAN],
        std: vec![BUILTIN_STD],
        name: "built-in RotNet ConvNet-32 (Fashion-MNIST)".into(),
    })
}

impl<E: Encoder> FidEncoder<E> {
    /// Features `[N, D]` of images `[N, C, H, W]` with pixels in `[0, 1]`.
    pub fn features(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        let [_, c, h, w] = pixels.dims();
        let device = pixels.device();
        let x = match (c, self.channels) {
            (a, b) if a == b => pixels,
            (3, 1) => pixels.mean_dim(1),
            (1, 3) => pixels.repeat_dim(1, 3),
            (a, b) => {
                return Err(Error::Invalid(format!(
                    "the FID encoder ({}) takes {b}-channel images; these have {a}",
                    self.name
                )));
            }
        };
        let x = if (h, w) == (self.size, self.size) {
            x
        } else {
            interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_output_size([self.size, self.size]),
            )
        };
        let k = self.channels;
        let per_channel =
            |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, k, 1, 1]), &device);
        let x = (x - per_channel(&self.mean)) / per_channel(&self.std);
        Ok(self.encoder.features(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_encoder_loads_and_takes_any_size_and_channels() {
        let dev = Device::flex();
        let fid = builtin(&dev).unwrap();
        assert_eq!(fid.encoder.output_dim(), 128);
        let grey = Tensor::<4>::full([2, 1, 28, 28], 0.5, &dev);
        let a = fid.features(grey).unwrap();
        assert_eq!(a.dims(), [2, 128]);
        // A colour 32-pixel image of the same grey gives nearly the same features.
        let colour = Tensor::<4>::full([2, 3, 32, 32], 0.5, &dev);
        let b = fid.features(colour).unwrap();
        let diff = (a - b).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{diff}");
        let bad = Tensor::<4>::zeros([1, 2, 28, 28], &dev);
        assert!(fid.features(bad).is_err());
    }
}
