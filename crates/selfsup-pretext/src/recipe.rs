//! RotNet and jigsaw as [`selfsup_pipeline::Recipe`]s (the `recipe` feature): the RotNet
//! paper's SGD for both, crops and flips, and jigsaw's tiles and puzzle pictures.

use crate::{AugmentedTiles, Jigsaw, JigsawConfig, JigsawModel, RotNet, RotNetConfig, RotNetModel};
use burn::module::Module;
use burn::tensor::Device;
use rand::Rng;
use selfsup_core::{Augmentation, FitOptions, OptimizerConfig, OptimizerKind, Result, seed};
use selfsup_data::augment::Resize;
use selfsup_data::{AugmentConfig, Pipeline};
use selfsup_encoders::Backbone;
use selfsup_pipeline::{
    Recipe, ReportContext, ReportPart, RunConfig, StepBench, Timings, TrainRun, Trained,
};
use std::path::Path;

/// RotNet as the pipeline runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RotNetRecipe;

/// Jigsaw puzzles as the pipeline runs them.
#[derive(Clone, Copy, Debug, Default)]
pub struct JigsawRecipe;

/// RotNet's name.
pub const ROTNET: &str = "rotnet";
/// Jigsaw's name.
pub const JIGSAW: &str = "jigsaw";
/// Test images in `puzzle.png`.
const PUZZLES: usize = 6;

/// The RotNet paper's optimizer, which the jigsaw preset shares: SGD with Nesterov momentum
/// 0.9 (PyTorch's undampened momentum), lr 0.1, weight decay 5e-4.
pub fn pretext_sgd(base: OptimizerConfig) -> OptimizerConfig {
    OptimizerConfig {
        kind: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..base
    }
}

impl RotNetRecipe {
    /// The preset: [`pretext_sgd`]; crops and flips (a flip never changes which rotation was
    /// applied), no colour changes; features read as the whole last map (4 x 4 cells of 28 px
    /// images), as the RotNet paper evaluates its conv blocks' maps: the same 5-minute encoder
    /// reads kNN 87.05 against 84.32 pooled (random init 80.54 against 75.41;
    /// docs/benchmarks.md).
    pub fn preset() -> RunConfig {
        let mut c = RunConfig::for_method(ROTNET, &RotNetConfig::default());
        c.train.optimizer = pretext_sgd(c.train.optimizer);
        c.augment = AugmentConfig::crops_and_flips(0.5);
        c.eval.grid = 4;
        c
    }
}

impl JigsawRecipe {
    /// The preset: RotNet's optimizer; crops and flips of the whole image before it is cut
    /// (each tile is normalized on its own, so colour changes would do nothing);
    /// [`JigsawConfig::fashion_mnist`]; features read as the whole last map (4 x 4 cells of
    /// 28 px images): the encoder learned where parts sit in a tile, which one global average
    /// throws away (kNN 84.28 against 79.48 pooled; docs/methods/pretext.md).
    pub fn preset() -> RunConfig {
        let mut c = RunConfig::for_method(JIGSAW, &JigsawConfig::fashion_mnist());
        c.train.optimizer = pretext_sgd(c.train.optimizer);
        c.augment = AugmentConfig::crops_and_flips(0.5);
        c.eval.grid = 4;
        c
    }
}

impl Recipe for RotNetRecipe {
    fn name(&self) -> &str {
        ROTNET
    }

    fn about(&self) -> &str {
        "RotNet: name which of four rotations was applied to each image"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(RotNetConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        cfg.settings::<RotNetConfig>()?.validate()
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let cfg = run.cfg;
        let s: RotNetConfig = cfg.settings()?;
        let loader = run.loader(run.views(1))?;
        let model = seed::init_module(&run.device, cfg.train.seed, |d| {
            RotNetModel::new(run.encoder(d), &s, d)
        });
        let mut objective = RotNet::<Backbone>::new();
        let mut monitor = run.monitor(|m: &RotNetModel<Backbone>| m.encoder.clone().valid())?;
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
        let s: RotNetConfig = cfg.settings()?;
        let model = RotNetModel::new(cfg.encoder.init(cfg.channels(), device), &s, device);
        Ok(selfsup_core::checkpoint::load_model(step, model)?.encoder)
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let s: RotNetConfig = bench.cfg.settings()?;
        let channels = bench.args.channels;
        let model = seed::init_module(&bench.device, 0, |d| {
            RotNetModel::new(bench.cfg.encoder.init(channels, d), &s, d)
        });
        bench.time(RotNet::<Backbone>::new(), model, bench.views(1))
    }
}

/// The jigsaw tiles of images of `size` pixels: the run's augmentations at the cut size, then
/// the cut.
fn jigsaw_views(
    cfg: &RunConfig,
    s: &JigsawConfig,
    size: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
) -> AugmentedTiles<Pipeline> {
    AugmentedTiles {
        augment: cfg.augment.pipeline(s.cut_size(size), mean, std),
        tiles: s.tiles(size),
    }
}

impl Recipe for JigsawRecipe {
    fn name(&self) -> &str {
        JIGSAW
    }

