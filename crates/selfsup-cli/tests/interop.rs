//! `selfsup export`: a run's encoder as safetensors in torchvision's layout, with its
//! sidecar, loads back into an encoder that gives the run's features.

use burn::tensor::{Device, Tensor, TensorData};
use selfsup_core::Encoder;
use selfsup_encoders::Arch;
use selfsup_interop::{Layout, Sidecar, file, import};
use std::process::Command;

mod common;

#[test]
fn an_exported_resnet_loads_back_with_the_runs_features() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut c = common::tiny_of("simclr");
    c.encoder.arch = Arch::Resnet18;
    c.train.max_steps = 1;
    selfsup_pipeline::pretrain_only(
        selfsup_cli::registry().get("simclr").unwrap(),
        c.clone(),
        &run,
        false,
        false,
    )
    .unwrap();

    let out = dir.path().join("w/r18.safetensors");
    let st = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["export", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&st.stdout).to_string() + &String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{text}");
    assert!(
        text.contains("torchvision") && text.contains("r18.json"),
        "{text}"
    );

    let side = Sidecar::read(&out).unwrap().expect("sidecar");
    assert_eq!(
        (
            side.arch.as_str(),
            side.layout.as_str(),
            side.channels,
            side.input_size
        ),
        ("resnet18", "torchvision", 1, 28)
    );
    assert_eq!(side.stem.as_deref(), Some("cifar"));
    assert_eq!(side.feature_dim, 512);
    assert_eq!(side.mean.len(), 1);

    let (tensors, meta) = file::read(&out).unwrap();
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    assert!(
        tensors
            .iter()
            .any(|t| t.name == "layer4.1.bn2.num_batches_tracked")
    );
    assert!(!tensors.iter().any(|t| t.name.starts_with("fc.")));
    let fresh = c.encoder.init(1, &Device::flex());
    let (loaded, layout) = import(fresh, &c.encoder, 1, &tensors, "r18").unwrap();
    assert_eq!(layout, Layout::Torchvision);
    let (_, trained) =
        selfsup_pipeline::evaluate::load_encoder(&run, &selfsup_cli::registry(), &Device::flex())
            .unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(
            (0..2 * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect(),
            [2, 1, 28, 28],
        ),
        &Device::flex(),
    );
    let (a, b) = (
        trained.features(x.clone()).into_data(),
        loaded.features(x).into_data(),
    );
    assert_eq!(a, b, "the exported weights give other features");

    // The exported file scored as an external encoder under the preset's protocol: a run
    // folder holding the run's own encoder, scored by `selfsup eval knn`.
    let ext = dir.path().join("ext");
    let st = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args([
            "eval",
            "knn",
            "--no-baselines",
            "--k",
            "5",
            "--arch",
            "resnet18",
            "--weights",
        ])
        .arg(&out)
        .arg("--checkpoint")
        .arg(&ext)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(text.contains("| pretrained | 512 |"), "{text}");
    assert!(ext.join("eval-knn.json").exists());
    common::same(
        &common::encoder_weights(&ext),
        &common::encoder_weights(&run),
    )
    .unwrap();
    let saved = selfsup_pipeline::RunConfig::load_saved(&ext.join("config.toml")).unwrap();
    assert_eq!(saved.data.mean, side.mean, "the sidecar's normalization");

    // A layout the architecture has not is refused, naming the one to use.
    let st = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["export", "--layout", "timm", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success() && err.contains("torchvision"), "{err}");
}

