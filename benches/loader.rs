//! The streaming loader's throughput: a folder of 500x375 JPEGs (ImageNet's typical size)
//! read, decoded and augmented into batches of two SimCLR views, at 224 px (with blur, as
//! SimCLR's ImageNet recipe) and at 96 px (STL-10's size, where the JPEG is decoded at the
//! reduced scale its crops allow), with one worker (images per second per core) and with one
//! per core. `benches/torchvision_loader.py` times torchvision's `ImageFolder` + `DataLoader`
//! on the same folder with the same numbers of workers, to run back to back with this.
//!
//!     cargo bench -p selfsup-benches --bench loader
//!     python3 benches/torchvision_loader.py target/selfsup-bench-jpegs/loader_500x375

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use selfsup_benches::jpeg_folder;
use selfsup_core::BatchSource;
use selfsup_data::{AugmentConfig, DataConfig, MultiView, ViewLoader};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

/// Images per epoch and per batch.
const IMAGES: usize = 128;
const BATCH: usize = 32;

fn loader(c: &mut Criterion) {
    let files = jpeg_folder("loader_500x375/photos", IMAGES, (500, 375));
    let root = files[0].parent().unwrap().parent().unwrap().to_path_buf();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("loader");
    group.sample_size(10);
    group.throughput(Throughput::Elements(IMAGES as u64));
    for (name, size, blur) in [("simclr_224", 224, 0.5), ("simclr_96", 96, 0.0)] {
        let data = DataConfig {
            spec: format!("folder:{}", root.display()).parse().unwrap(),
            image_size: size,
            channels: 3,
            holdout: 0.0,
            ..DataConfig::default()
        };
        let train = Arc::new(data.load(0).unwrap().train);
        assert!(train.is_streamed() && train.len() == IMAGES);
        let aug = AugmentConfig {
            crop_size: size,
            blur_prob: blur,
            ..AugmentConfig::simclr()
        };
        for workers in [1, cores] {
            let views = MultiView::default().with(
                aug.pipeline(size, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
                2,
            );
            let l = ViewLoader::new(
                train.clone(),
                Arc::new(views),
                BATCH,
                0,
                burn::tensor::Device::flex(),
            )
            .with_workers(workers)
            .unwrap();
            let mut epoch = 0;
            group.bench_function(BenchmarkId::new(name, format!("workers={workers}")), |b| {
                b.iter(|| {
                    epoch += 1;
                    for i in 0..l.steps_per_epoch() {
                        std::hint::black_box(l.batch(epoch, i).unwrap());
                    }
                })
            });
        }
    }
    group.finish();
}

/// One 500x375 JPEG decoded at full size (`image`'s zune-jpeg) and at 1/2, 1/4, 1/8
/// (jpeg-decoder's DCT scaling): what a reduced decode saves.
fn decode(c: &mut Criterion) {
    use selfsup_data::decode::{Decode, Original};
    let files = jpeg_folder("loader_500x375/photos", IMAGES, (500, 375));
    let bytes = std::fs::read(&files[0]).unwrap();
    let d = Decode::default();
    let o = Original::encoded(files[0].clone(), bytes, &d).unwrap();
    let mut group = c.benchmark_group("decode_500x375");
    group.sample_size(20);
    for k in [1u32, 2, 4, 8] {
        group.bench_function(BenchmarkId::new("reduce", k), |b| {
            b.iter(|| std::hint::black_box(o.decode(k, &d).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, loader, decode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
