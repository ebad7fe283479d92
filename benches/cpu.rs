//! CPU training speed on flex, burn's kernels against ours (`selfsup-kernels`), beside the
//! PyTorch 2.15 figures measured on this machine (`shared/notes/cpu-performance.md`):
//!
//! - `layers_b64/*`: each operation of the small ConvNet's four 3x3 conv + BatchNorm layers
//!   (3->32->64->128->128, strides 1, 2, 2, 2, batch 64 of 3x32x32), summed over the layers.
//! - `convnet_step_b64/*`: the whole supervised training step of that net with a Linear 128->10
//!   head, cross-entropy and AdamW.
//! - `simclr_resnet18_b128/*`: the SimCLR ResNet-18 step of `benches/simclr.rs`, both ways.
//!
//! `cargo bench -p selfsup-benches --bench cpu` (AVX-512 GEMM kernels where the CPU has them,
//! chosen at run time).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::{bench_steps, peak_rss_mib, random_images, reset_peak_rss};
use selfsup_contrastive::{SimClr, SimClrConfig, SimClrModel};
use selfsup_core::{DeviceSpec, OptimizerKind, TrainConfig, seed};
use selfsup_data::LabelledBatch;
use selfsup_encoders::{Arch, Backbone, ConvNet, EncoderConfig, HeadConfig};
use selfsup_eval::{Classifier, Supervised};
use selfsup_kernels::{
    ConvGeometry, GemmKernels, NormGeometry, batch_norm_backward, conv2d_backward, use_ours,
};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

/// BatchNorm's epsilon.
const EPS: f64 = 1e-5;

const PYTORCH: &str = "PyTorch 2.15 on this machine (2 threads, shared/notes/cpu-performance.md)";

