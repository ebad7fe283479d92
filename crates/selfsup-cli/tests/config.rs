//! Run configs of the built-in methods: presets round-trip, each recipe's checks name their
//! field, files build on their method's preset, older files still read, `--set` reaches every
//! key; and the step bench of each method.

use selfsup_cli::registry;
use selfsup_core::DeviceSpec;
use selfsup_encoders::Arch;
use selfsup_pipeline::step_bench::{StepBenchArgs, bench_step};
use selfsup_pipeline::{Registry, RunConfig};

mod common;
use common::{preset, validate};

#[test]
fn presets_roundtrip_through_toml_and_validate() {
    let r = registry();
    assert_eq!(
        r.names(),
        ["simclr", "mae", "dino", "clip", "rotnet", "jigsaw", "gan"]
    );
    for recipe in r.iter() {
        let c = recipe.preset();
        assert_eq!(c.method, recipe.name());
        recipe.validate(&c).unwrap();
        let text = c.to_toml().unwrap();
        assert!(text.contains(&format!("[{}]", c.method)), "{text}");
        assert_eq!(RunConfig::parse(&text, "x", &r).unwrap(), c);
        assert_eq!(RunConfig::parse_saved(&text, "x").unwrap(), c);
    }
}

#[test]
fn a_gan_needs_the_dcgan_trunk_and_half_normalization() {
    let mut c = preset("gan");
    assert_eq!(c.encoder.arch, Arch::Dcgan);
    c.encoder.arch = Arch::Convnet;
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("encoder.arch"), "{err}");
    let mut c = preset("gan");
    c.data.mean = vec![0.3];
    c.data.std = vec![0.5];
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("data.mean"), "{err}");
    c.data.mean = vec![0.5];
    c.data.std = vec![0.5];
    validate(&c).unwrap();
    c.set("gan.d_steps", "0").unwrap();
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("gan.d_steps"), "{err}");
    let mut c = preset("gan");
    c.train.precision = selfsup_core::Precision::Bf16;
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("train.precision"), "{err}");
}

/// `selfsup config`: every key with its doc comment above it, the same values as the preset.
#[test]
fn printed_presets_carry_each_keys_doc_line() {
    let r = registry();
    for recipe in r.iter() {
        let c = recipe.preset();
        let text = c
            .to_commented_toml(recipe.settings_schema().as_ref())
            .unwrap();
        assert_eq!(RunConfig::parse(&text, "x", &r).unwrap(), c, "{text}");
        // Every key line and every table header has a comment above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let is_key = l.contains(" = ") && !l.starts_with(' ') && !l.starts_with('#');
            let is_header = l.starts_with('[');
            if (is_key || is_header) && i > 0 {
                assert!(
                    lines[i - 1].starts_with("# "),
                    "{}: no doc line above `{l}`",
                    recipe.name()
                );
            }
        }
    }
    let dino = r.get("dino").unwrap();
    let text = dino
        .preset()
        .to_commented_toml(dino.settings_schema().as_ref())
        .unwrap();
    assert!(
        text.contains("# The teacher's temperature after its warm-up.\nteacher_temperature = 0.04"),
        "{text}"
    );
    assert!(
        text.contains("# Number of passes over the training set.\nepochs = 15"),
        "{text}"
    );
    assert!(
        !text.contains("[`"),
        "rustdoc links are plain code in comments: {text}"
    );
}

#[test]
fn an_eval_grid_needs_a_feature_map_and_mae_a_vit() {
    // A ViT's patch tokens are its map.
    let mut c = preset("mae");
    c.eval.grid = 2;
    validate(&c).unwrap();
    let mut c = preset("rotnet");
    c.eval.grid = 0;
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("eval.grid"), "{err}");
    c.eval.grid = 3;
    validate(&c).unwrap();
    let mut c = preset("mae");
    c.encoder.arch = Arch::Convnet;
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("encoder.arch"), "{err}");
    let mut c = preset("dino");
    c.encoder.arch = Arch::Vit;
    c.set("dino.crops.local_size", "10").unwrap();
    let err = validate(&c).unwrap_err().to_string();
    assert!(err.contains("dino.crops.local_size"), "{err}");
}

