//! The DINO training step on issue 6's shapes: ResNet-18 (CIFAR stem), two global 3x32x32
//! views, head output 4096, batch 64; and again with four local 16x16 views. Through the same
//! `Stepper` the trainer runs, plus the teacher's EMA update and the centre (`after_step`).
//! Criterion reports time per step and source images per second; the peak memory of each run
//! is printed after it.
//!
//! `cargo bench -p selfsup-benches --bench dino`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_core::config::{OptimizerConfig, OptimizerKind};
use selfsup_core::{DeviceSpec, TrainConfig, seed};
use selfsup_dino::{Dino, DinoConfig, DinoHeadConfig, DinoModel};
use selfsup_encoders::{Arch, EncoderConfig};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

const PYTORCH: &str = "PyTorch 2.15 with lightly on this 2-core machine (issue 6)";

fn steps(c: &mut Criterion) {
    let device = DeviceSpec::Flex.train_device().unwrap();
    let batch = 64;
    let cfg = DinoConfig {
        head: DinoHeadConfig {
            hidden_dim: 2048,
            bottleneck_dim: 256,
            output_dim: 4096,
            ..DinoHeadConfig::default()
        },
        ..DinoConfig::default()
    };
    let enc = EncoderConfig {
        arch: Arch::Resnet18,
        cifar_stem: true,
        ..EncoderConfig::default()
    };
    let train = TrainConfig {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 5e-4,
            weight_decay: 0.04,
            ..OptimizerConfig::default()
        },
        grad_clip_norm: 3.0,
        ..TrainConfig::default()
    };
    let mut group = c.benchmark_group("dino_resnet18_b64");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    for locals in [0, 4] {
        reset_peak_rss();
        let build = |d: &burn::tensor::Device| DinoModel::new(enc.init(3, d), &cfg.head, d);
        let model = seed::init_module(&device, 0, build);
        let mut objective = Dino::new(&cfg, seed::init_module(&device, 1, build), &model);
        let mut views = vec![
            random_images(batch, 3, 32, 1, &device),
            random_images(batch, 3, 32, 2, &device),
        ];
        views.extend((0..locals).map(|i| random_images(batch, 3, 16, 3 + i as u64, &device)));
        let name = format!("2x32+{locals}x16");
        bench_steps(
            &mut group,
            BenchmarkId::from_parameter(&name),
            &mut objective,
            model,
            &views,
            &train,
            5e-4,
        );
        if let Some(m) = peak_rss_mib() {
            println!("dino_resnet18_b64/{name}: peak memory {m:.0} MiB");
        }
    }
    group.finish();
    println!("{PYTORCH}: about 35 images/s (2 global views) and 25 (with 4 local views)");
}

criterion_group!(benches, steps);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
