//! Shared pieces of the benchmarks: fixed shapes and seeded inputs, so every run measures the
//! same work. `cargo bench -p selfsup-benches`.

use burn::tensor::{Device, Distribution, Tensor};

/// A batch of `n` random images `[n, c, s, s]` on `device`, drawn from a fixed seed.
pub fn random_images(n: usize, c: usize, s: usize, device: &Device) -> Tensor<4> {
    device.seed(0);
    Tensor::random([n, c, s, s], Distribution::Normal(0.0, 1.0), device)
}

pub use selfsup_core::metrics::peak_rss_mib;
