//! End-to-end: a tiny SimCLR run on the embedded sample checkpoints, resumes to the same
//! weights as an uninterrupted run, and is evaluated by `selfsup eval knn`.

use selfsup_core::{DeviceSpec, checkpoint};
use selfsup_pipeline::evaluate::{PRETRAINED, RANDOM_INIT, RAW_PIXELS};
use selfsup_pipeline::{EvalArgs, EvalPlan, RunConfig};
use std::path::Path;
use std::process::Command;

mod common;
use common::{encoder_weights, eval_frozen, preset, pretrain, same, tiny, validate};

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
    // The default build has no MPI: `--distributed mpi` names the feature to build with.
    if !cfg!(feature = "mpi") {
        let (ok, err, _) = run(&[
            "pretrain",
            "--distributed",
            "mpi",
            "--max-steps",
            "1",
            "--out",
            dir.path().join("mpi").to_str().unwrap(),
        ]);
        assert!(!ok && err.contains("--features mpi"), "{err}");
    }
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

/// A streamed folder with undecodable files among its images: found when read, an error naming
/// the file and the setting, or, with `data.corrupt_images = "skip"`, a run that replaces them
/// (batches stay full) and lists them.
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
        (err.contains("zz-empty.png") || err.contains("zz-text.png"))
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

/// `selfsup pretrain --no-eval` trains and saves the encoder, and scores nothing.
#[test]
fn no_eval_trains_and_saves_without_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    tiny().save(&cfg).unwrap();
    let run = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["pretrain", "--quiet", "--no-eval", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(run.join("encoder.bpk").is_file());
    let results = std::fs::read_to_string(run.join("results.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&results).unwrap();
    assert!(v["eval"].is_null(), "{results}");
    assert!(!err.contains("kNN"), "{err}");
}

/// TensorBoard: a run's `tb/` holds an event file with every numeric metric of
/// `metrics.jsonl` at its step (loss, lr, images/s, the kNN monitor), read back with checksums.
#[test]
fn a_run_writes_tensorboard_scalars_beside_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny();
    c.train.epochs = 1;
    c.eval.baselines = false;
    c.eval.linear = false;
    pretrain(c, dir.path(), false, false).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path().join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let scalars = selfsup_core::tensorboard::read_scalars(&files[0]).unwrap();
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let mut want = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_i64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if k != "step" && k != "epoch" && x.is_number() {
                want.push((step, k.clone(), x.as_f64().unwrap() as f32));
            }
        }
    }
    let mut got: Vec<_> = scalars
        .into_iter()
        .map(|s| (s.step, s.tag, s.value))
        .collect();
    let order = |a: &(i64, String, f32), b: &(i64, String, f32)| (a.0, &a.1).cmp(&(b.0, &b.1));
    got.sort_by(order);
    want.sort_by(order);
    assert_eq!(got, want);
    assert!(
        got.iter().any(|(_, t, _)| t == "loss") && got.iter().any(|(_, t, _)| t.contains("knn")),
        "{got:?}"
    );
}
