//! Frozen features of a labelled image set, and the raw-pixel baseline.

use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use selfsup_core::Encoder;
use selfsup_data::ImageSet;
use selfsup_data::augment::eval_pipeline;
use selfsup_data::loader::eval_batch;

/// How images are prepared for evaluation (resized to `size`, normalized) and how features
/// are read from the encoder.
#[derive(Clone, Debug)]
pub struct EvalTransform {
    /// Side length fed to the encoder.
    pub size: usize,
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
pub fn extract<E: Encoder>(
    encoder: &E,
    data: &ImageSet,
    tf: &EvalTransform,
    batch: usize,
    device: &Device,
) -> Tensor<2> {
    let pipeline = eval_pipeline(tf.size, tf.mean.clone(), tf.std.clone());
    let mut parts = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + batch.max(1)).min(data.len());
        let x = eval_batch(data, start..end, &pipeline, device);
        parts.push(read(encoder, x, tf.grid).detach());
        start = end;
    }
    Tensor::cat(parts, 0)
}

/// Raw pixels as features: each image as the encoder would see it (resized and normalized
/// by `tf`), flattened.
pub fn raw_pixels(data: &ImageSet, tf: &EvalTransform, device: &Device) -> Tensor<2> {
    let pipeline = eval_pipeline(tf.size, tf.mean.clone(), tf.std.clone());
    let x = eval_batch(data, 0..data.len(), &pipeline, device);
    x.flatten(1, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_encoders::{Arch, EncoderConfig, VitConfig};

    fn tf(grid: usize) -> EvalTransform {
        EvalTransform {
            size: 28,
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
        let pooled = extract(&conv, &data, &tf(1), 4, &dev);
        let grid = extract(&conv, &data, &tf(2), 4, &dev);
        assert_eq!(pooled.dims(), [6, 16]);
        assert_eq!(grid.dims(), [6, 16 * 4]);
        // The four cells average to the pooled feature (the last map is 4 x 4: equal cells).
        let cells = grid.reshape([6, 16, 4]).mean_dim(2).reshape([6, 16]);
        let diff = (cells - pooled).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
        // A ViT has no map: its pooled features.
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
        assert_eq!(extract(&vit, &data, &tf(2), 4, &dev).dims(), [6, 16]);
    }
}
