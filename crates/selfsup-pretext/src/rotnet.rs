//! RotNet: every image in its four rotations, a 4-way head on the encoder's features, and the
//! cross-entropy of naming the rotation. The features kept afterwards are the encoder's.

use crate::loss::pretext_loss;
use crate::rotation::rotations_batch;
use burn::module::Module;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use selfsup_core::parallel::{split_each, whole_batch_loss};
use selfsup_core::{Encoder, Error, LossOutput, Objective, Result, Shardable, StepInfo};
use selfsup_encoders::{HeadConfig, ProjectionHead};
use serde::{Deserialize, Serialize};

/// The rotation head's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RotNetConfig {
    /// Linear layers of the head: 1 is a linear classifier on the features; more put
    /// `Linear -> BatchNorm -> ReLU` layers between, which take on the most task-specific part
    /// of the work (the paper's later blocks), leaving the encoder's features more general
    /// (on Fashion-MNIST: kNN 80.2 % against 77.2 % after one epoch; docs/methods/pretext.md).
    pub layers: usize,
    /// Width of the head's hidden layers (when `layers > 1`).
    pub hidden_dim: usize,
}

impl Default for RotNetConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            hidden_dim: 512,
        }
    }
}

impl RotNetConfig {
    /// Checks the settings, naming the field out of range as `rotnet.FIELD`.
    pub fn validate(&self) -> Result<()> {
        if self.layers == 0 {
            return Err(Error::config("rotnet.layers", "must be at least 1"));
        }
        if self.layers > 1 && self.hidden_dim == 0 {
            return Err(Error::config("rotnet.hidden_dim", "must be at least 1"));
        }
        Ok(())
    }

    /// The head as a projection head with 4 outputs.
    fn head(&self) -> HeadConfig {
        HeadConfig {
            hidden_dim: self.hidden_dim,
            output_dim: 4,
            layers: self.layers,
            batch_norm: true,
            output_batch_norm: false,
        }
    }
}

/// The encoder and its rotation head.
#[derive(Module, Debug)]
pub struct RotNetModel<E: Encoder> {
    /// The backbone whose features are kept.
    pub encoder: E,
    /// 4-way classifier over the features, discarded after pretraining.
    pub head: ProjectionHead,
}

impl<E: Encoder> RotNetModel<E> {
    /// `encoder` with a fresh rotation head shaped by `cfg` on `device`.
    pub fn new(encoder: E, cfg: &RotNetConfig, device: &Device) -> Self {
        let head = ProjectionHead::new(&cfg.head(), encoder.output_dim(), device);
        Self { encoder, head }
    }

    /// Rotation logits `[N, 4]` of images.
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.encoder.features(images))
    }
}

/// The RotNet objective over one view of each image (`Vec` of views; the first is used).
pub struct RotNet<E> {
    _encoder: std::marker::PhantomData<E>,
}

impl<E> RotNet<E> {
    /// The objective (it has no settings: the four rotations are the task).
    pub fn new() -> Self {
        Self {
            _encoder: std::marker::PhantomData,
        }
    }
}

impl<E> Default for RotNet<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Encoder> Objective for RotNet<E> {
    type Model = RotNetModel<E>;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "rotnet"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for the batch (lower train.optimizer.lr, lengthen train.schedule.warmup_epochs, set train.grad_clip_norm)".into()
    }

    /// Cross-entropy of the rotation over the `4N` rotated images; logs `pretext_top1`, how
    /// often the rotation is named right.
    fn loss(
        &mut self,
        model: &Self::Model,
        views: &Self::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, views, phase, info)
    }
}

/// Over several devices, each rotates its own images; the cross-entropy is the mean over
/// every device's `4n` rotated images, as over the whole batch on one device.
impl<E: Encoder> Shardable for RotNet<E> {
    type Shard = Vec<Tensor<4>>;

    fn shard(
        &self,
        _: &Self::Model,
        views: &Vec<Tensor<4>>,
        devices: &[Device],
        _: &StepInfo,
    ) -> Result<Vec<Vec<Tensor<4>>>> {
        split_each(&views[..1], devices)
    }

    fn whole(&self, _: &Self::Model, views: &Vec<Tensor<4>>, _: &StepInfo) -> Vec<Tensor<4>> {
        views.clone()
    }

    fn cast(&self, views: Vec<Tensor<4>>, dtype: FloatDType) -> Vec<Tensor<4>> {
        views.into_iter().map(|v| v.cast(dtype)).collect()
    }

    /// The logits `[n, 4]` of the images turned by 0, 90, 180 and 270 degrees: four outputs.
    fn outputs(
        &mut self,
        model: &Self::Model,
        views: &Vec<Tensor<4>>,
        _phase: usize,
        _: &StepInfo,
    ) -> Vec<Tensor<2>> {
        let n = views[0].dims()[0];
        let (images, _) = rotations_batch(views[0].clone());
        let logits = model.logits(images);
        (0..4).map(|r| logits.clone().narrow(0, r * n, n)).collect()
    }

