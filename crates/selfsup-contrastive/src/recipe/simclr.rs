//! SimCLR's recipe: two views of SimCLR's augmentations, a ConvNet with a projection head,
//! NT-Xent, LARS.

use crate::{SimClr, SimClrConfig, SimClrModel};
use burn::module::Module;
use burn::tensor::Device;
use selfsup_core::{FitOptions, Result, seed};
use selfsup_encoders::Backbone;
use selfsup_pipeline::{Recipe, RunConfig, StepBench, Timings, TrainRun, Trained};
use std::path::Path;

/// SimCLR as the pipeline runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimClrRecipe;

/// The method's name.
pub const NAME: &str = "simclr";

impl SimClrRecipe {
    /// The preset: [`RunConfig::base`] (a 32-wide ConvNet, LARS at 0.6, 15 epochs of 128;
    /// its numbers are this recipe's) with [`SimClrConfig::fashion_mnist`].
    pub fn preset() -> RunConfig {
        RunConfig::for_method(NAME, &SimClrConfig::fashion_mnist())
    }
}

impl Recipe for SimClrRecipe {
    fn name(&self) -> &str {
        NAME
    }

    fn about(&self) -> &str {
        "SimCLR: two views, NT-Xent"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(SimClrConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        cfg.settings::<SimClrConfig>()?.validate()
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let cfg = run.cfg;
        let s: SimClrConfig = cfg.settings()?;
        let loader = run.loader(run.views(2))?;
        let model = seed::init_module(&run.device, cfg.train.seed, |d| {
            SimClrModel::new(run.encoder(d), &s, d)
        });
        let mut objective = SimClr::<Backbone>::new(&s);
        let mut monitor = run.monitor(|m: &SimClrModel<Backbone>| m.encoder.clone().valid())?;
        let o = run.fit(
            &mut objective,
            model,
            &loader,
            run.sharded(FitOptions::new().on_epoch(&mut monitor)),
        )?;
        Ok(Trained::new(o.model.encoder.clone().valid(), &o))
    }

    fn step_encoder(
        &self,
        cfg: &RunConfig,
        _run: &Path,
        step: &Path,
        device: &Device,
    ) -> Result<Backbone> {
        let s: SimClrConfig = cfg.settings()?;
        let model = SimClrModel::new(cfg.encoder.init(cfg.channels(), device), &s, device);
        Ok(selfsup_core::checkpoint::load_model(step, model)?.encoder)
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let mut s: SimClrConfig = bench.cfg.settings()?;
        s.head.hidden_dim = bench.args.head_hidden;
        s.head.output_dim = bench.args.head_out;
        let channels = bench.args.channels;
        let model = seed::init_module(&bench.device, 0, |d| {
            SimClrModel::new(bench.cfg.encoder.init(channels, d), &s, d)
        });
        bench.time(SimClr::<Backbone>::new(&s), model, bench.views(2))
    }
}
