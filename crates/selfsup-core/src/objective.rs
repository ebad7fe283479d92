//! The [`Objective`] trait: what a method computes from a batch, for the engine to minimise.

use crate::Result;
use crate::optim::ParamSettings;
use burn::module::{Module, ParamId};
use burn::tensor::Tensor;
use std::path::Path;

/// Where training stands, handed to the objective at each step.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global optimizer step, from 0.
    pub step: usize,
    /// Current epoch, from 0.
    pub epoch: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Steps in one epoch.
    pub steps_per_epoch: usize,
}

impl StepInfo {
    /// Fraction of training done, in `[0, 1]`: what momentum and temperature schedules follow.
    pub fn progress(&self) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            self.step as f64 / self.total_steps as f64
        }
    }
}

/// A method's loss for one phase of a step, with extra scalars to log.
pub struct LossOutput {
    /// The scalar loss `[1]` to minimise.
    pub loss: Tensor<1>,
    /// Named scalars for the metrics log (accuracy of a pretext task, entropy, ...).
    pub metrics: Vec<(String, f64)>,
}

impl LossOutput {
    /// A loss with no extra metrics.
    pub fn new(loss: Tensor<1>) -> Self {
        Self {
            loss,
            metrics: Vec::new(),
        }
    }
}

/// A self-supervised method as the engine sees it.
///
/// A step runs `phases()` phases; each computes a loss, back-propagates it, and steps the
/// optimizer of that phase over the parameters `phase_params` names (all by default).
/// One phase serves SimCLR, MAE, DINO, CLIP and RotNet; a GAN uses two (discriminator,
/// then generator), each with its own optimizer. EMA teachers and loss centres are updated
/// in `after_step`, outside the gradient graph.
pub trait Objective {
    /// The trainable network(s), on an autodiff device.
    type Model: Module;
    /// What one step consumes (views of images, images and captions, ...).
    type Batch;

    /// The method's name, for logs and checkpoints.
    fn name(&self) -> &str;

    /// How many optimizer phases a step has.
    fn phases(&self) -> usize {
        1
    }

    /// The loss of `phase` on `batch`.
    fn loss(
        &mut self,
        model: &Self::Model,
        batch: &Self::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput;

    /// The parameters `phase` updates; `None` means all of them.
    fn phase_params(&self, _model: &Self::Model, _phase: usize) -> Option<Vec<ParamId>> {
        None
    }

    /// Parameters of `phase` that train with their own learning-rate scale or without
    /// weight decay (parameter groups: MAE fine-tuning's layer-wise decay); the others train
    /// with [`ParamSettings::default`]. Asked once, when training starts or resumes, of the
    /// model as it then is. Default: none.
    fn param_settings(&self, _model: &Self::Model, _phase: usize) -> Vec<(ParamId, ParamSettings)> {
        Vec::new()
    }

    /// Whether `phase` runs in the step whose update count is `updates` (1-based, skipped
    /// steps not counted), and if so the 1-based count of updates its optimizer will have
    /// made (AdamW's bias correction falls back to it for optimizer states saved before each
    /// parameter kept its own count). Default: every phase in every step. A GAN that
    /// updates its generator once per `k` discriminator updates returns `None` for the
    /// generator's phase in the other steps, and `updates / k` in those it runs.
    fn phase_updates(&self, _phase: usize, updates: u64) -> Option<u64> {
        Some(updates)
    }

    /// Called after each optimizer update of `phase` with the updated model, to keep
    /// constraints on the parameters outside the gradient graph (CLIP clamps its logit scale
    /// here, as open_clip does after `optimizer.step()`, so its forward pass keeps the
    /// gradient). Default: the model unchanged.
    fn constrain(&self, model: Self::Model, _phase: usize) -> Self::Model {
        model
    }

    /// Called after every optimizer step with the updated model (EMA teachers, centres).
    fn after_step(&mut self, _model: &Self::Model, _info: &StepInfo) {}

    /// Called at the end of every epoch: figures to log for it (means over the epoch, a
    /// collapse monitor's), written to `metrics.jsonl` and printed with the epoch's line.
    fn end_epoch(&mut self, _epoch: usize) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Writes the objective's own state (an EMA teacher, a loss centre) into the checkpoint
    /// folder `dir` being written, so that a resumed run continues exactly. Default: none.
    fn save_state(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Reads back what [`Objective::save_state`] wrote into checkpoint `dir`.
    fn load_state(&mut self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// What most often makes this method's loss or gradients non-finite, and the settings to
    /// change: the error of a diverged step says it.
    fn divergence_hint(&self) -> String {
        "a learning rate too high for the batch (lower train.optimizer.lr or lengthen \
         train.schedule.warmup_epochs), or no gradient clipping (set train.grad_clip_norm)"
            .into()
    }
}
