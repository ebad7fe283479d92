//! Every method's training step on `wgpu` against `flex`: the same seed and the same batch
//! give the same loss and the same updated weights, within a stated tolerance. The step uses
//! SGD, whose update is proportional to the gradient; Adam's first step, `lr * g / |g|`, would
//! turn the sign of a gradient that is zero up to rounding into a whole step either way.
//!
//! Built with `--features wgpu` only (`cargo test -p selfsup-cli --features wgpu --test
//! wgpu`); CI runs it on Debian's software Vulkan driver (lavapipe). Initial weights, the
//! augmented batch and every random draw of an objective (masks, rotations, permutations,
//! noise) are made on the CPU, so the two devices start from the same numbers; what differs
//! is the order of floating-point sums in the GPU kernels.
#![cfg(feature = "wgpu")]

use selfsup_core::{DeviceSpec, OptimizerKind};
use selfsup_encoders::Arch;
use selfsup_pipeline::step_bench::{StepBenchArgs, StepTrace, trace_steps};

/// Loss: relative difference at most this.
const LOSS_TOL: f64 = 1e-4;
/// Weights after the step: the L2 norm of their difference at most this times the norm of
/// the step's update on flex.
const WEIGHT_TOL: f32 = 1e-3;

fn args(method: &str, device: DeviceSpec) -> StepBenchArgs {
    StepBenchArgs {
        method: method.to_string(),
        encoder: match method {
            "mae" => Arch::Vit,
            "gan" => Arch::Dcgan,
            _ => Arch::Convnet,
        },
        width: 4,
        batch: 8,
        steps: 1,
        warmup: 0,
        image_size: if method == "gan" { 32 } else { 16 },
        channels: 1,
        head_hidden: 32,
        head_out: 16,
        device,
        optimizer: Some(OptimizerKind::Sgd),
        set: Vec::new(),
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn compare(method: &str) {
    let registry = selfsup_cli::registry();
    let run = |device| {
        trace_steps(&registry, &args(method, device)).unwrap_or_else(|e| panic!("{method}: {e}"))
    };
    let (cpu, gpu): (StepTrace, StepTrace) = (run(DeviceSpec::Flex), run(DeviceSpec::Wgpu));
    assert_eq!(cpu.losses.len(), gpu.losses.len());
    for (a, b) in cpu.losses.iter().zip(&gpu.losses) {
        assert!(a.is_finite() && b.is_finite(), "{method}: loss {a} / {b}");
        let rel = (a - b).abs() / a.abs().max(1.0);
        assert!(rel <= LOSS_TOL, "{method}: loss flex {a}, wgpu {b}");
    }
    assert_eq!(cpu.weights.len(), gpu.weights.len(), "{method}");
    assert_eq!(
        cpu.initial, gpu.initial,
        "{method}: different initial weights"
    );
    let update = l2(&cpu.weights, &cpu.initial);
    let diff = l2(&cpu.weights, &gpu.weights);
    eprintln!(
        "{method}: loss flex {:?} wgpu {:?}; weights {diff:.2e} apart after an update of {update:.2e}",
        cpu.losses, gpu.losses
    );
    assert!(update > 0.0, "{method}: the step changed nothing");
    assert!(
        diff <= WEIGHT_TOL * update,
        "{method}: weights {diff} apart after an update of {update}"
    );
}

#[test]
fn simclr_step_matches_flex() {
    compare("simclr");
}

#[test]
fn mae_step_matches_flex() {
    compare("mae");
}

#[test]
fn dino_step_matches_flex() {
    compare("dino");
}

#[test]
fn clip_step_matches_flex() {
    compare("clip");
}

#[test]
fn rotnet_step_matches_flex() {
    compare("rotnet");
}

#[test]
fn jigsaw_step_matches_flex() {
    compare("jigsaw");
}

#[test]
fn gan_step_matches_flex() {
    compare("gan");
}
