//! Contrastive losses as pure functions over tensors.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

/// Rows of `x` divided by their L2 norm (at least `1e-12`, as PyTorch's `F.normalize`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x.div(norm)
}

/// NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020).
///
/// With `z = normalize(cat(z1, z2))` (`2N` rows), `s_ij = z_i . z_j / tau`, and `p(i)` the
/// other view of the same image (`i + N mod 2N`):
///
/// `L = 1/(2N) sum_i [ -s_{i,p(i)} + log sum_{j != i} exp(s_ij) ]`
///
/// Each row has one positive and `2N - 2` negatives. Returns a `[1]` tensor.
pub fn nt_xent(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = l2_normalize(Tensor::cat(vec![z1, z2], 0));
    let sim = z.clone().matmul(z.transpose()).div_scalar(temperature);
    let m = 2 * n;
    let mut diag = vec![false; m * m];
    let mut pos = vec![0f32; m * m];
    for i in 0..m {
        diag[i * m + i] = true;
        pos[i * m + (i + n) % m] = 1.0;
    }
    let diag: Tensor<2, burn::tensor::Bool> =
        Tensor::from_data(TensorData::new(diag, [m, m]), &device);
    let pos: Tensor<2> = Tensor::from_data(TensorData::new(pos, [m, m]), &device);
    // A large negative rather than -inf keeps the masked logits' gradients finite.
    let logits = sim.mask_fill(diag, -1e9);
    let logp = log_softmax(logits, 1);
    logp.mul(pos).sum().neg().div_scalar(m as f64)
}

/// CLIP's symmetric contrastive loss over a batch of `N` image-caption pairs (Radford et al.
/// 2021): with `u = normalize(images)`, `v = normalize(texts)` (`[N, D]` each, row `i` of both
/// from pair `i`) and `s = scale` (the learned inverse temperature), the logits are
/// `ℓ_ij = s u_i · v_j`, and
///
/// `L = ½ [ 1/N Σ_i -log softmax_j(ℓ_ij)[i]  +  1/N Σ_j -log softmax_i(ℓ_ij)[j] ]`
///
/// — cross-entropy picking each image's caption among the batch's captions, and each caption's
/// image among the batch's images. Swapping `images` and `texts` gives the same value.
/// `scale` is a `[1]` tensor (gradients flow into it). Returns a `[1]` tensor.
pub fn clip_loss(images: Tensor<2>, texts: Tensor<2>, scale: Tensor<1>) -> Tensor<1> {
    let [n, _] = images.dims();
    let logits = l2_normalize(images)
        .matmul(l2_normalize(texts).transpose())
        .mul(scale.reshape([1, 1]));
    let eye: Tensor<2> = Tensor::eye(n, &logits.device());
    let rows = log_softmax(logits.clone(), 1).mul(eye.clone()).sum();
    let cols = log_softmax(logits, 0).mul(eye).sum();
    (rows + cols).neg().div_scalar(2.0 * n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t(rows: &[&[f32]]) -> Tensor<2> {
        let d = rows[0].len();
        let v: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(v, [rows.len(), d]), &Device::flex())
    }

    fn value(x: Tensor<1>) -> f64 {
        x.into_scalar::<f64>()
    }

    /// Straightforward reference over plain numbers.
    fn reference(z1: &[Vec<f64>], z2: &[Vec<f64>], tau: f64) -> f64 {
        let mut z: Vec<Vec<f64>> = z1.iter().chain(z2).cloned().collect();
        for r in &mut z {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter_mut().for_each(|v| *v /= n);
        }
        let m = z.len();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / tau;
        let mut total = 0.0;
        for i in 0..m {
            let p = (i + m / 2) % m;
            let lse = (0..m)
                .filter(|&j| j != i)
                .map(|j| dot(&z[i], &z[j]).exp())
                .sum::<f64>()
                .ln();
            total += lse - dot(&z[i], &z[p]);
        }
        total / m as f64
    }

    #[test]
    fn hand_computed_orthogonal_case() {
        // Rows e1, e2, e1, e2 with tau = 1: each row sees its positive at 1 and two
        // negatives at 0, so L = -1 + ln(e + 2) = 0.551444...
        let z = t(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let l = value(nt_xent(z.clone(), z, 1.0));
        assert!(
            (l - (-1.0 + (std::f64::consts::E + 2.0).ln())).abs() < 1e-5,
            "{l}"
        );
    }

    #[test]
    fn matches_reference_on_random_values() {
        let z1 = vec![
            vec![0.3, -1.2, 0.5],
            vec![2.0, 0.1, -0.4],
            vec![-0.7, 0.9, 1.1],
        ];
        let z2 = vec![
            vec![0.2, -1.0, 0.9],
            vec![1.5, -0.3, 0.2],
            vec![0.1, 0.4, -2.0],
        ];
        let to = |z: &Vec<Vec<f64>>| {
            let rows: Vec<Vec<f32>> = z
                .iter()
                .map(|r| r.iter().map(|&v| v as f32).collect())
                .collect();
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            t(&refs)
        };
        for tau in [0.1, 0.5, 1.0] {
            let got = value(nt_xent(to(&z1), to(&z2), tau));
            let want = reference(&z1, &z2, tau);
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "tau {tau}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn scale_invariant_and_lower_for_aligned_views() {
        let a = t(&[&[1.0, 2.0], &[-3.0, 1.0]]);
        let a10 = a.clone().mul_scalar(10.0);
        let l1 = value(nt_xent(a.clone(), a.clone(), 0.5));
        let l2 = value(nt_xent(a10, a.clone(), 0.5));
        assert!((l1 - l2).abs() < 1e-5);
        let swapped = t(&[&[-3.0, 1.0], &[1.0, 2.0]]);
        assert!(value(nt_xent(a, swapped, 0.5)) > l1);
    }

    #[test]
    fn clip_loss_matches_hand_values_and_is_symmetric() {
        // Two pairs, unit vectors: u = [(1, 0), (0, 1)], v = [(1, 0), (0.6, 0.8)], s = 2.
        // Logits [[2, 1.2], [0, 1.6]].
        let u = t(&[&[3.0, 0.0], &[0.0, 0.5]]);
        let v = t(&[&[2.0, 0.0], &[0.6, 0.8]]);
        let s = Tensor::<1>::from_data(TensorData::new(vec![2.0f32], [1]), &Device::flex());
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let rows = (lse(2.0, 1.2) - 2.0) + (lse(0.0, 1.6) - 1.6);
        let cols = (lse(2.0, 0.0) - 2.0) + (lse(1.2, 1.6) - 1.6);
        let want = (rows + cols) / 4.0;
        let got = value(clip_loss(u.clone(), v.clone(), s.clone()));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let swapped = value(clip_loss(v, u, s));
        assert!((swapped - got).abs() < 1e-6, "{swapped} vs {got}");
    }
}
