//! The GAN through the pipeline: two phases, samples, exact resume, its discriminator evaluated, `selfsup sample`, the report.

use burn::tensor::Device;
use selfsup_core::checkpoint;
use selfsup_pipeline::testing::{Harness, interrupted_at, same};
use selfsup_pipeline::{EvalArgs, EvalPlan, Recipe, Registry, RunConfig};
use std::path::Path;

use selfsup_gan::recipe::GanRecipe;

/// The pipeline over the recipes these tests run.
fn h() -> Harness {
    Harness(Registry::new().with(GanRecipe))
}

fn small_run(recipe: &dyn Recipe) -> RunConfig {
    selfsup_pipeline::testing::small_run(recipe.preset())
}

fn gan_tiny() -> RunConfig {
    let mut c = small_run(&GanRecipe);
    c.set("gan.noise_dim", "8").unwrap();
    c.set("gan.generator_width", "4").unwrap();
    c.set("gan.samples", "6").unwrap();
    c.set("gan.fid_images", "20").unwrap();
    c
}

/// A GAN trains through the shared engine's two phases, logs both losses, the
/// discriminator's accuracy, the Frechet distance and a sample grid per epoch; it resumes to
/// the very weights of an uninterrupted run; `selfsup sample` repeats the last grid from the
/// saved generator; a step checkpoint evaluates the discriminator's features; the report
/// shows it all.
#[test]
fn gan_trains_samples_resumes_and_evaluates_its_discriminator() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let report = h().pretrain(gan_tiny(), &a, false, false).unwrap();
    assert!(report.final_loss.is_finite());
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    for key in [
        "d_loss",
        "g_loss",
        "d_real_acc",
        "d_fake_acc",
        "frechet",
        "sample_spread",
    ] {
        assert!(metrics.contains(key), "{key} not logged: {metrics}");
    }
    let grid = a.join("samples").join("epoch-002.png");
    assert!(a.join("samples").join("epoch-001.png").is_file() && grid.is_file());
    // The saved generator and the run's seed give the last epoch's grid again.
    let again = dir.path().join("again.png");
    selfsup_gan::recipe::sample(&a, 6, &again, None, None).unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&grid).unwrap()
    );
    let steps = checkpoint::list(&a).unwrap();
    let from_step = dir.path().join("step.png");
    selfsup_gan::recipe::sample(steps.last().unwrap(), 3, &from_step, Some(9), None).unwrap();
    assert!(std::fs::read(&from_step).unwrap().starts_with(b"\x89PNG"));
    // Interrupted after the first checkpoint and resumed: the same weights.
    let b = dir.path().join("b");
    interrupted_at(&steps[0], &b);
    h().pretrain(gan_tiny(), &b, true, false).unwrap();
    same(&h().encoder_weights(&a), &h().encoder_weights(&b))
        .expect("resumed GAN run differs from uninterrupted run");
    let generator = |run: &Path| {
        let (_, g) = selfsup_gan::recipe::load_generator(run, &Device::flex()).unwrap();
        selfsup_core::grads::param_values(&g)
    };
    same(&generator(&a), &generator(&b)).expect("resumed GAN run has another generator");
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
    // The discriminator's trunk fine-tunes like any encoder.
    let whole = EvalArgs {
        checkpoint: a.clone(),
        ..EvalArgs::default()
    };
    let ft =
        selfsup_pipeline::eval_finetune(&whole, &h().0, Some(vec![0.5]), Some(1), false, false)
            .unwrap();
    assert!((0.0..=1.0).contains(&ft[0].test.top1));
    let files = h().report(&a, 0).unwrap();
    for pic in ["samples.png", "frechet.png", "loss.png"] {
        assert!(files.pictures.iter().any(|p| p.ends_with(pic)), "{pic}");
    }
    // Images the generator cannot grow to are refused, naming the field; so is a non-GAN run.
    let mut bad = gan_tiny();
    bad.augment.crop_size = 27;
    let e = h()
        .pretrain(bad, &dir.path().join("c"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("augment.crop_size"), "{e}");
}
