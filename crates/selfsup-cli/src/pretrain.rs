//! `selfsup pretrain`: train a method on a data spec, then report kNN accuracy.

use crate::clip_eval;
use crate::evaluate::{EvalPlan, EvalReport, eval_transform, evaluate, write_json};
use crate::run_config::{Method, RunConfig};
use burn::module::Module;
use selfsup_contrastive::{Clip, ClipModel, SimClr, SimClrModel};
use selfsup_core::{Error, Prefetch, Result, Trainer, ViewGenerator, seed};
use selfsup_data::augment::eval_pipeline;
use selfsup_data::{CaptionLoader, ImageSet, MultiView, Pipeline, ViewLoader};
use selfsup_dino::{Dino, DinoModel};
use selfsup_encoders::{Arch, Backbone, DcganEncoder};
use selfsup_gan::{Gan, GanModel};
use selfsup_mae::{Mae, MaeModel};
use selfsup_pretext::{AugmentedTiles, Jigsaw, JigsawModel, RotNet, RotNetModel};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the final encoder weights in a run folder.
pub const ENCODER_FILE: &str = "encoder.bpk";
/// File name of a whole MAE model (encoder and decoder) in a run folder, for pictures.
pub const MAE_FILE: &str = "mae.bpk";
/// File name of the pretraining report in a run folder.
pub const RESULTS_FILE: &str = "results.json";
/// File name of the resolved config in a run folder.
pub const CONFIG_FILE: &str = "config.toml";

/// What a pretraining run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainReport {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Optimizer steps of the whole run.
    pub steps: usize,
    /// Mean loss over the last logged steps.
    pub final_loss: f64,
    /// Training images per second in this process.
    pub images_per_sec: f64,
    /// Seconds spent training in this process.
    pub train_seconds: f64,
    /// Peak resident memory of this process in MiB (Linux; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
    /// Frozen-feature evaluation on the test split, when it has labels.
    pub eval: Option<EvalReport>,
}

