//! MAE's reconstruction loss and its normalized-pixel target, as pure functions over tensors.

use burn::tensor::Tensor;

/// Each patch of `target` (`[N, L, P]`) standardised over its own `P` values:
/// `(t - mean) / sqrt(var + eps)`, with the unbiased variance `var = Σ (t - mean)² / (P - 1)`
/// as the reference's `target.var(dim=-1)` (checked against it in the golden tests,
/// `crates/selfsup-cli/tests/golden.rs`).
pub fn normalize_patches(target: Tensor<3>, eps: f64) -> Tensor<3> {
    let (var, mean) = target.clone().var_mean(2);
    (target - mean) / (var + eps).sqrt()
}

/// Mean squared error over the masked patches only:
/// `L = Σ_{n,l} m_{nl} · mean_p (pred_{nlp} - target_{nlp})² / Σ_{n,l} m_{nl}`,
/// for `pred` and `target` `[N, L, P]` and `mask` `[N, L]` (1 = hidden from the encoder).
/// Visible patches contribute nothing, whatever their prediction.
pub fn masked_reconstruction_loss(
    pred: Tensor<3>,
    target: Tensor<3>,
    mask: Tensor<2>,
) -> Tensor<1> {
    let hidden = mask.clone().sum();
    let errors = masked_errors(pred, target, mask);
    let hidden = hidden.cast(errors.dtype());
    errors.sum() / hidden.clamp_min(1.0)
}

/// Each image's summed error over its masked patches, `[N, 1]`:
/// `e_n = Σ_l m_{nl} · mean_p (pred_{nlp} - target_{nlp})²`. Summed over the images and
/// divided by `Σ m` it is [`masked_reconstruction_loss`]; data-parallel steps sum it over the
/// images of every device. The mask is taken in `pred`'s type.
pub fn masked_errors(pred: Tensor<3>, target: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
    let [n, l, _] = pred.dims();
    let per_patch = (pred - target).powi_scalar(2).mean_dim(2).reshape([n, l]);
    let mask = mask.cast(per_patch.dtype());
    (per_patch * mask).sum_dim(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn loss_matches_hand_computed_values() {
        let dev = Device::flex();
        // Two images, three patches of two values.
        let pred = Tensor::<3>::from_floats(
            [
                [[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]],
                [[0.0, 1.0], [2.0, 2.0], [1.0, 1.0]],
            ],
            &dev,
        );
        let target = Tensor::<3>::zeros([2, 3, 2], &dev);
        let mask = Tensor::<2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], &dev);
        // Masked patch errors: (1 + 4) / 2 = 2.5, (9 + 1) / 2 = 5, (4 + 4) / 2 = 4; mean 11.5 / 3.
        let got = values(masked_reconstruction_loss(pred, target, mask))[0];
        assert!((got - 11.5 / 3.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn per_image_errors_match_hand_computed_values() {
        let dev = Device::flex();
        let pred = Tensor::<3>::from_floats(
            [
                [[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]],
                [[0.0, 1.0], [2.0, 2.0], [1.0, 1.0]],
            ],
            &dev,
        );
        let target = Tensor::<3>::zeros([2, 3, 2], &dev);
        let mask = Tensor::<2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], &dev);
        // Image 0: 2.5 + 5 = 7.5; image 1: 4.
        let got = values(masked_errors(pred, target, mask));
        assert_eq!(got, [7.5, 4.0]);
    }

    #[test]
    fn visible_patches_do_not_count() {
        let dev = Device::flex();
        let pred = Tensor::<3>::random([2, 4, 3], Distribution::Default, &dev);
        let target = Tensor::<3>::random([2, 4, 3], Distribution::Default, &dev);
        let mask = Tensor::<2>::from_floats([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]], &dev);
        let base = values(masked_reconstruction_loss(
            pred.clone(),
            target.clone(),
            mask.clone(),
        ))[0];
        // Change every visible patch's prediction wildly: the loss stays.
        let visible = (mask.clone().neg() + 1.0).reshape([2, 4, 1]);
        let wild = pred + visible * 1000.0;
        let after = values(masked_reconstruction_loss(wild, target, mask))[0];
        assert!((after - base).abs() < 1e-5, "{after} vs {base}");
    }

    #[test]
    fn normalized_target_has_zero_mean_and_unit_variance_per_patch() {
        let dev = Device::flex();
        let t = Tensor::<3>::random([3, 5, 48], Distribution::Normal(2.0, 3.0), &dev);
        let z = normalize_patches(t, 1e-6);
        let (var, mean) = z.var_mean(2);
        for m in values(mean) {
            assert!(m.abs() < 1e-5, "mean {m}");
        }
        for v in values(var) {
            assert!((v - 1.0).abs() < 1e-4, "variance {v}");
        }
        // By hand: [1, 3, 5] -> mean 3, unbiased variance (4 + 0 + 4) / 2 = 4 -> [-1, 0, 1].
        let small = Tensor::<3>::from_floats([[[1.0, 3.0, 5.0]]], &dev);
        let got = values(normalize_patches(small, 0.0));
        assert_eq!(got, [-1.0, 0.0, 1.0]);
    }
}
