//! Disjoint mutable access to one buffer from several rayon tasks.

use rayon::prelude::*;
use std::marker::PhantomData;

/// A mutable slice that parallel tasks write to at disjoint ranges.
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: callers of `slice` promise that concurrent ranges do not overlap.
unsafe impl Send for SharedMut<'_> {}
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub fn new(data: &'a mut [f32]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// No other live slice from this buffer may overlap `start..start + len`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(start + len <= self.len, "SharedMut: range out of bounds");
        // SAFETY: in bounds (asserted); disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// The element-wise sum of per-task accumulators of `len` elements (zeros when there are none),
/// `((p0 + p1) + p2) + ...` for every element, split among the threads: on the calling thread
/// alone it held the workers up (0.3 % of the DINO ResNet-18 step's perf samples).
pub(crate) fn sum_partials(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    const TASK: usize = 1 << 14;
    let mut parts = partials.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0.0; len]);
    let rest: Vec<Vec<f32>> = parts.collect();
    if rest.is_empty() {
        return sum;
    }
    sum.par_chunks_mut(TASK).enumerate().for_each(|(i, s)| {
        for p in &rest {
            for (s, v) in s.iter_mut().zip(&p[i * TASK..]) {
                *s += v;
            }
        }
    });
    sum
}

/// A vector of `n` values that `fill` writes, without the zero fill `vec![0.0; n]` pays first.
/// On the ConvNet-32 step at 28 px that fill was 3-4 % of the samples (perf, `memset` under the
/// allocator, mostly on the 26 MB maps of the first layer: a reused block is not known to be
/// zero, so the allocator clears it).
///
/// # Safety
/// `fill` writes every element of the slice it is given before reading that element.
pub(crate) unsafe fn written_by(n: usize, fill: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    // SAFETY: the capacity is `n` elements; the caller's promise means no element is read
    // before it is written, so the uninitialized memory is never observed.
    let s = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr(), n) };
    fill(s);
    // SAFETY: every element was written (the caller's promise); if `fill` panics the vector is
    // dropped with length 0.
    unsafe { v.set_len(n) };
    v
}
