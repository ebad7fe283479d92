//! SimCLR training steps on fixed shapes (through the same `Stepper` the trainer runs), the
//! SimCLR augmentation pipelines from folders of JPEGs (per core), and the kNN search.
//! Criterion reports time per iteration and throughput in source images per second (each
//! image gives two views); the peak memory of each group is printed after it.
//!
//! `cargo bench -p selfsup-benches --bench simclr` (a filter such as `-- augment` runs one
//! group). The JPEG folders are written to `target/selfsup-bench-jpegs/` so
//! `benches/torchvision_augment.py` can time torchvision on the very same files.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, jpeg_folder, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_contrastive::{SimClr, SimClrConfig, SimClrModel};
use selfsup_core::{DeviceSpec, TrainConfig, ViewGenerator, seed};
use selfsup_data::decode::{self, Decode};
use selfsup_data::{AugmentConfig, MultiView};
use selfsup_encoders::{Arch, Backbone, EncoderConfig, HeadConfig};
use selfsup_eval::{KnnConfig, knn_predict};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

fn report_peak(group: &str) {
    if let Some(m) = peak_rss_mib() {
        println!("{group}: peak memory {m:.0} MiB");
    }
}

fn steps(c: &mut Criterion) {
    // The Fashion-MNIST preset (configs/simclr-fashion-mnist.toml). The ResNet-18 step is in
    // `benches/cpu.rs`, with burn's kernels and ours.
    reset_peak_rss();
    let (batch, channels, size) = (128, 1, 28);
    let device = DeviceSpec::Flex.train_device().unwrap();
    let cfg = SimClrConfig {
        temperature: 0.1,
        head: HeadConfig::default(),
    };
    let enc = EncoderConfig {
        arch: Arch::Convnet,
        width: 16,
        cifar_stem: true,
        ..EncoderConfig::default()
    };
    let model = seed::init_module(&device, 0, |d| {
        SimClrModel::new(enc.init(channels, d), &cfg, d)
    });
    // Two views of `batch` images, as the loader hands them over.
    let views = vec![
        random_images(batch, channels, size, 1, &device),
        random_images(batch, channels, size, 2, &device),
    ];
    let mut group = c.benchmark_group("simclr_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let id = BenchmarkId::from_parameter("convnet16_b128_1x28");
    let mut objective = SimClr::<Backbone>::new(&cfg);
    bench_steps(
        &mut group,
        id,
        &mut objective,
        model,
        &views,
        &TrainConfig::default(),
        0.3,
    );
    group.finish();
    report_peak("simclr_step/convnet16_b128_1x28");
}

/// Decode + two SimCLR views per image, one thread: images per second per core.
fn augment_folder(c: &mut Criterion, name: &str, size: usize, source: (u32, u32), blur: f64) {
    let files = jpeg_folder(name, 64, source);
    let cfg = AugmentConfig {
        crop_size: size,
        crop_min_scale: 0.08,
        blur_prob: blur,
        ..AugmentConfig::simclr()
    };
    let views = MultiView::default().with(
        cfg.pipeline(size, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
        2,
    );
    let mut group = c.benchmark_group("augment_per_core");
    group.sample_size(10);
    group.throughput(Throughput::Elements(files.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            for (i, f) in files.iter().enumerate() {
                let img = decode::file(f, &Decode::default()).unwrap();
                let mut rng = seed::rng(0, 0, 0, i as u64);
                std::hint::black_box(views.views(&img, &mut rng));
            }
        })
    });
    group.finish();
}

fn augment(c: &mut Criterion) {
    // CIFAR-sized JPEGs, the small-image pipeline (no blur).
    augment_folder(c, "simclr_32px_jpeg", 32, (32, 32), 0.0);
    // ImageNet-like JPEGs (320x256) to 224 px crops, with SimCLR's blur (p = 0.5).
    augment_folder(c, "simclr_224px_jpeg", 224, (320, 256), 0.5);
}

fn knn(c: &mut Criterion) {
    reset_peak_rss();
    let device = DeviceSpec::Flex.device().unwrap();
    device.seed(1);
    let train = burn::tensor::Tensor::<2>::random(
        [10_000, 128],
        burn::tensor::Distribution::Default,
        &device,
    );
    let test = burn::tensor::Tensor::<2>::random(
        [1_000, 128],
        burn::tensor::Distribution::Default,
        &device,
    );
    let labels: Vec<usize> = (0..10_000).map(|i| i % 10).collect();
    let mut group = c.benchmark_group("knn");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("k200_10000x1000x128", |b| {
        b.iter(|| {
            knn_predict(
                train.clone(),
                &labels,
                test.clone(),
                10,
                &KnnConfig::default(),
            )
            .unwrap()
        })
    });
    group.finish();
    report_peak("knn");
}

criterion_group!(benches, augment, knn, steps);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