/// `encoder.init`: a run starts from exported weights (timm's layout, a ViT), and a file that
/// does not fit the encoder stops the run before it starts, naming the key and the setting.
#[test]
fn a_run_starts_from_encoder_init() {
    let dir = tempfile::tempdir().unwrap();
    let registry = selfsup_cli::registry();
    let simclr = registry.get("simclr").unwrap();
    let mut c = common::tiny_of("simclr");
    c.encoder.arch = Arch::Vit;
    c.encoder.vit.image_size = 28;
    c.encoder.vit.patch_size = 7;
    c.train.max_steps = 1;
    let first = dir.path().join("first");
    selfsup_pipeline::pretrain_only(simclr, c.clone(), &first, false, false).unwrap();
    let file = dir.path().join("vit.safetensors");
    let e = selfsup_pipeline::export(&first, &registry, None, &file).unwrap();
    assert_eq!(e.layout, Layout::Timm);

    // A learning rate of 1e-30: the second run's encoder is the file's (a random start of
    // the same seed is the first run's before its step, 1e-4 and more away).
    let mut from = c.clone();
    from.encoder.init = file.display().to_string();
    from.train.optimizer.lr = 1e-30;
    from.train.optimizer.weight_decay = 0.0;
    let second = dir.path().join("second");
    selfsup_pipeline::pretrain_only(simclr, from.clone(), &second, false, false).unwrap();
    let (a, b) = (
        common::encoder_weights(&second),
        common::encoder_weights(&first),
    );
    let d = selfsup_core::grads::max_abs_diff(&a, &b);
    assert!(d < 1e-12, "the run did not start from the file: {d}");
    let mut random = c.clone();
    random.train.max_steps = 1;
    random.train.optimizer.lr = 1e-30;
    let third = dir.path().join("third");
    selfsup_pipeline::pretrain_only(simclr, random, &third, false, false).unwrap();
    let d = selfsup_core::grads::max_abs_diff(&common::encoder_weights(&third), &b);
    assert!(d > 1e-6, "a random start is as close: {d}");

    let mut wide = from.clone();
    wide.encoder.vit.dim = 32;
    let err = selfsup_pipeline::pretrain_only(simclr, wide, &dir.path().join("w"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.init")
            && err.contains("cls_token")
            && err.contains("encoder.vit.dim"),
        "{err}"
    );
    let mut missing = from;
    missing.encoder.init = dir.path().join("none.safetensors").display().to_string();
    let err = common::validate(&missing).unwrap_err().to_string();
    assert!(
        err.contains("encoder.init") && err.contains("no such file"),
        "{err}"
    );
}

/// `selfsup embed`: the features of the first test images in dataset order, in each format,
/// equal to the encoder's own features of those images; labels beside them.
#[test]
fn embed_writes_the_features_in_dataset_order() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut c = common::tiny_of("simclr");
    c.train.max_steps = 1;
    selfsup_pipeline::pretrain_only(
        selfsup_cli::registry().get("simclr").unwrap(),
        c,
        &run,
        false,
        false,
    )
    .unwrap();
    let embed = |name: &str| {
        let out = dir.path().join(name);
        let st = Command::new(env!("CARGO_BIN_EXE_selfsup"))
            .args(["embed", "--max", "5", "--checkpoint"])
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        out
    };
    let st = embed("f.safetensors");
    let (t, _) = file::read(&st).unwrap();
    let f = t.iter().find(|x| x.name == "features").unwrap();
    let l = t.iter().find(|x| x.name == "labels").unwrap();
    let dim = f.shape[1];
    assert_eq!((f.shape[0], l.shape.clone()), (5, vec![5]));

    // The same numbers from the library: the run's encoder over the first five test images.
    let args = selfsup_pipeline::EvalArgs {
        checkpoint: run.clone(),
        ..Default::default()
    };
    let (cfg, enc, _, test) =
        selfsup_pipeline::evaluate::open_run(&args, &selfsup_cli::registry(), false).unwrap();
    let test = test.take(5);
    let tf = selfsup_pipeline::evaluate::eval_transform(&cfg, &test);
    let want = selfsup_eval::extract(&enc, &test, &tf, 2, &Device::flex())
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(f.floats(), want);
    let labels: Vec<f32> = test.labels.unwrap().iter().map(|&x| x as f32).collect();
    assert_eq!(l.floats(), labels);

    let npy = std::fs::read(embed("f.npy")).unwrap();
    let n = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let body: Vec<f32> = npy[10 + n..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(body, want);
    assert!(dir.path().join("f.labels.npy").exists());

    let csv = std::fs::read_to_string(embed("f.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].starts_with("label,f0,"));
    assert_eq!(lines[1].split(',').count(), 1 + dim);
}
