//! End-to-end: a tiny SimCLR run on the embedded sample checkpoints, resumes to the same
//! weights as an uninterrupted run, and is evaluated by `selfsup eval knn`.

use burn::tensor::Device;
use selfsup_core::{DeviceSpec, checkpoint};
use selfsup_encoders::Arch;
use selfsup_pipeline::evaluate::{PRETRAINED, RANDOM_INIT, RAW_PIXELS};
use selfsup_pipeline::{EvalArgs, EvalPlan, RunConfig};
use std::path::Path;
use std::process::Command;

mod common;
use common::{
    encoder_weights, eval_frozen, preset, pretrain, retarget, same, small_run, tiny, tiny_of,
    validate,
};

/// Makes `run` look like a run stopped right after the step checkpoint `step` (of another
/// run): that checkpoint copied into its checkpoints folder, nothing else.
fn interrupted_at(step: &Path, run: &Path) {
    let dst = checkpoint::checkpoints_dir(run).join(step.file_name().unwrap());
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(step).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn pretrain_checkpoints_resumes_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let report = pretrain(tiny(), &a, false, false).unwrap();
    assert_eq!(report.steps, 6);
    assert!(report.final_loss.is_finite());
    let eval = report.eval.unwrap();
    let knn = eval.row(PRETRAINED).unwrap().knn_top1.unwrap();
    assert!((0.0..=1.0).contains(&knn));
    for row in [RANDOM_INIT, RAW_PIXELS] {
        let r = eval.row(row).unwrap();
        assert!(r.knn_top1.is_some() && r.linear.is_some(), "{r:?}");
    }
    // The online monitor logged kNN once per epoch.
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("knn_top1").count(), 2, "{metrics}");
    for f in [
        "config.toml",
        "encoder.bpk",
        "metrics.jsonl",
        "results.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let steps: Vec<_> = checkpoint::list(&a).unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");

    // Interrupt after step 2: keep only that checkpoint, then resume.
    let b = dir.path().join("b");
    interrupted_at(&steps[0], &b);
    let resumed = pretrain(tiny(), &b, true, false).unwrap();
    assert_eq!(resumed.steps, 6);
    same(&encoder_weights(&a), &encoder_weights(&b))
        .expect("resumed run differs from uninterrupted run");

    // The same seed from scratch gives the same weights.
    let c = dir.path().join("c");
    pretrain(tiny(), &c, false, false).unwrap();
    same(&encoder_weights(&a), &encoder_weights(&c)).expect("same seed, different weights");

    // Evaluating the run folder and a step checkpoint.
    let args = |c: &Path| EvalArgs {
        checkpoint: c.to_path_buf(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    let r = eval_frozen(&args(&a), knn_only, Some(5), None).unwrap();
    assert_eq!(r.rows.len(), 1);
    assert!((r.row(PRETRAINED).unwrap().knn_top1.unwrap() - knn).abs() < 1e-9);
    eval_frozen(&args(&steps[1]), knn_only, Some(5), None).unwrap();
    // The same linear probe, from the saved encoder, gives the same numbers.
    let lin = eval_frozen(
        &args(&a),
        EvalPlan {
            linear: true,
            ..knn_only
        },
        Some(5),
        None,
    )
    .unwrap();
    assert_eq!(
        lin.row(PRETRAINED).unwrap().linear,
        eval.row(PRETRAINED).unwrap().linear
    );
    assert!(a.join("eval-linear.json").is_file());
    let ft = selfsup_pipeline::eval_finetune(
        &args(&a),
        &selfsup_cli::registry(),
        Some(vec![0.1, 0.5]),
        None,
        true,
        false,
    )
    .unwrap();
    assert_eq!(ft.len(), 4);
    assert_eq!(ft[0].init, PRETRAINED);
    assert_eq!(ft[1].init, RANDOM_INIT);
    // 96 training images: 10 % is about one per class, 50 % about five.
    assert!(ft[0].labelled_images < ft[2].labelled_images);
    assert!(a.join("finetune-10pct-scratch/metrics.jsonl").is_file());
    assert!(a.join("finetune-10pct/metrics.jsonl").is_file());
    assert!(a.join("finetune.json").is_file());

    // The report: curves, the monitor, the embedding and a summary with every table.
    let files = common::report(&a, 30).unwrap();
    let names: Vec<_> = files
        .pictures
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["loss.png", "knn.png", "embedding.png"]);
    for p in &files.pictures {
        let img = image::open(p).unwrap();
        assert!(img.width() >= 400 && img.height() >= 300);
    }
    let md = std::fs::read_to_string(&files.summary).unwrap();
    for want in [
        "random init",
        "raw pixels",
        "Fine-tuning",
        "embedding.png",
        "kNN monitor",
    ] {
        assert!(md.contains(want), "{want} missing from\n{md}");
    }
}

