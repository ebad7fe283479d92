//! SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual
//! Representations", 2020): two augmented views, a shared encoder and projection head, NT-Xent.

use crate::loss::nt_xent;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::{Encoder, LossOutput, Objective, Result, StepInfo};
use selfsup_encoders::{HeadConfig, ProjectionHead};
use serde::{Deserialize, Serialize};

/// SimCLR's own settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimClrConfig {
    /// NT-Xent temperature (tau).
    pub temperature: f64,
    /// The projection head.
    pub head: HeadConfig,
}

impl Default for SimClrConfig {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            head: HeadConfig::default(),
        }
    }
}

impl SimClrConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.temperature.is_finite() && self.temperature > 0.0,
            "simclr.temperature",
            || format!("{} must be > 0 (typical: 0.1 to 0.5)", self.temperature),
        )?;
        ensure(
            self.head.output_dim >= 1 && self.head.hidden_dim >= 1,
            "simclr.head",
            || "output_dim and hidden_dim must be at least 1".into(),
        )
    }
}

/// Encoder plus projection head.
#[derive(Module, Debug)]
pub struct SimClrModel<E: Encoder> {
    /// The backbone whose features are kept after pretraining.
    pub encoder: E,
    /// The projection head, discarded after pretraining.
    pub head: ProjectionHead,
}

impl<E: Encoder> SimClrModel<E> {
    /// Wraps `encoder` with a head built from `cfg`.
    pub fn new(encoder: E, cfg: &SimClrConfig, device: &Device) -> Self {
        let head = ProjectionHead::new(&cfg.head, encoder.output_dim(), device);
        Self { encoder, head }
    }

    /// Embeddings `[N, output_dim]` of images.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.encoder.features(images))
    }
}

/// The SimCLR objective: NT-Xent between the embeddings of two views of each image.
pub struct SimClr<E> {
    temperature: f64,
    _encoder: std::marker::PhantomData<E>,
}

impl<E> SimClr<E> {
    /// The objective with `cfg`'s temperature.
    pub fn new(cfg: &SimClrConfig) -> Self {
        Self {
            temperature: cfg.temperature,
            _encoder: std::marker::PhantomData,
        }
    }
}

impl<E: Encoder> Objective for SimClr<E> {
    type Model = SimClrModel<E>;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "simclr"
    }

    fn loss(
        &mut self,
        model: &Self::Model,
        views: &Self::Batch,
        _phase: usize,
        _info: &StepInfo,
    ) -> LossOutput {
        // One forward over both views: half the kernel launches, and BatchNorm sees all 2N.
        let [n, ..] = views[0].dims();
        let z = model.embed(Tensor::cat(vec![views[0].clone(), views[1].clone()], 0));
        let z1 = z.clone().narrow(0, 0, n);
        let z2 = z.narrow(0, n, n);
        LossOutput::new(nt_xent(z1, z2, self.temperature))
    }
}
