//! Per-sample random masking (He et al., MAE): shuffle the patches of each image by sorting
//! uniform noise, keep the first `L (1 - ratio)`; sorting the shuffle again gives the order
//! that puts them back.

use burn::tensor::{Device, Distribution, Int, Tensor};

/// Which patches each image keeps, and how to put the sequence back in order.
#[derive(Clone, Debug)]
pub struct Masking {
    /// Indices of the kept patches, `[N, keep]`, in shuffled order.
    pub keep: Tensor<2, Int>,
    /// For every patch position, its place in the shuffled sequence, `[N, L]`: gathering the
    /// shuffled sequence (kept tokens then mask tokens) by it restores patch order.
    pub restore: Tensor<2, Int>,
    /// 1 where a patch is hidden, 0 where the encoder sees it, `[N, L]`, in patch order.
    pub mask: Tensor<2>,
}

/// Patches kept out of `patches` at mask ratio `ratio`: `floor(L (1 - ratio))`, at least one.
pub fn kept(patches: usize, ratio: f64) -> usize {
    ((patches as f64 * (1.0 - ratio)).floor() as usize).clamp(1, patches.max(1))
}

/// Draws a masking of `n` images of `patches` patches at mask ratio `ratio` (in `[0, 1)`).
pub fn random_masking(n: usize, patches: usize, ratio: f64, device: &Device) -> Masking {
    let noise = Tensor::<2>::random([n, patches], Distribution::Default, device);
    masking_from_noise(noise, ratio)
}

/// A masking drawn from `(seed, step)` alone (the `STREAM_OBJECTIVE` stream of
/// `selfsup_core::seed`), so a training run's masks do not depend on what else draws from the
/// device's generator, and a resumed run draws the masks it would have drawn.
pub fn seeded_masking(
    n: usize,
    patches: usize,
    ratio: f64,
    seed: u64,
    step: u64,
    device: &Device,
) -> Masking {
    masking_from_noise(seeded_noise(n, patches, seed, step, device), ratio)
}

/// The uniform noise `[n, patches]` that [`seeded_masking`] sorts: drawn from `(seed, step)`
/// for the whole batch, so that a batch split over devices masks each image as one device
/// would.
pub fn seeded_noise(n: usize, patches: usize, seed: u64, step: u64, device: &Device) -> Tensor<2> {
    use rand::Rng;
    let mut rng = selfsup_core::seed::rng(seed, selfsup_core::seed::STREAM_OBJECTIVE, step, 0);
    let noise: Vec<f32> = (0..n * patches).map(|_| rng.random::<f32>()).collect();
    Tensor::from_data(burn::tensor::TensorData::new(noise, [n, patches]), device)
}

/// The masking that keeps, in each row, the patches with the smallest `noise` (`[N, L]`).
pub fn masking_from_noise(noise: Tensor<2>, ratio: f64) -> Masking {
    let [n, patches] = noise.dims();
    let device = noise.device();
    let keep_count = kept(patches, ratio);
    let shuffle = noise.argsort(1);
    let restore = shuffle.clone().argsort(1);
    let keep = shuffle.slice([0..n, 0..keep_count]);
    // In shuffled order the first `keep_count` are visible; back in patch order by `restore`.
    let shuffled = Tensor::<2>::cat(
        vec![
            Tensor::zeros([n, keep_count], &device),
            Tensor::ones([n, patches - keep_count], &device),
        ],
        1,
    );
    let mask = shuffled.gather(1, restore.clone());
    Masking {
        keep,
        restore,
        mask,
    }
}

/// The rows of `tokens` (`[N, L, D]`) at `indices` (`[N, K]`): `[N, K, D]`.
///
/// A `select` of whole rows of the `[N L, D]` matrix rather than an element-wise `gather` by an
/// index expanded to `[N, K, D]`: burn's flex backend runs the gather's backward pass as a
/// scatter that reads one index per value, on the calling thread (1.4 % of the MAE step's perf
/// samples, 2 threads); the select's backward adds whole rows. The values are the same.
pub fn gather_tokens(tokens: Tensor<3>, indices: Tensor<2, Int>) -> Tensor<3> {
    let [n, k] = indices.dims();
    let [_, l, d] = tokens.dims();
    let first_rows = Tensor::<1, Int>::arange(0..n as i64, &indices.device())
        .mul_scalar(l as i64)
        .cast(indices.dtype())
        .reshape([n, 1]);
    let rows = (indices + first_rows).reshape([n * k]);
    tokens
        .reshape([n * l, d])
        .select(0, rows)
        .reshape([n, k, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(t: Tensor<2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn each_image_keeps_exactly_its_share() {
        let dev = Device::flex();
        for (patches, ratio, want) in [(64, 0.75, 16), (49, 0.75, 12), (10, 0.0, 10), (4, 0.99, 1)]
        {
            assert_eq!(kept(patches, ratio), want);
            let m = random_masking(5, patches, ratio, &dev);
            assert_eq!(m.keep.dims(), [5, want]);
            let mask: Vec<f32> = m.mask.into_data().try_to_vec().unwrap();
            for row in mask.chunks(patches) {
                assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), want);
                assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), patches - want);
            }
            // The kept indices are distinct, and exactly the unmasked positions.
            let keep = ints(m.keep);
            for (row, mrow) in keep.chunks(want).zip(mask.chunks(patches)) {
                let mut sorted = row.to_vec();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), want);
                assert!(row.iter().all(|&i| mrow[i as usize] == 0.0));
            }
        }
    }

    #[test]
    fn restoring_puts_the_sequence_back_in_order() {
        let dev = Device::flex();
        let noise = Tensor::<2>::from_floats([[0.3, 0.1, 0.9, 0.5], [0.2, 0.8, 0.4, 0.6]], &dev);
        let m = masking_from_noise(noise, 0.5);
        // Row 0 keeps patches 1 and 0 (smallest noise first); row 1 keeps 0 and 2.
        assert_eq!(ints(m.keep.clone()), [1, 0, 0, 2]);
        let mask: Vec<f32> = m.mask.clone().into_data().try_to_vec().unwrap();
        assert_eq!(mask, [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        // Tokens equal to their patch index: shuffle them, then restore.
        let tokens = Tensor::<1, Int>::arange(0..4, &dev)
            .float()
            .reshape([1, 4, 1])
            .expand([2, 4, 3]);
        let shuffle = m.restore.clone().argsort(1);
        let shuffled = gather_tokens(tokens.clone(), shuffle);
        let back = gather_tokens(shuffled, m.restore);
        assert_eq!(
            back.into_data().try_to_vec::<f32>().unwrap(),
            tokens.into_data().try_to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn seeded_masks_depend_on_seed_and_step_only() {
        let dev = Device::flex();
        let mask = |seed, step| {
            seeded_masking(4, 16, 0.75, seed, step, &dev)
                .mask
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        // Draws from the device's generator in between change nothing.
        let a = mask(7, 3);
        let _ = random_masking(4, 16, 0.75, &dev);
        assert_eq!(a, mask(7, 3));
        assert_ne!(a, mask(7, 4));
        assert_ne!(a, mask(8, 3));
        // Each row hides 12 of 16 patches.
        for row in a.chunks(16) {
            assert_eq!(row.iter().sum::<f32>(), 12.0);
        }
    }
}
