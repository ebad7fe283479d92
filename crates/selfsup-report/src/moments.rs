//! The mean and covariance of a set of feature rows: what PCA pictures and the Frechet
//! distance of generated images both start from.

use nalgebra::{DMatrix, DVector};
use selfsup_core::{Error, Result};

/// Rows of a feature matrix, centred, with their mean and covariance.
#[derive(Clone, Debug)]
pub struct Moments {
    /// The mean row.
    pub mean: DVector<f64>,
    /// The rows minus the mean, `n x dim`.
    pub centred: DMatrix<f64>,
    /// The covariance, divided by `n - 1`.
    pub cov: DMatrix<f64>,
}

/// The moments of `n` rows of width `dim` (row-major `data`); `what` names the use in the
/// error when there are fewer than 2 rows, the sizes disagree, or a value is not finite.
pub fn moments(data: &[f32], n: usize, dim: usize, what: &str) -> Result<Moments> {
    if n < 2 || dim == 0 || data.len() != n * dim {
        return Err(Error::Invalid(format!(
            "{what} needs at least 2 rows of a positive width; got {} values for {n} rows of width {dim}",
            data.len()
        )));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "{what} input holds NaN or infinite values"
        )));
    }
    let x = DMatrix::from_row_iterator(n, dim, data.iter().map(|&v| v as f64));
    let mean = x.row_mean();
    let mut centred = x;
    for mut row in centred.row_iter_mut() {
        row -= &mean;
    }
    let cov = centred.transpose() * &centred / (n as f64 - 1.0);
    Ok(Moments {
        mean: mean.transpose(),
        centred,
        cov,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_unbiased_covariance() {
        // Rows (0, 0), (2, 0), (1, 3): mean (1, 1); deviations (-1,-1), (1,-1), (0, 2);
        // cov = [[2, 0], [0, 6]] / 2.
        let m = moments(&[0.0, 0.0, 2.0, 0.0, 1.0, 3.0], 3, 2, "test").unwrap();
        assert_eq!(m.mean.as_slice(), &[1.0, 1.0]);
        assert_eq!(m.cov.as_slice(), &[1.0, 0.0, 0.0, 3.0]);
        assert_eq!(
            m.centred.row(2).iter().copied().collect::<Vec<_>>(),
            [0.0, 2.0]
        );
        let err = moments(&[1.0, 2.0], 1, 2, "the thing")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the thing"), "{err}");
        assert!(moments(&[1.0, f32::NAN, 0.0, 0.0], 2, 2, "t").is_err());
    }
}
