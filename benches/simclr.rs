//! SimCLR step time (forward, backward, optimizer) on fixed shapes, the SimCLR augmentation
//! pipeline, and the kNN search. Criterion reports time per iteration and images per second
//! (throughput counts images, each seen as two views); peak memory is printed at the end.

use burn::optim::GradientsParams;
use criterion::{Criterion, Throughput, criterion_group};
use selfsup_benches::{peak_rss_mib, random_images};
use selfsup_contrastive::{SimClrConfig, SimClrModel, nt_xent};
use selfsup_core::optim::SelfsupOptimizer;
use selfsup_core::{DeviceSpec, OptimizerConfig, ViewGenerator, seed};
use selfsup_data::{AugmentConfig, MultiView};
use selfsup_encoders::{Arch, EncoderConfig};
use selfsup_eval::{KnnConfig, knn_predict};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn simclr_step(
    c: &mut Criterion,
    name: &str,
    arch: Arch,
    batch: usize,
    channels: usize,
    size: usize,
) {
    let device = DeviceSpec::Flex.train_device().unwrap();
    let enc = EncoderConfig {
        arch,
        ..EncoderConfig::default()
    };
    let cfg = SimClrConfig::default();
    let mut model = seed::init_module(&device, 0, |d| {
        SimClrModel::new(enc.init(channels, d), &cfg, d)
    });
    let (mut optim, counter) = SelfsupOptimizer::module_optimizer(OptimizerConfig::default());
    let views = random_images(2 * batch, channels, size, &device);
    let mut group = c.benchmark_group("simclr_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let z = model.embed(views.clone());
            let loss = nt_xent(
                z.clone().narrow(0, 0, batch),
                z.narrow(0, batch, batch),
                0.2,
            );
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            counter.set(counter.get() + 1);
            model = optim.step(0.1, model.clone(), grads);
        })
    });
    group.finish();
}

fn steps(c: &mut Criterion) {
    simclr_step(c, "convnet_b256_1x28", Arch::Convnet, 256, 1, 28);
    simclr_step(c, "resnet18_cifar_b32_3x32", Arch::Resnet18, 32, 3, 32);
}

fn augment(c: &mut Criterion) {
    let data = selfsup_data::sample::load().unwrap().test.unwrap();
    let views = MultiView::default().with(
        AugmentConfig::simclr().pipeline(28, vec![0.3], vec![0.35]),
        2,
    );
    let mut group = c.benchmark_group("augment");
    group.throughput(Throughput::Elements(256));
    group.bench_function("simclr_2views_256x28", |b| {
        b.iter(|| {
            for i in 0..256 {
                let mut rng = seed::rng(0, 0, 0, i);
                std::hint::black_box(views.views(&data.image(i as usize), &mut rng));
            }
        })
    });
    group.finish();
}

fn knn(c: &mut Criterion) {
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
}

criterion_group!(benches, steps, augment, knn);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Some(m) = peak_rss_mib() {
        println!("peak memory: {m:.0} MiB");
    }
}
