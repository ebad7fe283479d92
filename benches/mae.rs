//! The MAE training step on the shape of issue 5 (ViT patch 4 on 32x32 RGB images, width 192,
//! depth 6, 3 heads; decoder 128 wide, 2 deep; 75 % of the patches hidden; batch 128), through
//! the same `Stepper` the trainer runs, and the Fashion-MNIST preset's step (28x28 grey, width
//! 128, 4 heads). Criterion reports time per step and images per second; the peak memory of
//! the group is printed after it.
//!
//! `cargo bench -p selfsup-benches --bench mae`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_core::config::{OptimizerConfig, OptimizerKind};
use selfsup_core::{DeviceSpec, TrainConfig, seed};
use selfsup_encoders::VitConfig;
use selfsup_mae::{Mae, MaeConfig, MaeModel};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

const PYTORCH: &str = "PyTorch 2.15 on this 2-core machine (issue 5), the 32x32 RGB step";

fn step(c: &mut Criterion, name: &str, channels: usize, vit: VitConfig) {
    reset_peak_rss();
    let batch = 128;
    let device = DeviceSpec::Flex.train_device().unwrap();
    let cfg = MaeConfig::default();
    let size = vit.image_size;
    let model = seed::init_module(&device, 0, |d| {
        MaeModel::new(vit.init(channels, d).unwrap(), channels, &cfg, d)
    });
    let views = vec![random_images(batch, channels, size, 1, &device)];
    let train = TrainConfig {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1.5e-4,
            weight_decay: 0.05,
            beta2: 0.95,
            ..OptimizerConfig::default()
        },
        ..TrainConfig::default()
    };
    let mut group = c.benchmark_group("mae_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let mut objective = Mae::new(&cfg);
    bench_steps(
        &mut group,
        BenchmarkId::from_parameter(name),
        &mut objective,
        model,
        &views,
        &train,
        1.5e-4,
    );
    group.finish();
    if let Some(m) = peak_rss_mib() {
        println!("mae_step/{name}: peak memory {m:.0} MiB");
    }
}

fn steps(c: &mut Criterion) {
    step(
        c,
        "vit192x6_b128_3x32",
        3,
        VitConfig {
            depth: 6,
            ..VitConfig::tiny(32, 4)
        },
    );
    println!("{PYTORCH}: about 309 images/s");
    step(
        c,
        "vit128x6_b128_1x28",
        1,
        VitConfig {
            dim: 128,
            depth: 6,
            heads: 4,
            ..VitConfig::tiny(28, 4)
        },
    );
}

criterion_group!(benches, steps);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
