//! The transformation-prediction steps (issue 8), through the same `Stepper` the trainer runs:
//! RotNet on ResNet-18 with the CIFAR stem, batch 128 of 32x32 RGB images (512 rotated images
//! through the network), and jigsaw on the Fashion-MNIST preset's shape (ConvNet 32, batch 128,
//! nine 12 px tiles of each image: 1,152 tiles; 1,000 permutations). Criterion's throughput is source images per
//! second; the peak memory of each group is printed after it (the process's peak so far: run
//! one group alone, `-- jigsaw`, for its own).
//!
//! `cargo bench -p selfsup-benches --bench pretext`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_core::config::{OptimizerConfig, OptimizerKind};
use selfsup_core::{DeviceSpec, TrainConfig, seed};
use selfsup_encoders::{Arch, Backbone, EncoderConfig};
use selfsup_pretext::{Jigsaw, JigsawConfig, JigsawModel, RotNet, RotNetConfig, RotNetModel};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

/// The presets' optimizer: SGD with Nesterov momentum, weight decay 5e-4.
fn sgd() -> TrainConfig {
    TrainConfig {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            ..OptimizerConfig::default()
        },
        ..TrainConfig::default()
    }
}

fn report_peak(name: &str) {
    if let Some(m) = peak_rss_mib() {
        println!("{name}: peak memory {m:.0} MiB");
    }
}

fn rotnet(c: &mut Criterion) {
    reset_peak_rss();
    let (batch, channels, size) = (128, 3, 32);
    let device = DeviceSpec::Flex.train_device().unwrap();
    let enc = EncoderConfig {
        arch: Arch::Resnet18,
        cifar_stem: true,
        ..EncoderConfig::default()
    };
    let model = seed::init_module(&device, 0, |d| {
        RotNetModel::new(enc.init(channels, d), &RotNetConfig::default(), d)
    });
    let views = vec![random_images(batch, channels, size, 1, &device)];
    let mut group = c.benchmark_group("rotnet_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let mut objective = RotNet::<Backbone>::new();
    bench_steps(
        &mut group,
        BenchmarkId::from_parameter("resnet18_b128_3x32"),
        &mut objective,
        model,
        &views,
        &sgd(),
        0.1,
    );
    group.finish();
    report_peak("rotnet_step/resnet18_b128_3x32");
    println!("PyTorch 2.15 on this 2-core machine (issue 8): about 17 source images/s");
}

fn jigsaw(c: &mut Criterion) {
    reset_peak_rss();
    let (batch, channels) = (128, 1);
    let device = DeviceSpec::Flex.train_device().unwrap();
    // The Fashion-MNIST preset (configs/jigsaw-fashion-mnist.toml).
    let cfg = JigsawConfig {
        image_size: 48,
        tile: 12,
        permutations: 1000,
        ..JigsawConfig::default()
    };
    let tiles = cfg.tiles(28);
    let enc = EncoderConfig {
        arch: Arch::Convnet,
        width: 32,
        ..EncoderConfig::default()
    };
    let model = seed::init_module(&device, 0, |d| {
        JigsawModel::new(enc.init(channels, d), &cfg, d)
    });
    let views: Vec<_> = (0..cfg.grid * cfg.grid)
        .map(|k| random_images(batch, channels, tiles.tile, k as u64, &device))
        .collect();
    let mut group = c.benchmark_group("jigsaw_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let mut objective = Jigsaw::<Backbone>::new(cfg.permutation_set(0).unwrap(), 0);
    let name = format!("convnet32_b128_9x1x{}", tiles.tile);
    bench_steps(
        &mut group,
        BenchmarkId::from_parameter(&name),
        &mut objective,
        model,
        &views,
        &sgd(),
        0.1,
    );
    group.finish();
    report_peak(&format!("jigsaw_step/{name}"));
}

criterion_group!(benches, rotnet, jigsaw);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