#[test]
fn cli_reports_bad_input_clearly() {
    let exe = env!("CARGO_BIN_EXE_selfsup");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(exe).args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, err, _) = run(&[
        "pretrain",
        "--data",
        "fashion-mnist:/no/such/dir",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("/no/such/dir"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (ok, err, _) = run(&["pretrain", "--device", "tpu"]);
    assert!(!ok && err.contains("tpu"), "{err}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[simclr]\ntemperature = 0\n").unwrap();
    let (ok, err, _) = run(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("temperature"), "{err}");
    let (ok, err, _) = run(&["eval", "knn", "--checkpoint", dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("checkpoint"), "{err}");
    let (ok, _, out) = run(&["config", "--method", "simclr"]);
    assert!(
        ok && out.contains("[train.optimizer]") && out.contains("temperature"),
        "{out}"
    );
    let parsed = RunConfig::parse(&out, "stdout", &selfsup_cli::registry()).unwrap();
    assert_eq!(parsed, preset("simclr"));
}

/// `--devices`: SimCLR trains data-parallel over two (flex) replicas; what cannot is refused
/// naming the field.
#[test]
fn simclr_trains_over_two_devices_and_bad_device_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny();
    c.train.epochs = 1;
    c.eval.baselines = false;
    c.eval.linear = false;
    c.devices = vec![DeviceSpec::Flex, DeviceSpec::Flex];
    let r = pretrain(c.clone(), dir.path(), false, false).unwrap();
    assert_eq!(r.steps, 3);
    assert!(r.final_loss.is_finite(), "{}", r.final_loss);
    let saved = RunConfig::load_saved(&dir.path().join("config.toml")).unwrap();
    assert_eq!(saved.devices.len(), 2);

    let mut odd = c.clone();
    odd.train.batch_size = 33;
    let err = pretrain(odd, &dir.path().join("odd"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.batch_size") && err.contains('2'),
        "{err}"
    );
    let mut gan = preset("gan");
    gan.devices = vec![DeviceSpec::Flex, DeviceSpec::Flex];
    let err = validate(&gan).unwrap_err().to_string();
    assert!(err.contains("devices") && err.contains("gan"), "{err}");

    let exe = env!("CARGO_BIN_EXE_selfsup");
    let o = Command::new(exe)
        .args(["pretrain", "--devices", "flex,tpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tpu"), "{err}");
}

/// A tiny MAE run: a ViT trains, its step checkpoint evaluates, the report draws reconstructions.
#[test]
fn mae_pretrains_evaluates_and_draws_reconstructions() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mae");
    let mut c = tiny_of("mae");
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

fn tiny_dino() -> RunConfig {
    let mut c = tiny_of("dino");
    c.set("dino.crops.local_crops", "2").unwrap();
    c.set("dino.crops.local_size", "8").unwrap();
    c.train.epochs = 2;
    c.train.checkpoint_every = 1;
    c.train.keep_checkpoints = 4;
    c.train.log_every = 1;
    c
}

#[test]
fn dino_pretrains_resumes_exactly_and_evaluates_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let report = pretrain(tiny_dino(), &a, false, false).unwrap();
    assert_eq!(report.steps, 4);
    assert!(report.final_loss.is_finite());
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("teacher_student_kl"), "{metrics}");
    // The epoch lines carry the collapse monitor's means beside the kNN monitor.
    let epoch_lines: Vec<&str> = metrics.lines().filter(|l| l.contains("knn_top1")).collect();
    assert_eq!(epoch_lines.len(), 2, "{metrics}");
    assert!(
        epoch_lines.iter().all(|l| l.contains("teacher_entropy")),
        "{metrics}"
    );
    let steps = checkpoint::list(&a).unwrap();
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps[1].join(selfsup_dino::dino::TEACHER_FILE).is_file());

    // Interrupted after step 2 (mid-run, second epoch ahead): the resumed run restores the
    // teacher and centre, and ends with the very same teacher.
    let b = dir.path().join("b");
    interrupted_at(&steps[1], &b);
    pretrain(tiny_dino(), &b, true, false).unwrap();
    same(&encoder_weights(&a), &encoder_weights(&b))
        .expect("resumed DINO run differs from the uninterrupted one");

    // A step checkpoint evaluates through its teacher.
    let args = EvalArgs {
        checkpoint: steps[3].clone(),
        ..EvalArgs::default()
    };
    let knn_only = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    let from_step = eval_frozen(&args, knn_only, Some(5), None).unwrap();
    let from_run = eval_frozen(
        &EvalArgs {
            checkpoint: a.clone(),
            ..EvalArgs::default()
        },
        knn_only,
        Some(5),
        None,
    )
    .unwrap();
    let knn = |r: &selfsup_pipeline::EvalReport| r.row(PRETRAINED).unwrap().knn_top1;
    assert_eq!(knn(&from_step), knn(&from_run));
}

