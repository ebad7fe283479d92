//! Run-time choice of the instruction set for our element-wise loops, and what the GEMMs use.
//!
//! One binary serves every x86-64 CPU: the default build targets baseline x86-64 (SSE2), and
//! the hot loops are compiled again for AVX2 + FMA and for AVX-512, the widest the CPU has
//! being chosen when the process first asks. The `gemm` crate (ours and burn-flex's matrix
//! products) makes the same choice for its micro-kernels, its `x86-v4` feature being always on
//! here (see `Cargo.toml`).

/// A loop to run compiled for the widest vectors the CPU has, through [`run_wide`]: AVX-512 (F,
/// BW, DQ, VL), else AVX2 and FMA, else the baseline (the compiler vectorizes the loops 4 wide
/// with SSE2). Mark `run` `#[inline(always)]`, and the functions it calls that hold loops: only
/// code inlined into the wide copies is compiled wide.
///
/// A struct rather than a closure, because a closure cannot be marked `#[inline(always)]`, and
/// one of more than a few lines stays out of line, compiled once for the baseline, the wide
/// copies merely calling it. Measured with `objdump -d` of the release binary (2026-12-04): 21 of
/// the 24 AVX-512 copies of an earlier closure-taking `wide` held no ymm/zmm instruction (the
/// Winograd transforms, im2col, BatchNorm's sums, the attention softmax); the image loader's
/// resize, passed as a closure from another crate, ran as SSE2 code (`perf annotate`).
///
/// The results do not depend on which copy runs: the compiler does not reorder floating-point
/// sums or contract multiplications and additions on its own, so only explicit `mul_add`s use
/// FMA, and those round the same on every path.
pub trait WideKernel {
    /// What the loop returns.
    type Output;
    /// The loop.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for the widest instruction set of this CPU ([`isa`]).
#[inline(always)]
pub fn run_wide<K: WideKernel>(kernel: K) -> K::Output {
    run_as(isa(), kernel)
}

/// Runs `kernel` compiled for `isa`, which must be [`isa`] or narrower.
#[inline(always)]
fn run_as<K: WideKernel>(isa: Isa, kernel: K) -> K::Output {
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
        match isa {
            // SAFETY: callers pass `isa()` or narrower, and `isa` saw these features in the CPU.
            Isa::Avx512 => return unsafe { avx512(kernel) },
            // SAFETY: as above (a CPU with AVX-512 has AVX2 and FMA).
            Isa::Avx2 => return unsafe { avx2(kernel) },
            Isa::Baseline => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
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

    /// `Σ (1.5 x + 0.25)`, the kind of loop the kernels run.
    struct AffineSum<'a>(&'a [f32]);

    impl WideKernel for AffineSum<'_> {
        type Output = f32;

        #[inline(always)]
        fn run(self) -> f32 {
            self.0.iter().map(|v| v * 1.5 + 0.25).sum()
        }
    }

    #[test]
    fn every_path_sums_alike() {
        // The same loop on every instruction set this CPU has: bit-identical (no reassociation).
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32).sin()).collect();
        let plain: f32 = x.iter().map(|v| v * 1.5 + 0.25).sum();
        let available = match isa() {
            Isa::Avx512 => &[Isa::Avx512, Isa::Avx2, Isa::Baseline][..],
            Isa::Avx2 => &[Isa::Avx2, Isa::Baseline][..],
            Isa::Baseline => &[Isa::Baseline][..],
        };
        for &path in available {
            let sum = run_as(path, AffineSum(&x));
            assert_eq!(plain.to_bits(), sum.to_bits(), "{}", path.name());
        }
        assert_eq!(run_wide(AffineSum(&x)).to_bits(), plain.to_bits());
    }

    #[test]
    fn detects_the_instruction_set_ci_expects() {
        // CI runs these tests under emulated CPUs (.ci/run) and names the set each one has, so
        // a run that silently took another path fails here.
        if let Ok(want) = std::env::var("SELFSUP_EXPECT_ISA") {
            assert_eq!(isa().name(), want);
        }
    }
}
