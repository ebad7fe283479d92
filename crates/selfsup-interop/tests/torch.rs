//! Against PyTorch: weights in torchvision's and timm's layouts load here and give the
//! features torchvision and timm computed (fixtures made by `fixtures/make_fixtures.py`), and
//! export -> import is exact.

use burn::tensor::{Device, Tensor, TensorData};
use selfsup_core::Encoder;
use selfsup_core::seed::init_module;
use selfsup_encoders::{Arch, Backbone, EncoderConfig, Pool, PosEmbed, VitConfig};
use selfsup_interop::{Layout, Named, export, file, import, weights::tensors};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's input shape and expected features.
fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shape = v["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let f = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    (shape, f)
}

/// The script's `value(key, i, n)`: every weight of the ResNet fixtures, by formula (its
/// 6.283 is the script's literal, not τ).
#[allow(clippy::approx_constant)]
fn value(key: &str, i: usize, n: usize, out: usize) -> f32 {
    let mut h: u64 = 0;
    for b in key.bytes() {
        h = (h * 31 + b as u64) % 1000003;
    }
    let phase = (h % 1000) as f64 / 1000.0;
    let s = (0.7 * i as f64 + 6.283 * phase).sin();
    let bn_scale = [
        "bn1.weight",
        "bn2.weight",
        "bn3.weight",
        "downsample.1.weight",
    ]
    .iter()
    .any(|e| key.ends_with(e));
    (if key.ends_with("running_var") {
        0.5 + 0.25 * (s + 1.0)
    } else if bn_scale {
        1.0 + 0.1 * s
    } else if key.ends_with("bias") || key.ends_with("running_mean") {
        0.05 * s
    } else {
        s * (3.0 / (n / out.max(1)).max(1) as f64).sqrt()
    }) as f32
}

/// The script's `images(n, c, h, w)`.
fn images(shape: &[usize], device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| {
            let i = i as f64;
            (0.5 + 0.5 * (0.013 * i * i + 0.1 * i).sin()) as f32
        })
        .collect();
    Tensor::from_data(
        TensorData::new(v, [shape[0], shape[1], shape[2], shape[3]]),
        device,
    )
}

fn features(enc: &Backbone, shape: &[usize]) -> Vec<f32> {
    enc.features(images(shape, &Device::flex()))
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Largest difference relative to the largest expected magnitude.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

fn resnet18(cifar_stem: bool) -> EncoderConfig {
    EncoderConfig {
        arch: Arch::Resnet18,
        cifar_stem,
        ..EncoderConfig::default()
    }
}

fn init(cfg: &EncoderConfig, seed: u64) -> Backbone {
    init_module(&Device::flex(), seed, |d| cfg.init(3, d))
}

/// torchvision's `state_dict` of the fixture's ResNet-18: the names and shapes our export
/// gives, the values the script's formula gives.
fn torchvision_weights(cfg: &EncoderConfig) -> Vec<Named> {
    let names = export(&init(cfg, 0), cfg.arch, 3, Layout::Torchvision).unwrap();
    names
        .into_iter()
        .map(|t| {
            if t.name.ends_with("num_batches_tracked") {
                return t;
            }
            let n = t.shape.iter().product();
            let v = (0..n).map(|i| value(&t.name, i, n, t.shape[0])).collect();
            Named::f32(t.name, t.shape, v)
        })
        .collect()
}

#[test]
fn torchvision_resnet_weights_give_torchvisions_features() {
    let resnet50 = EncoderConfig {
        arch: Arch::Resnet50,
        ..resnet18(true)
    };
    for (cfg, name) in [
        (resnet18(true), "resnet18_cifar.json"),
        (resnet18(false), "resnet18_imagenet.json"),
        (resnet50, "resnet50_cifar.json"),
    ] {
        let weights = torchvision_weights(&cfg);
        let (enc, layout) = import(init(&cfg, 1), &cfg, 3, &weights, "fixture").unwrap();
        assert_eq!(layout, Layout::Torchvision);
        let (shape, want) = expected(name);
        let got = features(&enc, &shape);
        let d = rel_diff(&got, &want);
        eprintln!("{name}: max difference {d:.2e} of the largest feature");
        assert!(d <= 1e-4, "{name}: features differ by {d} (relative)");
    }
}

fn vit_cfg(pos_embed: PosEmbed) -> EncoderConfig {
    EncoderConfig {
        arch: Arch::Vit,
        vit: VitConfig {
            image_size: 16,
            patch_size: 4,
            dim: 24,
            depth: 2,
            heads: 2,
            mlp_ratio: 4.0,
            pos_embed,
            ..VitConfig::default()
        },
        ..EncoderConfig::default()
    }
}

#[test]
fn timm_vit_weights_give_timms_features() {
    let cfg = vit_cfg(PosEmbed::Learned);
    let (file, _) = file::read(&fixture("vit_timm.safetensors")).unwrap();
    let (enc, layout) = import(init(&cfg, 1), &cfg, 3, &file, "vit_timm.safetensors").unwrap();
    assert_eq!(layout, Layout::Timm);
    let (shape, want) = expected("vit_timm.json");
    let d = rel_diff(&features(&enc, &shape), &want);
    eprintln!("timm ViT: max difference {d:.2e} of the largest feature");
    assert!(d <= 1e-4, "features differ by {d} (relative)");

    // The same weights in a PyTorch checkpoint (`torch.save`, under `state_dict`, with
    // DataParallel's `module.` prefix) read as the same tensors.
    let pth = file::read_any(&fixture("vit_timm.pth")).unwrap();
    assert_eq!(pth, file, "the .pth holds the safetensors file's tensors");

    // timm's global_pool="avg" with fc_norm=False is our mean pool.
    let mean = EncoderConfig {
        vit: VitConfig {
            pool: Pool::Mean,
            ..cfg.vit.clone()
        },
        ..cfg.clone()
    };
    let (avg, _) = file::read(&fixture("vit_timm_avg.safetensors")).unwrap();
    let (enc, _) = import(init(&mean, 1), &mean, 3, &avg, "vit_timm_avg.safetensors").unwrap();
    let (shape, want) = expected("vit_timm_avg.json");
    let d = rel_diff(&features(&enc, &shape), &want);
    eprintln!("timm ViT, global_pool avg: max difference {d:.2e} of the largest feature");
    assert!(d <= 1e-4, "mean-pooled features differ by {d} (relative)");

    // Timm's learned table does not load into a model with the fixed one.
    let fixed = vit_cfg(PosEmbed::Sincos);
    let err = import(init(&fixed, 1), &fixed, 3, &file, "vit_timm.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pos_embed") && err.contains("learned"),
        "{err}"
    );
}

