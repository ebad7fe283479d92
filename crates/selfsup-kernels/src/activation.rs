//! Leaky ReLU, forward and backward, in one parallel pass each.
//!
//! burn writes `leaky_relu` as a comparison, a scaled copy and a `mask_where`, and records that
//! chain for autodiff: on the DCGAN discriminator's step (three LeakyReLU layers over 128 real
//! and 128 generated images, each pass twice a step) `mask_where` alone was 15.6 % of the
//! samples, all on the calling thread, with the GEMM threads idle meanwhile (perf, 2 threads,
//! 2026-12-05). These two passes give the same bits as burn's chain.

use crate::par::written_by;
use crate::simd::{WideKernel, run_wide};
use rayon::prelude::*;

/// Values per parallel task.
const TASK_ELEMS: usize = 1 << 14;

/// `y = x` where `x >= 0` (and where `x` is NaN), else `slope x`: burn's and PyTorch's leaky
/// ReLU.
pub fn leaky_relu_forward(x: &[f32], slope: f32) -> Vec<f32> {
    let fill = |y: &mut [f32]| {
        y.par_chunks_mut(TASK_ELEMS)
            .zip(x.par_chunks(TASK_ELEMS))
            .for_each(|(y, x)| run_wide(LeakyForward { y, x, slope }))
    };
    // SAFETY: every chunk's kernel writes each of its elements.
    unsafe { written_by(x.len(), fill) }
}

/// The input gradient of [`leaky_relu_forward`]: `slope dy` where `x < 0`, else `dy` (burn's
/// choice at `x = 0`, which its `mask_where` chain gives; PyTorch takes `slope` there).
pub fn leaky_relu_backward(x: &[f32], dy: &[f32], slope: f32) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "leaky_relu_backward: shapes differ");
    let fill = |dx: &mut [f32]| {
        dx.par_chunks_mut(TASK_ELEMS)
            .zip(x.par_chunks(TASK_ELEMS).zip(dy.par_chunks(TASK_ELEMS)))
            .for_each(|(dx, (x, dy))| run_wide(LeakyBackward { dx, x, dy, slope }))
    };
    // SAFETY: every chunk's kernel writes each of its elements.
    unsafe { written_by(x.len(), fill) }
}

/// [`leaky_relu_forward`] of one chunk.
struct LeakyForward<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
    slope: f32,
}

impl WideKernel for LeakyForward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let s = self.slope;
        for (y, &x) in self.y.iter_mut().zip(self.x) {
            *y = if x < 0.0 { x * s } else { x };
        }
    }
}

/// [`leaky_relu_backward`] of one chunk.
struct LeakyBackward<'a> {
    dx: &'a mut [f32],
    x: &'a [f32],
    dy: &'a [f32],
    slope: f32,
}

impl WideKernel for LeakyBackward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let s = self.slope;
        for ((dx, &x), &g) in self.dx.iter_mut().zip(self.x).zip(self.dy) {
            *dx = if x < 0.0 { g * s } else { g };
        }
    }
}
