//! [`Recipe`]: a pretraining method as the pipeline runs it (`pretrain`, `eval`, `bench`,
//! `report`), and [`TrainRun`], what the pipeline hands its training.
//!
//! Every method implements it in its own crate, behind that crate's `recipe` feature: its
//! preset beside its config, its cross-field checks, its training, its step bench, which
//! encoder it keeps and how to read it back from a step checkpoint. A [`crate::Registry`]
//! lists the recipes a program knows; the pipeline does the rest: data loading,
//! `config.toml`, the trainer with checkpoints and resume, the online kNN monitor, the final
//! kNN and linear probe, the bench table.

use crate::config::RunConfig;
use crate::monitor::Monitor;
use crate::report::ReportContext;
use crate::step_bench::{StepBench, Timings};
use burn::tensor::Device;
use selfsup_core::{
    BatchSource, DataParallel, Distributed, Error, FitOptions, Objective, Prefetch, Result,
    Shardable, TrainOutcome, Trainer, ViewGenerator,
};
use selfsup_data::{ImageSet, MultiView, Splits, ViewLoader};
use selfsup_encoders::Backbone;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What an end-of-epoch hook returns: named values to log.
pub type EpochValues = Result<Vec<(String, f64)>>;

/// A pretraining method the pipeline can run.
pub trait Recipe: Send + Sync {
    /// The method's name: `method = "NAME"`, its `[NAME]` table, run folders, the bench table.
    fn name(&self) -> &str;

    /// One line on what the method learns from, for `--help` and listings.
    fn about(&self) -> &str;

    /// The config the method starts from (`selfsup config --method`, the bench's runs): data,
    /// encoder, optimizer, augmentations, and its own settings in [`RunConfig::settings`].
    fn preset(&self) -> RunConfig;

    /// The schema of the method's typed settings (`schemars::schema_for!(ItsConfig)`), whose
    /// doc comments `selfsup config` prints beside each key of its table. Default: none.
    fn settings_schema(&self) -> Option<schemars::Schema> {
        None
    }

    /// Checks `cfg` for this method: [`RunConfig::validate_shared`], then its own settings
    /// (parsed into its typed config, each range) and what they need of the shared sections
    /// (an encoder, a crop size), naming the field of the first problem.
    fn validate(&self, cfg: &RunConfig) -> Result<()>;

    /// Whether its objective can split a batch over devices ([`Shardable`]): `devices` and
    /// `train.precision` other than f32 need it.
    fn shardable(&self) -> bool {
        true
    }

    /// Adjusts the config or the data once the data is loaded (`size`: the crop side), before
    /// `config.toml` is written. Default: nothing.
    fn prepare(&self, _cfg: &mut RunConfig, _splits: &mut Splits, _size: usize) -> Result<()> {
        Ok(())
    }

    /// Trains on `run` through the shared engine ([`TrainRun::fit`]) and returns the encoder
    /// the pipeline saves and scores.
    fn train(&self, run: &TrainRun<'_>) -> Result<Trained>;

    /// The encoder that a step checkpoint `step` (a `checkpoints/step-N` folder of the run
    /// folder `run`, whose config is `cfg`) holds, trainable, on `device`: the part of the
    /// method's model it keeps (a teacher's backbone, an image tower, ...).
    fn step_encoder(
        &self,
        cfg: &RunConfig,
        run: &Path,
        step: &Path,
        device: &Device,
    ) -> Result<Backbone>;

    /// Times training steps on `bench`'s synthetic images (`selfsup bench step`): builds the
    /// method's views, model and objective from `bench.cfg` and calls [`StepBench::time`].
    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings>;

    /// The method's own parts of `selfsup report` (pictures, a Markdown section each).
    /// Default: none.
    fn report(&self, _ctx: &ReportContext<'_>) -> Result<Vec<ReportPart>> {
        Ok(Vec::new())
    }
}

/// One part of a run report: Markdown (with a picture link), and the pictures it wrote.
#[derive(Clone, Debug, Default)]
pub struct ReportPart {
    /// A `## Heading` and its text.
    pub markdown: String,
    /// The PNG files written.
    pub pictures: Vec<PathBuf>,
}

/// What the pipeline hands a recipe's [`Recipe::train`]: the resolved config, the data and the
/// engine.
pub struct TrainRun<'a> {
    /// The run's config (normalization resolved; what `config.toml` holds).
    pub cfg: &'a RunConfig,
    /// The run folder.
    pub out: &'a Path,
    /// The training images (in memory, or streamed from their originals).
    pub train: &'a Arc<ImageSet>,
    /// The labelled images the online monitor's kNN votes with: the training images, or the
    /// data's own probe split (STL-10's labelled images beside its unlabelled ones).
    pub probe: &'a ImageSet,
    /// The test images, when the data has a test split (the monitor scores them).
    pub test: Option<&'a ImageSet>,
    /// Image channels.
    pub channels: usize,
    /// Side of the square crops the encoder sees.
    pub size: usize,
    /// The training device (autodiff): the one holding the model.
    pub device: Device,
    /// The devices of a data-parallel or mixed-precision run (`devices`, `train.precision`),
    /// first `device`; `None` for a plain one-device run.
    pub parallel: Option<DataParallel>,
    /// This process's rank of a distributed run (`selfsup pretrain --distributed mpi`); `None`
    /// for a run of one process.
    pub distributed: Option<Distributed>,
    /// The engine: checkpoints, metrics, schedule, progress.
    pub trainer: &'a Trainer,
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// The weights of `encoder.init` (read and checked against the encoder before training),
    /// which [`TrainRun::encoder`] starts from.
    pub init_weights: Option<Arc<Vec<selfsup_interop::Named>>>,
}