#[test]
fn export_then_import_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, layout) in [
        (resnet18(true), Layout::Torchvision),
        (resnet18(false), Layout::Burn),
        (vit_cfg(PosEmbed::Learned), Layout::Timm),
        (vit_cfg(PosEmbed::Sincos), Layout::Timm),
        (
            EncoderConfig {
                arch: Arch::Convnet,
                width: 4,
                ..EncoderConfig::default()
            },
            Layout::Burn,
        ),
    ] {
        let a = init(&cfg, 7);
        let path = dir.path().join("w.safetensors");
        let out = export(&a, cfg.arch, 3, layout).unwrap();
        file::write(&path, &out, Default::default()).unwrap();
        let (back, _) = file::read(&path).unwrap();
        let (b, found) = import(init(&cfg, 8), &cfg, 3, &back, "w").unwrap();
        assert_eq!(found, layout, "{:?}", cfg.arch);
        let (ta, tb) = (tensors(&a).unwrap(), tensors(&b).unwrap());
        assert_eq!(ta, tb, "{:?} in {layout}", cfg.arch);
        assert_ne!(
            tensors(&init(&cfg, 8)).unwrap(),
            ta,
            "the seeds give other weights"
        );
    }
}

#[test]
fn wrong_shapes_and_keys_are_named() {
    let cifar = resnet18(true);
    let imagenet = torchvision_weights(&resnet18(false));
    let err = import(init(&cifar, 1), &cifar, 3, &imagenet, "in.pth")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in.pth")
            && err.contains("conv1.weight")
            && err.contains("[64, 3, 7, 7]")
            && err.contains("[64, 3, 3, 3]")
            && err.contains("cifar_stem"),
        "{err}"
    );

    let mut extra = torchvision_weights(&cifar);
    extra.retain(|t| t.name != "layer3.1.bn2.running_mean");
    extra.push(Named::f32("layer5.0.conv1.weight", vec![1], vec![0.0]));
    // A whole torchvision model's classifier is not an error.
    extra.push(Named::f32("fc.weight", vec![10, 512], vec![0.0; 5120]));
    let err = import(init(&cifar, 1), &cifar, 3, &extra, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing key `layer3.1.bn2.running_mean` (shape [256])")
            && err.contains("unknown key `layer5.0.conv1.weight`")
            && !err.contains("fc.weight"),
        "{err}"
    );

    let r50 = EncoderConfig {
        arch: Arch::Resnet50,
        ..resnet18(true)
    };
    let err = import(init(&r50, 1), &r50, 3, &extra, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet50") && err.contains("more"), "{err}");

    let vit = vit_cfg(PosEmbed::Learned);
    let err = import(init(&vit, 1), &vit, 3, &extra, "r18.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("torchvision") && err.contains("encoder.arch"),
        "{err}"
    );
}