    fn about(&self) -> &str {
        "Jigsaw: name which permutation shuffled the tiles of each image"
    }

    fn preset(&self) -> RunConfig {
        Self::preset()
    }

    fn settings_schema(&self) -> Option<schemars::Schema> {
        Some(schemars::schema_for!(JigsawConfig))
    }

    fn validate(&self, cfg: &RunConfig) -> Result<()> {
        cfg.validate_shared(true)?;
        let s: JigsawConfig = cfg.settings()?;
        // The tiles' fit is checked again once the data's size is known.
        let side = match (s.image_size, cfg.augment.crop_size) {
            (0, 0) => None,
            (0, c) => Some(c),
            (i, _) => Some(i),
        };
        s.validate(side)
    }

    fn train(&self, run: &TrainRun<'_>) -> Result<Trained> {
        let (cfg, size) = (run.cfg, run.size);
        let s: JigsawConfig = cfg.settings()?;
        s.validate(Some(size))?;
        let views = jigsaw_views(cfg, &s, size, cfg.data.mean.clone(), cfg.data.std.clone());
        let loader = run.loader(views)?;
        let tiles = s.grid * s.grid;
        let model = seed::init_module(&run.device, cfg.train.seed, |d| {
            JigsawModel::new(run.encoder(d), &s, d)
        });
        let set = s.permutation_set(cfg.train.seed)?;
        eprintln!(
            "selfsup: {} permutations of {tiles} tiles, Hamming distance min {} mean {:.2}",
            set.len(),
            set.min_distance().unwrap_or(0),
            set.mean_distance()
        );
        let mut objective = Jigsaw::<Backbone>::new(set, cfg.train.seed);
        let mut monitor = run.monitor(|m: &JigsawModel<Backbone>| m.encoder.clone().valid())?;
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
        let s: JigsawConfig = cfg.settings()?;
        let model = JigsawModel::new(cfg.encoder.init(cfg.channels(), device), &s, device);
        Ok(selfsup_core::checkpoint::load_model(step, model)?.encoder)
    }

    fn bench_step(&self, bench: &StepBench<'_>) -> Result<Timings> {
        let s: JigsawConfig = bench.cfg.settings()?;
        let views = jigsaw_views(
            &bench.cfg,
            &s,
            bench.args.image_size,
            bench.mean(),
            bench.std(),
        );
        let channels = bench.args.channels;
        let model = seed::init_module(&bench.device, 0, |d| {
            JigsawModel::new(bench.cfg.encoder.init(channels, d), &s, d)
        });
        let objective = Jigsaw::<Backbone>::new(s.permutation_set(0)?, 0);
        bench.time(objective, model, views)
    }

    /// `puzzle.png`: test images (training images when there is no test split), each resized
    /// to the cut size and cut, as a row: the image, its tiles shuffled by a permutation of
    /// the run's set, the tiles in order.
    fn report(&self, ctx: &ReportContext<'_>) -> Result<Vec<ReportPart>> {
        let cfg = ctx.cfg;
        let s: JigsawConfig = cfg.settings()?;
        let splits = cfg.data.load(cfg.train.seed)?;
        let images = splits.test.as_ref().unwrap_or(&splits.train);
        let size = cfg.crop_side(images.height);
        let cut = s.tiles(size);
        let side = s.cut_size(size);
        let set = s.permutation_set(cfg.train.seed)?;
        let gap = 2;
        let board = cut.grid * cut.tile + (cut.grid - 1) * gap;
        let mut rng = seed::rng(cfg.train.seed, seed::STREAM_AUGMENT, 0, 0);
        let identity: Vec<u8> = (0..(cut.grid * cut.grid) as u8).collect();
        let n = PUZZLES.min(images.len());
        let mut pixels = Vec::new();
        let mut channels = 1;
        for i in 0..n {
            let whole = Resize { size: side }.apply(images.image(i)?, &mut rng);
            channels = whole.channels;
            let tiles = cut.cut(&whole, &mut rng);
            let perm = &set.perms[rng.random_range(0..set.len())];
            let shown = Resize { size: board }.apply(whole, &mut rng);
            pixels.extend_from_slice(&shown.data);
            for order in [&perm[..], &identity[..]] {
                let picture = crate::puzzle_picture(&tiles, order, cut.grid, gap);
                pixels.extend_from_slice(&picture.data);
            }
        }
        let p = ctx.out.join("puzzle.png");
        selfsup_report::image_grid(&p, &pixels, [n, 3], [channels, board, board], 4)?;
        Ok(vec![ReportPart {
            markdown: format!(
                "## Puzzles\n\nTest images cut as in training, without the random crop (first column: the image; its tiles each at a random place in its cell), the tiles shuffled by one of the {} permutations as the network gets them (middle), and in their places again (right). Each tile is stretched to its own range: the network sees every tile normalized alone.\n\n![jigsaw puzzles](puzzle.png)\n\n",
                s.permutations
            ),
            pictures: vec![p],
        }])
    }
}