/// What a recipe's training gives back.
pub struct Trained {
    /// The encoder to save and score (an inference copy).
    pub encoder: Backbone,
    /// Optimizer steps of the whole run.
    pub steps: usize,
    /// Mean loss over the last logged steps.
    pub last_loss: f64,
    /// Training images per second in this process.
    pub images_per_sec: f64,
    /// Seconds of training of the whole run (over resumes).
    pub train_seconds: f64,
}

impl Trained {
    /// The result of `outcome`, keeping `encoder`.
    pub fn new<M>(encoder: Backbone, outcome: &TrainOutcome<M>) -> Self {
        Self {
            encoder,
            steps: outcome.steps,
            last_loss: outcome.last_loss,
            images_per_sec: outcome.images_per_sec,
            train_seconds: outcome.train_seconds,
        }
    }
}

impl<'a> TrainRun<'a> {
    /// A new encoder of the run's architecture on `device`: the weights of `encoder.init`
    /// when it names a file, else a random initialisation (seeded by the `init_module` around
    /// the call). Every recipe builds its training encoder with this.
    pub fn encoder(&self, device: &Device) -> Backbone {
        let fresh = self.cfg.encoder.init(self.channels, device);
        match &self.init_weights {
            None => fresh,
            Some(t) => {
                selfsup_interop::import(
                    fresh,
                    &self.cfg.encoder,
                    self.channels,
                    t,
                    &self.cfg.encoder.init,
                )
                .expect(
                    "the weights of encoder.init were checked against this encoder before training",
                )
                .0
            }
        }
    }

    /// `count` views of every image through the run's augmentations (`[augment]`).
    pub fn views(&self, count: usize) -> MultiView {
        let pipeline = self.cfg.augment.pipeline(
            self.size,
            self.cfg.data.mean.clone(),
            self.cfg.data.std.clone(),
        );
        MultiView::default().with(pipeline, count)
    }

    /// Batches of `views` of the training images in the run's seeded order, not prefetched
    /// (a method that adds to each batch wraps this).
    /// Batches are built by `data.workers` threads of the loader's own.
    /// A rank of a distributed run builds only its own rows of each batch.
    pub fn view_loader(&self, views: impl ViewGenerator + 'static) -> Result<ViewLoader> {
        let loader = ViewLoader::new(
            self.train.clone(),
            Arc::new(views),
            self.cfg.train.batch_size,
            self.cfg.train.seed,
            self.device.clone(),
        );
        match &self.distributed {
            Some(d) => loader.with_part(d.rank(), d.size()),
            None => loader,
        }
        .with_workers(self.cfg.data.worker_threads())
    }

    /// [`TrainRun::view_loader`], with the next `data.prefetch` batches built while a step
    /// computes (a bounded queue).
    pub fn loader(&self, views: impl ViewGenerator + 'static) -> Result<Prefetch<ViewLoader>> {
        Ok(Prefetch::with_depth(
            self.view_loader(views)?,
            self.cfg.data.prefetch,
        ))
    }

    /// The online kNN monitor of `backbone(model)` (an inference copy of the encoder) as an
    /// end-of-epoch hook: every `eval.monitor_every` epochs, kNN top-1 on the test split.
    pub fn monitor<M>(
        &self,
        backbone: impl Fn(&M) -> Backbone + 'a,
    ) -> Result<impl FnMut(usize, &M) -> EpochValues + 'a> {
        let mut monitor = Monitor::new(self.cfg, self.probe, self.test)?;
        Ok(move |epoch: usize, model: &M| monitor.run(epoch, &backbone(model)))
    }

    /// `options` over the run's devices and precision (`parallel`), for an objective that can
    /// split its batch.
    pub fn sharded<'o, O: Shardable + 'o>(&self, options: FitOptions<'o, O>) -> FitOptions<'o, O> {
        match (&self.parallel, &self.distributed) {
            (_, Some(d)) => options.distributed(d),
            (Some(p), None) => options.parallel(p),
            (None, None) => options,
        }
    }

    /// Trains `objective` from `model` on `loader` with the engine: the one way into training.
    /// The run's `resume` is applied; `options` carry the epoch hook (the [`TrainRun::monitor`])
    /// and, for a [`Shardable`] objective, the devices ([`TrainRun::sharded`]). A run
    /// configured for several devices or mixed precision whose options do not shard is
    /// refused, naming the setting.
    pub fn fit<O, S>(
        &self,
        objective: &mut O,
        model: O::Model,
        loader: &S,
        options: FitOptions<'_, O>,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch>,
    {
        if self.distributed.is_some() && !options.is_parallel() {
            return Err(Error::Invalid(format!(
                "--distributed: {} trains in one process, its objective is not `Shardable` (SimCLR, CLIP, MAE, DINO, RotNet, jigsaw and the GAN are); run it without --distributed",
                objective.name()
            )));
        }
        if self.parallel.is_some() && !options.is_parallel() {
            return Err(Error::config(
                if self.cfg.devices.len() > 1 {
                    "devices"
                } else {
                    "train.precision"
                },
                format!(
                    "{} trains in f32 on one device: its objective is not `Shardable`",
                    objective.name()
                ),
            ));
        }
        self.trainer
            .fit(objective, model, loader, options.resume(self.resume))
    }
}
