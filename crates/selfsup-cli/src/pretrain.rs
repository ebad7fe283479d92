//! `selfsup pretrain`: train a method on a data spec, then report kNN accuracy.

use crate::evaluate::{KnnReport, knn_report};
use crate::run_config::{Method, RunConfig};
use burn::module::Module;
use selfsup_contrastive::{SimClr, SimClrModel};
use selfsup_core::{Error, Result, Trainer, seed};
use selfsup_data::{MultiView, ViewLoader};
use selfsup_encoders::Backbone;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the final encoder weights in a run folder.
pub const ENCODER_FILE: &str = "encoder.bpk";
/// File name of the resolved config in a run folder.
pub const CONFIG_FILE: &str = "config.toml";

/// What a pretraining run reports.
#[derive(Clone, Debug, Serialize)]
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
    /// kNN on the test split, when it has labels.
    pub knn: Option<KnnReport>,
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

    let splits = cfg.data.load(cfg.train.seed)?;
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
    cfg.save(&out.join(CONFIG_FILE))?;

    let size = if cfg.augment.crop_size == 0 {
        splits.train.height
    } else {
        cfg.augment.crop_size
    };
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
            let pipeline = cfg
                .augment
                .pipeline(size, cfg.data.mean.clone(), cfg.data.std.clone());
            let views = MultiView::default().with(pipeline, 2);
            let loader = ViewLoader::new(
                train.clone(),
                Arc::new(views),
                cfg.train.batch_size,
                cfg.train.seed,
                device.clone(),
            );
            let model = seed::init_module(&device, cfg.train.seed, |d| {
                SimClrModel::new(cfg.encoder.init(channels, d), &cfg.simclr, d)
            });
            let mut objective = SimClr::<Backbone>::new(&cfg.simclr);
            let o = trainer.fit(&mut objective, model, &loader, resume, None)?;
            (
                o.model.encoder.valid(),
                o.steps,
                o.last_loss,
                o.images_per_sec,
            )
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
    let knn = match test {
        Some(test) if test.labels.is_some() && train.labels.is_some() => {
            Some(knn_report(&cfg, encoder, train, test, true)?)
        }
        _ => {
            eprintln!("selfsup: no labelled test split, so no kNN accuracy");
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
        knn,
    };
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    std::fs::write(out.join("results.json"), json)
        .map_err(|e| Error::io(out.join("results.json"), e))?;
    Ok(report)
}
