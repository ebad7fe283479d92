//! The one training loop every method runs through.
//!
//! Our own loop rather than burn-train's `Learner`: methods need several optimizer phases
//! (GAN), EMA teachers updated between steps (DINO), per-step generated labels (RotNet) and
//! bit-exact resume of the data order; a plain loop over [`Objective`] serves all of them
//! with less machinery than adapting the Learner to each.

use crate::checkpoint::{self, CheckpointState};
use crate::config::{ClipMode, Precision, TrainConfig};
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::grads;
use crate::metrics::MetricsLog;
use crate::objective::{Objective, StepInfo};
use crate::optim::{ParamSettings, SelfsupOptimizer, StepCounter};
use crate::parallel::{DataParallel, ParallelGrads, Shardable};
use crate::schedule::{LrSchedule, weight_decay_at};
use burn::module::{ParamGroup, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where batches come from: a deterministic function of `(epoch, index)`.
pub trait BatchSource {
    /// What one step consumes.
    type Batch;
    /// Batches in one epoch.
    fn steps_per_epoch(&self) -> usize;
    /// Images in one batch (for images/s).
    fn batch_size(&self) -> usize;
    /// Batch `index` of `epoch`; the same arguments give the same batch.
    fn batch(&self, epoch: usize, index: usize) -> Result<Self::Batch>;
}

/// Called at the end of every epoch with the model; returns named values to log
/// (the online kNN monitor).
pub type EpochHook<'a, M> = dyn FnMut(usize, &M) -> Result<Vec<(String, f64)>> + 'a;

/// What a finished run returns.
pub struct TrainOutcome<M> {
    /// The trained model.
    pub model: M,
    /// Steps completed (including those done before a resume).
    pub steps: usize,
    /// Mean loss of the last logged window.
    pub last_loss: f64,
    /// Training throughput of this process, images per second (of the whole run when this
    /// process resumed a finished run).
    pub images_per_sec: f64,
    /// Seconds of training of the whole run, over every process that trained it (resumes).
    pub train_seconds: f64,
    /// The final checkpoint folder.
    pub checkpoint: PathBuf,
}

/// Runs an [`Objective`] over a [`BatchSource`] with the configured optimizer and schedule.
pub struct Trainer {
    config: TrainConfig,
    run_dir: PathBuf,
    progress: bool,
}

/// Wall-clock time of the parts of one step, in seconds. On `flex` every operation runs when
/// called, so the parts add up to the step; on GPU backends work is queued and the split is
/// only indicative.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// The objective's forward pass, up to the loss value.
    pub forward: f64,
    /// Backpropagation and gathering the gradients.
    pub backward: f64,
    /// Clipping and the optimizer update.
    pub optimizer: f64,
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub enum StepResult {
    /// The model was updated.
    Updated {
        /// The summed loss of the phases.
        loss: f64,
        /// Values the objective and the clipping reported.
        metrics: Vec<(String, f64)>,
        /// Where the time went.
        times: StepTimes,
    },
    /// The loss or the gradients were not finite and `skip_nonfinite` is set: nothing of the
    /// step was applied (but the updates of a multi-phase step's earlier phases).
    Skipped,
}

/// One optimizer step of an [`Objective`]: forward, backward, optional global-norm clipping
/// and the update, for each phase. The [`Trainer`] runs it in its loop; benchmarks run it
/// alone.
pub struct Stepper {
    optims: Vec<ModuleOptimizer>,
    /// Each phase's optimizer before its parameter groups, to make the groups' from.
    bases: Vec<SelfsupOptimizer>,
    counters: Vec<StepCounter>,
    grad_clip_norm: f64,
    clip_mode: ClipMode,
    skip_nonfinite: bool,
}

impl Stepper {
    /// Fresh optimizers (one per phase) as `cfg` says.
    pub fn new(cfg: &TrainConfig, phases: usize) -> Self {
        let (bases, counters): (Vec<_>, Vec<_>) = (0..phases.max(1))
            .map(|_| SelfsupOptimizer::new(cfg.optimizer.clone()))
            .unzip();
        Self {
            optims: bases.iter().cloned().map(ModuleOptimizer::from).collect(),
            bases,
            counters,
            grad_clip_norm: cfg.grad_clip_norm,
            clip_mode: cfg.clip_mode,
            skip_nonfinite: cfg.skip_nonfinite,
        }
    }

    /// Sets the weight decay of the coming steps in every phase; `None`: the config's.
    pub fn set_weight_decay(&self, decay: Option<f64>) {
        for c in &self.counters {
            c.set_weight_decay(decay);
        }
    }

    /// Gives the parameters `settings` names their own learning-rate scale and weight-decay
    /// switch in `phase` (burn's parameter groups, one per distinct setting). Set before any
    /// step and before loading a checkpoint's optimizer states: adding a group clears the
    /// states of its parameters.
    pub fn set_param_settings(&mut self, phase: usize, settings: Vec<(ParamId, ParamSettings)>) {
        let mut groups: Vec<(ParamSettings, Vec<ParamId>)> = Vec::new();
        for (id, s) in settings {
            match groups.iter_mut().find(|(g, _)| *g == s) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((s, vec![id])),
            }
        }
        let mut optim = ModuleOptimizer::from(self.bases[phase].clone());
        for (s, ids) in groups {
            optim = optim.with_group(
                ParamGroup::from_ids(ids),
                self.bases[phase].for_group(s),
                None,
            );
        }
        self.optims[phase] = optim;
    }

    /// The optimizers, for checkpoints.
    pub fn optimizers(&self) -> &[ModuleOptimizer] {
        &self.optims
    }

    /// Replaces the optimizers' state with a checkpoint's.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let optims = std::mem::take(&mut self.optims);
        self.optims = checkpoint::load_optims(dir, optims)?;
        Ok(())
    }

    /// Runs step `info.step` at learning rate `lr`; `updates` is the 1-based count of updates
    /// this step makes (steps minus skipped ones), which AdamW's bias correction uses.
    pub fn step<O: Objective>(
        &mut self,
        objective: &mut O,
        model: O::Model,
        batch: &O::Batch,
        info: &StepInfo,
        lr: f64,
        updates: u64,
    ) -> Result<(O::Model, StepResult)> {
        let merge = Metrics::Extend;
        self.run_phases(
            objective,
            model,
            info,
            lr,
            updates,
            merge,
            |o, m, phase, times| {
                let t = Instant::now();
                let out = o.loss(m, batch, phase, info);
                let value = out.loss.clone().into_scalar::<f64>();
                times.forward += t.elapsed().as_secs_f64();
                if !value.is_finite() {
                    return Ok(Err(value));
                }
                let t = Instant::now();
                let mut raw = out.loss.backward();
                let grads = match o.phase_params(m, phase) {
                    Some(ids) => GradientsParams::from_params(&mut raw, m, &ids),
                    None => GradientsParams::from_grads(raw, m),
                };
                times.backward += t.elapsed().as_secs_f64();
                Ok(Ok(ParallelGrads {
                    loss: value,
                    metrics: out.metrics,
                    grads,
                }))
            },
        )
    }

    /// [`Stepper::step`] with the batch split over `parallel`'s devices: one gathered loss,
    /// gradients summed over the devices, one update on the first device. One-phase
    /// objectives only: the replicas are made anew for each call, so what a first phase
    /// left for a second (a GAN's generated images) would carry the graph of replicas that
    /// are gone. (Ranks keep their own model across phases: [`Stepper::step_distributed`]
    /// runs every phase.)
    #[allow(clippy::too_many_arguments)]
    pub fn step_parallel<O: Shardable>(
        &mut self,
        parallel: &DataParallel,
        objective: &mut O,
        model: O::Model,
        batch: &O::Batch,
        info: &StepInfo,
        lr: f64,
        updates: u64,
    ) -> Result<(O::Model, StepResult)> {
        if self.optims.len() != 1 {
            return Err(Error::Invalid(format!(
                "{} has {} optimizer phases; training over several devices runs one-phase methods (over MPI ranks every phase runs: --distributed mpi)",
                objective.name(),
                self.optims.len()
            )));
        }
        self.step_gathered(objective, model, info, lr, updates, |o, m, phase| {
            parallel.gradients(o, m, batch, phase, info)
        })
    }

    /// [`Stepper::step`] as rank `distributed.rank()` of a distributed run: for each phase
    /// this rank's part of the global `batch` forward and backward, the gathered loss, the
    /// gradients summed over the ranks, and the same update on every rank (see
    /// [`crate::distributed`]).
    #[allow(clippy::too_many_arguments)]
    pub fn step_distributed<O: Shardable>(
        &mut self,
        distributed: &Distributed,
        objective: &mut O,
        model: O::Model,
        batch: &O::Batch,
        info: &StepInfo,
        lr: f64,
        updates: u64,
    ) -> Result<(O::Model, StepResult)> {
        self.step_gathered(objective, model, info, lr, updates, |o, m, phase| {
            distributed.gradients(o, m, batch, phase, info)
        })
    }

    /// The phases of a step whose gradients `gradients` computes (over devices or ranks), each
    /// phase's update before the next phase's outputs, as [`Stepper::step`] does. Metrics of
    /// the same name from several phases (the exchanges' time and bytes) add up.
    fn step_gathered<O: Shardable>(
        &mut self,
        objective: &mut O,
        model: O::Model,
        info: &StepInfo,
        lr: f64,
        updates: u64,
        mut gradients: impl FnMut(
            &mut O,
            &O::Model,
            usize,
        ) -> Result<std::result::Result<ParallelGrads, f64>>,
    ) -> Result<(O::Model, StepResult)> {
        let merge = Metrics::AddSameNames;
        self.run_phases(
            objective,
            model,
            info,
            lr,
            updates,
            merge,
            |o, m, phase, times| {
                let t = Instant::now();
                let g = gradients(o, m, phase);
                times.backward += t.elapsed().as_secs_f64();
                g
            },
        )
    }

    /// The loop every kind of step shares: for each phase that updates at `updates`, its loss
    /// and gradients from `phase` (`Err(loss)` when the loss is not finite), then its update;
    /// the step stops, skipped, at a non-finite loss or gradient norm (when steps are skipped
    /// rather than failed). Earlier phases' updates of a skipped step stand (a GAN's
    /// discriminator).
    #[allow(clippy::too_many_arguments)]
    fn run_phases<O: Objective>(
        &mut self,
        objective: &mut O,
        mut model: O::Model,
        info: &StepInfo,
        lr: f64,
        updates: u64,
        merge: Metrics,
        mut phase: impl FnMut(
            &mut O,
            &O::Model,
            usize,
            &mut StepTimes,
        ) -> Result<std::result::Result<ParallelGrads, f64>>,
    ) -> Result<(O::Model, StepResult)> {
        let mut metrics: Vec<(String, f64)> = Vec::new();
        let mut loss = 0.0;
        let mut times = StepTimes::default();
        for p in 0..self.optims.len() {
            let Some(phase_updates) = objective.phase_updates(p, updates) else {
                continue;
            };
            let g = match phase(objective, &model, p, &mut times)? {
                Ok(g) => g,
                Err(value) => {
                    self.nonfinite(objective, info, "loss", value)?;
                    return Ok((model, StepResult::Skipped));
                }
            };
            loss += g.loss;
            match merge {
                Metrics::Extend => metrics.extend(g.metrics),
                Metrics::AddSameNames => {
                    for (name, value) in g.metrics {
                        match metrics.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, v)) => *v += value,
                            None => metrics.push((name, value)),
                        }
                    }
                }
            }
            let t = Instant::now();
            let (next, updated) = self.update(
                objective,
                model,
                g.grads,
                p,
                phase_updates,
                info,
                lr,
                &mut metrics,
            )?;
            model = next;
            times.optimizer += t.elapsed().as_secs_f64();
            if !updated {
                return Ok((model, StepResult::Skipped));
            }
        }
        Ok((
            model,
            StepResult::Updated {
                loss,
                metrics,
                times,
            },
        ))
    }

    /// `Ok` when `skip_nonfinite` is set (the step is to be skipped), else the error naming
    /// the step, the quantity and the method's likely cause.
    fn nonfinite<O: Objective>(
        &self,
        objective: &O,
        info: &StepInfo,
        what: &str,
        value: f64,
    ) -> Result<()> {
        if self.skip_nonfinite {
            tracing::warn!(
                "step {}: {} {what} is {value}; step skipped (train.skip_nonfinite)",
                info.step,
                objective.name()
            );
            return Ok(());
        }
        Err(Error::NonFinite {
            step: info.step,
            what: format!("{} {what}", objective.name()),
            value,
            hint: objective.divergence_hint(),
        })
    }

    /// Clipping and the optimizer update of `phase` with gradients `g`; `false` (the model
    /// untouched) when the gradients are not finite and steps are skipped. Their global norm
    /// is checked at every step, clipped or not: one reduction per parameter.
    #[allow(clippy::too_many_arguments)]
    fn update<O: Objective>(
        &mut self,
        objective: &O,
        model: O::Model,
        mut g: GradientsParams,
        phase: usize,
        phase_updates: u64,
        info: &StepInfo,
        lr: f64,
        metrics: &mut Vec<(String, f64)>,
    ) -> Result<(O::Model, bool)> {
        let norm = if self.grad_clip_norm > 0.0 {
            match self.clip_mode {
                ClipMode::Global => grads::clip_global_norm(&model, &mut g, self.grad_clip_norm),
                ClipMode::PerTensor => {
                    grads::clip_per_tensor_norm(&model, &mut g, self.grad_clip_norm)
                }
            }
        } else {
            grads::global_norm(&model, &g)
        };
        if !norm.is_finite() {
            self.nonfinite(objective, info, "gradient norm", norm)?;
            return Ok((model, false));
        }
        if self.grad_clip_norm > 0.0 {
            metrics.push((format!("grad_norm_{phase}"), norm));
        }
        self.counters[phase].set(phase_updates);
        let model = self.optims[phase].step(lr, model, g);
        Ok((objective.constrain(model, phase), true))
    }
}

