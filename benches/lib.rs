//! Shared pieces of the benchmarks: fixed shapes and seeded inputs, so every run measures the
//! same work. `cargo bench -p selfsup-benches`.

use burn::tensor::{Device, Distribution, Tensor};

/// A batch of `n` random images `[n, c, s, s]` on `device`, drawn from a fixed seed.
pub fn random_images(n: usize, c: usize, s: usize, device: &Device) -> Tensor<4> {
    device.seed(0);
    Tensor::random([n, c, s, s], Distribution::Normal(0.0, 1.0), device)
}

/// Peak resident memory of this process in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|k| k / 1024.0)
}
