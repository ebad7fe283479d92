//! [`Recipe`]: a pretraining method as the `selfsup` pipeline runs it (`pretrain`, `bench`).
//!
//! The seven built-in methods are recipes ([`Method`]); a crate of its own adds one by
//! implementing the trait and handing it to [`crate::pretrain_with`] or
//! [`crate::suite::run_suite`]. The pipeline does the rest: data loading, `config.toml`, the
//! trainer with checkpoints and resume, the online kNN monitor, the final kNN and linear probe.

use crate::evaluate::eval_transform;
use crate::run_config::RunConfig;
use selfsup_core::trainer::EpochHook;
use selfsup_core::{
    BatchSource, DataParallel, Error, Objective, Prefetch, Result, Shardable, TrainOutcome,
    Trainer, ViewGenerator,
};
use selfsup_data::{ImageSet, MultiView, Splits, ViewLoader};
use selfsup_encoders::Backbone;
use std::path::Path;
use std::sync::Arc;

/// A pretraining method the pipeline can run.
pub trait Recipe {
    /// The method's name: run folders, the bench table, `custom.name` of a crate's own.
    fn name(&self) -> String;

    /// The config the method starts from (`selfsup config --method`, the bench's runs): data,
    /// encoder, optimizer, augmentations. A crate's own recipe sets `custom` (its name and
    /// settings) on a built-in preset.
    fn preset(&self) -> RunConfig;

    /// Adjusts the config or the data once the data is loaded (`size`: the crop side), before
    /// `config.toml` is written. Default: nothing.
    fn prepare(&self, _cfg: &mut RunConfig, _splits: &mut Splits, _size: usize) -> Result<()> {
        Ok(())
    }

    /// Trains on `run` through the shared engine ([`TrainRun::fit`]) and returns the encoder
    /// the pipeline saves and scores.
    fn train(&self, run: &TrainRun<'_>) -> Result<Trained>;
}

/// What the pipeline hands a recipe's [`Recipe::train`]: the resolved config, the data and the
/// engine.
pub struct TrainRun<'a> {
    /// The run's config (normalization resolved; what `config.toml` holds).
    pub cfg: &'a RunConfig,
    /// The run folder.
    pub out: &'a Path,
    /// The training images.
    pub train: &'a Arc<ImageSet>,
    /// The test images, when the data has a test split (the monitor scores them).
    pub test: Option<&'a ImageSet>,
    /// Image channels.
    pub channels: usize,
    /// Side of the square crops the encoder sees.
    pub size: usize,
    /// The training device (autodiff): the one holding the model.
    pub device: burn::tensor::Device,
    /// The devices of a data-parallel run (`devices` in the config), first `device`; `None`
    /// on one device.
    pub parallel: Option<DataParallel>,
    /// The engine: checkpoints, metrics, schedule, progress.
    pub trainer: &'a Trainer,
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
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

impl TrainRun<'_> {
    /// `count` views of every image through the run's augmentations (`[augment]`).
    pub fn views(&self, count: usize) -> MultiView {
        let pipeline = self.cfg.augment.pipeline(
            self.size,
            self.cfg.data.mean.clone(),
            self.cfg.data.std.clone(),
        );
        MultiView::default().with(pipeline, count)
    }

    /// Batches of `views` of the training images in the run's seeded order; the next batch is
    /// built while a step computes.
    pub fn loader(&self, views: impl ViewGenerator + 'static) -> Prefetch<ViewLoader> {
        Prefetch::new(ViewLoader::new(
            self.train.clone(),
            Arc::new(views),
            self.cfg.train.batch_size,
            self.cfg.train.seed,
            self.device.clone(),
        ))
    }

