//! The DCGAN as a [`selfsup_pipeline::Recipe`] (the `recipe` feature): building its model
//! from a run config, the encoder of the Frechet distance, the per-epoch sample monitor, the
//! discriminator's trunk kept as the encoder, `selfsup sample`, and its report pictures.

use crate::{FidEncoder, Gan, GanConfig, GanModel, Generator, SampleMonitor};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_core::trainer::EpochHook;
use selfsup_core::{Error, FitOptions, OptimizerKind, Precision, Result, seed};
use selfsup_data::augment::eval_pipeline;
use selfsup_data::loader::eval_batch;
use selfsup_data::{ImageSet, MultiView, Splits};
use selfsup_encoders::{Arch, Backbone, DcganEncoder};
use selfsup_pipeline::evaluate::load_final_encoder;
use selfsup_pipeline::report::Curves;
use selfsup_pipeline::run_dir::{CONFIG_FILE, load_module, locate, save_module};
use selfsup_pipeline::{
    Recipe, ReportContext, ReportPart, RunConfig, StepBench, Timings, TrainRun, Trained,
};
use std::path::{Path, PathBuf};

/// The DCGAN as the pipeline runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct GanRecipe;

/// The method's name.
pub const NAME: &str = "gan";

/// File name of the final generator in a run folder.
pub const GENERATOR_FILE: &str = "generator.bpk";
/// Folder of the per-epoch sample grids in a run folder.
pub const SAMPLES_DIR: &str = "samples";

/// The GAN of `cfg` (settings `s`) for `channels`-channel images of `size` pixels, its
/// discriminator's trunk a fresh DCGAN trunk.
pub fn gan_model(
    cfg: &RunConfig,
    s: &GanConfig,
    channels: usize,
    size: usize,
    device: &Device,
) -> Result<GanModel> {
    let trunk = DcganEncoder::new(channels, cfg.encoder.width, &cfg.encoder.dcgan, device);
    GanModel::new(trunk, &cfg.encoder.dcgan, channels, size, s, device)
}

/// A fresh GAN of a saved run's config (its size is `augment.crop_size`, which `pretrain`
/// records for GAN runs).
fn fresh_gan(cfg: &RunConfig, device: &Device) -> Result<GanModel> {
    let s: GanConfig = cfg.settings()?;
    gan_model(cfg, &s, cfg.channels(), cfg.augment.crop_size, device)
}

/// The whole GAN of a step checkpoint.
pub fn load_gan_checkpoint(cfg: &RunConfig, dir: &Path, device: &Device) -> Result<GanModel> {
    selfsup_core::checkpoint::load_model(dir, fresh_gan(cfg, device)?)
}

