//! MAE through the pipeline: a ViT trains, its step checkpoint evaluates, the report draws reconstructions.

use selfsup_core::checkpoint;
use selfsup_pipeline::testing::{Harness, same, tiny_with};
use selfsup_pipeline::{EvalArgs, EvalPlan, Recipe, Registry, RunConfig};

use selfsup_mae::recipe::MaeRecipe;

/// The pipeline over the recipes these tests run.
fn h() -> Harness {
    Harness(Registry::new().with(MaeRecipe))
}

/// `recipe`'s preset at test size, with `settings` of its own.
fn tiny_of(recipe: &dyn Recipe, settings: &[(&str, &str)]) -> RunConfig {
    tiny_with(recipe.preset(), settings)
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
    let report = h().pretrain(c.clone(), &run, false, false).unwrap();
    assert_eq!(report.steps, 2);
    assert!(report.final_loss.is_finite());
    assert!(run.join("mae.bpk").is_file());
    // Seeded: the same config run again gives bit-identical weights (masks, crops, init).
    let again = dir.path().join("mae-again");
    h().pretrain(c.clone(), &again, false, false).unwrap();
    same(&h().encoder_weights(&run), &h().encoder_weights(&again)).unwrap();
    // Over two (flex) replicas, in bf16: it trains, and its loss stays near the f32 run's.
    h().split_in_bf16_follows(&c, &report, &dir.path().join("mae-split"));
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
    h().eval_frozen(&args, knn_only, Some(5), None).unwrap();
    let files = h().report(&run, 0).unwrap();
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
    let err = h()
        .pretrain(wrong, &dir.path().join("w"), false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder.vit.image_size"), "{err}");
}
