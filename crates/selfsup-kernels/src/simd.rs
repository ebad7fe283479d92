//! Run-time choice of the instruction set for our element-wise loops, and what the GEMMs use.
//!
//! One binary serves every x86-64 CPU: the default build targets baseline x86-64 (SSE2), and
//! the hot loops are compiled again for AVX2 + FMA and for AVX-512, the widest the CPU has
//! being chosen when the process first asks. The `gemm` crate (ours and burn-flex's matrix
//! products) makes the same choice for its micro-kernels, its `x86-v4` feature being always on
//! here (see `Cargo.toml`).

/// Runs `body` compiled for the widest vectors the CPU has: AVX-512 (F, BW, DQ, VL), else AVX2
/// and FMA, else the baseline (the compiler vectorizes the loops 4 wide with SSE2).
///
/// The results do not depend on which is chosen: the compiler does not reorder floating-point
/// sums or contract multiplications and additions on its own, so only the explicit
/// `mul_add`s use FMA, and those round the same on every path.
///
/// Only a body the compiler inlines into the wide copies is compiled wide: a large closure
/// stays out of line, compiled for the baseline, and the wide copy just calls it (`objdump` of
/// the release binary, 2026-12-04: 21 of 24 `wide` copies hold no ymm/zmm instruction). For a
/// large body use [`run_wide`].
#[inline(always)]
pub fn wide<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        match isa() {
            // SAFETY: `isa` saw these features in the CPU.
            Isa::Avx512 => return unsafe { avx512(body) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(body) },
            Isa::Baseline => {}
        }
    }
    body()
}

/// A loop to run compiled for the widest vectors the CPU has, through [`run_wide`]. Mark
/// `run` `#[inline(always)]`: that is what puts its body into the AVX-512 and AVX2 copies.
///
/// For a large body this is what works where [`wide`] does not: the compiler inlines `wide`'s
/// closure into the wide copies only when it is small enough; a large one stays an out-of-line
/// SSE2 function (measured: the image loader's 8-bit resize, and most of `wide`'s own users).
pub trait WideKernel {
    /// What the loop returns.
    type Output;
    /// The loop.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for AVX-512, AVX2 + FMA or the baseline, as [`wide`] chooses.
#[inline(always)]
pub fn run_wide<K: WideKernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn avx512<K: WideKernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<K: WideKernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        match isa() {
            // SAFETY: `isa` saw these features in the CPU.
            Isa::Avx512 => return unsafe { avx512(kernel) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(kernel) },
            Isa::Baseline => {}
        }
    }
    kernel.run()
}

/// The instruction sets our kernels choose between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// 512-bit vectors (AVX-512 F, BW, DQ, VL): Intel Skylake-SP and later Xeons, Ice Lake,
    /// Sapphire Rapids; AMD Zen 4 (two 256-bit halves) and Zen 5.
    Avx512,
    /// 256-bit vectors with fused multiply-add (AVX2 + FMA): x86-64 CPUs since 2013-2015.
    Avx2,
    /// What the target guarantees (SSE2 on x86-64; NEON on aarch64).
    Baseline,
}

impl Isa {
    /// A short name for logs and run records: `avx512`, `avx2`, `baseline`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Baseline => "baseline",
        }
    }
}

/// The instruction set this CPU runs our loops and the GEMM micro-kernels with (detected on the
/// first call).
pub fn isa() -> Isa {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not detected yet; else 1 + the index in `ALL`.
    static CHOSEN: AtomicU8 = AtomicU8::new(0);
    const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Baseline];
    match CHOSEN.load(Ordering::Relaxed) {
        0 => {
            let isa = detect();
            let index = ALL.iter().position(|&a| a == isa).unwrap_or(2);
            CHOSEN.store(index as u8 + 1, Ordering::Relaxed);
            isa
        }
        i => ALL[(i - 1) as usize],
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // `gemm` takes its AVX-512 kernels on `avx512f` alone; every CPU with AVX-512F that
        // shipped also has BW, DQ and VL (Knights Landing aside), so the two choices agree.
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Isa::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sums_alike() {
        // The same loop through `wide` and without: bit-identical (no reassociation).
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32).sin()).collect();
        let plain: f32 = x.iter().map(|v| v * 1.5 + 0.25).sum();
        let wide_sum: f32 = wide(|| x.iter().map(|v| v * 1.5 + 0.25).sum());
        assert_eq!(plain.to_bits(), wide_sum.to_bits());
        assert!(!isa().name().is_empty());
    }
}