/// The encoder the Frechet distance uses: `gan.fid_encoder`'s run, or the built-in one.
pub fn fid_encoder(s: &GanConfig, size: usize, device: &Device) -> Result<FidEncoder<Backbone>> {
    if s.fid_encoder.is_empty() {
        return crate::fid::builtin(device);
    }
    let path = Path::new(&s.fid_encoder);
    let (run, encoder) = load_final_encoder(path, device).map_err(|e| {
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
    s: &GanConfig,
    run: &Path,
    train: &ImageSet,
    size: usize,
) -> Result<SampleMonitor<Backbone>> {
    let device = cfg.device.device()?;
    let fid = if s.fid_images == 0 {
        None
    } else {
        let n = s.fid_images.min(train.len());
        let idx: Vec<usize> = (0..n).map(|i| i * train.len() / n).collect();
        let real = train.subset(&idx);
        let c = train.channels;
        let pixels = eval_batch(
            &real,
            0..n,
            &eval_pipeline(
                size,
                cfg.data.center_crop_for(train),
                vec![0.0; c],
                vec![1.0; c],
            ),
            &device,
        )?;
        Some((fid_encoder(s, size, &device)?, pixels))
    };
    SampleMonitor::new(
        s,
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
    let cfg = RunConfig::load_saved(&run.join(CONFIG_FILE))?;
    if cfg.method != NAME {
        return Err(Error::Invalid(format!(
            "{} is a {} run; `selfsup sample` needs a GAN run (--method gan)",
            run.display(),
            cfg.method
        )));
    }
    let generator = match step {
        Some(dir) => load_gan_checkpoint(&cfg, &dir, device)?.generator,
        None => load_module(
            &run.join(GENERATOR_FILE),
            fresh_gan(&cfg, device)?.generator,
        )?,
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
    let pixels = crate::sample(
        &generator.valid(),
        n,
        seed_value.unwrap_or(cfg.train.seed),
        crate::monitor::GRID_STREAM,
        &cfg.data.mean,
        &cfg.data.std,
        &device,
    );
    crate::write_grid(out, pixels, 2)?;
    Ok(out.to_path_buf())
}

impl GanRecipe {
    /// The preset, DCGAN's recipe: the discriminator's trunk at width 64 (64, 128, 256
    /// channels), Adam with betas (0.5, 0.999) at 2e-4 for both networks, no weight decay, a
    /// constant rate, 10 epochs. The images go in unaugmented.
    pub fn preset() -> RunConfig {
        let mut c = RunConfig::for_method(NAME, &GanConfig::default());
        c.encoder.arch = Arch::Dcgan;
        c.encoder.width = 64;
        let opt = &mut c.train.optimizer;
        opt.kind = OptimizerKind::Adamw;
        opt.lr = 2e-4;
        opt.weight_decay = 0.0;
        opt.beta1 = 0.5;
        opt.beta2 = 0.999;
        opt.eps = 1e-8;
        c.train.schedule.warmup_epochs = 0.0;
        c.train.schedule.final_lr_ratio = 1.0;
        c.train.epochs = 10;
        c
    }
}

impl Recipe for GanRecipe {
    fn name(&self) -> &str {
        NAME
    }

    fn about(&self) -> &str {
        "GAN: a DCGAN generator and discriminator trained against each other; the discriminator's features are kept"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(GanConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        cfg.settings::<GanConfig>()?.validate()?;
        if cfg.devices.len() > 1 {
            return Err(Error::config(
                "devices",
                "a gan step has two phases (discriminator, then generator), which run over MPI ranks (--distributed mpi) but not over several devices of one process: leave `devices` empty",
            ));
        }
        if cfg.train.precision != Precision::F32 {
            return Err(Error::config(
                "train.precision",
                "a GAN trains in f32 (its two networks' mixed-precision passes are untested): set train.precision = \"f32\"",
            ));
        }
        if cfg.encoder.arch != Arch::Dcgan {
            return Err(Error::config(
                "encoder.arch",
                "a GAN's discriminator is the DCGAN trunk: set encoder.arch = \"dcgan\"",
            ));
        }
        if !cfg.encoder.init.is_empty() {
            return Err(Error::config(
                "encoder.init",
                "a GAN trains its discriminator and generator together from random weights: \
                 leave encoder.init empty",
            ));
        }
        let half = |v: &[f32]| v.iter().all(|&x| x == 0.5);
        if !half(&cfg.data.mean) || !half(&cfg.data.std) {
            return Err(Error::config(
                "data.mean",
                "a GAN's generator ends in tanh, so real images are scaled to [-1, 1] (mean 0.5, std 0.5): leave data.mean and data.std unset",
            ));
        }
        Ok(())
    }

    fn prepare(&self, cfg: &mut RunConfig, splits: &mut Splits, size: usize) -> Result<()> {
        // The generator's tanh range, and the size its model is rebuilt at from config.toml.
        let c = splits.train.channels;
        cfg.data.mean = vec![0.5; c];
        cfg.data.std = vec![0.5; c];
        cfg.augment.crop_size = size;
        crate::gan::check_shape(&cfg.encoder.dcgan, size)
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let (cfg, out, size, channels) = (run.cfg, run.out, run.size, run.channels);
        let s: GanConfig = cfg.settings()?;
        // Real images unaugmented, scaled to [-1, 1].
        let views = MultiView::default().with(
            eval_pipeline(
                size,
                cfg.data.center_crop_for(run.train),
                cfg.data.mean.clone(),
                cfg.data.std.clone(),
            ),
            1,
        );
        let loader = run.loader(views)?;
        let model = seed::init_module(&run.device, cfg.train.seed, |d| {
            gan_model(cfg, &s, channels, size, d)
                .expect("check_shape passed before the run folder was written")
        });
        let mut objective = Gan::new(&s, cfg.train.seed);
        let mut samples = sample_monitor(cfg, &s, out, run.train, size)?;
        let mut monitor =
            run.monitor(|m: &GanModel| Backbone::Dcgan(m.discriminator.trunk.clone().valid()))?;
        let mut hook = |epoch: usize, m: &GanModel| {
            let mut values = monitor(epoch, m)?;
            values.extend(samples.run(epoch, &m.generator.clone().valid())?);
            Ok(values)
        };
        let hook: &mut EpochHook<'_, GanModel> = &mut hook;
        let o = run.fit(
            &mut objective,
            model,
            &loader,
            run.sharded(FitOptions::new().on_epoch(hook)),
        )?;
        let model = o.model.clone().valid();
        save_module(&out.join(GENERATOR_FILE), &model.generator)?;
        Ok(Trained::new(Backbone::Dcgan(model.discriminator.trunk), &o))
    }

    fn step_encoder(
        &self,
        cfg: &RunConfig,
        _run: &Path,
        step: &Path,
        device: &Device,
    ) -> Result<Backbone> {
        Ok(Backbone::Dcgan(
            load_gan_checkpoint(cfg, step, device)?.discriminator.trunk,
        ))
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let s: GanConfig = bench.cfg.settings()?;
        let (size, channels) = (bench.args.image_size, bench.args.channels);
        crate::gan::check_shape(&bench.cfg.encoder.dcgan, size)?;
        let model = seed::init_module(&bench.device, 0, |d| {
            gan_model(&bench.cfg, &s, channels, size, d).expect("checked above")
        });
        let views = MultiView::default().with(
            eval_pipeline(size, None, vec![0.5; channels], vec![0.5; channels]),
            1,
        );
        bench.time(Gan::new(&s, 0), model, views)
    }

    /// The Frechet distance over epochs (`frechet.png`) and the last sample grid
    /// (`samples.png`).
    fn report(&self, ctx: &ReportContext<'_>) -> Result<Vec<ReportPart>> {
        let s: GanConfig = ctx.cfg.settings()?;
        let mut parts = Vec::new();
        if let Some(p) = frechet_part(ctx.out, ctx.curves, &s)? {
            parts.push(p);
        }
        if let Some(p) = samples_part(ctx.run, ctx.out)? {
            parts.push(p);
        }
        Ok(parts)
    }
}

fn frechet_part(out: &Path, curves: &Curves, s: &GanConfig) -> Result<Option<ReportPart>> {
    if curves.frechet.is_empty() {
        return Ok(None);
    }
    let p = out.join("frechet.png");
    selfsup_report::line_chart(
        &p,
        "epoch",
        &[(
            "Frechet distance of generated to real images",
            "distance",
            vec![selfsup_report::Series {
                name: "Frechet distance".into(),
                points: curves.frechet.clone(),
            }],
        )],
        800,
        300,
    )?;
    let markdown = format!(
        "## Sample quality\n\nFrechet distance between {} generated and real training images in the features of {} (lower is better): {}.\n\n![Frechet distance over epochs](frechet.png)\n\n",
        s.fid_images,
        if s.fid_encoder.is_empty() {
            "the built-in RotNet encoder"
        } else {
            s.fid_encoder.as_str()
        },
        curves
            .frechet
            .iter()
            .map(|(e, d)| format!("{d:.2} after epoch {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(ReportPart {
        markdown,
        pictures: vec![p],
    }))
}

/// `samples.png`: a copy of the newest per-epoch sample grid of a GAN run, if any.
fn samples_part(run: &Path, out: &Path) -> Result<Option<ReportPart>> {
    let dir = run.join(SAMPLES_DIR);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut grids: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    grids.sort();
    let Some(last) = grids.pop() else {
        return Ok(None);
    };
    let p = out.join("samples.png");
    std::fs::copy(&last, &p).map_err(|e| Error::io(&last, e))?;
    Ok(Some(ReportPart {
        markdown: format!(
            "## Samples\n\nThe generator's images from the same fixed noise as after every epoch (`{SAMPLES_DIR}/`), after the last one.\n\n![generated samples](samples.png)\n\n"
        ),
        pictures: vec![p],
    }))
}
