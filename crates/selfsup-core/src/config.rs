//! Configuration shared by every method: optimizer, schedule and training loop.
//!
//! Every struct rejects unknown keys and gives every field a default, so a TOML file only
//! needs the keys it changes. [`TrainConfig::validate`] names the field that is out of range.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which optimizer updates the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (PyTorch semantics: no dampening), optionally Nesterov.
    Sgd,
    /// Adam with decoupled weight decay.
    Adamw,
    /// SGD with layer-wise trust ratios (You et al.), the usual SimCLR optimizer.
    Lars,
}

/// Optimizer hyper-parameters. Weight decay and LARS adaptation skip biases and norm weights
/// (every parameter of rank 1), as lightly and solo-learn do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd`, `adamw` or `lars`.
    pub kind: OptimizerKind,
    /// Peak learning rate, reached after warm-up.
    pub lr: f64,
    /// Weight decay (L2 for SGD and LARS, decoupled for AdamW); not applied to rank-1 params.
    pub weight_decay: f64,
    /// Momentum for SGD and LARS.
    pub momentum: f64,
    /// Nesterov momentum for SGD and LARS.
    pub nesterov: bool,
    /// AdamW first-moment decay.
    pub beta1: f64,
    /// AdamW second-moment decay.
    pub beta2: f64,
    /// AdamW epsilon.
    pub eps: f64,
    /// LARS trust coefficient (eta).
    pub trust_coefficient: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Lars,
            lr: 0.3,
            weight_decay: 1e-6,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            trust_coefficient: 0.001,
        }
    }
}

/// Learning-rate schedule: linear warm-up, then cosine decay to `final_lr_ratio * lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Learning rate at the end of training, as a fraction of the peak.
    pub final_lr_ratio: f64,
    /// Weight decay at the end of training: when set, the decay follows a cosine from
    /// `optimizer.weight_decay` at the first step to this at the last (DINO: 0.04 to 0.4);
    /// unset, it stays constant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_weight_decay: Option<f64>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            warmup_epochs: 1.0,
            final_lr_ratio: 0.0,
            final_weight_decay: None,
        }
    }
}

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Images per optimizer step (each contributes one view per branch).
    pub batch_size: usize,
    /// Seed for weights, data order and augmentations: the same seed reproduces the run.
    pub seed: u64,
    /// Stop after this many steps in total (0: run all epochs); for quick tests.
    pub max_steps: usize,
    /// Clip gradient norms to this value (0: no clipping); `clip_mode` says which norm.
    pub grad_clip_norm: f64,
    /// What `grad_clip_norm` bounds: `global`, the norm of all gradients together (PyTorch's
    /// `clip_grad_norm_`, the update's direction kept), or `per_tensor`, each parameter
    /// tensor's own norm (DINO's `clip_gradients`, the preset's choice there).
    pub clip_mode: ClipMode,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep this many most recent step checkpoints.
    pub keep_checkpoints: usize,
    /// Write a metrics line every this many steps.
    pub log_every: usize,
    /// Skip a step whose loss or gradient norm is not finite (nothing of it is applied; the
    /// count is logged and checkpointed) instead of stopping with an error.
    pub skip_nonfinite: bool,
    /// Type of the forward and backward passes: `f32`, or mixed precision with `bf16` or
    /// `f16` passes while the weights, the optimizer and the loss stay `f32` (SimCLR, RotNet and
    /// CLIP; the device must support the type).
    pub precision: Precision,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            seed: 42,
            max_steps: 0,
            grad_clip_norm: 0.0,
            clip_mode: ClipMode::Global,
            checkpoint_every: 200,
            keep_checkpoints: 2,
            log_every: 10,
            skip_nonfinite: false,
            precision: Precision::F32,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
        }
    }
}

/// Which gradient norm `train.grad_clip_norm` bounds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClipMode {
    /// All gradients scaled by one factor when their joint norm exceeds the limit.
    #[default]
    Global,
    /// Each parameter tensor scaled on its own when its norm exceeds the limit.
    PerTensor,
}

/// The floating-point type of a step's forward and backward passes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit throughout.
    #[default]
    F32,
    /// bfloat16 passes (f32's range, 8 bits of mantissa): no loss scaling needed.
    Bf16,
    /// float16 passes, with the loss's gradient scaled by [`Precision::F16_LOSS_SCALE`] so
    /// that small gradients do not flush to zero.
    F16,
}

impl Precision {
    /// The fixed loss scale of `f16` steps (2^10); a step whose scaled gradients overflow
    /// is caught as a non-finite gradient.
    pub const F16_LOSS_SCALE: f64 = 1024.0;

    /// The reduced type of the passes; `None` for `f32`.
    pub fn reduced(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::FloatDType::BF16),
            Precision::F16 => Some(burn::tensor::FloatDType::F16),
        }
    }

    /// What the gradient of the loss is multiplied by before the reduced passes.
    pub fn loss_scale(self) -> f64 {
        match self {
            Precision::F16 => Self::F16_LOSS_SCALE,
            _ => 1.0,
        }
    }
}

