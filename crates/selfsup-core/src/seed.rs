//! Seeded random streams: every random draw of a run comes from `(seed, purpose, a, b)`, so
//! results do not depend on thread scheduling and a resumed run draws what it would have.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Mixes the parts into one 64-bit seed (SplitMix64 finalizer over each part).
pub fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        let mut z = h ^ p.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// A generator for one purpose of one run (`stream` names the purpose).
pub fn rng(seed: u64, stream: u64, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[seed, stream, a, b]))
}

/// Stream of the per-epoch shuffles.
pub const STREAM_SHUFFLE: u64 = 1;
/// Stream of the per-image augmentations.
pub const STREAM_AUGMENT: u64 = 2;
/// Stream of weight initialization.
pub const STREAM_INIT: u64 = 3;
/// Stream of objective-owned randomness (masks, permutations).
pub const STREAM_OBJECTIVE: u64 = 4;
/// Stream of the caption picked for an image when it has several.
pub const STREAM_CAPTION: u64 = 5;
/// Stream of a generator's noise (a GAN's latent vectors).
pub const STREAM_NOISE: u64 = 6;

/// `n` draws from the standard normal distribution (Box-Muller over `rng`'s uniforms).
pub fn standard_normal(rng: &mut impl rand::Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use std::sync::Mutex;

static INIT_LOCK: Mutex<()> = Mutex::new(());

struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Builds a module with weights drawn from `seed`, reproducibly.
///
/// burn draws initial weights from the device's global generator, and lazily: at a
/// parameter's first use. This seeds the device, builds the module and touches every
/// parameter while holding a process-wide lock, so the weights depend on `seed` only, not
/// on what other threads draw or when the module is first used.
///
/// The weights are always drawn on the CPU (`flex`) and then moved to `device`: each
/// backend has its own generator (wgpu's and CUDA's differ from flex's), so drawing on the
/// GPU would give other initial weights for the same seed.
pub fn init_module<M: Module>(device: &Device, seed: u64, build: impl FnOnce(&Device) -> M) -> M {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if *device == Device::flex() {
        device.seed(mix(&[seed, STREAM_INIT]));
        let module = build(device);
        module.visit(&mut Materialize);
        return module;
    }
    // Drawn on the CPU, then forked to `device`: the parameters arrive there as fresh leaves
    // that keep their `require_grad` (a plain `to_device` of autodiff tensors would record
    // the move in the graph).
    let cpu = if device.is_autodiff() {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    cpu.seed(mix(&[seed, STREAM_INIT]));
    let module = build(&cpu);
    module.visit(&mut Materialize);
    module.fork(device)
}