/// One optimizer step as the loop runs it: the stepper, the objective, the model, the batch,
/// where training stands, the learning rate and the 1-based update count.
pub type StepFn<'a, O> = dyn FnMut(
        &mut Stepper,
        &mut O,
        <O as Objective>::Model,
        &<O as Objective>::Batch,
        &StepInfo,
        f64,
        u64,
    ) -> Result<(<O as Objective>::Model, StepResult)>
    + 'a;

/// Where the parts of a split batch run: the devices of this process, or the ranks of a
/// distributed run.
#[derive(Clone, Debug)]
enum Spread {
    Devices(DataParallel),
    Ranks(Distributed),
}

/// A step over the devices of a [`DataParallel`] (its precision set by the trainer's config)
/// or the ranks of a [`Distributed`] run.
type ShardedStepFn<'a, O> = dyn FnMut(
        &Spread,
        &mut Stepper,
        &mut O,
        <O as Objective>::Model,
        &<O as Objective>::Batch,
        &StepInfo,
        f64,
        u64,
    ) -> Result<(<O as Objective>::Model, StepResult)>
    + 'a;

/// The data-parallel (or mixed-precision) way of stepping that [`FitOptions::parallel`] or
/// [`FitOptions::distributed`] sets.
struct Sharded<'a, O: Objective> {
    spread: Spread,
    step: Box<ShardedStepFn<'a, O>>,
}

