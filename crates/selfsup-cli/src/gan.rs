//! The GAN's parts of the command line: building its model from a run config, the encoder of
//! the Frechet distance, the per-epoch sample monitor, and `selfsup sample`.

use crate::evaluate::{load_encoder, locate};
use crate::pretrain::CONFIG_FILE;
use crate::run_config::{Method, RunConfig};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_core::{Error, Result};
use selfsup_data::ImageSet;
use selfsup_data::augment::eval_pipeline;
use selfsup_data::loader::eval_batch;
use selfsup_encoders::{Backbone, DcganEncoder};
use selfsup_gan::{FidEncoder, GanModel, Generator, SampleMonitor};
use std::path::{Path, PathBuf};

/// File name of the final generator in a run folder.
pub const GENERATOR_FILE: &str = "generator.bpk";
/// Folder of the per-epoch sample grids in a run folder.
pub const SAMPLES_DIR: &str = "samples";

/// The GAN of `cfg` for `channels`-channel images of `size` pixels around `trunk`.
pub fn gan_model(
    cfg: &RunConfig,
    trunk: DcganEncoder,
    channels: usize,
    size: usize,
    device: &Device,
) -> Result<GanModel> {
    GanModel::new(trunk, &cfg.encoder.dcgan, channels, size, &cfg.gan, device)
}

/// A fresh GAN of a saved run's config (its size is `augment.crop_size`, which `pretrain`
/// records for GAN runs).
fn fresh_gan(cfg: &RunConfig, device: &Device) -> Result<GanModel> {
    let channels = cfg.data.mean.len().max(1);
    let trunk = DcganEncoder::new(channels, cfg.encoder.width, &cfg.encoder.dcgan, device);
    gan_model(cfg, trunk, channels, cfg.augment.crop_size, device)
}

/// The whole GAN of a step checkpoint.
pub fn load_gan_checkpoint(cfg: &RunConfig, dir: &Path, device: &Device) -> Result<GanModel> {
    selfsup_core::checkpoint::load_model(dir, fresh_gan(cfg, device)?)
}

/// The encoder the Frechet distance uses: `gan.fid_encoder`'s run, or the built-in one.
pub fn fid_encoder(cfg: &RunConfig, size: usize, device: &Device) -> Result<FidEncoder<Backbone>> {
    if cfg.gan.fid_encoder.is_empty() {
        return selfsup_gan::fid::builtin(device);
    }
    let path = Path::new(&cfg.gan.fid_encoder);
    let (run, encoder) = load_encoder(path, device).map_err(|e| {
        Error::config(
            "gan.fid_encoder",
            format!("{e} (it names the run folder of a `selfsup pretrain` whose encoder measures the distance)"),
        )
    })?;
    Ok(FidEncoder {
        encoder,
        size: if run.augment.crop_size == 0 {
            size
        } else {
            run.augment.crop_size
        },
        channels: run.data.mean.len().max(1),
        mean: run.data.mean.clone(),
        std: run.data.std.clone(),
        name: path.display().to_string(),
    })
}

/// The sample grids (into `RUN/samples`) and, unless `gan.fid_images` is 0, the Frechet
/// distance against an evenly spaced set of `gan.fid_images` training images.
pub fn sample_monitor(
    cfg: &RunConfig,
    run: &Path,
    train: &ImageSet,
    size: usize,
) -> Result<SampleMonitor<Backbone>> {
    let device = cfg.device.device()?;
    let fid = if cfg.gan.fid_images == 0 {
        None
    } else {
        let n = cfg.gan.fid_images.min(train.len());
        let idx: Vec<usize> = (0..n).map(|i| i * train.len() / n).collect();
        let real = train.subset(&idx);
        let c = train.channels;
        let pixels = eval_batch(
            &real,
            0..n,
            &eval_pipeline(size, vec![0.0; c], vec![1.0; c]),
            &device,
        );
        Some((fid_encoder(cfg, size, &device)?, pixels))
    };
    SampleMonitor::new(
        &cfg.gan,
        cfg.train.seed,
        run.join(SAMPLES_DIR),
        fid,
        cfg.data.mean.clone(),
        cfg.data.std.clone(),
        &device,
    )
}

/// The run config and generator of a GAN run (its `generator.bpk`) or of one of its step
/// checkpoints, on `device`.
pub fn load_generator(checkpoint: &Path, device: &Device) -> Result<(RunConfig, Generator)> {
    let (run, step) = locate(checkpoint)?;
    let cfg = RunConfig::load(&run.join(CONFIG_FILE))?;
    if cfg.method != Method::Gan {
        return Err(Error::Invalid(format!(
            "{} is a {:?} run; `selfsup sample` needs a GAN run (--method gan)",
            run.display(),
            cfg.method
        )));
    }
    let generator = match step {
        Some(dir) => load_gan_checkpoint(&cfg, &dir, device)?.generator,
        None => {
            let p = run.join(GENERATOR_FILE);
            fresh_gan(&cfg, device)?
                .generator
                .try_load_file(&p)
                .map_err(|e| Error::checkpoint(&p, e.to_string()))?
        }
    };
    Ok((cfg, generator))
}

/// `selfsup sample`: `n` images from the generator of a GAN run (or of one of its step
/// checkpoints) as a grid PNG at `out`. With the run's seed, the first images are those of
/// the run's per-epoch grids.
pub fn sample(
    checkpoint: &Path,
    n: usize,
    out: &Path,
    seed_value: Option<u64>,
    device: Option<selfsup_core::DeviceSpec>,
) -> Result<PathBuf> {
    if n == 0 {
        return Err(Error::Invalid("-n must be at least 1".into()));
    }
    let device = device.unwrap_or_default().device()?;
    let (cfg, generator) = load_generator(checkpoint, &device)?;
    let pixels = selfsup_gan::sample(
        &generator.valid(),
        n,
        seed_value.unwrap_or(cfg.train.seed),
        selfsup_gan::monitor::GRID_STREAM,
        &cfg.data.mean,
        &cfg.data.std,
        &device,
    );
    selfsup_gan::write_grid(out, pixels, 2)?;
    Ok(out.to_path_buf())
}