    /// Trains `objective` from `model` with the engine, the online kNN monitor scoring
    /// `backbone(model)` (an inference copy) every `eval.monitor_every` epochs.
    pub fn fit<O, S>(
        &self,
        objective: &mut O,
        model: O::Model,
        loader: &S,
        backbone: impl Fn(&O::Model) -> Backbone,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch>,
    {
        self.fit_with(objective, model, loader, backbone, &mut |_, _| {
            Ok(Vec::new())
        })
    }

    /// [`TrainRun::fit`] with the method's own end-of-epoch work (a GAN's sample grid) after
    /// the monitor; its values are logged with the monitor's.
    pub fn fit_with<O, S>(
        &self,
        objective: &mut O,
        model: O::Model,
        loader: &S,
        backbone: impl Fn(&O::Model) -> Backbone,
        extra: &mut EpochHook<'_, O::Model>,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch>,
    {
        if self
            .parallel
            .as_ref()
            .is_some_and(|p| p.devices().len() > 1)
        {
            return Err(Error::config(
                "devices",
                format!(
                    "{} trains on one device: its objective is not `Shardable`",
                    objective.name()
                ),
            ));
        }
        let mut monitor = Monitor::new(self.cfg, self.train, self.test)?;
        let mut hook = |epoch: usize, m: &O::Model| {
            let mut values = monitor.run(epoch, &backbone(m))?;
            values.extend(extra(epoch, m)?);
            Ok(values)
        };
        self.trainer
            .fit(objective, model, loader, self.resume, Some(&mut hook))
    }

    /// [`TrainRun::fit`] for an objective that can split its batch over devices: over the
    /// config's `devices` when it names several, else on `device` as `fit` does.
    pub fn fit_sharded<O, S>(
        &self,
        objective: &mut O,
        model: O::Model,
        loader: &S,
        backbone: impl Fn(&O::Model) -> Backbone,
    ) -> Result<TrainOutcome<O::Model>>
    where
        O: Shardable,
        S: BatchSource<Batch = O::Batch>,
    {
        let Some(parallel) = &self.parallel else {
            return self.fit(objective, model, loader, backbone);
        };
        let mut monitor = Monitor::new(self.cfg, self.train, self.test)?;
        let mut hook = |epoch: usize, m: &O::Model| monitor.run(epoch, &backbone(m));
        self.trainer.fit_parallel(
            parallel,
            objective,
            model,
            loader,
            self.resume,
            Some(&mut hook),
        )
    }
}

/// The online kNN monitor: every `eval.monitor_every` epochs, kNN top-1 of the current
/// encoder on (a part of) the labelled test split, logged with the losses.
/// Training images and labels, test images and labels, classes.
type MonitorData = (ImageSet, Vec<usize>, ImageSet, Vec<usize>, usize);

struct Monitor {
    every: usize,
    data: Option<MonitorData>,
    tf: selfsup_eval::EvalTransform,
    knn: selfsup_eval::KnnConfig,
    device: burn::tensor::Device,
}

impl Monitor {
    fn new(cfg: &RunConfig, train: &ImageSet, test: Option<&ImageSet>) -> Result<Self> {
        let take = |s: &ImageSet, n: usize| if n == 0 { s.clone() } else { s.take(n) };
        let data = match (cfg.eval.monitor_every, test, &train.labels) {
            (0, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(test), Some(_)) if test.labels.is_some() => {
                // A class-balanced part of the training set votes, so a sorted dataset
                // still has every class.
                let n = train.len();
                let frac = if cfg.eval.monitor_train == 0 || cfg.eval.monitor_train >= n {
                    1.0
                } else {
                    cfg.eval.monitor_train as f64 / n as f64
                };
                let tr = train.label_fraction(frac, cfg.train.seed)?;
                let te = take(test, cfg.eval.monitor_test);
                let (trl, tel) = (
                    tr.labels.clone().unwrap_or_default(),
                    te.labels.clone().unwrap_or_default(),
                );
                let classes = tr.num_classes().max(te.num_classes());
                Some((tr, trl, te, tel, classes))
            }
            _ => None,
        };
        Ok(Self {
            every: cfg.eval.monitor_every,
            data,
            tf: eval_transform(cfg, train),
            knn: cfg.knn.clone(),
            device: cfg.device.device()?,
        })
    }

    fn run(&mut self, epoch: usize, encoder: &Backbone) -> Result<Vec<(String, f64)>> {
        let Some((tr, trl, te, tel, classes)) = &self.data else {
            return Ok(Vec::new());
        };
        if !(epoch + 1).is_multiple_of(self.every) {
            return Ok(Vec::new());
        }
        let a = selfsup_eval::extract(encoder, tr, &self.tf, 512, &self.device);
        let b = selfsup_eval::extract(encoder, te, &self.tf, 512, &self.device);
        let acc = selfsup_eval::knn_accuracy(a, trl, b, tel, *classes, &self.knn)?;
        Ok(vec![("knn_top1".to_string(), acc)])
    }
}
