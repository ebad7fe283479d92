//! Every method's training step on `wgpu` against `flex`: the same seed and the same batch
//! give the same loss and the same updated weights, within a stated tolerance.
//!
//! Built with `--features wgpu` only (`cargo test -p selfsup-cli --features wgpu --test
//! wgpu`); CI runs it on Debian's software Vulkan driver (lavapipe). Initial weights, the
//! augmented batch and every random draw of an objective (masks, rotations, permutations,
//! noise) are made on the CPU, so the two devices start from the same numbers; what differs
//! is the order of floating-point sums in the GPU kernels.
#![cfg(feature = "wgpu")]

use selfsup_cli::Method;
use selfsup_cli::bench::{StepBenchArgs, StepTrace, trace_steps};
use selfsup_core::DeviceSpec;
use selfsup_encoders::Arch;

/// Loss: relative difference at most this.
const LOSS_TOL: f64 = 1e-3;
/// Weights after the step: largest absolute difference at most this times the largest
/// absolute weight.
const WEIGHT_TOL: f32 = 1e-3;

fn args(method: Method, device: DeviceSpec) -> StepBenchArgs {
    StepBenchArgs {
        method,
        encoder: if method == Method::Mae {
            Arch::Vit
        } else {
            Arch::Convnet
        },
        width: 4,
        batch: 8,
        steps: 1,
        warmup: 0,
        image_size: if method == Method::Gan { 32 } else { 16 },
        channels: 1,
        head_hidden: 32,
        head_out: 16,
        device,
    }
}

fn compare(method: Method) {
    let run =
        |device| trace_steps(&args(method, device)).unwrap_or_else(|e| panic!("{method:?}: {e}"));
    let (cpu, gpu): (StepTrace, StepTrace) = (run(DeviceSpec::Flex), run(DeviceSpec::Wgpu));
    assert_eq!(cpu.losses.len(), gpu.losses.len());
    for (a, b) in cpu.losses.iter().zip(&gpu.losses) {
        assert!(a.is_finite() && b.is_finite(), "{method:?}: loss {a} / {b}");
        let rel = (a - b).abs() / a.abs().max(1.0);
        assert!(rel <= LOSS_TOL, "{method:?}: loss flex {a}, wgpu {b}");
    }
    assert_eq!(cpu.weights.len(), gpu.weights.len(), "{method:?}");
    let scale = cpu
        .weights
        .iter()
        .fold(0f32, |m, w| m.max(w.abs()))
        .max(1e-6);
    let diff = cpu
        .weights
        .iter()
        .zip(&gpu.weights)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "{method:?}: loss flex {:?} wgpu {:?}, weights differ by at most {diff:.2e} (largest {scale:.3})",
        cpu.losses, gpu.losses
    );
    assert!(
        diff <= WEIGHT_TOL * scale,
        "{method:?}: weights differ by {diff} (largest weight {scale})"
    );
}

#[test]
fn simclr_step_matches_flex() {
    compare(Method::Simclr);
}

#[test]
fn mae_step_matches_flex() {
    compare(Method::Mae);
}

#[test]
fn dino_step_matches_flex() {
    compare(Method::Dino);
}

#[test]
fn clip_step_matches_flex() {
    compare(Method::Clip);
}

#[test]
fn rotnet_step_matches_flex() {
    compare(Method::Rotnet);
}

#[test]
fn jigsaw_step_matches_flex() {
    compare(Method::Jigsaw);
}

#[test]
fn gan_step_matches_flex() {
    compare(Method::Gan);
}
