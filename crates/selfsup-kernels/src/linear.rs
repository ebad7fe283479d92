//! A linear layer, `y = x · W + b`, forward and backward, as GEMMs written straight into their
//! outputs.
//!
//! burn 0.22's flex backend runs `Linear` as a matrix product and a broadcast add, recorded as
//! two operations. Each product's output comes from `FlexTensor::empty`, which zero-fills a
//! byte vector and then copies it into a 64-byte-aligned allocation (`Bytes::from_bytes_vec`):
//! two passes over every output on the calling thread while the rayon workers wait, and fresh
//! pages for the zero fill. On the MAE step (ViT 192 x 6, decoder 128 x 2, batch 128, 2
//! threads of a Zen 4) that allocation was 8.7 % of all perf samples, half of what the calling
//! thread did alone; the bias gradient (burn's `sum_dim` over the rows) is another serial pass.
//!
//! The products here call the same `gemm` routine with the same operands and strides as
//! burn's (the input gradient through `Wᵀ`, the weight gradient through `xᵀ`, both as strided
//! views), the bias is added after the product and its gradient sums each column from 0 in row
//! order, as burn's reduction does: the values are burn's, bit for bit (tested).

use crate::gemm::{View, sgemm};
use crate::par::written_by;
use rayon::prelude::*;

/// Output values per rayon task of the bias passes.
const TASK_ELEMS: usize = 1 << 14;

/// Columns of the bias gradient per rayon task (whole 64-byte lines of a row).
const BIAS_COLUMNS: usize = 64;

/// The shape of a linear layer's product: `rows` inputs of `d_input` values, `d_output`
/// outputs each; the weight is burn's `[d_input, d_output]`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearGeometry {
    /// Input rows (every leading dimension folded together).
    pub rows: usize,
    /// Values per input row.
    pub d_input: usize,
    /// Values per output row.
    pub d_output: usize,
}

/// `y = x · W (+ b)`: `x` is `[rows, d_input]`, `weight` `[d_input, d_output]`, `bias`
/// `[d_output]`; returns `y` `[rows, d_output]`, row-major.
///
/// # Panics
/// If a slice is shorter than the geometry says.
pub fn linear_forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &LinearGeometry,
) -> Vec<f32> {
    let LinearGeometry {
        rows,
        d_input,
        d_output,
    } = *g;
    assert!(
        x.len() >= rows * d_input && weight.len() >= d_input * d_output,
        "linear: operands smaller than {g:?}"
    );
    // SAFETY: the product writes every element (with `accumulate` false it never reads `dst`;
    // with `d_input == 0` it fills zeros).
    let mut y = unsafe {
        written_by(rows * d_output, |dst| {
            sgemm(
                rows,
                d_output,
                d_input,
                dst,
                false,
                View::rows(x, d_input),
                View::rows(weight, d_output),
                gemm::Parallelism::Rayon(0),
            )
        })
    };
    if let Some(b) = bias {
        assert!(b.len() >= d_output, "linear: bias shorter than {d_output}");
        let b = &b[..d_output];
        let per = (TASK_ELEMS / d_output.max(1)).max(1) * d_output;
        if d_output > 0 {
            y.par_chunks_mut(per).for_each(|chunk| {
                for row in chunk.chunks_exact_mut(d_output) {
                    for (v, b) in row.iter_mut().zip(b) {
                        *v += b;
                    }
                }
            });
        }
    }
    y
}

/// The gradients of [`linear_forward`] from `dy` `[rows, d_output]`: `dx = dy · Wᵀ`
/// `[rows, d_input]`, `dW = xᵀ · dy` `[d_input, d_output]` and `db = Σ_rows dy` `[d_output]`,
/// each only when asked for.
///
/// # Panics
/// If a slice is shorter than the geometry says.
#[allow(clippy::type_complexity)]
pub fn linear_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &LinearGeometry,
    want: [bool; 3],
) -> (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>) {
    let LinearGeometry {
        rows,
        d_input,
        d_output,
    } = *g;
    assert!(
        dy.len() >= rows * d_output,
        "linear: gradient smaller than {g:?}"
    );
    let [want_dx, want_dw, want_db] = want;
    let product = |m: usize, n: usize, k: usize, a: View<'_>, b: View<'_>| {
        // SAFETY: as in `linear_forward`, the product writes every element.
        unsafe {
            written_by(m * n, |dst| {
                sgemm(m, n, k, dst, false, a, b, gemm::Parallelism::Rayon(0))
            })
        }
    };
    let dx = want_dx.then(|| {
        assert!(
            weight.len() >= d_input * d_output,
            "linear: weight smaller than {g:?}"
        );
        product(
            rows,
            d_input,
            d_output,
            View::rows(dy, d_output),
            View::transposed(weight, d_output),
        )
    });
    let dw = want_dw.then(|| {
        assert!(
            x.len() >= rows * d_input,
            "linear: input smaller than {g:?}"
        );
        product(
            d_input,
            d_output,
            rows,
            View::transposed(x, d_input),
            View::rows(dy, d_output),
        )
    });
    let db = want_db.then(|| column_sums(dy, rows, d_output));
    (dx, dw, db)
}