#[test]
fn dino_trains_a_vit_on_global_and_local_crops() {
    let dir = tempfile::tempdir().unwrap();
    let mut vit = tiny_dino();
    vit.encoder.arch = Arch::Vit;
    vit.encoder.vit.dim = 16;
    vit.encoder.vit.depth = 1;
    vit.encoder.vit.heads = 2;
    vit.encoder.vit.image_size = 28;
    vit.train.epochs = 1;
    // 8 px local crops are 2 x 2 patches beside the 7 x 7 of the 28 px global crops.
    let report = pretrain(vit.clone(), &dir.path().join("v"), false, false).unwrap();
    assert_eq!(report.steps, 2);
    assert!(report.final_loss.is_finite());
    // The report draws each head's class-token attention beside six test images.
    let files = common::report(&dir.path().join("v"), 0).unwrap();
    let picture = dir.path().join("v").join("report").join("attention.png");
    assert!(files.pictures.contains(&picture), "{:?}", files.pictures);
    let img = image::open(&picture).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (3 * (28 * 4 + 2) + 2, 6 * (28 * 4 + 2) + 2)
    );
    let summary = std::fs::read_to_string(files.summary).unwrap();
    assert!(summary.contains("attention.png"), "{summary}");

    // Over two (flex) replicas in bf16 (the teacher copied in bf16 too): near the f32 run.
    split_in_bf16_follows(&vit, &report, &dir.path().join("split"));

    // Crops that are not whole patches are refused, naming the field.
    vit.set("dino.crops.local_size", "6").unwrap();
    let err = pretrain(vit, &dir.path().join("w"), false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dino.crops.local_size"), "{err}");
}

/// `cfg` trained over two (flex) replicas in bf16 into `out`: as many steps as the f32 run
/// `f32_run` and a final loss within 5 % of its.
fn split_in_bf16_follows(cfg: &RunConfig, f32_run: &selfsup_pipeline::PretrainReport, out: &Path) {
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

fn tiny_clip() -> RunConfig {
    let mut c = tiny_of("clip");
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
    let report = pretrain(tiny_clip(), &a, false, false).unwrap();
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
    pretrain(tiny_clip(), &b, true, false).unwrap();
    same(&encoder_weights(&a), &encoder_weights(&b))
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
    let from_step = eval_frozen(&step, knn_only, Some(5), None).unwrap();
    let from_run = eval_frozen(&args, knn_only, Some(5), None).unwrap();
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
    let report = pretrain(c.clone(), &run, false, false).unwrap();
    assert_eq!(report.steps, 4, "32 training pairs, batch 16, 2 epochs");
    assert!(report.eval.is_none(), "no labels: no kNN");
    let results = std::fs::read_to_string(
        run.join(selfsup_contrastive::recipe::clip_eval::CLIP_RESULTS_FILE),
    )
    .unwrap();
    assert!(results.contains("text_to_image"), "{results}");
    assert!(results.contains("\"zero_shot\": null"), "{results}");

    std::fs::write(
        &manifest,
        "{\"image\": \"images/0.png\", \"caption\": \"x\"}\n{\"image\": \"images/404.png\", \"caption\": \"y\"}\n",
    )
    .unwrap();
    let err = pretrain(c, &dir.path().join("bad"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404.png") && err.contains("pairs.jsonl"),
        "{err}"
    );
}

/// RotNet trains through the shared engine, logs how often it names the rotation, and a step
/// checkpoint evaluates its encoder.
#[test]
fn rotnet_trains_and_evaluates_its_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("rot");
    let mut c = tiny();
    c = retarget(c, "rotnet");
    c.train.epochs = 1;
    let report = pretrain(c, &run, false, false).unwrap();
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
    eval_frozen(&args, knn_only, Some(5), None).unwrap();
}

/// Jigsaw trains through the shared engine on its tiles, logs how often it names the
/// permutation, resumes to the very weights of an uninterrupted run (its permutation set and
/// each step's permutations come from the seed), and its step checkpoints evaluate the encoder
/// on whole images.
#[test]
fn jigsaw_trains_resumes_and_evaluates_its_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let jig = || {
        let mut c = tiny();
        c = retarget(c, "jigsaw");
        c.set("jigsaw.permutations", "10").unwrap();
        c.set("jigsaw.hidden_dim", "16").unwrap();
        c
    };
    let a = dir.path().join("a");
    let report = pretrain(jig(), &a, false, false).unwrap();
    assert!(report.final_loss.is_finite());
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("pretext_top1"), "{metrics}");
    let steps = checkpoint::list(&a).unwrap();
    let b = dir.path().join("b");
    interrupted_at(&steps[0], &b);
    pretrain(jig(), &b, true, false).unwrap();
    same(&encoder_weights(&a), &encoder_weights(&b))
        .expect("resumed jigsaw run differs from uninterrupted run");
    // The report shows the puzzles and the pretext accuracy.
    let files = common::report(&a, 0).unwrap();
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
    eval_frozen(&args, knn_only, Some(5), None).unwrap();
    // Over two (flex) replicas: it trains (BatchNorm per half, so not the same weights).
    let mut split = jig();
    split.devices = vec![DeviceSpec::Flex, DeviceSpec::Flex];
    let r = pretrain(split, &dir.path().join("split"), false, false).unwrap();
    assert_eq!(r.steps, report.steps);
    assert!(r.final_loss.is_finite());
    // Tiles that cannot fit their cells are refused, naming the field.
    let mut bad = jig();
    bad.set("jigsaw.image_size", "12").unwrap();
    bad.set("jigsaw.tile", "5").unwrap();
    let e = pretrain(bad, &dir.path().join("c"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("jigsaw.tile"), "{e}");
}

