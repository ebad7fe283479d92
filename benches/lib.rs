//! Shared pieces of the benchmarks: fixed shapes and seeded inputs, so every run measures the
//! same work. `cargo bench -p selfsup-benches`.

use burn::tensor::{Device, Distribution, Tensor};
use criterion::BenchmarkId;
use criterion::measurement::WallTime;
use selfsup_core::{Objective, StepInfo, Stepper, TrainConfig};
use std::path::PathBuf;

/// A batch of `n` random images `[n, c, s, s]` on `device`, drawn from `seed`.
pub fn random_images(n: usize, c: usize, s: usize, seed: u64, device: &Device) -> Tensor<4> {
    device.seed(seed);
    Tensor::random([n, c, s, s], Distribution::Normal(0.0, 1.0), device)
}

pub use selfsup_core::metrics::peak_rss_mib;

/// Resets the peak-memory mark of this process (Linux), so the next reading covers only what
/// runs after it. Does nothing elsewhere.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `n` JPEG files of `size` (width, height) with smooth, varied content (gradients, a disc,
/// noise), written once to `target/selfsup-bench-jpegs/NAME/`; returns their paths.
pub fn jpeg_folder(name: &str, n: usize, size: (u32, u32)) -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("selfsup-bench-jpegs").join(name);
    std::fs::create_dir_all(&dir).expect("create the JPEG folder");
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{i:04}.jpg"));
            if !p.is_file() {
                write_jpeg(&p, i, size);
            }
            p
        })
        .collect()
}

/// Writes JPEG number `i` of a bench folder, `size` (width, height): gradients, a disc whose
/// place depends on `i`, noise.
pub fn write_jpeg(p: &std::path::Path, i: usize, size: (u32, u32)) {
    let (w, h) = size;
    let mut state = 0x9E37_79B9u32.wrapping_mul(i as u32 + 1);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 24) as i32;
        let (cx, cy) = ((w / 2) as i32, (h / 3 + i as u32 % (h / 3 + 1)) as i32);
        let d = (x as i32 - cx).pow(2) + (y as i32 - cy).pow(2);
        let inside = d < (h as i32 / 4).pow(2);
        let base = [
            (x * 255 / w.max(1)) as i32,
            (y * 255 / h.max(1)) as i32,
            if inside {
                220
            } else {
                40 + (i as i32 * 37) % 120
            },
        ];
        image::Rgb(base.map(|v| (v + noise).clamp(0, 255) as u8))
    });
    img.save(p).expect("write a JPEG");
}

/// Benchmarks training steps of `objective` on one fixed batch, through the trainer's
/// [`Stepper`] (forward, backward, optimizer), at learning rate `lr`.
pub fn bench_steps<O: Objective>(
    group: &mut criterion::BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    objective: &mut O,
    model: O::Model,
    batch: &O::Batch,
    cfg: &TrainConfig,
    lr: f64,
) {
    let mut stepper = Stepper::new(cfg, objective.phases());
    let mut model = Some(model);
    let mut step = 0;
    group.bench_function(id, |b| {
        b.iter(|| {
            let info = StepInfo {
                step,
                epoch: 0,
                total_steps: usize::MAX,
                steps_per_epoch: usize::MAX,
            };
            step += 1;
            let m = model.take().unwrap();
            let (m, _) = stepper
                .step(objective, m, batch, &info, lr, step as u64)
                .unwrap();
            // EMA teachers and centres move after every step, as in training.
            objective.after_step(&m, &info);
            model = Some(m);
        })
    });
}
