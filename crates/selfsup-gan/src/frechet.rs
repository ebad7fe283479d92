//! The Frechet distance between two sets of features, each summarised as a Gaussian: the
//! number FID reports, here in the feature space of one of our own encoders.

use nalgebra::{DMatrix, DVector};
use selfsup_core::Result;

/// The mean and covariance of a set of feature vectors.
#[derive(Clone, Debug)]
pub struct Gaussian {
    /// Mean feature.
    pub mean: DVector<f64>,
    /// Covariance (divided by `n - 1`).
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// Fits `n` rows of width `dim` (row-major `features`).
    pub fn fit(features: &[f32], n: usize, dim: usize) -> Result<Self> {
        let m = selfsup_report::moments(features, n, dim, "the Frechet distance")?;
        Ok(Self {
            mean: m.mean,
            cov: m.cov,
        })
    }

    /// The total variance (trace of the covariance): half the mean squared distance between
    /// two random members, so a set of near-identical images has almost none.
    pub fn spread(&self) -> f64 {
        self.cov.trace()
    }
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative
/// eigenvalues from rounding are taken as 0).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// `d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))`, the
/// squared 2-Wasserstein distance between the Gaussians (Dowson and Landau); FID is this
/// over Inception features. The middle square root is taken of a symmetric matrix, so no
/// complex parts appear.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let diff = &a.mean - &b.mean;
    let root_a = sqrt_psd(&a.cov);
    let inner = &root_a * &b.cov * &root_a;
    let cross = sqrt_psd(&inner).trace();
    (diff.dot(&diff) + a.cov.trace() + b.cov.trace() - 2.0 * cross).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_gives_mean_and_unbiased_covariance() {
        // Rows (0, 0), (2, 0), (1, 3): mean (1, 1); deviations (-1,-1), (1,-1), (0, 2).
        let g = Gaussian::fit(&[0.0, 0.0, 2.0, 0.0, 1.0, 3.0], 3, 2).unwrap();
        assert_eq!(g.mean.as_slice(), &[1.0, 1.0]);
        // cov = [[1+1+0, 1-1+0], [., 1+1+4]] / 2 = [[1, 0], [0, 3]].
        assert_eq!(g.cov.as_slice(), &[1.0, 0.0, 0.0, 3.0]);
        assert_eq!(g.spread(), 4.0);
    }

    #[test]
    fn one_dimensional_distance_is_means_and_deviations_apart() {
        // N(1, 4) against N(4, 1): (1 - 4)^2 + (2 - 1)^2 = 10.
        let a = Gaussian {
            mean: DVector::from_vec(vec![1.0]),
            cov: DMatrix::from_vec(1, 1, vec![4.0]),
        };
        let b = Gaussian {
            mean: DVector::from_vec(vec![4.0]),
            cov: DMatrix::from_vec(1, 1, vec![1.0]),
        };
        assert!((frechet_distance(&a, &b) - 10.0).abs() < 1e-9);
        assert!(frechet_distance(&a, &a).abs() < 1e-9);
    }

    #[test]
    fn diagonal_covariances_add_per_dimension() {
        // Dims: means (0, 0) vs (1, 2), variances (1, 9) vs (4, 1):
        // 1 + 4 + (1 - 2)^2 + (3 - 1)^2 = 10.
        let a = Gaussian {
            mean: DVector::from_vec(vec![0.0, 0.0]),
            cov: DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 9.0])),
        };
        let b = Gaussian {
            mean: DVector::from_vec(vec![1.0, 2.0]),
            cov: DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 1.0])),
        };
        assert!((frechet_distance(&a, &b) - 10.0).abs() < 1e-9);
        // Symmetric.
        assert!((frechet_distance(&b, &a) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn correlated_covariances_match_the_closed_form() {
        // S_a = I, S_b = [[2, 1], [1, 2]] (eigenvalues 3 and 1), equal means:
        // tr(S_a) + tr(S_b) - 2 tr(S_b^(1/2)) = 2 + 4 - 2 (sqrt 3 + 1).
        let a = Gaussian {
            mean: DVector::zeros(2),
            cov: DMatrix::identity(2, 2),
        };
        let b = Gaussian {
            mean: DVector::zeros(2),
            cov: DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]),
        };
        let want = 6.0 - 2.0 * (3f64.sqrt() + 1.0);
        assert!((frechet_distance(&a, &b) - want).abs() < 1e-9);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Gaussian::fit(&[1.0, 2.0], 1, 2).is_err());
        assert!(Gaussian::fit(&[1.0, f32::NAN, 0.0, 0.0], 2, 2).is_err());
    }
}