#[test]
fn errors_name_the_field() {
    let r = registry();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let load = |text: &str| {
        std::fs::write(&p, text).unwrap();
        RunConfig::load(&p, &r).unwrap_err().to_string()
    };
    let e = load("[simclr]\ntemperature = 0.0\n");
    assert!(e.contains("simclr.temperature"), "{e}");
    let e = load("[train]\nepochs = 2\nbogus = 1\n");
    assert!(e.contains("bogus"), "{e}");
    let e = load("[train.optimizer]\nlr = -1.0\n");
    assert!(e.contains("train.optimizer.lr"), "{e}");
    let e = load("[simclr]\ntemprature = 0.5\n");
    assert!(e.contains("[simclr]") && e.contains("temprature"), "{e}");
    let e = load("method = \"byol\"\n");
    assert!(e.contains("byol") && e.contains("simclr, mae"), "{e}");
    let e = load("[trian]\nepochs = 2\n");
    assert!(
        e.contains("[trian]") && e.contains("unknown section"),
        "{e}"
    );
    let e = RunConfig::load(&dir.path().join("missing.toml"), &r)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn a_file_builds_on_the_preset_of_its_method() {
    let r = registry();
    let text = "method = \"mae\"\n[train]\nepochs = 3\n[encoder.vit]\ndepth = 2\n[mae]\nmask_ratio = 0.5\n";
    let cfg = RunConfig::parse(text, "test.toml", &r).unwrap();
    let p = preset("mae");
    assert_eq!(cfg.encoder.arch, Arch::Vit);
    assert_eq!((cfg.train.epochs, cfg.encoder.vit.depth), (3, 2));
    assert_eq!(cfg.encoder.vit.dim, p.encoder.vit.dim);
    assert_eq!(cfg.train.optimizer, p.train.optimizer);
    let s: selfsup_mae::MaeConfig = cfg.settings().unwrap();
    assert_eq!(s.mask_ratio, 0.5);
    assert_eq!(
        s.decoder_dim,
        p.settings::<selfsup_mae::MaeConfig>().unwrap().decoder_dim
    );
    validate(&cfg).unwrap();
    // Unknown keys still name their line.
    let err = RunConfig::parse("method = \"mae\"\n[train]\nepoch = 3\n", "t.toml", &r)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml: epoch") && err.contains("unknown field"),
        "{err}"
    );
}

/// Config files of the version before each method had its own table held every method's
/// section, and a crate's own method as `[custom]`: they still read, the other methods'
/// sections left out.
#[test]
fn older_files_still_read() {
    let r = registry();
    let text = "method = \"dino\"\n[simclr]\ntemperature = 0.1\n[dino]\nteacher_temperature = 0.05\n[gan]\nnoise_dim = 8\n[train]\nepochs = 2\n";
    let c = RunConfig::parse(text, "old.toml", &r).unwrap();
    assert_eq!(c.method, "dino");
    let s: selfsup_dino::DinoConfig = c.settings().unwrap();
    assert_eq!(s.teacher_temperature, 0.05);
    assert_eq!(c.train.epochs, 2);
    assert!(!c.to_toml().unwrap().contains("[gan]"));
    let saved = RunConfig::parse_saved(text, "config.toml").unwrap();
    assert_eq!(
        saved
            .settings::<selfsup_dino::DinoConfig>()
            .unwrap()
            .teacher_temperature,
        0.05
    );
}

#[test]
fn set_reaches_shared_and_method_keys() {
    let mut c = preset("dino");
    c.set("train.epochs", "3").unwrap();
    c.set("train.optimizer.kind", "adamw").unwrap();
    c.set("dino.crops.local_crops", "4").unwrap();
    c.set("data.spec", "sample").unwrap();
    assert_eq!(c.train.epochs, 3);
    assert_eq!(c.train.optimizer.kind, selfsup_core::OptimizerKind::Adamw);
    let s: selfsup_dino::DinoConfig = c.settings().unwrap();
    assert_eq!(s.crops.local_crops, 4);
    for (k, v, says) in [
        ("train.epohcs", "3", "epohcs"),
        ("train", "3", "section"),
        ("trian.epochs", "3", "trian"),
        ("train.epochs", "\"three\"", "train.epochs"),
        ("method", "mae", "--method"),
    ] {
        let e = c.clone().set(k, v).unwrap_err().to_string();
        assert!(e.contains(says), "{k}={v}: {e}");
    }
}

fn step_args(method: &str) -> StepBenchArgs {
    StepBenchArgs {
        method: method.into(),
        encoder: match method {
            "mae" => Arch::Vit,
            "gan" => Arch::Dcgan,
            _ => Arch::Convnet,
        },
        width: 4,
        batch: 8,
        steps: 1,
        warmup: 1,
        image_size: if method == "gan" { 32 } else { 16 },
        channels: 1,
        head_hidden: 16,
        head_out: 8,
        device: DeviceSpec::Flex,
        optimizer: None,
        fixed_batch: false,
        set: vec![
            "encoder.vit.dim=16".into(),
            "encoder.vit.depth=1".into(),
            "encoder.vit.heads=2".into(),
        ],
    }
}

