//! Principal component analysis: project features onto their two directions of largest
//! variance, to draw them in a plane.

use crate::moments::{Moments, moments};
use selfsup_core::Result;

/// A 2-D projection and how much of the variance it keeps.
#[derive(Clone, Debug)]
pub struct Pca {
    /// `(x, y)` of each input row.
    pub points: Vec<(f64, f64)>,
    /// Fraction of the total variance along each of the two axes.
    pub explained: [f64; 2],
}

/// Projects the rows of `data` (`n` rows of width `dim`, row-major) onto the two leading
/// eigenvectors of their covariance matrix. Eigenvector signs are fixed so the largest
/// component of each is positive, so the picture does not flip between runs.
pub fn pca_2d(data: &[f32], n: usize, dim: usize) -> Result<Pca> {
    let Moments { centred, cov, .. } = moments(data, n, dim, "PCA")?;
    let eig = cov.symmetric_eigen();
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let axis = |k: usize| {
        let Some(&i) = order.get(k) else {
            return (nalgebra::DVector::zeros(dim), 0.0);
        };
        let mut v = eig.eigenvectors.column(i).into_owned();
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            v = -v;
        }
        let share = if total > 0.0 {
            eig.eigenvalues[i].max(0.0) / total
        } else {
            0.0
        };
        (v, share)
    };
    let (a, ea) = axis(0);
    let (b, eb) = axis(1);
    let pa = &centred * a;
    let pb = &centred * b;
    Ok(Pca {
        points: pa.iter().zip(pb.iter()).map(|(&x, &y)| (x, y)).collect(),
        explained: [ea, eb],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_main_axes() {
        // Points spread 10 along (1, 1, 0) / sqrt 2, 1 along (0, 0, 1), nothing else.
        let mut data = Vec::new();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        // Each t with u = +1 and u = -1, so the two directions are uncorrelated.
        for i in 0..50 {
            let t = ((i / 2) as f32 - 12.0) / 12.0 * 10.0;
            let u = if i % 2 == 0 { 1.0 } else { -1.0 };
            data.extend_from_slice(&[t * s + 3.0, t * s - 1.0, u + 7.0]);
        }
        let p = pca_2d(&data, 50, 3).unwrap();
        assert!(
            p.explained[0] > 0.9 && p.explained[1] > 0.01,
            "{:?}",
            p.explained
        );
        assert!((p.explained[0] + p.explained[1] - 1.0).abs() < 1e-9);
        // The first coordinate is t itself (up to sign, fixed positive here), the second u.
        for (i, &(x, y)) in p.points.iter().enumerate() {
            let t = ((i / 2) as f64 - 12.0) / 12.0 * 10.0;
            assert!((x - t).abs() < 1e-4, "{i}: {x} vs {t}");
            assert!((y.abs() - 1.0).abs() < 1e-4, "{i}: {y}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pca_2d(&[1.0, 2.0], 1, 2).is_err());
        assert!(pca_2d(&[1.0, f32::NAN, 0.0, 1.0], 2, 2).is_err());
        assert!(pca_2d(&[1.0, 2.0, 3.0], 2, 2).is_err());
    }
}