/// `Σ_r m[r][c]` for each column `c` of a row-major `rows x cols` matrix, every column summed
/// from 0 in row order (burn's order, so the bits match), columns split among the threads.
fn column_sums(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; cols];
    let add = |c0: usize, out: &mut [f32]| {
        for row in m[..rows * cols].chunks_exact(cols) {
            for (s, v) in out.iter_mut().zip(&row[c0..]) {
                *s += v;
            }
        }
    };
    if rows * cols < TASK_ELEMS || cols <= BIAS_COLUMNS {
        add(0, &mut sums);
    } else {
        sums.par_chunks_mut(BIAS_COLUMNS)
            .enumerate()
            .for_each(|(i, out)| add(i * BIAS_COLUMNS, out));
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: Option<&[f32]>, g: &LinearGeometry) -> Vec<f32> {
        let mut y = vec![0.0f64; g.rows * g.d_output];
        for r in 0..g.rows {
            for o in 0..g.d_output {
                let mut s = b.map_or(0.0, |b| b[o] as f64);
                for i in 0..g.d_input {
                    s += x[r * g.d_input + i] as f64 * w[i * g.d_output + o] as f64;
                }
                y[r * g.d_output + o] = s;
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| v / (1u32 << 24) as f32 - 0.5)
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{i}: {x} against {y}"
            );
        }
    }

    #[test]
    fn forward_and_gradients_match_their_definitions() {
        for (rows, d_input, d_output) in [(1, 1, 1), (7, 5, 3), (130, 33, 70), (300, 64, 65)] {
            let g = LinearGeometry {
                rows,
                d_input,
                d_output,
            };
            let (x, w, b) = (
                values(rows * d_input, 1),
                values(d_input * d_output, 2),
                values(d_output, 3),
            );
            close(
                &linear_forward(&x, &w, Some(&b), &g),
                &naive(&x, &w, Some(&b), &g),
            );
            close(&linear_forward(&x, &w, None, &g), &naive(&x, &w, None, &g));
            let dy = values(rows * d_output, 4);
            let (dx, dw, db) = linear_backward(&x, &w, &dy, &g, [true, true, true]);
            // dx = dy · Wᵀ is the linear map with weight Wᵀ; dW = xᵀ · dy likewise.
            let wt: Vec<f32> = (0..d_output * d_input)
                .map(|k| w[(k % d_input) * d_output + k / d_input])
                .collect();
            let gx = LinearGeometry {
                rows,
                d_input: d_output,
                d_output: d_input,
            };
            close(&dx.unwrap(), &naive(&dy, &wt, None, &gx));
            let xt: Vec<f32> = (0..d_input * rows)
                .map(|k| x[(k % rows) * d_input + k / rows])
                .collect();
            let gw = LinearGeometry {
                rows: d_input,
                d_input: rows,
                d_output,
            };
            close(&dw.unwrap(), &naive(&xt, &dy, None, &gw));
            let sums: Vec<f32> = (0..d_output)
                .map(|o| (0..rows).map(|r| dy[r * d_output + o]).sum())
                .collect();
            assert_eq!(db.unwrap(), sums, "bias gradient in row order");
            let (dx, dw, db) = linear_backward(&x, &w, &dy, &g, [false, true, false]);
            assert!(dx.is_none() && dw.is_some() && db.is_none());
        }
    }

    #[test]
    fn an_empty_input_gives_the_bias() {
        let g = LinearGeometry {
            rows: 2,
            d_input: 0,
            d_output: 3,
        };
        let y = linear_forward(&[], &[], Some(&[1.0, 2.0, 3.0]), &g);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