/// `selfsup bench step` of every method: one JSON line with finite, positive times.
#[test]
fn every_method_times_a_tiny_step() {
    let r: Registry = registry();
    for (i, name) in r.names().into_iter().enumerate() {
        let mut a = step_args(name);
        // Half the methods train on one batch built before timing (`--fixed-batch`).
        a.fixed_batch = i % 2 == 1;
        let extra: &[&str] = match name {
            "mae" => &[
                "mae.decoder_dim=8",
                "mae.decoder_depth=1",
                "mae.decoder_heads=2",
            ],
            "dino" => &[
                "dino.head.hidden_dim=16",
                "dino.head.bottleneck_dim=8",
                "dino.head.output_dim=32",
                "dino.crops.local_size=8",
            ],
            "jigsaw" => &[
                "jigsaw.permutations=10",
                "jigsaw.hidden_dim=16",
                "jigsaw.image_size=24",
                "jigsaw.tile=6",
            ],
            "gan" => &["gan.noise_dim=8", "gan.generator_width=4"],
            "clip" => &[
                "clip.embed_dim=8",
                "clip.text.context=16",
                "clip.text.dim=8",
                "clip.text.depth=1",
                "clip.text.heads=2",
                "clip.tokenizer.vocab_size=600",
            ],
            _ => &[],
        };
        a.set.extend(extra.iter().map(|s| s.to_string()));
        let line = bench_step(&r, &a).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((line.method.as_str(), line.steps), (name, 1));
        assert_eq!(line.fixed_batch, a.fixed_batch);
        assert!(
            line.images_per_sec > 0.0 && line.ms_per_step_median > 0.0,
            "{name}"
        );
        for v in [
            line.forward_ms,
            line.backward_ms,
            line.optimizer_ms,
            line.build_batch_ms,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{name}: {line:?}");
        }
        let json = serde_json::to_string(&line).unwrap();
        assert!(json.contains("\"images_per_sec\""));
    }
    let mut bad = step_args("simclr");
    bad.set.push("simclr.temperature=0".into());
    let e = bench_step(&r, &bad).unwrap_err().to_string();
    assert!(e.contains("simclr.temperature"), "{e}");
}

/// Every config shipped in `configs/` loads over the registry and passes its method's checks.
#[test]
fn the_shipped_configs_load_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let cfg = RunConfig::load(&p, &selfsup_cli::registry())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            common::validate(&cfg).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            seen += 1;
        }
    }
    assert!(seen >= 10, "{seen} configs");
}

/// `selfsup bench step`'s shape flags reach the config: the ViT's and MAE decoder's (a head
/// count that does not divide the width is refused, naming the key), DINO's local crops.
#[test]
fn bench_step_shape_flags_set_the_config() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_selfsup"))
            .args([
                "bench", "step", "--batch", "4", "--steps", "1", "--warmup", "0",
            ])
            .args(["--image-size", "16", "--channels", "1", "--fixed-batch"])
            .args(args)
            .output()
            .unwrap()
    };
    let mae = run(&[
        "--method",
        "mae",
        "--encoder",
        "vit",
        "--vit-dim",
        "16",
        "--vit-depth",
        "1",
        "--vit-heads",
        "2",
        "--patch-size",
        "4",
        "--decoder-dim",
        "8",
        "--decoder-depth",
        "1",
        "--set",
        "mae.decoder_heads=2",
    ]);
    let out = String::from_utf8_lossy(&mae.stdout);
    assert!(
        mae.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&mae.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(line["fixed_batch"], true);
    assert!(line["isa"].is_string());
    let bad = run(&[
        "--method",
        "mae",
        "--encoder",
        "vit",
        "--vit-dim",
        "16",
        "--vit-heads",
        "3",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("heads"), "{err}");
    let dino = run(&[
        "--method",
        "dino",
        "--encoder",
        "convnet",
        "--width",
        "4",
        "--dino-out",
        "32",
        "--local-crops",
        "2",
        "--local-size",
        "8",
        "--set",
        "dino.head.hidden_dim=16",
        "--set",
        "dino.head.bottleneck_dim=8",
    ]);
    assert!(
        dino.status.success(),
        "{}",
        String::from_utf8_lossy(&dino.stderr)
    );
    let wrong = run(&[
        "--method",
        "simclr",
        "--encoder",
        "convnet",
        "--decoder-dim",
        "8",
    ]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("mae"), "{err}");
}