/// Writes `path` through `write` into a temporary file, then renames it into place.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("partial");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Runs pretraining as configured, writing everything under `out`.
pub fn pretrain(
    mut cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let device = cfg.device.train_device()?;

    let mut splits = cfg.data.load(cfg.train.seed)?;
    if cfg.method == Method::Clip {
        // Image-caption pairs: a manifest's own, or captions made from the class names.
        splits.train = clip_eval::captioned(splits.train, &cfg)?;
        splits.test = splits
            .test
            .map(|t| clip_eval::captioned(t, &cfg))
            .transpose()?;
    }
    if splits.train.len() < cfg.train.batch_size {
        return Err(Error::config(
            "train.batch_size",
            format!(
                "{} is larger than the {} training images of {}; lower it",
                cfg.train.batch_size,
                splits.train.len(),
                cfg.data.spec
            ),
        ));
    }
    let size = if cfg.augment.crop_size == 0 {
        splits.train.height
    } else {
        cfg.augment.crop_size
    };
    if cfg.method == Method::Gan {
        // The generator's tanh range, and the size its model is rebuilt at from config.toml.
        let c = splits.train.channels;
        cfg.data.mean = vec![0.5; c];
        cfg.data.std = vec![0.5; c];
        cfg.augment.crop_size = size;
        selfsup_gan::gan::check_shape(&cfg.encoder.dcgan, size)?;
    }
    cfg.data.resolve_normalization(&splits.train);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    cfg.save(&out.join(CONFIG_FILE))?;

    let channels = splits.train.channels;
    let train = Arc::new(splits.train);
    eprintln!(
        "selfsup: {:?} on {} ({} training images {}x{}x{}), {:?} encoder, device {}, {} epochs of {} steps",
        cfg.method,
        cfg.data.spec,
        train.len(),
        channels,
        train.height,
        train.width,
        cfg.encoder.arch,
        cfg.device,
        cfg.train.epochs,
        train.len() / cfg.train.batch_size,
    );

    let trainer = Trainer::new(cfg.train.clone(), out)?.with_progress(progress);
    let start = std::time::Instant::now();
    let (encoder, steps, last_loss, ips) = match cfg.method {
        Method::Simclr => {
            let loader = view_loader(&cfg, &train, same_views(&cfg, size, 2), &device);
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                SimClrModel::new(cfg.encoder.init(channels, d), &cfg.simclr, d)
            });
            let mut objective = SimClr::<Backbone>::new(&cfg.simclr);
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &SimClrModel<Backbone>| m.encoder.clone().valid(),
            )?;
            (
                o.model.encoder.valid(),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Mae => {
            if cfg.encoder.vit.image_size != size {
                return Err(Error::config(
                    "encoder.vit.image_size",
                    format!(
                        "{} but the crops are {size}x{size}: set it to {size} (or augment.crop_size to {})",
                        cfg.encoder.vit.image_size, cfg.encoder.vit.image_size
                    ),
                ));
            }
            let loader = view_loader(&cfg, &train, same_views(&cfg, size, 1), &device);
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                let vit = cfg
                    .encoder
                    .vit
                    .init(channels, d)
                    .expect("RunConfig::validate checked the ViT's shape");
                MaeModel::new(vit, channels, &cfg.mae, d)
            });
            let mut objective = Mae::new(&cfg.mae).with_seed(cfg.train.seed);
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &MaeModel| Backbone::Vit(m.encoder.clone().valid()),
            )?;
            let whole = o.model.valid();
            write_atomic(&out.join(MAE_FILE), |p| {
                whole
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            (
                Backbone::Vit(whole.encoder),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Dino => {
            let global = match cfg.dino.crops.global_size {
                0 => size,
                g => g,
            };
            if cfg.encoder.arch == Arch::Vit && cfg.encoder.vit.image_size != global {
                return Err(Error::config(
                    "encoder.vit.image_size",
                    format!(
                        "{} but the global crops are {global}x{global}: set it to {global}",
                        cfg.encoder.vit.image_size
                    ),
                ));
            }
            let views = cfg.dino.crops.views(
                &cfg.augment,
                size,
                cfg.data.mean.clone(),
                cfg.data.std.clone(),
            );
            let loader = view_loader(&cfg, &train, views, &device);
            let build = |d: &burn::tensor::Device| {
                DinoModel::new(cfg.encoder.init(channels, d), &cfg.dino.head, d)
            };
            let model = seed::init_module(&device, cfg.train.seed, build);
            // The teacher: a fresh model loaded with the student's weights, on the same device.
            let fresh = seed::init_module(&device, cfg.train.seed, build);
            let mut objective = Dino::new(&cfg.dino, fresh, &model);
            // The monitor scores the student's backbone (the teacher lives in the objective,
            // which the trainer holds while it runs); the final table scores the teacher's.
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &DinoModel<Backbone>| m.backbone.clone().valid(),
            )?;
            (
                objective.teacher().backbone.clone().valid(),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Rotnet => {
            let loader = view_loader(&cfg, &train, same_views(&cfg, size, 1), &device);
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                RotNetModel::new(cfg.encoder.init(channels, d), &cfg.rotnet, d)
            });
            let mut objective = RotNet::<Backbone>::new();
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &RotNetModel<Backbone>| m.encoder.clone().valid(),
            )?;
            (
                o.model.encoder.valid(),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Jigsaw => {
            cfg.jigsaw.validate(Some(size))?;
            let views = jigsaw_views(&cfg, size, cfg.data.mean.clone(), cfg.data.std.clone());
            let loader = view_loader(&cfg, &train, views, &device);
            let tiles = cfg.jigsaw.grid * cfg.jigsaw.grid;
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                JigsawModel::new(cfg.encoder.init(channels, d), &cfg.jigsaw, d)
            });
            let set = cfg.jigsaw.permutation_set(cfg.train.seed)?;
            eprintln!(
                "selfsup: {} permutations of {tiles} tiles, Hamming distance min {} mean {:.2}",
                set.len(),
                set.min_distance().unwrap_or(0),
                set.mean_distance()
            );
            let mut objective = Jigsaw::<Backbone>::new(set, cfg.train.seed);
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &JigsawModel<Backbone>| m.encoder.clone().valid(),
            )?;
            (
                o.model.encoder.valid(),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Gan => {
            // Real images unaugmented, scaled to [-1, 1].
            let views = MultiView::default().with(
                eval_pipeline(size, cfg.data.mean.clone(), cfg.data.std.clone()),
                1,
            );
            let loader = view_loader(&cfg, &train, views, &device);
            let trunk_cfg = &cfg.encoder.dcgan;
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                let trunk = DcganEncoder::new(channels, cfg.encoder.width, trunk_cfg, d);
                crate::gan::gan_model(&cfg, trunk, channels, size, d)
                    .expect("check_shape passed before the run folder was written")
            });
            let mut objective = Gan::new(&cfg.gan, cfg.train.seed);
            let mut samples = crate::gan::sample_monitor(&cfg, out, &train, size)?;
            let mut extra =
                |epoch: usize, m: &GanModel| samples.run(epoch, &m.generator.clone().valid());
            let o = fit_monitored_with(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &GanModel| Backbone::Dcgan(m.discriminator.trunk.clone().valid()),
                &mut extra,
            )?;
            let model = o.model.valid();
            write_atomic(&out.join(crate::gan::GENERATOR_FILE), |p| {
                model
                    .generator
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            (
                Backbone::Dcgan(model.discriminator.trunk),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
        }
        Method::Clip => {
            let tok = clip_eval::tokenizer(&cfg, &train)?;
            tok.save(&out.join(clip_eval::TOKENIZER_FILE))?;
            let captions = Arc::new(clip_eval::encode_captions(
                &train,
                &tok,
                cfg.clip.text.context,
            )?);
            let views = ViewLoader::new(
                train.clone(),
                Arc::new(same_views(&cfg, size, 1)),
                cfg.train.batch_size,
                cfg.train.seed,
                device.clone(),
            );
            let loader = Prefetch::new(CaptionLoader::new(views, captions, cfg.train.seed)?);
            let vocab = tok.vocab_size();
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                ClipModel::new(cfg.encoder.init(channels, d), vocab, &cfg.clip, d)
                    .expect("RunConfig::validate checked the CLIP config")
            });
            let mut objective = Clip::<Backbone>::new(&cfg.clip);
            let o = fit_monitored(
                &trainer,
                &cfg,
                &train,
                splits.test.as_ref(),
                &mut objective,
                model,
                &loader,
                resume,
                |m: &ClipModel<Backbone>| m.image.clone().valid(),
            )?;
            let whole = o.model.valid();
            write_atomic(&out.join(clip_eval::CLIP_FILE), |p| {
                whole
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            if let Some(test) = splits.test.as_ref() {
                let eval_device = cfg.device.device()?;
                let model = whole.clone().to_device(&eval_device);
                let r = clip_eval::evaluate_clip(&model, &tok, &cfg, &train, test, &eval_device)?;
                eprint!("{}", r.markdown());
                write_json(&out.join(clip_eval::CLIP_RESULTS_FILE), &r)?;
            }
            (whole.image, o.steps, o.last_loss, o.images_per_sec)
        }
    };
    let secs = start.elapsed().as_secs_f64();
    write_atomic(&out.join(ENCODER_FILE), |p| {
        encoder
            .clone()
            .save_file(p)
            .map_err(|e| Error::checkpoint(p, e.to_string()))
    })?;
    finish(
        cfg,
        out,
        &encoder,
        &train,
        splits.test.as_ref(),
        steps,
        last_loss,
        ips,
        secs,
    )
}

/// Trains `objective` from `model`, with the online kNN monitor scoring `backbone(model)` (for
/// inference) after every epoch it is due.
#[allow(clippy::too_many_arguments)]
fn fit_monitored<O, S>(
    trainer: &Trainer,
    cfg: &RunConfig,
    train: &ImageSet,
    test: Option<&ImageSet>,
    objective: &mut O,
    model: O::Model,
    loader: &S,
    resume: bool,
    backbone: impl Fn(&O::Model) -> Backbone,
) -> Result<selfsup_core::TrainOutcome<O::Model>>
where
    O: selfsup_core::Objective,
    S: selfsup_core::BatchSource<Batch = O::Batch>,
{
    fit_monitored_with(
        trainer,
        cfg,
        train,
        test,
        objective,
        model,
        loader,
        resume,
        backbone,
        &mut |_, _| Ok(Vec::new()),
    )
}

/// [`fit_monitored`] with a method's own end-of-epoch work (a GAN's sample grid) after the
/// monitor; its values are logged with the monitor's.
#[allow(clippy::too_many_arguments)]
fn fit_monitored_with<O, S>(
    trainer: &Trainer,
    cfg: &RunConfig,
    train: &ImageSet,
    test: Option<&ImageSet>,
    objective: &mut O,
    model: O::Model,
    loader: &S,
    resume: bool,
    backbone: impl Fn(&O::Model) -> Backbone,
    extra: &mut selfsup_core::trainer::EpochHook<'_, O::Model>,
) -> Result<selfsup_core::TrainOutcome<O::Model>>
where
    O: selfsup_core::Objective,
    S: selfsup_core::BatchSource<Batch = O::Batch>,
{
    let mut monitor = Monitor::new(cfg, train, test)?;
    let mut hook = |epoch: usize, m: &O::Model| {
        let mut values = monitor.run(epoch, &backbone(m))?;
        values.extend(extra(epoch, m)?);
        Ok(values)
    };
    trainer.fit(objective, model, loader, resume, Some(&mut hook))
}

/// `views` per image, in batches; the next batch is built while a step computes.
fn view_loader(
    cfg: &RunConfig,
    train: &Arc<ImageSet>,
    views: impl ViewGenerator + 'static,
    device: &burn::tensor::Device,
) -> Prefetch<ViewLoader> {
    Prefetch::new(ViewLoader::new(
        train.clone(),
        Arc::new(views),
        cfg.train.batch_size,
        cfg.train.seed,
        device.clone(),
    ))
}

/// The jigsaw tiles of images of `size` pixels: the run's augmentations at the cut size, then
/// the cut.
pub(crate) fn jigsaw_views(
    cfg: &RunConfig,
    size: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
) -> AugmentedTiles<Pipeline> {
    AugmentedTiles {
        augment: cfg.augment.pipeline(cfg.jigsaw.cut_size(size), mean, std),
        tiles: cfg.jigsaw.tiles(size),
    }
}

/// `count` views per image of `size` pixels through the run's augmentations.
fn same_views(cfg: &RunConfig, size: usize, count: usize) -> MultiView {
    let pipeline = cfg
        .augment
        .pipeline(size, cfg.data.mean.clone(), cfg.data.std.clone());
    MultiView::default().with(pipeline, count)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: RunConfig,
    out: &Path,
    encoder: &Backbone,
    train: &selfsup_data::ImageSet,
    test: Option<&selfsup_data::ImageSet>,
    steps: usize,
    final_loss: f64,
    images_per_sec: f64,
    train_seconds: f64,
) -> Result<PretrainReport> {
    let eval = match test {
        Some(test) if test.labels.is_some() && train.labels.is_some() => Some(evaluate(
            &cfg,
            encoder,
            train,
            test,
            EvalPlan {
                knn: true,
                linear: cfg.eval.linear,
                baselines: cfg.eval.baselines,
            },
        )?),
        _ => {
            eprintln!("selfsup: no labelled test split, so no accuracy to report");
            None
        }
    };
    let report = PretrainReport {
        run_dir: out.to_path_buf(),
        steps,
        final_loss,
        images_per_sec,
        train_seconds,
        peak_rss_mib: selfsup_core::metrics::peak_rss_mib(),
        eval,
    };
    write_json(&out.join(RESULTS_FILE), &report)?;
    Ok(report)
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
