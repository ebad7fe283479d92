//! Frozen features of a labelled image set, and the raw-pixel baseline.

use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use selfsup_core::{Encoder, Result};
use selfsup_data::ImageSet;
use selfsup_data::augment::eval_pipeline;
use selfsup_data::loader::eval_batch;

/// How images are prepared for evaluation (resized to `size`, normalized) and how features
/// are read from the encoder.
#[derive(Clone, Debug)]
pub struct EvalTransform {
    /// Side length fed to the encoder.
    pub size: usize,
    /// For photos of any size: the shorter side resized to `size / ratio` and the centre
    /// `size` square kept. `None`: the whole image resized to the square (sets decoded to
    /// one size).
    pub center_crop: Option<f32>,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// 1: the encoder's pooled features. `g > 1`: its last feature map averaged over
    /// `g x g` cells, flattened (`C g^2` numbers; the layout a RotNet or jigsaw paper keeps
    /// when it evaluates conv features); encoders without a map give their pooled features.
    pub grid: usize,
}

/// The features `tf` asks for of a batch of prepared images.
fn read<E: Encoder>(encoder: &E, x: Tensor<4>, grid: usize) -> Tensor<2> {
    if grid > 1
        && let Some(map) = encoder.feature_map(x.clone())
    {
        return adaptive_avg_pool2d(map, [grid, grid]).flatten(1, 3);
    }
    encoder.features(x)
}

/// Pooled features `[N, D]` of every image of `data`, computed in batches without autodiff.
/// `encoder` should be the inference copy (`Module::valid`) so BatchNorm uses running stats.
/// A streamed image that does not decode is an error (or replaced, per
/// `data.corrupt_images`).
pub fn extract<E: Encoder>(
    encoder: &E,
    data: &ImageSet,
    tf: &EvalTransform,
    batch: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    let pipeline = tf.pipeline();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + batch.max(1)).min(data.len());
        let x = eval_batch(data, start..end, &pipeline, device)?;
        parts.push(read(encoder, x, tf.grid).detach());
        start = end;
    }
    Ok(Tensor::cat(parts, 0))
}

impl EvalTransform {
    /// The image pipeline: resize (or resize and centre-crop), normalize.
    pub fn pipeline(&self) -> selfsup_data::Pipeline {
        eval_pipeline(
            self.size,
            self.center_crop,
            self.mean.clone(),
            self.std.clone(),
        )
    }
}

/// Raw pixels as features: each image as the encoder would see it (resized and normalized
/// by `tf`), flattened; in batches, so a streamed set is decoded a batch at a time.
pub fn raw_pixels(data: &ImageSet, tf: &EvalTransform, device: &Device) -> Result<Tensor<2>> {
    let pipeline = tf.pipeline();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + 512).min(data.len());
        parts.push(eval_batch(data, start..end, &pipeline, device)?.flatten(1, 3));
        start = end;
    }
    Ok(Tensor::cat(parts, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_encoders::{Arch, EncoderConfig, VitConfig};

    fn tf(grid: usize) -> EvalTransform {
        EvalTransform {
            size: 28,
            center_crop: None,
            mean: vec![0.3],
            std: vec![0.3],
            grid,
        }
    }

    #[test]
    fn a_grid_keeps_the_last_maps_layout() {
        let dev = Device::flex();
        let data = selfsup_data::sample::load().unwrap().test.unwrap().take(6);
        let conv = EncoderConfig {
            arch: Arch::Convnet,
            width: 4,
            ..EncoderConfig::default()
        }
        .init(1, &dev);
        let pooled = extract(&conv, &data, &tf(1), 4, &dev).unwrap();
        let grid = extract(&conv, &data, &tf(2), 4, &dev).unwrap();
        assert_eq!(pooled.dims(), [6, 16]);
        assert_eq!(grid.dims(), [6, 16 * 4]);
        // The four cells average to the pooled feature (the last map is 4 x 4: equal cells).
        let cells = grid.reshape([6, 16, 4]).mean_dim(2).reshape([6, 16]);
        let diff = (cells - pooled).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
        // A ViT's map is its patch tokens on their grid: width x g² numbers.
        let vit = EncoderConfig {
            arch: Arch::Vit,
            vit: VitConfig {
                depth: 1,
                dim: 16,
                heads: 2,
                ..VitConfig::tiny(28, 7)
            },
            ..EncoderConfig::default()
        }
        .init(1, &dev);
        assert_eq!(
            extract(&vit, &data, &tf(2), 4, &dev).unwrap().dims(),
            [6, 16 * 4]
        );
    }
}
