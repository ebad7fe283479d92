//! DINO's loss, its centre, and the two numbers that show a collapse, as pure functions over
//! tensors.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};

/// The teacher's targets for one global view: `P_t = softmax((t - c) / τ_t)` row by row over
/// the `K` output dimensions, detached. Subtracting the centre `c` keeps any one dimension
/// from dominating; a low temperature `τ_t` (0.04 to 0.07) sharpens the rows, which keeps them
/// from going uniform. `teacher` is `[N, K]`, `center` `[K]`.
pub fn teacher_targets(teacher: Tensor<2>, center: Tensor<1>, temperature: f64) -> Tensor<2> {
    let k = center.dims()[0];
    softmax(
        (teacher - center.reshape([1, k])).div_scalar(temperature),
        1,
    )
    .detach()
}

/// DINO's loss: the cross-entropy between the teacher's targets `P_t^i` of each global view
/// `i` and the student's `log P_s^v = log_softmax(s_v / τ_s)` of every *other* view `v`,
/// averaged over the batch and over the pairs:
///
/// `L = 1/|pairs| Σ_i Σ_{v ≠ i} 1/N Σ_n -Σ_k P_t^i[n, k] log P_s^v[n, k]`
///
/// `student` holds the outputs `[N, K]` of all views, the global views first and in the order
/// of `targets` (`targets[i]` is the teacher's for view `i`); the local views follow. With
/// `G` targets and `V` views there are `G (V - 1)` pairs. Returns a `[1]` tensor.
///
/// # Panics
/// If there are no targets, more targets than views, or only one view.
pub fn dino_loss(
    student: &[Tensor<2>],
    targets: &[Tensor<2>],
    student_temperature: f64,
) -> Tensor<1> {
    let (g, v) = (targets.len(), student.len());
    assert!(
        g >= 1 && g <= v && v >= 2,
        "DINO loss: {g} teacher views and {v} student views (need 1 <= teacher <= student, 2+ views)"
    );
    let n = student[0].dims()[0];
    let log_p: Vec<Tensor<2>> = student
        .iter()
        .map(|s| log_softmax(s.clone().div_scalar(student_temperature), 1))
        .collect();
    // Σ over every view, then each target's own view taken back out: the same-view pair is
    // never counted.
    let all = log_p
        .iter()
        .skip(1)
        .fold(log_p[0].clone(), |acc, l| acc + l.clone());
    let total = targets
        .iter()
        .zip(&log_p)
        .map(|(t, own)| (t.clone() * (all.clone() - own.clone())).sum())
        .reduce(|a, b| a + b)
        .expect("at least one target");
    total.neg().div_scalar((n * g * (v - 1)) as f64)
}

/// The centre after one step: `c ← m c + (1 - m) mean(t)`, the mean over every row of every
/// global view's raw teacher output `[N, K]`. Detached.
pub fn updated_center(center: Tensor<1>, teacher: &[Tensor<2>], momentum: f64) -> Tensor<1> {
    let k = center.dims()[0];
    let batch_mean = Tensor::cat(teacher.to_vec(), 0)
        .detach()
        .mean_dim(0)
        .reshape([k]);
    center
        .detach()
        .mul_scalar(momentum)
        .add(batch_mean.mul_scalar(1.0 - momentum))
}

/// `p ln p`, with `0 ln 0 = 0`.
fn p_log_p(p: Tensor<2>) -> Tensor<2> {
    p.clone() * p.clamp_min(1e-30).log()
}

/// The mean over rows of each row's entropy `-Σ_k p_k ln p_k` (nats) of probabilities `[N, K]`.
/// `ln K` is a uniform row; 0 is one dimension taking everything.
pub fn mean_entropy(probs: Tensor<2>) -> f64 {
    let n = probs.dims()[0].max(1);
    p_log_p(probs.detach()).sum().neg().into_scalar::<f64>() / n as f64
}