    fn gathered_loss(
        &mut self,
        _: &Self::Model,
        logits: Vec<Tensor<2>>,
        _phase: usize,
        _: &StepInfo,
    ) -> LossOutput {
        let n = logits[0].dims()[0];
        let device = logits[0].device();
        let labels: Vec<i64> = (0..4).flat_map(|r| std::iter::repeat_n(r, n)).collect();
        pretext_loss(
            Tensor::cat(logits, 0),
            Tensor::from_data(TensorData::new(labels, [4 * n]), &device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_encoders::EncoderConfig;

    #[test]
    fn a_step_gives_the_cross_entropy_of_four_classes() {
        let dev = Device::flex().autodiff();
        let enc = EncoderConfig {
            width: 4,
            ..EncoderConfig::default()
        }
        .init(1, &dev);
        let linear = RotNetConfig {
            layers: 1,
            ..RotNetConfig::default()
        };
        let model = RotNetModel::new(enc, &linear, &dev);
        let x = Tensor::<4>::random([3, 1, 16, 16], burn::tensor::Distribution::Default, &dev);
        let info = StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        };
        let out = RotNet::new().loss(&model, &vec![x.clone()], 0, &info);
        let loss = out.loss.into_scalar::<f64>();
        // A fresh head: close to ln 4.
        assert!((loss - 4f64.ln()).abs() < 0.7, "{loss}");
        assert_eq!(out.metrics[0].0, "pretext_top1");
        // A deeper head.
        let deep = RotNetConfig {
            layers: 2,
            hidden_dim: 8,
        };
        deep.validate().unwrap();
        let enc = EncoderConfig {
            width: 4,
            ..EncoderConfig::default()
        }
        .init(1, &dev);
        let model = RotNetModel::new(enc, &deep, &dev);
        assert_eq!(model.logits(x).dims(), [3, 4]);
        let zero = RotNetConfig { layers: 0, ..deep };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("rotnet.layers")
        );
    }

    /// RotNet over two (flex) replicas equals one device with the whole batch (a ViT: no
    /// BatchNorm).
    #[test]
    fn a_step_over_two_devices_equals_one_device_with_the_whole_batch() {
        use selfsup_core::TrainConfig;
        use selfsup_core::grads::param_values;
        use selfsup_core::parallel::one_and_two_devices;
        use selfsup_core::seed::init_module;
        use selfsup_encoders::{Arch, Backbone, VitConfig};

        let dev = selfsup_core::DeviceSpec::for_tests().autodiff();
        let enc = EncoderConfig {
            arch: Arch::Vit,
            vit: VitConfig {
                dim: 8,
                depth: 1,
                heads: 2,
                ..VitConfig::tiny(8, 4)
            },
            ..EncoderConfig::default()
        };
        let head = RotNetConfig {
            layers: 1,
            ..RotNetConfig::default()
        };
        let start = init_module(&dev, 2, |d| RotNetModel::new(enc.init(1, d), &head, d));
        let again = selfsup_core::parallel::replicate(&start, &dev);
        let x = vec![Tensor::<4>::from_data(
            TensorData::new(
                (0..4 * 64).map(|i| ((i * 37) % 11) as f32 / 11.0).collect(),
                [4, 1, 8, 8],
            ),
            &dev,
        )];
        let info = StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        };
        let mut train = TrainConfig::default();
        train.optimizer.kind = selfsup_core::OptimizerKind::Sgd;
        let ((one, l1), (two, l2)) =
            one_and_two_devices(RotNet::<Backbone>::new, &train, start, &x, &info, 0.1).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "one device {l1}, two {l2}");
        let (w1, w2) = (param_values(&one), param_values(&two));
        let d = selfsup_core::grads::max_abs_diff(&w1, &w2);
        assert!(d < 1e-5, "weights differ by {d}");

        // Two ranks (threads, `LocalGroup`): each rotates its half; one loss over both.
        let (_, ranks) = selfsup_core::distributed::one_process_and_ranks(
            RotNet::<Backbone>::new,
            &train,
            again,
            &x,
            &info,
            0.1,
            2,
        )
        .unwrap();
        for (r, rank) in ranks.iter().enumerate() {
            assert!(
                (l1 - rank.loss).abs() < 1e-5,
                "one device {l1}, rank {r} {}",
                rank.loss
            );
            let d = selfsup_core::grads::max_abs_diff(&w1, &param_values(&rank.model));
            assert!(d < 1e-5, "rank {r}'s weights differ by {d}");
        }
    }
}
