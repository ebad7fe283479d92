//! Fine-tuning: the pretrained encoder plus a linear head, trained end to end with labels on
//! a fraction of the training set (the semi-supervised protocol of SimCLR, 1 % and 10 %),
//! through the shared [`Trainer`].

use crate::features::EvalTransform;
use crate::linear::{Accuracy, smoothed_cross_entropy, topk_accuracy};
use burn::module::{Module, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_core::config::ensure;
use selfsup_core::{
    Encoder, LossOutput, Objective, OptimizerKind, ParamSettings, Result, StepInfo, TrainConfig,
    Trainer,
};
use selfsup_data::augment::{HorizontalFlip, Normalize, RandomResizedCrop};
use selfsup_data::loader::eval_batch;
use selfsup_data::{ImageSet, LabelledBatch, LabelledLoader, Pipeline};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// An encoder with a linear classification head on its pooled features (with MAE's global
/// pool, on the mean patch token normalized by a LayerNorm of its own, `fc_norm`).
#[derive(Module, Debug)]
pub struct Classifier<E: Encoder> {
    /// The (pretrained) backbone.
    pub encoder: E,
    /// The norm on globally pooled features; `None`: the encoder's own pooling.
    pub fc_norm: Option<LayerNorm>,
    /// `output_dim -> classes`.
    pub head: Linear,
}

impl<E: Encoder> Classifier<E> {
    /// Puts a fresh head for `classes` on `encoder`; with `global_pool`, on its mean patch
    /// token through a fresh `fc_norm` ([`Encoder::finetune_features`]).
    pub fn new(encoder: E, classes: usize, global_pool: bool, device: &Device) -> Self {
        let dim = encoder.output_dim();
        let head = LinearConfig::new(dim, classes).init(device);
        let fc_norm = global_pool.then(|| LayerNormConfig::new(dim).init(device));
        Self {
            encoder,
            fc_norm,
            head,
        }
    }

    /// Class scores `[N, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_kept(images, &[])
    }

    /// Class scores with block `b`'s residual branches scaled by `keep[b]` (stochastic
    /// depth in training; [`Encoder::finetune_features`]).
    pub fn forward_kept(&self, images: Tensor<4>, keep: &[Tensor<1>]) -> Tensor<2> {
        let pool = self.fc_norm.is_some();
        let f = self.encoder.finetune_features(images, pool, keep);
        let f = match &self.fc_norm {
            Some(norm) => norm.forward(f),
            None => f,
        };
        self.head.forward(f)
    }
}

/// Supervised cross-entropy on labelled batches, the objective of fine-tuning: label
/// smoothing, stochastic depth drawn from `(seed, step)`, and layer-wise learning-rate decay
/// as [`FinetuneConfig`] says.
pub struct Supervised<E> {
    label_smoothing: f64,
    drop_path: f64,
    layer_decay: f64,
    seed: u64,
    encoder: std::marker::PhantomData<E>,
}

impl<E> Default for Supervised<E> {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            drop_path: 0.0,
            layer_decay: 1.0,
            seed: 0,
            encoder: std::marker::PhantomData,
        }
    }
}

impl<E> Supervised<E> {
    /// The objective of `cfg`, drawing its stochastic depth from `seed`.
    pub fn new(cfg: &FinetuneConfig, seed: u64) -> Self {
        Self {
            label_smoothing: cfg.label_smoothing,
            drop_path: cfg.drop_path,
            layer_decay: cfg.layer_decay,
            seed,
            encoder: std::marker::PhantomData,
        }
    }
}