/// How [`Trainer::fit`] runs: fresh or resumed, on one device or several, with or without an
/// end-of-epoch hook. `FitOptions::default()` trains from scratch on the model's device.
pub struct FitOptions<'a, O: Objective> {
    /// Continue from the newest checkpoint of the run folder (a fresh start when it has none).
    pub resume: bool,
    /// Called at the end of every epoch with the model; its values are logged.
    pub on_epoch: Option<&'a mut EpochHook<'a, O::Model>>,
    parallel: Option<Sharded<'a, O>>,
}

impl<O: Objective> Default for FitOptions<'_, O> {
    fn default() -> Self {
        Self {
            resume: false,
            on_epoch: None,
            parallel: None,
        }
    }
}

impl<'a, O: Objective> FitOptions<'a, O> {
    /// Fresh start, one device, no hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resume from the newest checkpoint when `resume`.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Whether the batches are split over devices ([`FitOptions::parallel`]).
    pub fn is_parallel(&self) -> bool {
        self.parallel.is_some()
    }

    /// Runs `hook` at the end of every epoch.
    pub fn on_epoch(mut self, hook: &'a mut EpochHook<'a, O::Model>) -> Self {
        self.on_epoch = Some(hook);
        self
    }
}

impl<'a, O: Shardable + 'a> FitOptions<'a, O> {
    /// Splits every step's batch over `parallel`'s devices (see [`crate::parallel`]) and runs
    /// its passes in `train.precision`; the model lives on the first device. Checkpoints are
    /// the same as a one-device run's, so a run may resume on another number of devices.
    pub fn parallel(mut self, parallel: &DataParallel) -> Self {
        self.parallel = Some(Self::sharded(Spread::Devices(parallel.clone())));
        self
    }

    /// Runs as rank `distributed.rank()` of a distributed run (see [`crate::distributed`]):
    /// every rank passes the same source and the same global batches, trains its part of each,
    /// and takes the same update. Rank 0 alone writes the run folder (checkpoints, metrics)
    /// and runs the end-of-epoch hook; every rank resumes from the checkpoint rank 0 chooses.
    /// Checkpoints are a one-process run's, so a run may resume on another number of ranks.
    pub fn distributed(mut self, distributed: &Distributed) -> Self {
        self.parallel = Some(Self::sharded(Spread::Ranks(distributed.clone())));
        self
    }

    fn sharded(spread: Spread) -> Sharded<'a, O> {
        Sharded {
            spread,
            step: Box::new(|spread, stepper, o, m, b, info, lr, updates| match spread {
                Spread::Devices(p) => stepper.step_parallel(p, o, m, b, info, lr, updates),
                Spread::Ranks(d) => stepper.step_distributed(d, o, m, b, info, lr, updates),
            }),
        }
    }
}

