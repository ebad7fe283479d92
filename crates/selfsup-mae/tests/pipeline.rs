//! MAE through the pipeline: a ViT trains, its step checkpoint evaluates, the report draws reconstructions.

use selfsup_core::{DeviceSpec, Result, checkpoint};
use selfsup_pipeline::testing::same;
use selfsup_pipeline::{
    EvalArgs, EvalPlan, EvalReport, PretrainReport, Recipe, Registry, ReportFiles, RunConfig,
};
use std::path::Path;

use selfsup_mae::recipe::MaeRecipe;

/// The recipes these tests run.
fn registry() -> Registry {
    Registry::new().with(MaeRecipe)
}

fn pretrain(cfg: RunConfig, out: &Path, resume: bool, progress: bool) -> Result<PretrainReport> {
    let r = registry();
    selfsup_pipeline::pretrain(r.get(&cfg.method)?, cfg, out, resume, progress)
}

fn eval_frozen(
    args: &EvalArgs,
    plan: EvalPlan,
    k: Option<usize>,
    linear_epochs: Option<usize>,
) -> Result<EvalReport> {
    selfsup_pipeline::eval_frozen(args, &registry(), plan, k, linear_epochs)
}

fn encoder_weights(run: &Path) -> Vec<f32> {
    selfsup_pipeline::testing::encoder_weights(run, &registry())
}

mod common {
    use super::*;

    pub fn report(run: &Path, points: usize) -> Result<ReportFiles> {
        selfsup_pipeline::report(run, &registry(), None, points, None)
    }
}

/// `recipe`'s preset at test size: the shared sections, and `settings` (`key=value`) of its own.
fn tiny_of(recipe: &dyn Recipe, settings: &[(&str, &str)]) -> RunConfig {
    let mut c = selfsup_pipeline::testing::tiny(recipe.preset());
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    c
}

/// `cfg` trained over two (flex) replicas in bf16 into `out`: as many steps as the f32 run
/// `f32_run` and a final loss within 5 % of its.
fn split_in_bf16_follows(cfg: &RunConfig, f32_run: &PretrainReport, out: &Path) {
    let mut split = cfg.clone();
    split.devices = vec![DeviceSpec::Flex, DeviceSpec::Flex];
    split.train.precision = selfsup_core::config::Precision::Bf16;
    let r = pretrain(split, out, false, false).unwrap();
    assert_eq!(r.steps, f32_run.steps);
    let (l, l32) = (r.final_loss, f32_run.final_loss);
    assert!(
        (l - l32).abs() < 0.05 * l32,
        "bf16 over two replicas {l}, f32 {l32}"
    );
}

const MAE_SMALL: &[(&str, &str)] = &[
    ("mae.decoder_dim", "8"),
    ("mae.decoder_depth", "1"),
    ("mae.decoder_heads", "2"),
];

/// A tiny MAE run: a ViT trains, its step checkpoint evaluates, the report draws reconstructions.
#[test]
fn mae_pretrains_evaluates_and_draws_reconstructions() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mae");
    let mut c = tiny_of(&MaeRecipe, MAE_SMALL);
    c.train.checkpoint_every = 1;
    let report = pretrain(c.clone(), &run, false, false).unwrap();
    assert_eq!(report.steps, 2);
    assert!(report.final_loss.is_finite());
    assert!(run.join("mae.bpk").is_file());
    // Seeded: the same config run again gives bit-identical weights (masks, crops, init).
    let again = dir.path().join("mae-again");
    pretrain(c.clone(), &again, false, false).unwrap();
    same(&encoder_weights(&run), &encoder_weights(&again)).unwrap();
    // Over two (flex) replicas, in bf16: it trains, and its loss stays near the f32 run's.
    split_in_bf16_follows(&c, &report, &dir.path().join("mae-split"));
    let steps = checkpoint::list(&run).unwrap();
    let args = EvalArgs {
        checkpoint: steps[0].clone(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    eval_frozen(&args, knn_only, Some(5), None).unwrap();
    let files = common::report(&run, 0).unwrap();
    let picture = run.join("report").join("reconstruction.png");
    assert!(files.pictures.contains(&picture), "{:?}", files.pictures);
    // Three rows of eight 28-pixel images, magnified 4 times, with 2-pixel gaps.
    let img = image::open(&picture).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (8 * (28 * 4 + 2) + 2, 3 * (28 * 4 + 2) + 2)
    );

    // A ViT whose image size is not the crops' is refused, naming the field.
    let mut wrong = c;
    wrong.encoder.vit.image_size = 32;
    let err = pretrain(wrong, &dir.path().join("w"), false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder.vit.image_size"), "{err}");
}
