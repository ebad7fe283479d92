//! Single-precision matrix product through the `gemm` crate (the one burn's flex backend uses),
//! with strides so transposed operands need no copy.

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `a` is `m x k`, `b` is `k x n`, `dst` is
/// row-major `m x n`. With `Parallelism::Rayon`, large products run on all rayon threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: View<'_>,
    b: View<'_>,
    parallelism: gemm::Parallelism,
) {
    sgemm_strided(m, n, k, dst, n, accumulate, a, b, parallelism);
}

/// [`sgemm`] into an `m x n` block whose rows lie `dst_rs` apart in `dst` (a column block of
/// a wider matrix, for example).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: View<'_>,
    b: View<'_>,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n,
        "gemm: destination too small"
    );
    assert!(a.fits(m, k) && b.fits(k, n), "gemm: operand too small");
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match parallelism {
        gemm::Parallelism::Rayon(_) if m * n * k < 1 << 18 => gemm::Parallelism::None,
        p => p,
    };
    // SAFETY: the asserts above keep every index the strides reach inside the slices, and `dst`
    // is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: View, b: View) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| a.data[i * a.rs + l * a.cs] * b.data[l * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let (m, n, k) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let av = View::rows(&a, k);
        let bv = View::transposed(&bt, k);
        let want = naive(m, n, k, av, bv);
        let mut got = vec![1.0; m * n];
        sgemm(m, n, k, &mut got, false, av, bv, gemm::Parallelism::None);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        sgemm(m, n, k, &mut got, true, av, bv, gemm::Parallelism::Rayon(0));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - 2.0 * w).abs() < 1e-5);
        }
    }
}
