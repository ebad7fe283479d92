//! MAE as a [`selfsup_pipeline::Recipe`] (the `recipe` feature): a small ViT on 28-pixel
//! images, AdamW, crops and flips; the whole model saved for reconstruction pictures.

use crate::{Mae, MaeConfig, MaeModel};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_core::{Error, FitOptions, OptimizerKind, Result, seed};
use selfsup_data::AugmentConfig;
use selfsup_encoders::{Arch, Backbone, VitConfig};
use selfsup_pipeline::report::first_images;
use selfsup_pipeline::run_dir::{load_module, save_module};
use selfsup_pipeline::{
    Recipe, ReportContext, ReportPart, RunConfig, StepBench, Timings, TrainRun, Trained,
};
use std::path::Path;

/// MAE as the pipeline runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MaeRecipe;

/// The method's name.
pub const NAME: &str = "mae";
/// File name of the whole model (encoder and decoder) in a run folder, for pictures.
pub const MAE_FILE: &str = "mae.bpk";
/// Test images in a `reconstruction.png`.
const RECONSTRUCTED: usize = 8;

impl MaeRecipe {
    /// The preset: a ViT on 28-pixel images (7x7 patches of 4), narrower and shallower than
    /// ViT-Tiny so the sample finishes in minutes; AdamW with the paper's betas and weight
    /// decay; crops and flips only (He et al.: colour augmentation hurts); fine-tuning with
    /// AdamW and a warm-up, not the ConvNets' SGD, and the MAE code's protocol: layer-wise
    /// learning-rate decay 0.75, the mean patch token through its own LayerNorm (global
    /// pool, fc_norm), stochastic depth 0.1, label smoothing 0.1, no weight decay on the
    /// class token and position embeddings. Frozen features are read as the whole map
    /// of patch tokens (7 x 7 on 28-pixel images, `eval.grid = 7`): pixel reconstruction
    /// keeps what sits where, which one token or one average loses (the same 5-minute encoder:
    /// kNN 83.26 against 78.49 from the class token, 78.88 from the mean token;
    /// docs/methods/mae.md). Batch 64 at peak lr 3e-3, not the reference's 4,096 at 1.5e-4 x
    /// batch / 256: a short budget on a CPU is a few thousand steps, and twice the updates
    /// per image pay (the same 158,000 images on a 2-core Zen 4, kNN over the token map:
    /// batch 128 at lr 1e-3 80.20, at 2e-3 81.29, at 4e-3 79.84; batch 64 at 2e-3 81.97 and
    /// 82.20 with another seed, at 3e-3 82.36; batch 32 at 2e-3, as many seconds, 82.00;
    /// docs/methods/mae.md). A 1-deep decoder (the paper's is 8; `MaeConfig::default()` 2)
    /// for the same reason: its step is 1.3x faster, and in the seconds of 1,863 two-deep
    /// steps (2,460 steps) it reads 82.09 against 81.50.
    pub fn preset() -> RunConfig {
        let settings = MaeConfig {
            decoder_depth: 1,
            ..MaeConfig::default()
        };
        let mut c = RunConfig::for_method(NAME, &settings);
        c.encoder.arch = Arch::Vit;
        c.encoder.vit = VitConfig {
            dim: 128,
            depth: 6,
            heads: 4,
            ..VitConfig::tiny(28, 4)
        };
        c.augment = AugmentConfig::crops_and_flips(0.2);
        c.eval.grid = 7;
        c.train.batch_size = 64;
        let opt = &mut c.train.optimizer;
        opt.kind = OptimizerKind::Adamw;
        opt.lr = 3e-3;
        opt.weight_decay = 0.05;
        opt.beta1 = 0.9;
        opt.beta2 = 0.95;
        let ft = &mut c.finetune.train;
        ft.optimizer.kind = OptimizerKind::Adamw;
        ft.optimizer.lr = 1e-3;
        ft.optimizer.weight_decay = 0.05;
        ft.optimizer.beta1 = 0.9;
        ft.optimizer.beta2 = 0.999;
        ft.schedule.warmup_epochs = 1.0;
        c.finetune.layer_decay = 0.75;
        c.finetune.global_pool = true;
        c.finetune.drop_path = 0.1;
        c.finetune.label_smoothing = 0.1;
        c
    }
}

fn model(cfg: &RunConfig, s: &MaeConfig, channels: usize, device: &Device) -> MaeModel {
    let vit = cfg
        .encoder
        .vit
        .init(channels, device)
        .expect("MaeRecipe::validate checked the ViT's shape");
    MaeModel::new(vit, channels, s, device)
}

impl Recipe for MaeRecipe {
    fn name(&self) -> &str {
        NAME
    }