fn report_peak(group: &str) {
    if let Some(m) = peak_rss_mib() {
        println!("{group}: peak memory {m:.0} MiB");
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
}

/// One conv + BatchNorm layer's inputs, as flex tensors and as slices.
struct Layer {
    geometry: ConvGeometry,
    options: ConvOptions<2>,
    x: FlexTensor,
    w: FlexTensor,
    /// Output gradient / BatchNorm input, `[batch, cout, oh, ow]`.
    y: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
}

/// One operation over one layer.
type Op = fn(&Layer);

fn layers(batch: usize) -> Vec<Layer> {
    let chans = [3, 32, 64, 128, 128];
    let strides = [1, 2, 2, 2];
    let mut size = 32;
    (0..4)
        .map(|i| {
            let (cin, cout, s) = (chans[i], chans[i + 1], strides[i]);
            let g = ConvGeometry::new(
                [batch, cin, size, size],
                [cout, cin, 3, 3],
                [s, s],
                [(1, 1), (1, 1)],
                [1, 1],
            )
            .unwrap();
            let [oh, ow] = g.output;
            let layer = Layer {
                geometry: g,
                options: ConvOptions::new([s, s], [1, 1], [1, 1], 1),
                x: flex(
                    values(batch * cin * size * size, i as u64),
                    &[batch, cin, size, size],
                ),
                w: flex(values(cout * cin * 9, 10 + i as u64), &[cout, cin, 3, 3]),
                y: flex(
                    values(batch * cout * oh * ow, 20 + i as u64),
                    &[batch, cout, oh, ow],
                ),
                gamma: flex(values(cout, 30 + i as u64), &[cout]),
                beta: flex(values(cout, 40 + i as u64), &[cout]),
            };
            size = oh;
            layer
        })
        .collect()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap()
}

fn norm_geometry(l: &Layer) -> NormGeometry {
    NormGeometry {
        batch: l.geometry.batch,
        channels: l.geometry.cout,
        spatial: l.geometry.output[0] * l.geometry.output[1],
    }
}

fn layer_ops(c: &mut Criterion) {
    reset_peak_rss();
    let batch = 64;
    let ls = layers(batch);
    let mut group = c.benchmark_group("layers_b64");
    group.sample_size(20);
    group.throughput(Throughput::Elements(batch as u64));
    let each = |f: Op| {
        for l in &ls {
            f(l)
        }
    };
    let ops: Vec<(&str, Op, Op)> = vec![
        (
            "conv_forward",
            |l: &Layer| {
                black_box(Flex::conv2d(
                    l.x.clone(),
                    l.w.clone(),
                    None,
                    l.options.clone(),
                ));
            },
            |l: &Layer| {
                black_box(<Flex as GemmKernels>::gemm_conv2d(
                    l.x.clone(),
                    l.w.clone(),
                    l.options.clone(),
                ));
            },
        ),
        (
            "conv_weight_grad",
            |l: &Layer| {
                black_box(Flex::conv2d_weight_backward(
                    l.x.clone(),
                    l.w.clone(),
                    l.y.clone(),
                    l.options.clone(),
                ));
            },
            |l: &Layer| {
                black_box(conv2d_backward(
                    slice(&l.x),
                    slice(&l.w),
                    slice(&l.y),
                    &l.geometry,
                    false,
                    true,
                ));
            },
        ),
        (
            "conv_input_grad",
            |l: &Layer| {
                black_box(Flex::conv2d_x_backward(
                    l.x.clone(),
                    l.w.clone(),
                    l.y.clone(),
                    l.options.clone(),
                ));
            },
            |l: &Layer| {
                black_box(conv2d_backward(
                    slice(&l.x),
                    slice(&l.w),
                    slice(&l.y),
                    &l.geometry,
                    true,
                    false,
                ));
            },
        ),
        (
            "batchnorm_forward",
            |l: &Layer| {
                black_box(Flex::batch_norm_train(
                    l.y.clone(),
                    l.gamma.clone(),
                    l.beta.clone(),
                    EPS,
                ));
            },
            |l: &Layer| {
                black_box(<Flex as GemmKernels>::fused_batch_norm(
                    l.y.clone(),
                    l.gamma.clone(),
                    l.beta.clone(),
                    EPS,
                ));
            },
        ),
        (
            "batchnorm_backward",
            |l: &Layer| {
                let r = Flex::batch_norm_train(l.y.clone(), l.gamma.clone(), l.beta.clone(), EPS);
                black_box(Flex::batch_norm_train_backward(
                    l.y.clone(),
                    l.gamma.clone(),
                    r.mean,
                    r.variance,
                    EPS,
                    l.y.clone(),
                ));
            },
            |l: &Layer| {
                let (_, mean, var) = <Flex as GemmKernels>::fused_batch_norm(
                    l.y.clone(),
                    l.gamma.clone(),
                    l.beta.clone(),
                    EPS,
                );
                black_box(batch_norm_backward(
                    slice(&l.y),
                    slice(&l.y),
                    slice(&l.gamma),
                    slice(&mean),
                    slice(&var),
                    EPS,
                    &norm_geometry(l),
                    true,
                ));
            },
        ),
    ];
    for (name, burn, ours) in ops {
        group.bench_function(BenchmarkId::new(name, "burn"), |b| b.iter(|| each(burn)));
        group.bench_function(BenchmarkId::new(name, "ours"), |b| b.iter(|| each(ours)));
    }
    group.finish();
    println!(
        "{PYTORCH}, same four layers: conv forward 4.6 ms, conv weight grad 5.1 ms, \
         BatchNorm backward 0.61 ms (BatchNorm backward includes our forward for its statistics)"
    );
    report_peak("layers_b64");
}

fn convnet_step(c: &mut Criterion) {
    let device = DeviceSpec::Flex.train_device().unwrap();
    let batch = 64;
    let images = random_images(batch, 3, 32, 1, &device);
    let labels = Tensor::<1, Int>::from_data(
        TensorData::new((0..batch as i64).map(|i| i % 10).collect(), [batch]),
        &device,
    );
    let data = LabelledBatch { images, labels };
    let mut cfg = TrainConfig::default();
    cfg.optimizer.kind = OptimizerKind::Adamw;
    let mut group = c.benchmark_group("convnet_step_b64");
    group.sample_size(20);
    group.throughput(Throughput::Elements(batch as u64));
    for ours in [false, true] {
        reset_peak_rss();
        use_ours(ours);
        let model = seed::init_module(&device, 0, |d| {
            Classifier::new(ConvNet::new(3, 32, d), 10, false, d)
        });
        let mut objective = Supervised::<ConvNet>::default();
        let id = BenchmarkId::new("convnet32_adamw", if ours { "ours" } else { "burn" });
        bench_steps(&mut group, id, &mut objective, model, &data, &cfg, 1e-3);
        report_peak(&format!(
            "convnet_step_b64/{}",
            if ours { "ours" } else { "burn" }
        ));
    }
    group.finish();
    use_ours(true);
    println!("{PYTORCH}: 37 ms per step with its default allocator, 25 ms tuned");
}

fn simclr_resnet18(c: &mut Criterion) {
    let device = DeviceSpec::Flex.train_device().unwrap();
    let batch = 128;
    let cfg = SimClrConfig {
        temperature: 0.1,
        head: HeadConfig {
            hidden_dim: 2048,
            output_dim: 128,
            ..HeadConfig::default()
        },
    };
    let enc = EncoderConfig {
        arch: Arch::Resnet18,
        cifar_stem: true,
        ..EncoderConfig::default()
    };
    let views = vec![
        random_images(batch, 3, 32, 1, &device),
        random_images(batch, 3, 32, 2, &device),
    ];
    let mut group = c.benchmark_group("simclr_resnet18_b128");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    for ours in [false, true] {
        reset_peak_rss();
        use_ours(ours);
        let model = seed::init_module(&device, 0, |d| SimClrModel::new(enc.init(3, d), &cfg, d));
        let mut objective = SimClr::<Backbone>::new(&cfg);
        let id = BenchmarkId::new("lars", if ours { "ours" } else { "burn" });
        bench_steps(
            &mut group,
            id,
            &mut objective,
            model,
            &views,
            &TrainConfig::default(),
            0.3,
        );
        report_peak(&format!(
            "simclr_resnet18_b128/{}",
            if ours { "ours" } else { "burn" }
        ));
    }
    group.finish();
    use_ours(true);
    println!("{PYTORCH} with lightly 1.6: 2.98 s per step, 43 images/s");
}

criterion_group!(benches, layer_ops, convnet_step, simclr_resnet18);

fn main() {
    selfsup_kernels::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
