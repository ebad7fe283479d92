//! `selfsup pretrain`: train a method on a data spec, then report kNN accuracy.

use crate::clip_eval;
use crate::evaluate::{EvalPlan, EvalReport, evaluate, write_json};
use crate::recipe::{Recipe, TrainRun, Trained};
use crate::run_config::{Method, RunConfig};
use burn::module::Module;
use selfsup_contrastive::{Clip, ClipModel, SimClr, SimClrModel};
use selfsup_core::{DataParallel, Error, Precision, Prefetch, Result, Trainer, seed};
use selfsup_data::augment::eval_pipeline;
use selfsup_data::{CaptionLoader, MultiView, Pipeline, Splits, ViewLoader};
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
/// File name of the list of image files left out because they do not decode (path, tab,
/// reason), in a run folder.
pub const SKIPPED_FILE: &str = "skipped-images.txt";

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
    /// Seconds of training of the whole run (over resumes; the engine's loop with its
    /// per-epoch monitors, not the final evaluation).
    pub train_seconds: f64,
    /// Peak resident memory of this process in MiB (Linux; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
    /// Peak resident memory when training ended, before the evaluation, in MiB.
    #[serde(default)]
    pub train_peak_rss_mib: Option<f64>,
    /// Frozen-feature evaluation on the test split, when it has labels.
    pub eval: Option<EvalReport>,
}

use selfsup_core::atomic::write_with as write_atomic;

/// Runs pretraining of the built-in method `cfg.method` as configured, writing everything
/// under `out`.
pub fn pretrain(
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    if let Some(c) = &cfg.custom {
        return Err(Error::config(
            "custom.name",
            format!(
                "`{}` is not a method of this binary but of the crate that adds it: run it with that crate's binary (docs/tutorial-custom-objective.md)",
                c.name
            ),
        ));
    }
    let method = cfg.method;
    pretrain_with(&method, cfg, out, resume, progress)
}

/// Runs pretraining of `recipe` (a built-in [`Method`] or a crate's own) as configured:
/// loads the data, writes `out/config.toml`, trains through the shared engine with the online
/// kNN monitor, saves the encoder and scores it (kNN, linear probe) on the test split.
pub fn pretrain_with(
    recipe: &dyn Recipe,
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    pretrain_run(recipe, cfg, out, resume, progress, true)
}

/// [`pretrain_with`], scoring the encoder afterwards only when `score` (the bench's timing
/// probe does not).
pub(crate) fn pretrain_run(
    recipe: &dyn Recipe,
    mut cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
    score: bool,
) -> Result<PretrainReport> {
    cfg.validate()?;
    if cfg.method_name() != recipe.name() {
        return Err(Error::config(
            "custom.name",
            format!(
                "the config is for `{}`, but this run is `{}`: start from the recipe's preset",
                cfg.method_name(),
                recipe.name()
            ),
        ));
    }
    let device = cfg.device.train_device()?;
    let devices = cfg.train_devices();
    let parallel = if devices.len() > 1 || cfg.train.precision != Precision::F32 {
        let devices = devices
            .iter()
            .map(|d| d.train_device())
            .collect::<Result<Vec<_>>>()?;
        Some(DataParallel::new(devices)?)
    } else {
        None
    };

    let mut splits = cfg.data.load(cfg.train.seed)?;
    let size = if cfg.augment.crop_size == 0 {
        splits.train.height
    } else {
        cfg.augment.crop_size
    };
    recipe.prepare(&mut cfg, &mut splits, size)?;
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
    cfg.data.resolve_normalization(&splits.train);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let saved = out.join(CONFIG_FILE);
    if resume && saved.is_file() {
        // A resume with other settings is allowed (a fix after a divergence), never silent.
        let before = RunConfig::load(&saved)?;
        let changed = crate::provenance::changed_settings(&before, &cfg);
        if !changed.is_empty() {
            eprintln!(
                "selfsup: resuming {} with changed settings:\n  {}",
                out.display(),
                changed.join("\n  ")
            );
        }
    }
    cfg.save(&saved)?;
    crate::provenance::append(out, &cfg, resume)?;
    if !splits.skipped.is_empty() {
        let list = out.join(SKIPPED_FILE);
        let text: String = splits
            .skipped
            .iter()
            .map(|s| format!("{}\t{}\n", s.path.display(), s.reason))
            .collect();
        selfsup_core::atomic::write(&list, text)?;
        eprintln!(
            "selfsup: left out {} image files that do not decode (data.corrupt_images = \"skip\"); listed in {}",
            splits.skipped.len(),
            list.display()
        );
    }

    let channels = splits.train.channels;
    let train = Arc::new(splits.train);
    eprintln!(
        "selfsup: {} on {} ({} training images {}x{}x{}), {:?} encoder, device {}, {} epochs of {} steps",
        recipe.name(),
        cfg.data.spec,
        train.len(),
        channels,
        train.height,
        train.width,
        cfg.encoder.arch,
        devices
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        cfg.train.epochs,
        train.len() / cfg.train.batch_size,
    );

    let trainer = Trainer::new(cfg.train.clone(), out)?.with_progress(progress);
    let run = TrainRun {
        cfg: &cfg,
        out,
        train: &train,
        test: splits.test.as_ref(),
        channels,
        size,
        device,
        parallel,
        trainer: &trainer,
        resume,
    };
    let Trained {
        encoder,
        steps,
        last_loss,
        images_per_sec: ips,
        train_seconds: secs,
    } = recipe.train(&run)?;
    let train_peak = selfsup_core::metrics::peak_rss_mib();
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
        train_peak,
        score,
    )
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

