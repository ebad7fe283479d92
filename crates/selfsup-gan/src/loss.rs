//! The adversarial losses, as pure functions of the discriminator's logits.
//!
//! `real` holds the logits `D(x)` of real images, `fake` those of generated ones `D(G(z))`;
//! `softplus(t) = ln(1 + e^t)`, so `softplus(-t) = -ln sigmoid(t)`.

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softplus};
use serde::{Deserialize, Serialize};

/// Which pair of losses the two networks minimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GanLoss {
    /// Goodfellow et al.'s cross-entropy, with the generator maximising `log D(G(z))` rather
    /// than minimising `log(1 - D(G(z)))` (strong gradients early on); DCGAN's loss.
    NonSaturating,
    /// The hinge loss (Lim and Ye; Miyato et al.'s SN-GAN): the discriminator stops pushing
    /// logits past a margin of 1.
    Hinge,
}

impl GanLoss {
    /// The discriminator's loss.
    pub fn discriminator(self, real: Tensor<1>, fake: Tensor<1>) -> Tensor<1> {
        match self {
            GanLoss::NonSaturating => non_saturating_d(real, fake),
            GanLoss::Hinge => hinge_d(real, fake),
        }
    }

    /// The generator's loss.
    pub fn generator(self, fake: Tensor<1>) -> Tensor<1> {
        match self {
            GanLoss::NonSaturating => non_saturating_g(fake),
            GanLoss::Hinge => hinge_g(fake),
        }
    }
}

/// `mean(softplus(-real)) + mean(softplus(fake))`: the binary cross-entropy of calling real
/// images real (`-ln sigmoid(D(x))`) and generated ones fake (`-ln(1 - sigmoid(D(G(z))))`).
pub fn non_saturating_d(real: Tensor<1>, fake: Tensor<1>) -> Tensor<1> {
    softplus(real.neg(), 1.0).mean() + softplus(fake, 1.0).mean()
}

/// `mean(softplus(-fake))`: `-ln sigmoid(D(G(z)))`, the generator wanting its images called
/// real.
pub fn non_saturating_g(fake: Tensor<1>) -> Tensor<1> {
    softplus(fake.neg(), 1.0).mean()
}

/// `mean(relu(1 - real)) + mean(relu(1 + fake))`.
pub fn hinge_d(real: Tensor<1>, fake: Tensor<1>) -> Tensor<1> {
    relu(real.neg() + 1.0).mean() + relu(fake + 1.0).mean()
}

/// `-mean(fake)`.
pub fn hinge_g(fake: Tensor<1>) -> Tensor<1> {
    fake.mean().neg()
}

/// How often the discriminator is right: the fraction of `real` logits above 0 and of `fake`
/// logits below 0.
pub fn discriminator_accuracy(real: Tensor<1>, fake: Tensor<1>) -> (f64, f64) {
    let frac = |t: Tensor<1>, above: bool| {
        let n = t.dims()[0].max(1) as f64;
        let hits = if above {
            t.greater_elem(0.0)
        } else {
            t.lower_elem(0.0)
        };
        hits.int().sum().into_scalar::<i64>() as f64 / n
    };
    (frac(real, true), frac(fake, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t(v: &[f32]) -> Tensor<1> {
        Tensor::from_floats(v, &Device::flex())
    }

    fn close(a: Tensor<1>, want: f64) {
        let got = a.into_scalar::<f64>();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn non_saturating_losses_match_hand_values() {
        // softplus(0) = ln 2; softplus(-2) = ln(1 + e^-2); softplus(1) = ln(1 + e).
        let sp = |x: f64| (1.0 + x.exp()).ln();
        // real logits (0, 2), fake logits (1, -1).
        let want_d = (sp(0.0) + sp(-2.0)) / 2.0 + (sp(1.0) + sp(-1.0)) / 2.0;
        close(non_saturating_d(t(&[0.0, 2.0]), t(&[1.0, -1.0])), want_d);
        close(
            non_saturating_g(t(&[1.0, -1.0])),
            (sp(-1.0) + sp(1.0)) / 2.0,
        );
        // A confident, right discriminator has a loss near 0 and the generator a large one.
        let d = non_saturating_d(t(&[20.0]), t(&[-20.0])).into_scalar::<f64>();
        assert!(d < 1e-6, "{d}");
        close(non_saturating_g(t(&[-20.0])), 20.0);
    }

    #[test]
    fn hinge_losses_match_hand_values() {
        // real (0.5, 2): relu(0.5) + relu(-1) = 0.5, mean 0.25;
        // fake (-0.5, 1): relu(0.5) + relu(2) = 2.5, mean 1.25.
        close(hinge_d(t(&[0.5, 2.0]), t(&[-0.5, 1.0])), 1.5);
        close(hinge_g(t(&[-0.5, 1.0])), -0.25);
        close(GanLoss::Hinge.discriminator(t(&[3.0]), t(&[-3.0])), 0.0);
    }

    #[test]
    fn accuracy_counts_the_right_side_of_zero() {
        let (r, f) = discriminator_accuracy(t(&[1.0, -1.0, 2.0, 0.5]), t(&[-1.0, 3.0]));
        assert_eq!((r, f), (0.75, 0.5));
    }
}
