//! The VICReg loss (Bardes, Ponce and LeCun, ICLR 2022) as pure functions over two batches of
//! embeddings `[n, d]`, one per view.

use burn::tensor::Tensor;

/// Invariance: the mean squared difference of the two views' embeddings,
/// `s(Z, Z') = 1/(n d) sum_i ||z_i - z'_i||^2` (the authors' `F.mse_loss`).
pub fn invariance(z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
    (z1 - z2).powf_scalar(2.0).mean()
}

/// Per-dimension variance over the batch (unbiased, divided by `n - 1`) and the centred
/// embeddings.
fn centred_variance(z: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let n = z.dims()[0];
    let centred = z.clone() - z.mean_dim(0);
    let var = centred.clone().powf_scalar(2.0).sum_dim(0) / (n as f64 - 1.0);
    (centred, var)
}

/// Variance: a hinge keeping every dimension's standard deviation over the batch at 1 or
/// more, `v(Z) = 1/d sum_j max(0, 1 - sqrt(Var(z^j) + eps))`. What stops the embeddings
/// collapsing to a point.
pub fn variance(z: Tensor<2>, eps: f64) -> Tensor<1> {
    let (_, var) = centred_variance(z);
    let std = (var + eps).sqrt();
    (std.neg() + 1.0).clamp_min(0.0).mean()
}

/// Covariance: the squared off-diagonal entries of the embeddings' covariance matrix
/// `C(Z) = 1/(n-1) sum_i (z_i - mean)(z_i - mean)^T`, summed and divided by `d`:
/// `c(Z) = 1/d sum_{i != j} C(Z)_ij^2`. Decorrelates the dimensions, so they carry different
/// information.
pub fn covariance(z: Tensor<2>) -> Tensor<1> {
    let [n, d] = z.dims();
    let (centred, var) = centred_variance(z);
    let cov = centred.clone().transpose().matmul(centred) / (n as f64 - 1.0);
    // The diagonal of C is the variance: all squares minus the diagonal's.
    let off = cov.powf_scalar(2.0).sum() - var.powf_scalar(2.0).sum();
    off / d as f64
}

/// The three terms' weights and the variance's epsilon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Invariance weight (lambda, 25 in the paper).
    pub invariance: f64,
    /// Variance weight (mu, 25).
    pub variance: f64,
    /// Covariance weight (nu, 1).
    pub covariance: f64,
    /// Added to the variance under the square root (1e-4).
    pub eps: f64,
}

/// The VICReg loss and its three terms (for the log).
pub struct VicRegTerms {
    /// `lambda s + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z'))`.
    pub loss: Tensor<1>,
    /// `s(Z, Z')`.
    pub invariance: Tensor<1>,
    /// `(v(Z) + v(Z')) / 2`.
    pub variance: Tensor<1>,
    /// `c(Z) + c(Z')`.
    pub covariance: Tensor<1>,
}

/// VICReg over the embeddings of two views of the same `n` images:
/// `L = lambda s(Z, Z') + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z'))`. The variance term is the
/// two branches' mean, as in the authors' code (the paper writes the sum), so the paper's
/// weights 25 / 25 / 1 give the authors' loss.
pub fn vicreg_loss(z1: Tensor<2>, z2: Tensor<2>, w: &Weights) -> VicRegTerms {
    let inv = invariance(z1.clone(), z2.clone());
    let var = (variance(z1.clone(), w.eps) + variance(z2.clone(), w.eps)) / 2.0;
    let cov = covariance(z1) + covariance(z2);
    let loss = inv.clone() * w.invariance + var.clone() * w.variance + cov.clone() * w.covariance;
    VicRegTerms {
        loss,
        invariance: inv,
        variance: var,
        covariance: cov,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    fn value(x: Tensor<1>) -> f64 {
        x.into_data().try_to_vec::<f32>().unwrap()[0] as f64
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    // Z = [[1, 0], [-1, 2]]: mean (0, 1), centred [[1, -1], [-1, 1]], variances (unbiased)
    // (2, 2), covariance [[2, -2], [-2, 2]].
    const Z: [[f32; 2]; 2] = [[1.0, 0.0], [-1.0, 2.0]];

    #[test]
    fn invariance_is_the_mean_squared_difference() {
        // (1 + 0 + 1 + 4) / 4.
        close(value(invariance(t(&Z), t(&[[0.0; 2]; 2]))), 1.5);
        close(value(invariance(t(&Z), t(&Z))), 0.0);
    }

    #[test]
    fn variance_hinges_at_one_standard_deviation() {
        // Standard deviations sqrt(2) > 1: no penalty.
        close(value(variance(t(&Z), 0.0)), 0.0);
        // [[0.5, 0], [0, 0]]: variances (0.125, 0), std (0.353553, 0):
        // ((1 - 0.353553) + (1 - 0)) / 2.
        close(
            value(variance(t(&[[0.5, 0.0], [0.0, 0.0]]), 0.0)),
            0.823_223_3,
        );
        // A collapsed batch with eps 1e-4: std 0.01 in both dimensions.
        close(value(variance(t(&[[3.0, 3.0], [3.0, 3.0]]), 1e-4)), 0.99);
    }

    #[test]
    fn covariance_sums_the_squared_off_diagonal() {
        // Off-diagonal (-2, -2): (4 + 4) / d = 8 / 2.
        close(value(covariance(t(&Z))), 4.0);
        // Uncorrelated dimensions: [[1, 1], [-1, 1], [1, -1], [-1, -1]].
        let u = t(&[[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]);
        close(value(covariance(u)), 0.0);
    }

    #[test]
    fn the_loss_weighs_the_three_terms() {
        let w = Weights {
            invariance: 25.0,
            variance: 25.0,
            covariance: 1.0,
            eps: 1e-4,
        };
        // Against a collapsed (all-zero) second view: s = 1.5; v(Z) = 0, v(0) = 0.99, so the
        // variance term is 0.495; c(Z) = 4, c(0) = 0. 25 * 1.5 + 25 * 0.495 + 4.
        let r = vicreg_loss(t(&Z), t(&[[0.0; 2]; 2]), &w);
        close(value(r.invariance), 1.5);
        close(value(r.variance), 0.495);
        close(value(r.covariance), 4.0);
        close(value(r.loss), 53.875);
    }
}