/// The entropy `-Σ_k p̄_k ln p̄_k` (nats) of the mean row `p̄ = 1/N Σ_n p_n` of probabilities
/// `[N, K]`: how widely the batch spreads over the dimensions. Sharp rows on different
/// dimensions (healthy) give up to `ln min(N, K)`; every row on the same dimension (the
/// collapse centring should prevent) gives 0.
pub fn batch_entropy(probs: Tensor<2>) -> f64 {
    let k = probs.dims()[1];
    p_log_p(probs.detach().mean_dim(0).reshape([1, k]))
        .sum()
        .neg()
        .into_scalar::<f64>()
}

/// The mean over rows of `KL(p ‖ q) = Σ_k p_k (ln p_k - ln q_k)`, from probabilities `p` and
/// log-probabilities `log_q` (`[N, K]` each).
pub fn mean_kl(p: Tensor<2>, log_q: Tensor<2>) -> f64 {
    let n = p.dims()[0].max(1);
    let p = p.detach();
    (p_log_p(p.clone()) - p * log_q.detach())
        .sum()
        .into_scalar::<f64>()
        / n as f64
}

/// Averages the teacher's entropy and the teacher-student KL over an epoch and says when they
/// look like a collapse (the two failure modes of the paper's section 5.3: every output
/// uniform, or one dimension taking everything; in both the student matches the teacher and
/// the KL goes to zero).
#[derive(Clone, Debug, Default)]
pub struct CollapseMonitor {
    entropy: f64,
    batch_entropy: f64,
    kl: f64,
    count: usize,
    /// The previous epoch's mean teacher entropy.
    previous: Option<f64>,
}

/// One epoch's collapse figures.
#[derive(Clone, Debug, PartialEq)]
pub struct CollapseReport {
    /// Mean entropy of the teacher's targets, nats.
    pub teacher_entropy: f64,
    /// Mean entropy of the batch's mean target ([`batch_entropy`]), nats.
    pub batch_entropy: f64,
    /// Mean KL from the teacher's targets to the student's outputs, nats.
    pub kl: f64,
    /// What looks wrong, and what to try; `None` when nothing does.
    pub warning: Option<String>,
}

impl CollapseMonitor {
    /// KL below this (nats) means the student has nothing left to learn from the teacher.
    pub const KL_FLOOR: f64 = 1e-3;

    /// Adds one step's figures: [`mean_entropy`] and [`batch_entropy`] of the teacher's
    /// targets, [`mean_kl`] from them to the student.
    pub fn record(&mut self, teacher_entropy: f64, batch_entropy: f64, kl: f64) {
        self.entropy += teacher_entropy;
        self.batch_entropy += batch_entropy;
        self.kl += kl;
        self.count += 1;
    }

