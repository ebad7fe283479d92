//! The GAN step (issue 9), through the same `Stepper` the trainer runs: one discriminator and
//! one generator update of the DCGAN preset (discriminator widths 64 / 128 / 256, generator
//! width 64, noise 100, Adam with betas 0.5 / 0.999) on a batch of 128 Fashion-MNIST-shaped
//! images (1x28x28) and of 128 CIFAR-shaped ones (3x32x32, one more generator layer).
//! Criterion's throughput is real images per second; the peak memory of each shape is printed
//! after it (the process's peak so far).
//!
//! `cargo bench -p selfsup-benches --bench gan`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_core::config::{OptimizerConfig, OptimizerKind};
use selfsup_core::{DeviceSpec, TrainConfig, seed};
use selfsup_encoders::{DcganConfig, DcganEncoder};
use selfsup_gan::{Gan, GanConfig, GanModel};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

/// DCGAN's optimizer, for both networks.
fn adam() -> TrainConfig {
    TrainConfig {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 2e-4,
            weight_decay: 0.0,
            beta1: 0.5,
            beta2: 0.999,
            ..OptimizerConfig::default()
        },
        ..TrainConfig::default()
    }
}

fn gan(c: &mut Criterion) {
    let mut group = c.benchmark_group("gan_step");
    group.sample_size(10);
    let batch = 128;
    group.throughput(Throughput::Elements(batch as u64));
    let device = DeviceSpec::Flex.train_device().unwrap();
    let cfg = GanConfig::default();
    let trunk = DcganConfig::default();
    for (channels, size) in [(1, 28), (3, 32)] {
        reset_peak_rss();
        let model = seed::init_module(&device, 0, |d| {
            GanModel::new(
                DcganEncoder::new(channels, 64, &trunk, d),
                &trunk,
                channels,
                size,
                &cfg,
                d,
            )
            .unwrap()
        });
        let views = vec![random_images(batch, channels, size, 1, &device)];
        let name = format!("dcgan64_b128_{channels}x{size}");
        bench_steps(
            &mut group,
            BenchmarkId::from_parameter(&name),
            &mut Gan::new(&cfg, 0),
            model,
            &views,
            &adam(),
            2e-4,
        );
        if let Some(m) = peak_rss_mib() {
            println!("gan_step/{name}: peak memory {m:.0} MiB");
        }
    }
    group.finish();
}

criterion_group!(benches, gan);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