impl Trainer {
    /// A trainer writing checkpoints and `metrics.jsonl` under `run_dir`.
    pub fn new(config: TrainConfig, run_dir: impl AsRef<Path>) -> Result<Self> {
        config.validate()?;
        let run_dir = run_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        Ok(Self {
            config,
            run_dir,
            progress: true,
        })
    }

    /// Shows or hides the progress bar (hidden anyway when stderr is not a terminal).
    pub fn with_progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Trains `model` as `options` say: from scratch or resumed from the newest checkpoint in
    /// the run folder (same schedule and data order), on one device or with every step's batch
    /// split over several ([`FitOptions::parallel`], for [`Shardable`] objectives), with an
    /// end-of-epoch hook (the online kNN monitor of the pipeline).
    ///
    /// `train.precision` other than f32 needs [`FitOptions::parallel`]: mixed precision runs
    /// through the same reduced-precision copies as data parallelism (a one-device
    /// [`DataParallel`] is enough).
    pub fn fit<O, S>(
        &self,
        objective: &mut O,
        model: O::Model,
        source: &S,
        options: FitOptions<'_, O>,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch>,
    {
        let FitOptions {
            resume,
            on_epoch,
            parallel,
        } = options;
        // The data-parallel way of stepping over its devices in `train.precision`, or none.
        let mut sharded = match parallel {
            None if self.config.precision != Precision::F32 => {
                return Err(Error::config(
                    "train.precision",
                    format!(
                        "{} trains in f32: mixed precision needs an objective that implements `Shardable` (every built-in method but the GAN), run with `FitOptions::parallel`",
                        objective.name()
                    ),
                ));
            }
            None => None,
            Some(Sharded { spread, step }) => {
                let parts = match &spread {
                    Spread::Devices(p) => p.devices().len(),
                    Spread::Ranks(d) => d.size(),
                };
                TrainConfig {
                    batch_size: source.batch_size(),
                    ..self.config.clone()
                }
                .check_batch(None, parts)?;
                let spread = match spread {
                    Spread::Devices(p) => Spread::Devices(p.with_precision(self.config.precision)?),
                    Spread::Ranks(_) if self.config.precision != Precision::F32 => {
                        return Err(Error::config(
                            "train.precision",
                            "distributed runs train in f32 (mixed precision runs within one process only): set train.precision = \"f32\"",
                        ));
                    }
                    ranks => ranks,
                };
                Some((spread, step))
            }
        };
        let ranks = match &sharded {
            Some((Spread::Ranks(d), _)) => Some(d.clone()),
            _ => None,
        };
        self.run(
            objective,
            model,
            source,
            resume,
            ranks.as_ref(),
            on_epoch,
            &mut |stepper: &mut Stepper,
                  o: &mut O,
                  m,
                  b: &O::Batch,
                  info: &StepInfo,
                  lr,
                  updates| match &mut sharded {
                None => stepper.step(o, m, b, info, lr, updates),
                Some((parallel, step)) => step(parallel, stepper, o, m, b, info, lr, updates),
            },
        )
    }

    /// The checkpoint a resumed run continues from: the newest verified one; in a distributed
    /// run rank 0's choice, sent to every rank (which then checks it sees that checkpoint's
    /// files), so every rank loads the same one.
    fn resume_from(&self, ranks: Option<&Distributed>) -> Result<Option<PathBuf>> {
        let Some(d) = ranks else {
            return checkpoint::latest_verified(&self.run_dir);
        };
        let mine = if d.is_writer() {
            checkpoint::latest_verified(&self.run_dir)?
        } else {
            None
        };
        let step = match &mine {
            Some(dir) => checkpoint::read_state(dir)?.step as u64,
            None => 0,
        };
        let all = d.collective().all_gather_bytes(&step.to_le_bytes())?;
        let chosen = u64::from_le_bytes(all[..8].try_into().expect("rank 0's 8 bytes"));
        if chosen == 0 {
            return Ok(None);
        }
        let dir = checkpoint::step_dir(&self.run_dir, chosen as usize);
        if !d.is_writer() {
            // A rank on another node needs the run folder on a shared file system.
            checkpoint::verify(&dir)?;
        }
        Ok(Some(dir))
    }

    #[allow(clippy::too_many_arguments)]
    fn run<O, S>(
        &self,
        objective: &mut O,
        mut model: O::Model,
        source: &S,
        resume: bool,
        ranks: Option<&Distributed>,
        mut on_epoch: Option<&mut EpochHook<'_, O::Model>>,
        step_fn: &mut StepFn<'_, O>,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch>,
    {
        let cfg = &self.config;
        let spe = source.steps_per_epoch();
        if spe == 0 {
            // A source of fewer images than a batch (the pipeline checks its data first).
            cfg.check_batch(Some((0, "the source")), 1)?;
        }
        let mut total = cfg.epochs * spe;
        if cfg.max_steps > 0 {
            total = total.min(cfg.max_steps);
        }
        let mut stepper = Stepper::new(cfg, objective.phases());
        let schedule = LrSchedule::new(&cfg.schedule, cfg.optimizer.lr, spe, total);
        let metrics_path = self.run_dir.join("metrics.jsonl");

        let mut start = 0;
        let mut skipped = 0;
        let mut seconds_before = 0.0;
        // Parameter groups are set before a checkpoint's optimizer states are loaded.
        let mut grouped = false;
        // Rank 0 of a distributed run alone writes the run folder.
        let writer = ranks.is_none_or(|d| d.is_writer());
        if resume {
            if let Some(dir) = self.resume_from(ranks)? {
                let st = checkpoint::read_state(&dir)?;
                if st.method != objective.name() || st.steps_per_epoch != spe {
                    return Err(Error::checkpoint(
                        &dir,
                        format!(
                            "written by method `{}` with {} steps per epoch; this run is `{}` with {}: use the same config and data, or another --out",
                            st.method,
                            st.steps_per_epoch,
                            objective.name(),
                            spe
                        ),
                    ));
                }
                model = checkpoint::load_model(&dir, model)?;
                set_param_settings(&mut stepper, objective, &model);
                grouped = true;
                stepper.load(&dir)?;
                objective.load_state(&dir)?;
                start = st.step;
                skipped = st.skipped_steps;
                seconds_before = st.train_seconds;
                if writer {
                    MetricsLog::truncate_after(&metrics_path, start)?;
                }
                tracing::info!("resuming from {} at step {start}", dir.display());
            } else {
                // Said at the default log level: a user who asked to resume should know.
                tracing::warn!(
                    "--resume: no checkpoint in {} yet; starting afresh",
                    self.run_dir.display()
                );
                // What a process killed before its first checkpoint logged is redone.
                if writer {
                    MetricsLog::truncate_after(&metrics_path, 0)?;
                }
            }
        } else if checkpoint::latest(&self.run_dir)?.is_some() {
            return Err(Error::Invalid(format!(
                "{} already holds checkpoints: pass --resume to continue it, or choose another --out",
                self.run_dir.display()
            )));
        } else if writer {
            MetricsLog::remove(&metrics_path)?;
        }
        if !grouped {
            set_param_settings(&mut stepper, objective, &model);
        }
        let mut log = if writer {
            Some(MetricsLog::open(&metrics_path)?)
        } else {
            None
        };

        let bar = if self.progress && writer {
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}, {eta} left] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        let epochs = total.div_ceil(spe);
        let name = objective.name().to_string();
        let prefix = move |epoch: usize| format!("{name} epoch {}/{epochs}", epoch + 1);
        bar.set_prefix(prefix(start / spe));
        bar.set_position(start as u64);

        let t0 = Instant::now();
        let mut window = (0.0, 0usize);
        let mut last_loss = f64::NAN;
        let mut last_ckpt = None;
        let mut last_msg = String::new();
        // Without a terminal the bar is hidden; a line per epoch keeps redirected logs useful.
        let epoch_lines = self.progress && writer && bar.is_hidden();
        for step in start..total {
            let (epoch, index) = (step / spe, step % spe);
            let info = StepInfo {
                step,
                epoch,
                total_steps: total,
                steps_per_epoch: spe,
            };
            let lr = schedule.lr(step);
            stepper.set_weight_decay(weight_decay_at(
                &cfg.schedule,
                cfg.optimizer.weight_decay,
                step,
                total,
            ));
            let batch = source.batch(epoch, index)?;
            let updates = step as u64 + 1 - skipped as u64;
            let (next, result) =
                step_fn(&mut stepper, objective, model, &batch, &info, lr, updates)?;
            model = next;
            let mut extra = Vec::new();
            match result {
                StepResult::Skipped => {
                    // The stepper warned, naming the quantity; the count goes to the metrics
                    // and the checkpoints.
                    skipped += 1;
                }
                StepResult::Updated { loss, metrics, .. } => {
                    objective.after_step(&model, &info);
                    window.0 += loss;
                    window.1 += 1;
                    extra = metrics;
                }
            }
            let done = step + 1;
            if done % cfg.log_every == 0 || done == total {
                let mean = if window.1 > 0 {
                    window.0 / window.1 as f64
                } else {
                    f64::NAN
                };
                last_loss = mean;
                let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
                let ips = (done - start) as f64 * source.batch_size() as f64 / elapsed;
                let mut fields = vec![
                    ("step", json!(done)),
                    ("epoch", json!(epoch)),
                    ("loss", json!(mean)),
                    ("lr", json!(lr)),
                    ("images_per_sec", json!(ips)),
                ];
                if skipped > 0 {
                    fields.push(("skipped_steps", json!(skipped)));
                }
                for (k, v) in &extra {
                    fields.push((k.as_str(), json!(v)));
                }
                if let Some(log) = log.as_mut() {
                    log.write(&fields)?;
                }
                last_msg = format!("loss {mean:.4} lr {lr:.3e} {ips:.0} img/s");
                bar.set_message(last_msg.clone());
                window = (0.0, 0);
            }
            bar.set_position(done as u64);
            let epoch_end = done % spe == 0;
            if epoch_end && done < total {
                bar.set_prefix(prefix(epoch + 1));
            }
            if epoch_end && epoch_lines {
                eprintln!(
                    "{} epoch {}/{}: {last_msg}",
                    objective.name(),
                    epoch + 1,
                    total.div_ceil(spe)
                );
            }
            if epoch_end {
                let mut values = objective.end_epoch(epoch);
                if let Some(hook) = on_epoch.as_mut().filter(|_| writer) {
                    values.extend(hook(epoch, &model)?);
                }
                if let Some(log) = log.as_mut().filter(|_| !values.is_empty()) {
                    let mut fields = vec![("step", json!(done)), ("epoch", json!(epoch))];
                    for (k, v) in &values {
                        fields.push((k.as_str(), json!(v)));
                    }
                    log.write(&fields)?;
                    let text: Vec<String> =
                        values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                    let line = format!("epoch {}: {}", epoch + 1, text.join(", "));
                    if epoch_lines {
                        eprintln!("{} {line}", objective.name());
                    } else {
                        bar.println(line);
                    }
                }
            }
            let periodic = cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0;
            if (periodic || done == total) && !writer {
                last_ckpt = Some(checkpoint::step_dir(&self.run_dir, done));
            } else if periodic || done == total {
                let state = CheckpointState {
                    method: objective.name().to_string(),
                    step: done,
                    steps_per_epoch: spe,
                    total_steps: total,
                    skipped_steps: skipped,
                    train_seconds: seconds_before + t0.elapsed().as_secs_f64(),
                };
                last_ckpt = Some(checkpoint::save(
                    &self.run_dir,
                    &model,
                    stepper.optimizers(),
                    &state,
                    |dir| objective.save_state(dir),
                )?);
                checkpoint::prune(&self.run_dir, cfg.keep_checkpoints)?;
            }
        }
        bar.finish_and_clear();
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        let train_seconds = seconds_before + elapsed;
        let images_per_sec = if total > start {
            (total - start) as f64 * source.batch_size() as f64 / elapsed
        } else {
            total as f64 * source.batch_size() as f64 / train_seconds
        };
        let checkpoint = match last_ckpt {
            Some(c) => c,
            None => checkpoint::latest(&self.run_dir)?.ok_or_else(|| {
                Error::Invalid(format!("{}: nothing to train", self.run_dir.display()))
            })?,
        };
        Ok(TrainOutcome {
            model,
            steps: total,
            last_loss,
            images_per_sec,
            train_seconds,
            checkpoint,
        })
    }
}

/// Every phase's parameter groups as `objective` gives them for `model`.
fn set_param_settings<O: Objective>(stepper: &mut Stepper, objective: &O, model: &O::Model) {
    for phase in 0..objective.phases().max(1) {
        let settings = objective.param_settings(model, phase);
        if !settings.is_empty() {
            stepper.set_param_settings(phase, settings);
        }
    }
}

/// How the metrics of a step's phases combine.
#[derive(Clone, Copy)]
enum Metrics {
    /// Listed phase after phase (one device: each phase names its own).
    Extend,
    /// Added up by name (the exchanges' time and bytes, reported by every phase).
    AddSameNames,
}
