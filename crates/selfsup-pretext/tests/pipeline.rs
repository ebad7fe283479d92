//! RotNet and jigsaw through the pipeline: pretext accuracy logged, exact resume, step checkpoints evaluated, puzzles drawn.

use selfsup_core::{DeviceSpec, checkpoint};
use selfsup_pipeline::testing::{Harness, interrupted_at, same};
use selfsup_pipeline::{EvalArgs, EvalPlan, Recipe, Registry, RunConfig};

use selfsup_pretext::recipe::{JigsawRecipe, RotNetRecipe};

/// The pipeline over the recipes these tests run.
fn h() -> Harness {
    Harness(Registry::new().with(RotNetRecipe).with(JigsawRecipe))
}

/// A small run of `recipe` (a 4-wide ConvNet, 96 images, 2 epochs).
fn tiny(recipe: &dyn Recipe) -> RunConfig {
    selfsup_pipeline::testing::small_run(recipe.preset())
}

/// RotNet trains through the shared engine, logs how often it names the rotation, and a step
/// checkpoint evaluates its encoder.
#[test]
fn rotnet_trains_and_evaluates_its_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("rot");
    let mut c = tiny(&RotNetRecipe);
    c.train.epochs = 1;
    let report = h().pretrain(c, &run, false, false).unwrap();
    assert!(report.final_loss.is_finite());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("pretext_top1"), "{metrics}");
    let steps = checkpoint::list(&run).unwrap();
    let args = EvalArgs {
        checkpoint: steps.last().unwrap().clone(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    h().eval_frozen(&args, knn_only, Some(5), None).unwrap();
}

/// Jigsaw trains through the shared engine on its tiles, logs how often it names the
/// permutation, resumes to the very weights of an uninterrupted run (its permutation set and
/// each step's permutations come from the seed), and its step checkpoints evaluate the encoder
/// on whole images.
#[test]
fn jigsaw_trains_resumes_and_evaluates_its_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let jig = || {
        let mut c = tiny(&JigsawRecipe);
        c.set("jigsaw.permutations", "10").unwrap();
        c.set("jigsaw.hidden_dim", "16").unwrap();
        c
    };
    let a = dir.path().join("a");
    let report = h().pretrain(jig(), &a, false, false).unwrap();
    assert!(report.final_loss.is_finite());
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("pretext_top1"), "{metrics}");
    let steps = checkpoint::list(&a).unwrap();
    let b = dir.path().join("b");
    interrupted_at(&steps[0], &b);
    h().pretrain(jig(), &b, true, false).unwrap();
    same(&h().encoder_weights(&a), &h().encoder_weights(&b))
        .expect("resumed jigsaw run differs from uninterrupted run");
    // The report shows the puzzles and the pretext accuracy.
    let files = h().report(&a, 0).unwrap();
    assert!(files.pictures.iter().any(|p| p.ends_with("puzzle.png")));
    let md = std::fs::read_to_string(&files.summary).unwrap();
    assert!(md.contains("Pretext top-1"), "{md}");
    let args = EvalArgs {
        checkpoint: steps.last().unwrap().clone(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    h().eval_frozen(&args, knn_only, Some(5), None).unwrap();
    // Over two (flex) replicas: it trains (BatchNorm per half, so not the same weights).
    let mut split = jig();
    split.devices = vec![DeviceSpec::Flex, DeviceSpec::Flex];
    let r = h()
        .pretrain(split, &dir.path().join("split"), false, false)
        .unwrap();
    assert_eq!(r.steps, report.steps);
    assert!(r.final_loss.is_finite());
    // Tiles that cannot fit their cells are refused, naming the field.
    let mut bad = jig();
    bad.set("jigsaw.image_size", "12").unwrap();
    bad.set("jigsaw.tile", "5").unwrap();
    let e = h()
        .pretrain(bad, &dir.path().join("c"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("jigsaw.tile"), "{e}");
}