fn gan_tiny() -> RunConfig {
    let mut c = small_run("gan");
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
    let report = pretrain(gan_tiny(), &a, false, false).unwrap();
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
    pretrain(gan_tiny(), &b, true, false).unwrap();
    same(&encoder_weights(&a), &encoder_weights(&b))
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
    eval_frozen(&args, knn_only, Some(5), None).unwrap();
    // The discriminator's trunk fine-tunes like any encoder.
    let whole = EvalArgs {
        checkpoint: a.clone(),
        ..EvalArgs::default()
    };
    let ft = selfsup_pipeline::eval_finetune(
        &whole,
        &selfsup_cli::registry(),
        Some(vec![0.5]),
        Some(1),
        false,
        false,
    )
    .unwrap();
    assert!((0.0..=1.0).contains(&ft[0].test.top1));
    let files = common::report(&a, 0).unwrap();
    for pic in ["samples.png", "frechet.png", "loss.png"] {
        assert!(files.pictures.iter().any(|p| p.ends_with(pic)), "{pic}");
    }
    // Images the generator cannot grow to are refused, naming the field; so is a non-GAN run.
    let mut bad = gan_tiny();
    bad.augment.crop_size = 27;
    let e = pretrain(bad, &dir.path().join("c"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("augment.crop_size"), "{e}");
}

/// `selfsup sample` on a run of another method says what it needs.
#[test]
fn sampling_needs_a_gan_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("simclr");
    let mut c = tiny();
    c.train.max_steps = 1;
    c.eval.linear = false;
    c.eval.baselines = false;
    pretrain(c, &run, false, false).unwrap();
    let e = selfsup_gan::recipe::sample(&run, 4, &dir.path().join("x.png"), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a GAN run"), "{e}");
}

/// A folder with undecodable files among its images: an error naming the first and the
/// setting, or, with `data.corrupt_images = "skip"`, a run that leaves them out and lists them.
#[test]
fn corrupt_images_in_a_folder_stop_the_run_or_are_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    for (c, v) in [("a", 40u8), ("b", 200)] {
        std::fs::create_dir_all(data.join(c)).unwrap();
        for i in 0..24 {
            image::GrayImage::from_fn(12, 12, |x, y| {
                image::Luma([v.wrapping_add((x * y + i) as u8)])
            })
            .save(data.join(c).join(format!("{i:02}.png")))
            .unwrap();
        }
    }
    std::fs::write(data.join("a/zz-empty.png"), b"").unwrap();
    std::fs::write(data.join("b/zz-text.png"), b"not an image at all").unwrap();
    let mut c = tiny();
    c.data.spec = format!("folder:{}", data.display()).parse().unwrap();
    c.data.image_size = 12;
    c.data.channels = 1;
    c.data.max_train = 0;
    c.data.max_test = 0;
    c.train.batch_size = 16;
    c.train.epochs = 1;
    c.eval.linear = false;
    c.eval.baselines = false;
    let err = pretrain(c.clone(), &dir.path().join("stop"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("zz-empty.png")
            && err.contains("2 of 50")
            && err.contains("data.corrupt_images"),
        "{err}"
    );
    c.data.corrupt_images = selfsup_data::folder::CorruptImages::Skip;
    let run = dir.path().join("skip");
    let report = pretrain(c, &run, false, false).unwrap();
    assert!(report.final_loss.is_finite());
    let list = std::fs::read_to_string(run.join(selfsup_pipeline::run_dir::SKIPPED_FILE)).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].contains("zz-empty.png") && lines[1].contains("zz-text.png"),
        "{list}"
    );
}
