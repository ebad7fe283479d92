//! Run-time choice of the instruction set for our element-wise loops.

/// Runs `body` compiled for AVX2 and FMA when the CPU has them. The default build targets
/// baseline x86-64, where the compiler vectorizes loops 4 wide (SSE); `gemm` makes the
/// same choice at run time for its kernels.
#[inline(always)]
pub(crate) fn wide<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `avx2` is compiled for.
            return unsafe { avx2(body) };
        }
    }
    body()
}
