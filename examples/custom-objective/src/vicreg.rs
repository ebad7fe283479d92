//! The VICReg method: a model (encoder + expander), its objective for the engine, and its
//! settings.

use crate::loss::{Weights, vicreg_loss};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_core::{Encoder, Error, LossOutput, Objective, Result, StepInfo};
use selfsup_encoders::{HeadConfig, ProjectionHead};
use serde::{Deserialize, Serialize};

/// VICReg's settings: the `[vicreg]` table of a run's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VicRegConfig {
    /// Invariance weight (lambda).
    pub invariance_weight: f64,
    /// Variance weight (mu).
    pub variance_weight: f64,
    /// Covariance weight (nu).
    pub covariance_weight: f64,
    /// Added to the variance under the square root.
    pub eps: f64,
    /// The expander: the paper's three layers with BatchNorm, narrower for small encoders.
    pub expander: HeadConfig,
}

impl Default for VicRegConfig {
    fn default() -> Self {
        Self {
            invariance_weight: 25.0,
            variance_weight: 25.0,
            covariance_weight: 1.0,
            eps: 1e-4,
            expander: HeadConfig {
                hidden_dim: 512,
                output_dim: 512,
                layers: 3,
                batch_norm: true,
                output_batch_norm: false,
            },
        }
    }
}

impl VicRegConfig {
    /// Checks the weights, naming the field under `vicreg`.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("invariance_weight", self.invariance_weight),
            ("variance_weight", self.variance_weight),
            ("covariance_weight", self.covariance_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(
                    format!("vicreg.{field}"),
                    format!("{v} must be a finite number >= 0"),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config(
                "vicreg.eps",
                format!("{} must be > 0 (the square root's guard)", self.eps),
            ));
        }
        if self.expander.layers == 0 || self.expander.output_dim < 2 {
            return Err(Error::config(
                "vicreg.expander",
                "needs at least 1 layer and an output of at least 2 dimensions",
            ));
        }
        Ok(())
    }

    fn weights(&self) -> Weights {
        Weights {
            invariance: self.invariance_weight,
            variance: self.variance_weight,
            covariance: self.covariance_weight,
            eps: self.eps,
        }
    }
}

/// An encoder and the expander whose outputs the loss sees (dropped after pretraining).
#[derive(Module, Debug)]
pub struct VicRegModel<E: Encoder> {
    /// The backbone whose features are kept.
    pub encoder: E,
    /// The expander.
    pub expander: ProjectionHead,
}

impl<E: Encoder> VicRegModel<E> {
    /// Wraps `encoder` with the expander of `cfg`.
    pub fn new(encoder: E, cfg: &VicRegConfig, device: &Device) -> Self {
        let expander = ProjectionHead::new(&cfg.expander, encoder.output_dim(), device);
        Self { encoder, expander }
    }
}

/// The VICReg objective: two views of every image, [`vicreg_loss`] between their expanded
/// embeddings.
pub struct VicReg<E> {
    weights: Weights,
    _encoder: std::marker::PhantomData<E>,
}

impl<E> VicReg<E> {
    /// The objective with `cfg`'s weights.
    pub fn new(cfg: &VicRegConfig) -> Self {
        Self {
            weights: cfg.weights(),
            _encoder: std::marker::PhantomData,
        }
    }
}

impl<E: Encoder> Objective for VicReg<E> {
    type Model = VicRegModel<E>;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "vicreg"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for LARS (this crate's preset went NaN at step 830 with 0.6 and trains at 0.15: lower train.optimizer.lr) or a variance term on too small a batch (raise train.batch_size or vicreg.eps)".into()
    }

    fn loss(
        &mut self,
        model: &Self::Model,
        views: &Self::Batch,
        _phase: usize,
        _info: &StepInfo,
    ) -> LossOutput {
        // Each view through the network on its own: VICReg's statistics are per branch, and
        // so are the expander's BatchNorm statistics in the authors' code.
        let z1 = model
            .expander
            .forward(model.encoder.features(views[0].clone()));
        let z2 = model
            .expander
            .forward(model.encoder.features(views[1].clone()));
        let terms = vicreg_loss(z1, z2, &self.weights);
        let scalar = |t: Tensor<1>| t.into_scalar::<f64>();
        LossOutput {
            metrics: vec![
                ("invariance".into(), scalar(terms.invariance)),
                ("variance".into(), scalar(terms.variance)),
                ("covariance".into(), scalar(terms.covariance)),
            ],
            loss: terms.loss,
        }
    }
}