impl Recipe for Method {
    fn name(&self) -> String {
        format!("{self:?}").to_lowercase()
    }

    fn preset(&self) -> RunConfig {
        RunConfig::preset(*self)
    }

    fn prepare(&self, cfg: &mut RunConfig, splits: &mut Splits, size: usize) -> Result<()> {
        match self {
            Method::Clip => {
                // Image-caption pairs: a manifest's own, or captions made from the class names.
                let empty = splits.train.take(0);
                let train = std::mem::replace(&mut splits.train, empty);
                splits.train = clip_eval::captioned(train, cfg)?;
                splits.test = splits
                    .test
                    .take()
                    .map(|t| clip_eval::captioned(t, cfg))
                    .transpose()?;
            }
            Method::Gan => {
                // The generator's tanh range, and the size its model is rebuilt at from
                // config.toml.
                let c = splits.train.channels;
                cfg.data.mean = vec![0.5; c];
                cfg.data.std = vec![0.5; c];
                cfg.augment.crop_size = size;
                selfsup_gan::gan::check_shape(&cfg.encoder.dcgan, size)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        train_builtin(*self, run)
    }
}

/// The training of each built-in method: its loader, model, objective and what it keeps.
fn train_builtin(method: Method, run: &TrainRun<'_>) -> Result<Trained> {
    let (cfg, out) = (run.cfg, run.out);
    let (channels, size, device) = (run.channels, run.size, &run.device);
    Ok(match method {
        Method::Simclr => {
            let loader = run.loader(run.views(2));
            let model = seed::init_module(device, cfg.train.seed, |d| {
                SimClrModel::new(cfg.encoder.init(channels, d), &cfg.simclr, d)
            });
            let mut objective = SimClr::<Backbone>::new(&cfg.simclr);
            let o = run.fit_sharded(
                &mut objective,
                model,
                &loader,
                |m: &SimClrModel<Backbone>| m.encoder.clone().valid(),
            )?;
            Trained::new(o.model.encoder.clone().valid(), &o)
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
            let loader = run.loader(run.views(1));
            let model = seed::init_module(device, cfg.train.seed, |d| {
                let vit = cfg
                    .encoder
                    .vit
                    .init(channels, d)
                    .expect("RunConfig::validate checked the ViT's shape");
                MaeModel::new(vit, channels, &cfg.mae, d)
            });
            let mut objective = Mae::new(&cfg.mae).with_seed(cfg.train.seed);
            let o = run.fit_sharded(&mut objective, model, &loader, |m: &MaeModel| {
                Backbone::Vit(m.encoder.clone().valid())
            })?;
            let whole = o.model.clone().valid();
            write_atomic(&out.join(MAE_FILE), |p| {
                whole
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            Trained::new(Backbone::Vit(whole.encoder), &o)
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
            let loader = run.loader(views);
            let build = |d: &burn::tensor::Device| {
                DinoModel::new(cfg.encoder.init(channels, d), &cfg.dino.head, d)
            };
            let model = seed::init_module(device, cfg.train.seed, build);
            // The teacher: a fresh model loaded with the student's weights, on the same device.
            let fresh = seed::init_module(device, cfg.train.seed, build);
            let mut objective = Dino::new(&cfg.dino, fresh, &model);
            // The monitor scores the student's backbone (the teacher lives in the objective,
            // which the trainer holds while it runs); the final table scores the teacher's.
            let o =
                run.fit_sharded(&mut objective, model, &loader, |m: &DinoModel<Backbone>| {
                    m.backbone.clone().valid()
                })?;
            Trained::new(objective.teacher().backbone.clone().valid(), &o)
        }
        Method::Rotnet => {
            let loader = run.loader(run.views(1));
            let model = seed::init_module(device, cfg.train.seed, |d| {
                RotNetModel::new(cfg.encoder.init(channels, d), &cfg.rotnet, d)
            });
            let mut objective = RotNet::<Backbone>::new();
            let o = run.fit_sharded(
                &mut objective,
                model,
                &loader,
                |m: &RotNetModel<Backbone>| m.encoder.clone().valid(),
            )?;
            Trained::new(o.model.encoder.clone().valid(), &o)
        }
        Method::Jigsaw => {
            cfg.jigsaw.validate(Some(size))?;
            let views = jigsaw_views(cfg, size, cfg.data.mean.clone(), cfg.data.std.clone());
            let loader = run.loader(views);
            let tiles = cfg.jigsaw.grid * cfg.jigsaw.grid;
            let model = seed::init_module(device, cfg.train.seed, |d| {
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
            let o = run.fit_sharded(
                &mut objective,
                model,
                &loader,
                |m: &JigsawModel<Backbone>| m.encoder.clone().valid(),
            )?;
            Trained::new(o.model.encoder.clone().valid(), &o)
        }
        Method::Gan => {
            // Real images unaugmented, scaled to [-1, 1].
            let views = MultiView::default().with(
                eval_pipeline(size, cfg.data.mean.clone(), cfg.data.std.clone()),
                1,
            );
            let loader = run.loader(views);
            let trunk_cfg = &cfg.encoder.dcgan;
            let model = seed::init_module(device, cfg.train.seed, |d| {
                let trunk = DcganEncoder::new(channels, cfg.encoder.width, trunk_cfg, d);
                crate::gan::gan_model(cfg, trunk, channels, size, d)
                    .expect("check_shape passed before the run folder was written")
            });
            let mut objective = Gan::new(&cfg.gan, cfg.train.seed);
            let mut samples = crate::gan::sample_monitor(cfg, out, run.train, size)?;
            let mut extra =
                |epoch: usize, m: &GanModel| samples.run(epoch, &m.generator.clone().valid());
            let o = run.fit_with(
                &mut objective,
                model,
                &loader,
                |m: &GanModel| Backbone::Dcgan(m.discriminator.trunk.clone().valid()),
                &mut extra,
            )?;
            let model = o.model.clone().valid();
            write_atomic(&out.join(crate::gan::GENERATOR_FILE), |p| {
                model
                    .generator
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            Trained::new(Backbone::Dcgan(model.discriminator.trunk), &o)
        }
        Method::Clip => {
            let tok = clip_eval::tokenizer(cfg, run.train)?;
            tok.save(&out.join(clip_eval::TOKENIZER_FILE))?;
            let captions = Arc::new(clip_eval::encode_captions(
                run.train,
                &tok,
                cfg.clip.text.context,
            )?);
            let views = ViewLoader::new(
                run.train.clone(),
                Arc::new(run.views(1)),
                cfg.train.batch_size,
                cfg.train.seed,
                device.clone(),
            );
            let loader = Prefetch::new(CaptionLoader::new(views, captions, cfg.train.seed)?);
            let vocab = tok.vocab_size();
            let model = seed::init_module(device, cfg.train.seed, |d| {
                ClipModel::new(cfg.encoder.init(channels, d), vocab, &cfg.clip, d)
                    .expect("RunConfig::validate checked the CLIP config")
            });
            let mut objective = Clip::<Backbone>::new(&cfg.clip);
            let o =
                run.fit_sharded(&mut objective, model, &loader, |m: &ClipModel<Backbone>| {
                    m.image.clone().valid()
                })?;
            let whole = o.model.clone().valid();
            write_atomic(&out.join(clip_eval::CLIP_FILE), |p| {
                whole
                    .clone()
                    .save_file(p)
                    .map_err(|e| Error::checkpoint(p, e.to_string()))
            })?;
            if let Some(test) = run.test {
                let eval_device = cfg.device.device()?;
                let model = whole.clone().to_device(&eval_device);
                let r = clip_eval::evaluate_clip(&model, &tok, cfg, run.train, test, &eval_device)?;
                eprint!("{}", r.markdown());
                write_json(&out.join(clip_eval::CLIP_RESULTS_FILE), &r)?;
            }
            Trained::new(whole.image, &o)
        }
    })
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
    train_peak_rss_mib: Option<f64>,
    score: bool,
) -> Result<PretrainReport> {
    let eval = match test {
        _ if !score => None,
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
        train_peak_rss_mib,
        eval,
    };
    write_json(&out.join(RESULTS_FILE), &report)?;
    Ok(report)
}
