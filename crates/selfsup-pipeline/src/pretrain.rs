//! Pretraining: train a recipe on a data spec, save the encoder, score it.

use crate::config::RunConfig;
use crate::evaluate::{EvalPlan, EvalReport, evaluate};
use crate::recipe::{Recipe, TrainRun, Trained};
use crate::run_dir::{self, CONFIG_FILE, ENCODER_FILE, RESULTS_FILE, SKIPPED_FILE, write_json};
use selfsup_core::distributed::check_agree;
use selfsup_core::{Collective, DataParallel, Distributed, Error, Precision, Result, Trainer};
use selfsup_data::{ImageSet, Splits};
use selfsup_encoders::Backbone;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Pretrains `recipe` as `cfg` says: loads the data, writes `out/config.toml`, trains through
/// the shared engine with the online kNN monitor (resuming from the newest checkpoint in `out`
/// when `resume`), saves the encoder and scores it (kNN, linear probe) on the test split.
pub fn pretrain(
    recipe: &dyn Recipe,
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    pretrain_run(recipe, cfg, out, resume, progress, true, None)
}

/// [`pretrain`] without the final scoring (`selfsup pretrain --no-eval`): train and save the
/// encoder; scoring a large dataset is a job of its own (`selfsup eval`).
pub fn pretrain_only(
    recipe: &dyn Recipe,
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    pretrain_run(recipe, cfg, out, resume, progress, false, None)
}

/// [`pretrain`] (or with `score` false [`pretrain_only`]) as one rank of a distributed run
/// (`mpirun -np N selfsup pretrain --distributed mpi ...`; see `selfsup_core::distributed`):
/// every rank loads the data and trains its part of every global batch of `train.batch_size`
/// images; rank 0 alone writes the run folder and scores the encoder, the other ranks return
/// without an evaluation. The ranks first check they run the same config and binary.
pub fn pretrain_distributed(
    recipe: &dyn Recipe,
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
    score: bool,
    ranks: Arc<dyn Collective>,
) -> Result<PretrainReport> {
    pretrain_run(recipe, cfg, out, resume, progress, score, Some(ranks))
}

/// A hash of what every rank of a distributed run must share: the resolved config and the
/// binary's commit (std's SipHash with its fixed keys: the same on every rank of one build).
fn run_fingerprint(cfg: &RunConfig) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.to_toml()?.hash(&mut h);
    run_dir::commit().hash(&mut h);
    Ok(h.finish())
}

