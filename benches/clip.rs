//! The CLIP step (issue 7), through the same `Stepper` the trainer runs: the image tower (the
//! Fashion-MNIST preset's ConvNet 32 on 1x28x28), the text transformer (width 128, 4 blocks,
//! 4 heads, context 32, vocabulary 2,048), the symmetric contrastive loss over a batch of 128
//! image-caption pairs, backward and AdamW. Captions are synthetic token ids of 8 to 23
//! tokens. Criterion's throughput is pairs per second; the peak memory is printed after it.
//!
//! `cargo bench -p selfsup-benches --bench clip`

use burn::tensor::{Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_contrastive::{Clip, ClipConfig, ClipModel};
use selfsup_core::config::{OptimizerConfig, OptimizerKind};
use selfsup_core::{DeviceSpec, TrainConfig, seed};
use selfsup_data::ImageTextBatch;
use selfsup_encoders::{Arch, Backbone, EncoderConfig};

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

fn clip(c: &mut Criterion) {
    reset_peak_rss();
    let (batch, channels, size) = (128, 1, 28);
    let device = DeviceSpec::Flex.train_device().unwrap();
    let cfg = ClipConfig::default();
    let (context, vocab) = (cfg.text.context, cfg.tokenizer.vocab_size);
    let enc = EncoderConfig {
        arch: Arch::Convnet,
        width: 32,
        ..EncoderConfig::default()
    };
    let model = seed::init_module(&device, 0, |d| {
        ClipModel::new(enc.init(channels, d), vocab, &cfg, d).unwrap()
    });
    // Caption i: `8 + i % 16` tokens, then padding (0); ids spread over the vocabulary.
    let mut ids = vec![0i64; batch * context];
    let mut eot = Vec::with_capacity(batch);
    for i in 0..batch {
        let len = 8 + i % 16;
        for t in 0..len {
            ids[i * context + t] = ((i * 131 + t * 977) % (vocab - 1) + 1) as i64;
        }
        eot.push((len - 1) as i64);
    }
    let pairs = ImageTextBatch {
        images: random_images(batch, channels, size, 1, &device),
        tokens: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, context]), &device),
        eot: Tensor::<1, Int>::from_data(TensorData::new(eot, [batch]), &device),
    };
    let train = TrainConfig {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-3,
            weight_decay: 0.2,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            ..OptimizerConfig::default()
        },
        ..TrainConfig::default()
    };
    let mut group = c.benchmark_group("clip_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let name = "convnet32_text128x4_b128_1x28";
    bench_steps(
        &mut group,
        BenchmarkId::from_parameter(name),
        &mut Clip::<Backbone>::new(&cfg),
        model,
        &pairs,
        &train,
        1e-3,
    );
    group.finish();
    if let Some(m) = peak_rss_mib() {
        println!("clip_step/{name}: peak memory {m:.0} MiB");
    }
}

criterion_group!(benches, clip);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
