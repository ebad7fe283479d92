//! Every method's loss on its own, forward and backward, at the shapes of the Fashion-MNIST
//! presets: what the loss costs of a step (the rest is the encoder). Inputs are random
//! embeddings that require gradients; each iteration builds the graph, reduces to the scalar
//! loss and back-propagates to the inputs.
//!
//! `cargo bench -p selfsup-benches --bench losses`

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group};
use selfsup_core::DeviceSpec;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    device.seed(seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device).require_grad()
}

fn losses(c: &mut Criterion) {
    let device = DeviceSpec::Flex.train_device().unwrap();
    let mut group = c.benchmark_group("loss");
    group.sample_size(20);

    // SimCLR and CLIP: 256 pairs of 128-d embeddings.
    let (a, b) = (
        random([256, 128], 1, &device),
        random([256, 128], 2, &device),
    );
    group.throughput(Throughput::Elements(256));
    group.bench_function("nt_xent_256x128", |bench| {
        bench.iter(|| {
            let l = selfsup_contrastive::loss::nt_xent(a.clone(), b.clone(), 0.1);
            black_box(l.backward())
        })
    });
    let scale = Tensor::<1>::from_data(TensorData::new(vec![14.3f32], [1]), &device);
    group.bench_function("clip_256x128", |bench| {
        bench.iter(|| {
            let l = selfsup_contrastive::loss::clip_loss(a.clone(), b.clone(), scale.clone());
            black_box(l.backward())
        })
    });

    // VICReg (examples/custom-objective): 256 pairs of 512-d expander outputs.
    let (z1, z2) = (
        random([256, 512], 3, &device),
        random([256, 512], 4, &device),
    );
    let w = selfsup_vicreg::Weights {
        invariance: 25.0,
        variance: 25.0,
        covariance: 1.0,
        eps: 1e-4,
    };
    group.bench_function("vicreg_256x512", |bench| {
        bench.iter(|| {
            black_box(
                selfsup_vicreg::vicreg_loss(z1.clone(), z2.clone(), &w)
                    .loss
                    .backward(),
            )
        })
    });

    // DINO: 2 global and 4 local views of 128 images, 4,096 prototypes; teacher targets are
    // probabilities without gradients.
    let student: Vec<Tensor<2>> = (0..6)
        .map(|i| random([128, 4096], 10 + i, &device))
        .collect();
    let targets: Vec<Tensor<2>> = (0..2)
        .map(|i| {
            burn::tensor::activation::softmax(
                random([128, 4096], 20 + i, &device).detach() / 0.04,
                1,
            )
            .detach()
        })
        .collect();
    group.throughput(Throughput::Elements(128));
    group.bench_function("dino_6views_128x4096", |bench| {
        bench.iter(|| black_box(selfsup_dino::loss::dino_loss(&student, &targets, 0.1).backward()))
    });

    // MAE: 128 images of 7x7 patches of 4x4 pixels, 75 % hidden.
    let pred = random([128, 49, 16], 30, &device);
    let target = random([128, 49, 16], 31, &device).detach();
    let mask_values: Vec<f32> = (0..128 * 49)
        .map(|i| if i % 4 == 0 { 0.0 } else { 1.0 })
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask_values, [128, 49]), &device);
    group.bench_function("mae_128x49x16", |bench| {
        bench.iter(|| {
            let l = selfsup_mae::loss::masked_reconstruction_loss(
                pred.clone(),
                target.clone(),
                mask.clone(),
            );
            black_box(l.backward())
        })
    });

    // RotNet (4 rotations of 128 images) and jigsaw (1,000 permutations).
    for (name, rows, classes) in [("rotnet_512x4", 512, 4), ("jigsaw_128x1000", 128, 1000)] {
        let logits = random([rows, classes], 40, &device);
        let labels: Vec<i64> = (0..rows).map(|i| (i % classes) as i64).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [rows]), &device);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let out = selfsup_pretext::loss::pretext_loss(logits.clone(), labels.clone());
                black_box(out.loss.backward())
            })
        });
    }

    // GAN: the discriminator's logits of 128 real and 128 generated images.
    let (real, fake) = (random([128], 50, &device), random([128], 51, &device));
    group.throughput(Throughput::Elements(128));
    group.bench_function("gan_nonsaturating_d_128", |bench| {
        bench.iter(|| {
            black_box(selfsup_gan::loss::non_saturating_d(real.clone(), fake.clone()).backward())
        })
    });
    group.finish();
}

criterion_group!(benches, losses);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
