//! CLIP through the pipeline: template captions and a manifest, resume, zero-shot and retrieval, its image tower from a step checkpoint.

use selfsup_core::checkpoint;
use selfsup_pipeline::evaluate::PRETRAINED;
use selfsup_pipeline::testing::{Harness, interrupted_at, same, tiny_with};
use selfsup_pipeline::{EvalArgs, EvalPlan, Recipe, Registry, RunConfig};

use selfsup_contrastive::recipe::ClipRecipe;

/// The pipeline over the recipes these tests run.
fn h() -> Harness {
    Harness(Registry::new().with(ClipRecipe))
}

/// `recipe`'s preset at test size, with `settings` of its own.
fn tiny_of(recipe: &dyn Recipe, settings: &[(&str, &str)]) -> RunConfig {
    tiny_with(recipe.preset(), settings)
}

fn tiny_clip() -> RunConfig {
    let mut c = tiny_of(&ClipRecipe, &[]);
    c.data.max_test = 32;
    c.set("clip.embed_dim", "8").unwrap();
    c.set("clip.text.context", "16").unwrap();
    c.set("clip.text.dim", "8").unwrap();
    c.set("clip.text.depth", "1").unwrap();
    c.set("clip.text.heads", "2").unwrap();
    c.set("clip.tokenizer.vocab_size", "600").unwrap();
    c.train.epochs = 2;
    c.train.checkpoint_every = 1;
    c.train.keep_checkpoints = 4;
    c
}

/// CLIP on the labelled sample (template captions): trains, resumes exactly, evaluates
/// zero-shot and retrieval, and a step checkpoint evaluates its image tower.
#[test]
fn clip_trains_on_template_captions_resumes_and_evaluates() {
    use selfsup_contrastive::recipe::clip_eval::{
        self, CLIP_FILE, CLIP_RESULTS_FILE, TOKENIZER_FILE,
    };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let report = h().pretrain(tiny_clip(), &a, false, false).unwrap();
    assert_eq!(report.steps, 4);
    assert!(report.final_loss.is_finite());
    for f in [CLIP_FILE, TOKENIZER_FILE, CLIP_RESULTS_FILE] {
        assert!(a.join(f).is_file(), "{f}");
    }
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("logit_scale"), "{metrics}");

    // Interrupted after step 2: the resumed run ends with the same image tower.
    let steps = checkpoint::list(&a).unwrap();
    let b = dir.path().join("b");
    interrupted_at(&steps[1], &b);
    h().pretrain(tiny_clip(), &b, true, false).unwrap();
    same(&h().encoder_weights(&a), &h().encoder_weights(&b))
        .expect("resumed CLIP run differs from the uninterrupted one");

    let args = EvalArgs {
        checkpoint: a.clone(),
        ..EvalArgs::default()
    };
    let r = clip_eval::eval_clip(&args, true, true, Some(vec!["a {}".into()])).unwrap();
    let z = r.zero_shot.unwrap();
    assert!((0.0..=1.0).contains(&z.top1) && z.top5 >= z.top1, "{z:?}");
    let ret = r.retrieval.unwrap();
    assert_eq!(ret.images, 32);
    // Ten classes' captions from twelve templates, those present among 32 images.
    assert!(ret.texts > 12 && ret.texts <= 120, "{ret:?}");
    // A step checkpoint evaluates through its image tower.
    let step = EvalArgs {
        checkpoint: steps[3].clone(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    let from_step = h().eval_frozen(&step, knn_only, Some(5), None).unwrap();
    let from_run = h().eval_frozen(&args, knn_only, Some(5), None).unwrap();
    let knn = |r: &selfsup_pipeline::EvalReport| r.row(PRETRAINED).unwrap().knn_top1;
    assert_eq!(knn(&from_step), knn(&from_run));
    // Not a CLIP run: a clear refusal.
    let err = clip_eval::eval_clip(
        &EvalArgs {
            checkpoint: dir.path().join("nothing"),
            ..EvalArgs::default()
        },
        true,
        false,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nothing"), "{err}");
}

/// CLIP on an image-text manifest: its captions train the model, retrieval runs on the held-out
/// images; a manifest naming a missing image is refused with its name.
#[test]
fn clip_trains_on_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = String::new();
    for i in 0..40u32 {
        let shade = if i % 2 == 0 { 30 } else { 220 };
        let img = image::GrayImage::from_fn(12, 12, |x, _| image::Luma([(shade + x * 2) as u8]));
        img.save(images.join(format!("{i}.png"))).unwrap();
        let word = if i % 2 == 0 { "dark" } else { "light" };
        lines += &format!(
            "{{\"image\": \"images/{i}.png\", \"captions\": [\"a {word} square\", \"{word}, number {i}\"]}}\n"
        );
    }
    let manifest = dir.path().join("pairs.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    let mut c = tiny_clip();
    c.data.spec = format!("manifest:{}", manifest.display()).parse().unwrap();
    c.data.image_size = 12;
    c.data.channels = 1;
    c.data.holdout = 0.2;
    c.data.max_train = 0;
    c.data.max_test = 0;
    c.train.batch_size = 16;
    let run = dir.path().join("run");
    let report = h().pretrain(c.clone(), &run, false, false).unwrap();
    assert_eq!(report.steps, 4, "32 training pairs, batch 16, 2 epochs");
    assert!(report.eval.is_none(), "no labels: no kNN");
    let results = std::fs::read_to_string(
        run.join(selfsup_contrastive::recipe::clip_eval::CLIP_RESULTS_FILE),
    )
    .unwrap();
    assert!(results.contains("text_to_image"), "{results}");
    assert!(results.contains("\"zero_shot\": null"), "{results}");

    // A missing image is found when it is streamed, and named.
    let lines: String = (0..40)
        .map(|i| {
            let name = if i % 4 == 3 { 404 } else { i };
            format!("{{\"image\": \"images/{name}.png\", \"caption\": \"number {i}\"}}\n")
        })
        .collect();
    std::fs::write(&manifest, lines).unwrap();
    let err = h()
        .pretrain(c, &dir.path().join("bad"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404.png") && err.contains("data.corrupt_images"),
        "{err}"
    );
}
