//! CLIP's recipe: image-caption pairs (a manifest's, or captions made from a labelled set's
//! class names), a tokenizer learned from them, the symmetric contrastive loss, AdamW; zero-shot
//! classification and retrieval after training.

use super::clip_eval::{
    CLIP_FILE, CLIP_RESULTS_FILE, TOKENIZER_FILE, captioned, encode_captions, evaluate_clip,
    tokenizer,
};
use crate::{Clip, ClipConfig, ClipModel};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_core::{FitOptions, OptimizerKind, Prefetch, Result, seed};
use selfsup_data::{AugmentConfig, CaptionLoader, Splits};
use selfsup_encoders::Backbone;
use selfsup_pipeline::run_dir::{save_module, write_json};
use selfsup_pipeline::{Recipe, RunConfig, StepBench, Timings, TrainRun, Trained};
use std::path::Path;
use std::sync::Arc;

/// CLIP-style image-text training as the pipeline runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClipRecipe;

/// The method's name.
pub const NAME: &str = "clip";

impl ClipRecipe {
    /// The preset: CLIP's optimizer (AdamW, betas 0.9 / 0.98, weight decay 0.2) at a small
    /// model's learning rate; crops and flips only, as CLIP trains; the default towers.
    pub fn preset() -> RunConfig {
        let mut c = RunConfig::for_method(NAME, &ClipConfig::default());
        let opt = &mut c.train.optimizer;
        opt.kind = OptimizerKind::Adamw;
        opt.lr = 1e-3;
        opt.weight_decay = 0.2;
        opt.beta1 = 0.9;
        opt.beta2 = 0.98;
        opt.eps = 1e-6;
        c.augment = AugmentConfig::crops_and_flips(0.5);
        c
    }
}

impl Recipe for ClipRecipe {
    fn name(&self) -> &str {
        NAME
    }

    fn about(&self) -> &str {
        "CLIP: an image encoder and a text transformer learn a shared space from image-caption pairs (a manifest, or captions made from a labelled set's class names)"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(ClipConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        cfg.settings::<ClipConfig>()?.validate()
    }

    fn prepare(&self, cfg: &mut RunConfig, splits: &mut Splits, _size: usize) -> Result<()> {
        // Image-caption pairs: a manifest's own, or captions made from the class names.
        let s: ClipConfig = cfg.settings()?;
        let empty = splits.train.take(0);
        let train = std::mem::replace(&mut splits.train, empty);
        splits.train = captioned(train, &s, &cfg.data.spec)?;
        splits.test = splits
            .test
            .take()
            .map(|t| captioned(t, &s, &cfg.data.spec))
            .transpose()?;
        Ok(())
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let (cfg, out, device) = (run.cfg, run.out, &run.device);
        let s: ClipConfig = cfg.settings()?;
        let tok = tokenizer(&s, run.train)?;
        tok.save(&out.join(TOKENIZER_FILE))?;
        let captions = Arc::new(encode_captions(run.train, &tok, s.text.context)?);
        let views = run.view_loader(run.views(1))?;
        let loader = Prefetch::new(CaptionLoader::new(views, captions, cfg.train.seed)?);
        let vocab = tok.vocab_size();
        let model = seed::init_module(device, cfg.train.seed, |d| {
            ClipModel::new(run.encoder(d), vocab, &s, d)
                .expect("ClipRecipe::validate checked the CLIP config")
        });
        let mut objective = Clip::<Backbone>::new(&s);
        let mut monitor = run.monitor(|m: &ClipModel<Backbone>| m.image.clone().valid())?;
        let o = run.fit(
            &mut objective,
            model,
            &loader,
            run.sharded(FitOptions::new().on_epoch(&mut monitor)),
        )?;
        let whole = o.model.clone().valid();
        save_module(&out.join(CLIP_FILE), &whole)?;
        if let Some(test) = run.test {
            let eval_device = cfg.device.device()?;
            let model = whole.clone().to_device(&eval_device);
            let r = evaluate_clip(&model, &tok, cfg, &s, run.train, test, &eval_device)?;
            eprint!("{}", r.markdown());
            write_json(&out.join(CLIP_RESULTS_FILE), &r)?;
        }
        Ok(Trained::new(whole.image, &o))
    }

    fn step_encoder(
        &self,
        cfg: &RunConfig,
        run: &Path,
        step: &Path,
        device: &Device,
    ) -> Result<Backbone> {
        let s: ClipConfig = cfg.settings()?;
        let tok = selfsup_text::Tokenizer::load(&run.join(TOKENIZER_FILE), None)?;
        let fresh = cfg.encoder.init(cfg.channels(), device);
        let model = ClipModel::new(fresh, tok.vocab_size(), &s, device)?;
        Ok(selfsup_core::checkpoint::load_model(step, model)?.image)
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let s: ClipConfig = bench.cfg.settings()?;
        // Synthetic captions of a few words, a tokenizer learned from them.
        let captions: Vec<String> = (0..bench.data.len())
            .map(|i| format!("a synthetic picture, number {} of {}", i % 97, i % 13))
            .collect();
        let tok = selfsup_text::Tokenizer::train(
            captions.iter().map(String::as_str),
            s.tokenizer.vocab_size,
        );
        let encoded: Vec<Vec<selfsup_text::Encoded>> = captions
            .iter()
            .map(|c| vec![tok.encode_padded(c, s.text.context)])
            .collect();
        let views = bench.view_loader(bench.views(1));
        let loader = CaptionLoader::new(views, Arc::new(encoded), 0)?;
        let vocab = tok.vocab_size();
        let channels = bench.args.channels;
        let model = seed::init_module(&bench.device, 0, |d| {
            ClipModel::new(bench.cfg.encoder.init(channels, d), vocab, &s, d)
                .expect("validated before the bench")
        });
        bench.time_source(Clip::<Backbone>::new(&s), model, loader)
    }
}
