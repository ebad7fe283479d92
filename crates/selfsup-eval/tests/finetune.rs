//! Fine-tuning and the baselines on small synthetic sets with a known answer.

use burn::module::Module;
use burn::tensor::Device;
use rand::Rng;
use selfsup_core::seed;
use selfsup_data::ImageSet;
use selfsup_encoders::{Arch, EncoderConfig};
use selfsup_eval::{
    EvalTransform, FinetuneConfig, LinearProbeConfig, finetune, linear_probe, raw_pixels,
};

/// 8x8 gray images: class 0 is bright on the left half, class 1 on the right, class 2 in
/// the top half; noise everywhere.
fn halves(n: usize, seed_value: u64) -> ImageSet {
    let mut rng = seed::rng(seed_value, 77, 0, 0);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let c = i % 3;
        for y in 0..8 {
            for x in 0..8 {
                let on = match c {
                    0 => x < 4,
                    1 => x >= 4,
                    _ => y < 4,
                };
                let base: i32 = if on { 190 } else { 50 };
                pixels.push((base + rng.random_range(-40..40)).clamp(0, 255) as u8);
            }
        }
        labels.push(c);
    }
    ImageSet {
        channels: 1,
        height: 8,
        width: 8,
        pixels,
        stream: None,
        labels: Some(labels),
        captions: None,
        class_names: vec!["left".into(), "right".into(), "top".into()],
    }
}

fn tf() -> EvalTransform {
    EvalTransform {
        size: 8,
        center_crop: None,
        mean: vec![0.47],
        std: vec![0.3],
        grid: 1,
    }
}

#[test]
fn finetune_learns_a_separable_task_from_a_label_fraction() {
    let train = halves(300, 1);
    let test = halves(60, 2);
    let device = Device::flex().autodiff();
    let encoder = seed::init_module(&device, 3, |d| {
        EncoderConfig {
            arch: Arch::Convnet,
            width: 8,
            cifar_stem: true,
            ..EncoderConfig::default()
        }
        .init(1, d)
    });
    let mut cfg = FinetuneConfig {
        crop_min_scale: 1.0,
        flip_prob: 0.0,
        ..FinetuneConfig::default()
    };
    cfg.train.epochs = 15;
    cfg.train.batch_size = 16;
    cfg.train.log_every = 1000;
    let dir = tempfile::tempdir().unwrap();
    // 20 % of 300: 20 images per class.
    let r = finetune(
        encoder,
        &train,
        &test,
        0.2,
        &cfg,
        &tf(),
        dir.path(),
        &device,
        false,
    )
    .unwrap();
    assert_eq!(r.labelled_images, 60);
    assert_eq!(r.test.top1, 1.0, "{r:?}");
    assert!(dir.path().join("metrics.jsonl").is_file());
}

#[test]
fn the_mae_protocol_fine_tunes_a_vit_and_a_convnet_refuses_it() {
    let train = halves(300, 1);
    let test = halves(60, 2);
    let device = Device::flex().autodiff();
    let vit = |d: &Device| {
        let mut c = EncoderConfig {
            arch: Arch::Vit,
            ..EncoderConfig::default()
        };
        c.vit.image_size = 8;
        c.vit.patch_size = 4;
        c.vit.dim = 16;
        c.vit.depth = 2;
        c.vit.heads = 2;
        c.init(1, d)
    };
    let mut cfg = FinetuneConfig {
        crop_min_scale: 1.0,
        flip_prob: 0.0,
        layer_decay: 0.75,
        global_pool: true,
        drop_path: 0.1,
        label_smoothing: 0.1,
        ..FinetuneConfig::default()
    };
    cfg.train.epochs = 15;
    cfg.train.batch_size = 16;
    cfg.train.log_every = 1000;
    cfg.train.optimizer.kind = selfsup_core::OptimizerKind::Adamw;
    cfg.train.optimizer.lr = 3e-3;
    cfg.train.optimizer.weight_decay = 0.05;
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let encoder = seed::init_module(&device, 3, vit);
        finetune(
            encoder,
            &train,
            &test,
            0.5,
            &cfg,
            &tf(),
            dir,
            &device,
            false,
        )
        .unwrap()
    };
    let r = run(&dir.path().join("a"));
    assert!(r.test.top1 >= 0.9, "{r:?}");
    // Seeded (the stochastic depth too): the same run scores the same.
    assert_eq!(run(&dir.path().join("b")).test.top1, r.test.top1);

    let convnet = seed::init_module(&device, 3, |d| {
        EncoderConfig {
            arch: Arch::Convnet,
            width: 8,
            ..EncoderConfig::default()
        }
        .init(1, d)
    });
    let e = finetune(
        convnet,
        &train,
        &test,
        0.2,
        &cfg,
        &tf(),
        &dir.path().join("c"),
        &device,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("finetune.layer_decay") && e.contains("vit"),
        "{e}"
    );
}

#[test]
fn raw_pixel_baseline_through_the_linear_probe() {
    let (train, test) = (halves(300, 3), halves(90, 4));
    let device = Device::flex();
    let r = linear_probe(
        raw_pixels(&train, &tf(), &device).unwrap(),
        train.labels.as_ref().unwrap(),
        raw_pixels(&test, &tf(), &device).unwrap(),
        test.labels.as_ref().unwrap(),
        3,
        &LinearProbeConfig {
            epochs: 10,
            batch_size: 32,
            lr: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.test.top1, 1.0, "{r:?}");
}

#[test]
fn random_init_encoder_features_have_the_declared_width() {
    let data = halves(30, 5);
    let device = Device::flex();
    let cfg = EncoderConfig {
        arch: Arch::Convnet,
        width: 8,
        cifar_stem: true,
        ..EncoderConfig::default()
    };
    let enc = seed::init_module(&device, 9, |d| cfg.init(1, d)).valid();
    let f = selfsup_eval::extract(&enc, &data, &tf(), 7, &device).unwrap();
    use selfsup_core::Encoder;
    assert_eq!(f.dims(), [30, enc.output_dim()]);
}