    /// The means since the last call, judged for `k` output dimensions, and a fresh start.
    pub fn finish(&mut self, k: usize) -> CollapseReport {
        let count = self.count.max(1) as f64;
        let (entropy, batch, kl) = (
            self.entropy / count,
            self.batch_entropy / count,
            self.kl / count,
        );
        let previous = self.previous;
        *self = Self {
            previous: Some(entropy),
            ..Self::default()
        };
        let uniform = (k.max(2) as f64).ln();
        let warning = if batch < std::f64::consts::LN_2 {
            Some(format!(
                "collapse: one output dimension takes everything (the batch's mean target has entropy {batch:.3} nats, less than two dimensions' worth; per image {entropy:.3}); lower dino.center_momentum (centre faster) or raise dino.teacher_temperature"
            ))
        } else if kl < Self::KL_FLOOR && entropy > 0.9 * uniform {
            Some(format!(
                "collapse: the teacher's outputs are nearly uniform (entropy {entropy:.3} of at most {uniform:.3} nats) and the student matches them (KL {kl:.2e}); lower dino.teacher_temperature or raise dino.center_momentum"
            ))
        } else if kl < Self::KL_FLOOR {
            Some(format!(
                "collapse: the student matches the teacher exactly (KL {kl:.2e} nats); the features have likely stopped learning"
            ))
        } else if entropy > 0.95 * uniform && previous.is_some_and(|p| entropy >= p) {
            Some(format!(
                "the teacher's outputs stay nearly uniform (entropy {entropy:.3} of at most {uniform:.3} nats, not falling since the last epoch): the run is heading for the uniform collapse; lower dino.teacher_temperature or dino.head.output_dim"
            ))
        } else {
            None
        };
        CollapseReport {
            teacher_entropy: entropy,
            batch_entropy: batch,
            kl,
            warning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(rows: &[&[f32]]) -> Tensor<2> {
        let d = rows[0].len();
        let v: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(v, [rows.len(), d]), &Device::flex())
    }

    fn v1(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn centring_and_sharpening_match_hand_values() {
        // Row [1, 2] minus centre [1, 0] is [0, 2]; at τ = 0.5 the logits are [0, 4]:
        // softmax = [1, e^4] / (1 + e^4).
        let p = teacher_targets(t(&[&[1.0, 2.0]]), v1(&[1.0, 0.0]), 0.5);
        let e4 = 4f64.exp();
        close(&values(p), &[1.0 / (1.0 + e4), e4 / (1.0 + e4)], 1e-6);
        // A lower temperature sharpens; a centre equal to the row makes it uniform.
        let sharp = values(teacher_targets(t(&[&[1.0, 2.0]]), v1(&[0.0, 0.0]), 0.04));
        assert!(sharp[1] > 0.999_999);
        let flat = values(teacher_targets(t(&[&[3.0, 7.0]]), v1(&[3.0, 7.0]), 0.04));
        close(&flat, &[0.5, 0.5], 1e-6);
    }

    #[test]
    fn loss_matches_hand_values_and_skips_same_view_pairs() {
        // Two views, one image, K = 2, τ_s = 1. Student logits: view 0 [0, 0] (log p = ln ½
        // each), view 1 [ln 3, 0] (p = [¾, ¼]). Targets: view 0 [1, 0], view 1 [0, 1].
        // Pairs (0 -> 1): -ln ¾; (1 -> 0): -ln ½. Mean over 2 pairs.
        let student = [t(&[&[0.0, 0.0]]), t(&[&[3f32.ln(), 0.0]])];
        let targets = [t(&[&[1.0, 0.0]]), t(&[&[0.0, 1.0]])];
        let got = dino_loss(&student, &targets, 1.0).into_scalar::<f64>();
        let want = (-(0.75f64.ln()) - 0.5f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");

        // (With the same-view pairs the mean would also hold -ln ½ and -ln ¼, over 4 pairs.)
        // Other logits, the value again by hand: each target meets only the other view.
        let student2 = [t(&[&[5.0, -5.0]]), t(&[&[3f32.ln(), 9.0]])];
        let moved = dino_loss(&student2, &targets, 1.0).into_scalar::<f64>();
        let want2 = {
            // Target 0 ([1, 0]) against view 1 [ln 3, 9]; target 1 ([0, 1]) against view 0 [5, -5].
            let lse1 = (3f64 + 9f64.exp()).ln();
            let lse0 = (5f64.exp() + (-5f64).exp()).ln();
            ((lse1 - 3f64.ln()) + (lse0 + 5.0)) / 2.0
        };
        assert!((moved - want2).abs() < 1e-5, "{moved} vs {want2}");
    }

    #[test]
    fn local_views_pair_with_both_global_targets() {
        // Three views (two global, one local), two images, τ_s = 0.1, against a reference
        // over plain numbers.
        let s = [
            t(&[&[0.1, 0.5, -0.2], &[0.3, 0.0, 0.2]]),
            t(&[&[0.4, -0.1, 0.0], &[0.2, 0.2, 0.9]]),
            t(&[&[-0.3, 0.6, 0.1], &[0.0, 0.1, 0.0]]),
        ];
        let tg = [
            t(&[&[0.2, 0.5, 0.3], &[0.6, 0.3, 0.1]]),
            t(&[&[0.1, 0.1, 0.8], &[0.3, 0.3, 0.4]]),
        ];
        let got = dino_loss(&s, &tg, 0.1).into_scalar::<f64>();
        let sv: Vec<Vec<f32>> = s.iter().map(|x| values(x.clone())).collect();
        let tv: Vec<Vec<f32>> = tg.iter().map(|x| values(x.clone())).collect();
        let log_p = |v: usize, n: usize| -> Vec<f64> {
            let row: Vec<f64> = (0..3).map(|k| sv[v][n * 3 + k] as f64 / 0.1).collect();
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            row.iter().map(|x| x - lse).collect()
        };
        let mut total = 0.0;
        for (i, target) in tv.iter().enumerate() {
            for v in (0..3).filter(|&v| v != i) {
                for n in 0..2 {
                    let lp = log_p(v, n);
                    total -= (0..3)
                        .map(|k| target[n * 3 + k] as f64 * lp[k])
                        .sum::<f64>()
                        / 2.0;
                }
            }
        }
        let want = total / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn centre_moves_by_its_momentum() {
        // Mean of the teacher rows [1, 2], [3, 4] (view 0) and [5, 6] (view 1): [3, 4].
        let c = updated_center(
            v1(&[1.0, 1.0]),
            &[t(&[&[1.0, 2.0], &[3.0, 4.0]]), t(&[&[5.0, 6.0]])],
            0.9,
        );
        close(&values(c), &[0.9 + 0.1 * 3.0, 0.9 + 0.1 * 4.0], 1e-6);
    }

    #[test]
    fn entropy_kl_and_the_collapse_warnings() {
        let uniform = t(&[&[0.25; 4], &[0.25; 4]]);
        assert!((mean_entropy(uniform.clone()) - 4f64.ln()).abs() < 1e-6);
        assert!(mean_entropy(t(&[&[1.0, 0.0, 0.0, 0.0]])).abs() < 1e-9);
        // KL([½, ½] ‖ [¾, ¼]) = ½ ln(⅔) + ½ ln 2.
        let kl = mean_kl(t(&[&[0.5, 0.5]]), t(&[&[0.75f32.ln(), 0.25f32.ln()]]));
        assert!((kl - (0.5 * (2.0f64 / 3.0).ln() + 0.5 * 2f64.ln())).abs() < 1e-6);

        // Two sharp rows on different dimensions spread the batch over two of them.
        let sharp = t(&[&[1.0, 0.0, 0.0, 0.0], &[0.0, 1.0, 0.0, 0.0]]);
        assert!((batch_entropy(sharp) - 2f64.ln()).abs() < 1e-6);
        assert!((batch_entropy(uniform) - 4f64.ln()).abs() < 1e-6);
        assert!(batch_entropy(t(&[&[0.0, 1.0], &[0.0, 1.0]])).abs() < 1e-9);

        let mut m = CollapseMonitor::default();
        m.record(4f64.ln(), 4f64.ln(), 1e-5);
        m.record(4f64.ln(), 4f64.ln(), 3e-5);
        let r = m.finish(4);
        assert!((r.kl - 2e-5).abs() < 1e-12);
        assert!(r.warning.unwrap().contains("uniform"));
        m.record(0.0, 0.0, 0.0);
        assert!(
            m.finish(4)
                .warning
                .unwrap()
                .contains("one output dimension")
        );
        m.record(1.0, 1.2, 0.5);
        assert_eq!(m.finish(4).warning, None);
        // High entropy that does not fall from one epoch to the next is a warning too.
        m.record(1.36, 1.38, 0.05);
        assert!(m.finish(4).warning.unwrap().contains("not falling"));
        m.record(1.3, 1.38, 0.05);
        assert_eq!(m.finish(4).warning, None, "falling");
        m.record(1.35, 1.38, 0.05);
        assert!(m.finish(4).warning.unwrap().contains("not falling"));
        // Sharp images all on one dimension: a collapse even while the student still learns.
        m.record(0.2, 0.1, 0.3);
        let r = m.finish(4);
        assert!((r.batch_entropy - 0.1).abs() < 1e-12);
        assert!(r.warning.unwrap().contains("one output dimension"));
    }
}