/// Fails with a config error on `field` unless `ok`.
pub fn ensure(ok: bool, field: &str, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(field, msg()))
    }
}

fn finite_nonneg(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

impl TrainConfig {
    /// Every rule `train.batch_size` must keep, in one place: at least 2 (contrastive losses
    /// compare the images of a batch), at most the `images` of the training split when they
    /// are known (`what` names the data), and a multiple of `devices` (each gets an equal
    /// shard).
    pub fn check_batch(&self, images: Option<(usize, &str)>, devices: usize) -> Result<()> {
        let b = self.batch_size;
        ensure(b >= 2, "train.batch_size", || {
            format!("{b} is too small: contrastive losses need at least 2")
        })?;
        if let Some((n, what)) = images {
            ensure(n >= b, "train.batch_size", || {
                format!("{b} is larger than the {n} training images of {what}; lower it")
            })?;
        }
        ensure(
            devices <= 1 || b.is_multiple_of(devices),
            "train.batch_size",
            || {
                format!(
                    "{b} does not split evenly over {devices} devices: use a multiple of {devices}"
                )
            },
        )
    }

    /// Checks every value's range, naming the first field that is out of it.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optimizer;
        ensure(self.epochs > 0, "train.epochs", || {
            "must be at least 1".into()
        })?;
        self.check_batch(None, 1)?;
        ensure(self.log_every > 0, "train.log_every", || {
            "must be at least 1".into()
        })?;
        ensure(
            finite_nonneg(self.grad_clip_norm),
            "train.grad_clip_norm",
            || {
                format!(
                    "{} must be finite and >= 0 (0 disables clipping)",
                    self.grad_clip_norm
                )
            },
        )?;
        ensure(o.lr.is_finite() && o.lr > 0.0, "train.optimizer.lr", || {
            format!("{} must be a positive number", o.lr)
        })?;
        ensure(
            finite_nonneg(o.weight_decay),
            "train.optimizer.weight_decay",
            || format!("{} must be >= 0", o.weight_decay),
        )?;
        ensure(
            (0.0..1.0).contains(&o.momentum),
            "train.optimizer.momentum",
            || format!("{} must be in [0, 1)", o.momentum),
        )?;
        ensure(
            (0.0..1.0).contains(&o.beta1),
            "train.optimizer.beta1",
            || format!("{} must be in [0, 1)", o.beta1),
        )?;
        ensure(
            (0.0..1.0).contains(&o.beta2),
            "train.optimizer.beta2",
            || format!("{} must be in [0, 1)", o.beta2),
        )?;
        ensure(
            o.eps > 0.0 && o.eps.is_finite(),
            "train.optimizer.eps",
            || format!("{} must be > 0", o.eps),
        )?;
        ensure(
            o.trust_coefficient > 0.0 && o.trust_coefficient.is_finite(),
            "train.optimizer.trust_coefficient",
            || format!("{} must be > 0", o.trust_coefficient),
        )?;
        ensure(
            finite_nonneg(self.schedule.warmup_epochs),
            "train.schedule.warmup_epochs",
            || format!("{} must be >= 0", self.schedule.warmup_epochs),
        )?;
        if let Some(wd) = self.schedule.final_weight_decay {
            ensure(
                finite_nonneg(wd),
                "train.schedule.final_weight_decay",
                || format!("{wd} must be >= 0"),
            )?;
        }
        ensure(
            (0.0..=1.0).contains(&self.schedule.final_lr_ratio),
            "train.schedule.final_lr_ratio",
            || format!("{} must be in [0, 1]", self.schedule.final_lr_ratio),
        )?;
        Ok(())
    }
}

/// Parses TOML into `T`, turning serde's message into a config error that names the field.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        let field = e
            .span()
            .map(|s| text[s].lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        Error::config(
            if field.is_empty() {
                origin.to_string()
            } else {
                format!("{origin}: {field}")
            },
            msg,
        )
    })
}

/// Serializes a config to TOML.
pub fn to_toml<T: Serialize>(value: &T) -> Result<String> {
    toml::to_string_pretty(value).map_err(|e| Error::Invalid(format!("cannot write config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_roundtrip() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let text = to_toml(&c).unwrap();
        let back: TrainConfig = from_toml(&text, "test").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = from_toml::<TrainConfig>("epochs = 3\nlearning_rate = 0.1\n", "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c: TrainConfig = from_toml("[optimizer]\nlr = 0.5\n", "cfg").unwrap();
        assert_eq!(c.optimizer.lr, 0.5);
        assert_eq!(c.epochs, TrainConfig::default().epochs);
    }

    #[test]
    fn negative_lr_names_the_field() {
        let mut c = TrainConfig::default();
        c.optimizer.lr = -0.1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("train.optimizer.lr"), "{err}");
    }
}