    fn about(&self) -> &str {
        "MAE: a ViT reconstructs the hidden patches of each image"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(MaeConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        cfg.settings::<MaeConfig>()?.validate()?;
        if cfg.encoder.arch != Arch::Vit {
            return Err(Error::config(
                "encoder.arch",
                "MAE masks patches of a Vision Transformer: set encoder.arch = \"vit\"",
            ));
        }
        Ok(())
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let (cfg, size) = (run.cfg, run.size);
        let s: MaeConfig = cfg.settings()?;
        if cfg.encoder.vit.image_size != size {
            return Err(Error::config(
                "encoder.vit.image_size",
                format!(
                    "{} but the crops are {size}x{size}: set it to {size} (or augment.crop_size to {})",
                    cfg.encoder.vit.image_size, cfg.encoder.vit.image_size
                ),
            ));
        }
        let loader = run.loader(run.views(1))?;
        let model = seed::init_module(&run.device, cfg.train.seed, |d| {
            let Backbone::Vit(vit) = run.encoder(d) else {
                unreachable!("MaeRecipe::validate asks for encoder.arch = \"vit\"")
            };
            MaeModel::new(vit, run.channels, &s, d)
        });
        let mut objective = Mae::new(&s).with_seed(cfg.train.seed);
        let mut monitor = run.monitor(|m: &MaeModel| Backbone::Vit(m.encoder.clone().valid()))?;
        let o = run.fit(
            &mut objective,
            model,
            &loader,
            run.sharded(FitOptions::new().on_epoch(&mut monitor)),
        )?;
        let whole = o.model.clone().valid();
        save_module(&run.out.join(MAE_FILE), &whole)?;
        Ok(Trained::new(Backbone::Vit(whole.encoder), &o))
    }

    fn step_encoder(
        &self,
        cfg: &RunConfig,
        _run: &Path,
        step: &Path,
        device: &Device,
    ) -> Result<Backbone> {
        let s: MaeConfig = cfg.settings()?;
        let Backbone::Vit(vit) = cfg.encoder.init(cfg.channels(), device) else {
            return Err(Error::config(
                "encoder.arch",
                "an MAE run's encoder is a ViT: the run's config.toml was edited",
            ));
        };
        let model = MaeModel::new(vit, cfg.channels(), &s, device);
        Ok(Backbone::Vit(
            selfsup_core::checkpoint::load_model(step, model)?.encoder,
        ))
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let s: MaeConfig = bench.cfg.settings()?;
        let channels = bench.args.channels;
        let model = seed::init_module(&bench.device, 0, |d| model(&bench.cfg, &s, channels, d));
        bench.time(Mae::new(&s), model, bench.views(1))
    }

    /// `reconstruction.png`: test images (training images when there is no test split), rows
    /// original / masked / reconstruction, when the run saved its whole model.
    fn report(&self, ctx: &ReportContext<'_>) -> Result<Vec<ReportPart>> {
        let weights = ctx.run.join(MAE_FILE);
        if !weights.is_file() {
            return Ok(Vec::new());
        }
        let cfg = ctx.cfg;
        let s: MaeConfig = cfg.settings()?;
        let device = ctx.device.device()?;
        let channels = cfg.channels();
        let vit = cfg.encoder.vit.init(channels, &device)?;
        let model = load_module(&weights, MaeModel::new(vit, channels, &s, &device))?;
        let (x, tf) = first_images(cfg, channels, RECONSTRUCTED, &device)?;
        let [n, _, side, _] = x.dims();
        let grid = model.encoder.grid();
        let masking = crate::random_masking(n, grid * grid, s.mask_ratio, &device);
        let (masked, recon) =
            crate::reconstruction_images(&model, x.clone(), masking, s.norm_pix_loss);
        let mut pixels = Tensor::cat(vec![x, masked, recon], 0)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        // Undo the normalization, channel by channel.
        for (i, v) in pixels.iter_mut().enumerate() {
            let c = (i / (side * side)) % channels;
            *v = *v * tf.std[c] + tf.mean[c];
        }
        let p = ctx.out.join("reconstruction.png");
        selfsup_report::image_grid(&p, &pixels, [3, n], [channels, side, side], 4)?;
        Ok(vec![ReportPart {
            markdown: format!(
                "## Reconstructions\n\nTest images (top), what the encoder saw with {:.0} % of the patches hidden (middle), the decoder's reconstruction of the hidden patches beside the visible ones (bottom).\n\n![MAE reconstructions](reconstruction.png)\n\n",
                100.0 * s.mask_ratio
            ),
            pictures: vec![p],
        }])
    }
}
