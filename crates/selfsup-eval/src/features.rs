//! Frozen features of a labelled image set, and the raw-pixel baseline.

use burn::tensor::{Device, Tensor};
use selfsup_core::Encoder;
use selfsup_data::ImageSet;
use selfsup_data::augment::eval_pipeline;
use selfsup_data::loader::eval_batch;

/// How images are prepared for evaluation: resized to `size`, normalized.
#[derive(Clone, Debug)]
pub struct EvalTransform {
    /// Side length fed to the encoder.
    pub size: usize,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
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
        parts.push(encoder.features(x).detach());
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