/// Stochastic depth's per-sample scales for `blocks` blocks of a batch of `n`: block `b` is
/// dropped with probability `rate * b / (blocks - 1)` (timm's linear rule, from 0 at the
/// first block to `rate` at the last), a kept one scaled by `1 / (1 - p)`; drawn from
/// `(seed, step, b)`, so a resumed run draws the same. Empty when `rate` is 0.
pub fn drop_path_scales(
    rate: f64,
    blocks: usize,
    n: usize,
    seed: u64,
    step: usize,
    device: &Device,
) -> Vec<Tensor<1>> {
    use rand::Rng;
    if rate <= 0.0 {
        return Vec::new();
    }
    (0..blocks)
        .map(|b| {
            let p = rate * b as f64 / (blocks.max(2) - 1) as f64;
            let mut rng = selfsup_core::seed::rng(
                seed,
                selfsup_core::seed::STREAM_OBJECTIVE,
                step as u64,
                b as u64,
            );
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.random::<f64>() < p {
                        0.0
                    } else {
                        (1.0 / (1.0 - p)) as f32
                    }
                })
                .collect();
            Tensor::from_data(TensorData::new(v, [n]), device)
        })
        .collect()
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
        info: &StepInfo,
    ) -> LossOutput {
        let keep = drop_path_scales(
            self.drop_path,
            model.encoder.blocks(),
            batch.images.dims()[0],
            self.seed,
            info.step,
            &batch.images.device(),
        );
        let logits = model.forward_kept(batch.images.clone(), &keep);
        LossOutput::new(smoothed_cross_entropy(
            logits,
            batch.labels.clone(),
            self.label_smoothing,
        ))
    }

    /// Layer-wise decay (MAE's `param_groups_lrd`): a parameter of layer `l` of a stack of
    /// `B` blocks trains at `layer_decay^(B + 1 - l)` of the rate (the head, not listed, at
    /// 1), and those the encoder marks take no weight decay.
    fn param_settings(
        &self,
        model: &Classifier<E>,
        _phase: usize,
    ) -> Vec<(ParamId, ParamSettings)> {
        let top = model.encoder.blocks() + 1;
        model
            .encoder
            .param_layers()
            .into_iter()
            .map(|(id, layer, decay)| {
                let settings = ParamSettings {
                    lr_scale: self.layer_decay.powi((top - layer.min(top)) as i32),
                    weight_decay: decay,
                };
                (id, settings)
            })
            .collect()
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
    /// Layer-wise learning-rate decay for transformer encoders: block `b` of `B` trains at
    /// `layer_decay^(B - b)` of the head's rate, the embeddings at `layer_decay^(B + 1)`
    /// (MAE's fine-tuning: 0.75). 1: one rate for all.
    pub layer_decay: f64,
    /// Classify the mean patch token through a LayerNorm of the head's own (MAE's
    /// `global_pool`) rather than the encoder's pooled features. Transformer encoders only.
    pub global_pool: bool,
    /// Stochastic depth: the drop probability of the last block's residual branches, rising
    /// linearly from 0 at the first (MAE's ViT-B fine-tuning: 0.1). Transformer encoders only.
    pub drop_path: f64,
    /// Label smoothing of the cross-entropy: the target is `1 - e` on the label plus `e / C`
    /// spread over all `C` classes (MAE's fine-tuning: 0.1).
    pub label_smoothing: f64,
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
            layer_decay: 1.0,
            global_pool: false,
            drop_path: 0.0,
            label_smoothing: 0.0,
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
        ensure(
            self.layer_decay > 0.0 && self.layer_decay <= 1.0,
            "finetune.layer_decay",
            || format!("{} must be in (0, 1] (1: no decay)", self.layer_decay),
        )?;
        ensure(
            (0.0..1.0).contains(&self.drop_path),
            "finetune.drop_path",
            || format!("{} must be in [0, 1)", self.drop_path),
        )?;
        ensure(
            (0.0..1.0).contains(&self.label_smoothing),
            "finetune.label_smoothing",
            || format!("{} must be in [0, 1)", self.label_smoothing),
        )?;
        self.train.validate()
    }

    /// Checks that the transformer-only settings meet an encoder with `blocks` blocks
    /// ([`Encoder::blocks`]), naming the first that does not.
    pub fn check_encoder(&self, blocks: usize) -> Result<()> {
        if blocks > 0 {
            return Ok(());
        }
        for (field, set) in [
            ("finetune.layer_decay", self.layer_decay != 1.0),
            ("finetune.global_pool", self.global_pool),
            ("finetune.drop_path", self.drop_path > 0.0),
        ] {
            ensure(!set, field, || {
                "needs a transformer encoder (encoder.arch = \"vit\"): this encoder has no blocks to decay or drop; leave it at its default".into()
            })?;
        }
        Ok(())
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
    cfg.check_encoder(encoder.blocks())?;
    let model = selfsup_core::seed::init_module(&device, tcfg.seed ^ 0xf1e7, |d| {
        Classifier::new(encoder, classes, cfg.global_pool, d)
    });
    let start = std::time::Instant::now();
    let mut objective = Supervised::<E>::new(cfg, tcfg.seed);
    let trainer = Trainer::new(tcfg, run_dir)?.with_progress(progress);
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

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_encoders::VitConfig;

    #[test]
    fn drop_path_scales_rise_with_depth_and_repeat_by_step() {
        let dev = Device::flex();
        assert!(drop_path_scales(0.0, 4, 8, 1, 0, &dev).is_empty());
        let vals = |v: Vec<Tensor<1>>| -> Vec<Vec<f32>> {
            v.into_iter()
                .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
                .collect()
        };
        let a = vals(drop_path_scales(0.5, 3, 400, 1, 7, &dev));
        assert!(
            a[0].iter().all(|&v| v == 1.0),
            "the first block is never dropped"
        );
        assert!(
            a[1].iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        assert!(a[2].iter().all(|&v| v == 0.0 || v == 2.0));
        let dropped = a[2].iter().filter(|&&v| v == 0.0).count();
        assert!((150..250).contains(&dropped), "{dropped} of 400 at p = 0.5");
        assert_eq!(a, vals(drop_path_scales(0.5, 3, 400, 1, 7, &dev)));
        assert_ne!(a, vals(drop_path_scales(0.5, 3, 400, 1, 8, &dev)));
    }

    #[test]
    fn layer_decay_scales_each_layer_and_exempts_the_tokens() {
        let dev = Device::flex();
        let mut c = VitConfig::tiny(8, 4);
        c.dim = 8;
        c.depth = 2;
        c.heads = 2;
        let vit = c.init(1, &dev).unwrap();
        let layers = vit.param_layers();
        let model = Classifier::new(vit, 3, true, &dev);
        let cfg = FinetuneConfig {
            layer_decay: 0.5,
            ..FinetuneConfig::default()
        };
        let settings = Supervised::<selfsup_encoders::VisionTransformer>::new(&cfg, 0)
            .param_settings(&model, 0);
        assert_eq!(
            settings.len(),
            layers.len(),
            "the head and fc_norm are not listed"
        );
        for ((id, s), (lid, layer, decay)) in settings.iter().zip(&layers) {
            assert_eq!(id, lid);
            // Two blocks: layers 0..=3, the head's at 3 trains at the full rate.
            assert_eq!(s.lr_scale, 0.5f64.powi(3 - *layer as i32));
            assert_eq!(s.weight_decay, *decay);
        }
        assert!(
            settings
                .iter()
                .any(|(_, s)| s.lr_scale == 0.125 && !s.weight_decay)
        );
    }
}