/// Writes the run's `skipped-images.txt` (the files left out at load and those found not to
/// decode while streaming), when there are any.
fn write_skipped(out: &Path, splits: &Splits, train: &ImageSet) -> Result<()> {
    let mut all = splits.skipped.clone();
    all.extend(train.skipped());
    for set in [splits.test.as_ref(), splits.probe.as_ref()]
        .into_iter()
        .flatten()
    {
        all.extend(set.skipped());
    }
    if all.is_empty() {
        return Ok(());
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all.dedup_by(|a, b| a.path == b.path);
    let list = out.join(SKIPPED_FILE);
    let text: String = all
        .iter()
        .map(|s| format!("{}\t{}\n", s.path.display(), s.reason))
        .collect();
    selfsup_core::atomic::write(&list, text)?;
    eprintln!(
        "selfsup: left out {} image files that do not decode (data.corrupt_images = \"skip\"); listed in {}",
        all.len(),
        list.display()
    );
    Ok(())
}

/// [`pretrain`], scoring the encoder afterwards only when `score` (the bench's timing
/// probe does not).
pub(crate) fn pretrain_run(
    recipe: &dyn Recipe,
    mut cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
    score: bool,
    ranks: Option<Arc<dyn Collective>>,
) -> Result<PretrainReport> {
    if cfg.method != recipe.name() {
        return Err(Error::config(
            "method",
            format!(
                "the config is for `{}`, but this run is `{}`: start from the recipe's preset",
                cfg.method,
                recipe.name()
            ),
        ));
    }
    recipe.validate(&cfg)?;
    let device = cfg.device.train_device()?;
    let devices = cfg.train_devices();
    let distributed = match ranks {
        Some(_) if devices.len() > 1 => {
            return Err(Error::config(
                "devices",
                "a distributed run trains on one device per rank: leave `devices` empty and set `device`",
            ));
        }
        Some(r) => Some(Distributed::new(r, device.clone())?),
        None => None,
    };
    // Rank 0 of a distributed run alone writes the run folder.
    let writer = distributed.as_ref().is_none_or(|d| d.is_writer());
    let parts = distributed.as_ref().map_or(devices.len(), |d| d.size());
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
    let size = cfg.crop_side(splits.train.height);
    recipe.prepare(&mut cfg, &mut splits, size)?;
    let spec = cfg.data.spec.to_string();
    cfg.train
        .check_batch(Some((splits.train.len(), &spec)), parts)?;
    cfg.data.resolve_normalization(&splits.train)?;
    if let Some(d) = &distributed {
        check_agree(
            d.collective(),
            "the config and the binary's commit",
            run_fingerprint(&cfg)?,
        )?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let saved = out.join(CONFIG_FILE);
    if resume && writer && saved.is_file() {
        // A resume with other settings is allowed (a fix after a divergence), never silent.
        let before = RunConfig::load_saved(&saved)?;
        let changed = run_dir::changed_settings(&before, &cfg);
        if !changed.is_empty() {
            eprintln!(
                "selfsup: resuming {} with changed settings:\n  {}",
                out.display(),
                changed.join("\n  ")
            );
        }
    }
    if writer {
        cfg.save(&saved)?;
        run_dir::append_provenance(out, &cfg, resume)?;
        write_skipped(out, &splits, &splits.train)?;
    }

    let channels = splits.train.channels;
    let train = Arc::new(std::mem::replace(&mut splits.train, ImageSet::empty()));
    let shape = if train.is_streamed() {
        format!(
            "streamed by {} workers, {channels}-channel crops of {size} px",
            cfg.data.worker_threads()
        )
    } else {
        format!("{}x{}x{}", channels, train.height, train.width)
    };
    let on = match &distributed {
        Some(d) => format!(", {} ranks", d.size()),
        None => String::new(),
    };
    if writer {
        eprintln!(
            "selfsup: {} on {} ({} training images {shape}), {:?} encoder, device {}{on}, {} epochs of {} steps",
            recipe.name(),
            cfg.data.spec,
            train.len(),
            cfg.encoder.arch,
            devices
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            cfg.train.epochs,
            train.len() / cfg.train.batch_size,
        );
    }

    let trainer = Trainer::new(cfg.train.clone(), out)?.with_progress(progress);
    let probe = splits.probe.as_ref().unwrap_or(&train);
    let init_weights = init_weights(&cfg, channels)?;
    let run = TrainRun {
        cfg: &cfg,
        out,
        train: &train,
        probe,
        test: splits.test.as_ref(),
        channels,
        size,
        device,
        parallel,
        distributed,
        trainer: &trainer,
        resume,
        init_weights,
    };
    let Trained {
        encoder,
        steps,
        last_loss,
        images_per_sec: ips,
        train_seconds: secs,
    } = recipe.train(&run)?;
    let train_peak = selfsup_core::metrics::peak_rss_mib();
    if !writer {
        return Ok(PretrainReport {
            run_dir: out.to_path_buf(),
            steps,
            final_loss: last_loss,
            images_per_sec: ips,
            train_seconds: secs,
            peak_rss_mib: train_peak,
            train_peak_rss_mib: train_peak,
            eval: None,
        });
    }
    run_dir::save_module(&out.join(ENCODER_FILE), &encoder)?;
    write_skipped(out, &splits, &train)?;
    let report = finish(
        cfg,
        out,
        &encoder,
        probe,
        splits.test.as_ref(),
        steps,
        last_loss,
        ips,
        secs,
        train_peak,
        score,
    )?;
    // Scoring streams the test images: any more files found not to decode are listed too.
    write_skipped(out, &splits, &train)?;
    Ok(report)
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

/// The weights of `encoder.init`, read and checked against the run's encoder on the CPU, so a
/// file that does not fit stops the run before it starts.
fn init_weights(
    cfg: &RunConfig,
    channels: usize,
) -> Result<Option<Arc<Vec<selfsup_interop::Named>>>> {
    if cfg.encoder.init.is_empty() {
        return Ok(None);
    }
    let path = Path::new(&cfg.encoder.init);
    let tensors = selfsup_interop::file::read_any(path)?;
    let fresh = cfg.encoder.init(channels, &burn::tensor::Device::flex());
    let (_, layout) =
        selfsup_interop::import(fresh, &cfg.encoder, channels, &tensors, &cfg.encoder.init)
            .map_err(|e| Error::config("encoder.init", e.to_string()))?;
    eprintln!(
        "selfsup: the encoder starts from {} ({layout} layout, {} tensors)",
        path.display(),
        tensors.len()
    );
    Ok(Some(Arc::new(tensors)))
}
