//! Fine-tuning: the pretrained encoder plus a linear head, trained end to end with labels on
//! a fraction of the training set (the semi-supervised protocol of SimCLR, 1 % and 10 %),
//! through the shared [`Trainer`].

use crate::features::EvalTransform;
use crate::linear::{Accuracy, cross_entropy, topk_accuracy};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::{
    Encoder, LossOutput, Objective, OptimizerKind, Result, StepInfo, TrainConfig, Trainer,
};
use selfsup_data::augment::{HorizontalFlip, Normalize, RandomResizedCrop};
use selfsup_data::loader::eval_batch;
use selfsup_data::{ImageSet, LabelledBatch, LabelledLoader, Pipeline};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// An encoder with a linear classification head on its pooled features.
#[derive(Module, Debug)]
pub struct Classifier<E: Encoder> {
    /// The (pretrained) backbone.
    pub encoder: E,
    /// `output_dim -> classes`.
    pub head: Linear,
}

impl<E: Encoder> Classifier<E> {
    /// Puts a fresh head for `classes` on `encoder`.
    pub fn new(encoder: E, classes: usize, device: &Device) -> Self {
        let head = LinearConfig::new(encoder.output_dim(), classes).init(device);
        Self { encoder, head }
    }

    /// Class scores `[N, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.encoder.features(images))
    }
}

/// Supervised cross-entropy on labelled batches: the objective of fine-tuning.
pub struct Supervised<E>(std::marker::PhantomData<E>);

impl<E> Default for Supervised<E> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<E: Encoder> Objective for Supervised<E> {
    type Model = Classifier<E>;
    type Batch = LabelledBatch;

    fn name(&self) -> &str {
        "finetune"
    }

    fn loss(
        &mut self,
        model: &Classifier<E>,
        batch: &LabelledBatch,
        _phase: usize,
        _info: &StepInfo,
    ) -> LossOutput {
        LossOutput::new(cross_entropy(
            model.forward(batch.images.clone()),
            batch.labels.clone(),
        ))
    }
}

/// Fine-tuning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Fractions of the labels to fine-tune on, one run each (SimCLR's table: 0.01, 0.1).
    pub fractions: Vec<f64>,
    /// Smallest random-resized-crop area of the training images.
    pub crop_min_scale: f64,
    /// Probability of a horizontal flip.
    pub flip_prob: f64,
    /// The training loop (epochs, batch size, optimizer, schedule).
    pub train: TrainConfig,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        let mut train = TrainConfig {
            epochs: 20,
            batch_size: 64,
            checkpoint_every: 0,
            keep_checkpoints: 1,
            ..TrainConfig::default()
        };
        train.optimizer.kind = OptimizerKind::Sgd;
        train.optimizer.lr = 0.05;
        train.optimizer.momentum = 0.9;
        train.optimizer.nesterov = true;
        train.optimizer.weight_decay = 5e-4;
        train.schedule.warmup_epochs = 0.0;
        Self {
            fractions: vec![0.01, 0.1],
            crop_min_scale: 0.5,
            flip_prob: 0.5,
            train,
        }
    }
}

impl FinetuneConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        for f in &self.fractions {
            ensure(*f > 0.0 && *f <= 1.0, "finetune.fractions", || {
                format!("{f} must be in (0, 1]")
            })?;
        }
        ensure(
            self.crop_min_scale > 0.0 && self.crop_min_scale <= 1.0,
            "finetune.crop_min_scale",
            || format!("{} must be in (0, 1]", self.crop_min_scale),
        )?;
        ensure(
            (0.0..=1.0).contains(&self.flip_prob),
            "finetune.flip_prob",
            || format!("{} must be in [0, 1]", self.flip_prob),
        )?;
        self.train.validate()
    }
}

/// One fine-tuning run's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// Which weights were fine-tuned: `pretrained` or `random init` (supervised from scratch).
    #[serde(default)]
    pub init: String,
    /// Fraction of the training labels used.
    pub fraction: f64,
    /// Labelled images trained on.
    pub labelled_images: usize,
    /// Accuracy on the test split.
    pub test: Accuracy,
    /// Seconds the fine-tuning took.
    pub seconds: f64,
}

/// Accuracy of `model` (an inference copy) on the labelled `test` set.
pub fn classifier_accuracy<E: Encoder>(
    model: &Classifier<E>,
    test: &ImageSet,
    tf: &EvalTransform,
    device: &Device,
) -> Result<Accuracy> {
    let labels = test.labels.clone().ok_or_else(|| {
        selfsup_core::Error::Invalid("the test split has no labels to score against".into())
    })?;
    let pipeline = tf.pipeline();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < test.len() {
        let end = (start + 512).min(test.len());
        parts.push(
            model
                .forward(eval_batch(test, start..end, &pipeline, device)?)
                .detach(),
        );
        start = end;
    }
    topk_accuracy(Tensor::cat(parts, 0), &labels)
}

/// Fine-tunes `encoder` (living on `device`, an autodiff device) with a new head on `fraction`
/// of the labels of `train`, writing checkpoints under `run_dir` (replacing any earlier
/// fine-tuning checkpoints there), and scores it on `test`.
#[allow(clippy::too_many_arguments)]
pub fn finetune<E: Encoder>(
    encoder: E,
    train: &ImageSet,
    test: &ImageSet,
    fraction: f64,
    cfg: &FinetuneConfig,
    tf: &EvalTransform,
    run_dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<FinetuneReport> {
    cfg.validate()?;
    let device = device.clone();
    let old = run_dir.join("checkpoints");
    if old.is_dir() {
        std::fs::remove_dir_all(&old).map_err(|e| selfsup_core::Error::io(&old, e))?;
    }
    let subset = Arc::new(train.label_fraction(fraction, cfg.train.seed)?);
    let classes = train.num_classes().max(test.num_classes()).max(1);
    let mut tcfg = cfg.train.clone();
    // A small subset cannot fill large batches; keep at least one step per epoch.
    tcfg.batch_size = tcfg.batch_size.min(subset.len()).max(1);
    let pipeline = Pipeline::default()
        .then(RandomResizedCrop {
            size: tf.size,
            scale: (cfg.crop_min_scale as f32, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        })
        .then(HorizontalFlip {
            p: cfg.flip_prob as f32,
        })
        .then(Normalize {
            mean: tf.mean.clone(),
            std: tf.std.clone(),
        });
    let loader = selfsup_core::Prefetch::new(LabelledLoader::new(
        subset.clone(),
        pipeline,
        tcfg.batch_size,
        tcfg.seed,
        device.clone(),
    )?);
    let model = selfsup_core::seed::init_module(&device, tcfg.seed ^ 0xf1e7, |d| {
        Classifier::new(encoder, classes, d)
    });
    let start = std::time::Instant::now();
    let trainer = Trainer::new(tcfg, run_dir)?.with_progress(progress);
    let mut objective = Supervised::<E>::default();
    let out = trainer.fit(&mut objective, model, &loader, Default::default())?;
    let seconds = start.elapsed().as_secs_f64();
    let plain = device.inner();
    let model = out.model.valid();
    let test = classifier_accuracy(&model, test, tf, &plain)?;
    Ok(FinetuneReport {
        init: String::new(),
        fraction,
        labelled_images: subset.len(),
        test,
        seconds,
    })
}
