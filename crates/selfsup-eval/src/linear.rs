//! Linear probe: a linear classifier trained on frozen, standardized features.
//!
//! The standard protocol of SimCLR, lightly and solo-learn, on features extracted once:
//! the features are standardized with the training split's mean and deviation, then a
//! single `Linear` layer is trained with AdamW and a cosine schedule on cross-entropy.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use selfsup_core::config::ensure;
use selfsup_core::schedule::LrSchedule;
use selfsup_core::seed::{self, STREAM_SHUFFLE};
use selfsup_core::{Error, OptimizerConfig, OptimizerKind, Result, ScheduleConfig, optim};
use serde::{Deserialize, Serialize};

/// Linear-probe settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LinearProbeConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Features per step.
    pub batch_size: usize,
    /// AdamW peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay of the weight matrix.
    pub weight_decay: f64,
    /// Seed of the feature order and the initial weights.
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

impl LinearProbeConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(self.epochs >= 1, "linear.epochs", || {
            "must be at least 1".into()
        })?;
        ensure(self.batch_size >= 1, "linear.batch_size", || {
            "must be at least 1".into()
        })?;
        ensure(self.lr.is_finite() && self.lr > 0.0, "linear.lr", || {
            format!("{} must be > 0", self.lr)
        })?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "linear.weight_decay",
            || format!("{} must be >= 0", self.weight_decay),
        )
    }
}

/// Accuracy of a classifier on a test split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1] (1 when there are at most 5 classes).
    pub top5: f64,
}

/// Top-1 and top-5 accuracy of `logits` `[N, C]` against `labels`.
pub fn topk_accuracy(logits: Tensor<2>, labels: &[usize]) -> Result<Accuracy> {
    let [n, c] = logits.dims();
    if n != labels.len() {
        return Err(Error::Invalid(format!(
            "{n} predictions for {} labels",
            labels.len()
        )));
    }
    if n == 0 {
        return Ok(Accuracy {
            top1: 0.0,
            top5: 0.0,
        });
    }
    let v = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let (mut top1, mut top5) = (0usize, 0usize);
    for (r, &label) in labels.iter().enumerate() {
        let row = &v[r * c..(r + 1) * c];
        let Some(&mine) = row.get(label) else {
            continue;
        };
        // Rank of the true class: how many classes score strictly higher (ties favour it).
        let rank = row.iter().filter(|&&x| x > mine).count();
        top1 += usize::from(rank == 0);
        top5 += usize::from(rank < 5);
    }
    Ok(Accuracy {
        top1: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
    })
}

/// Mean cross-entropy of `logits` `[B, C]` against integer `labels` `[B]`:
/// `L = -1/B * sum_i log softmax(logits_i)[y_i]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, c] = logits.dims();
    let onehot = labels.one_hot::<2>(c).float();
    log_softmax(logits, 1)
        .mul(onehot)
        .sum()
        .div_scalar(b.max(1) as f64)
        .neg()
}

/// Cross-entropy with label smoothing `e`: the mean over the batch of `-sum_c q_c log
/// softmax(logits)_c` with `q = (1 - e) onehot(label) + e / C`, that is `(1 - e) CE + e *
/// mean_c(-log p_c)` (timm's `LabelSmoothingCrossEntropy`, PyTorch's `label_smoothing`). At
/// `e = 0` it is [`cross_entropy`], bit for bit.
pub fn smoothed_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, e: f64) -> Tensor<1> {
    if e == 0.0 {
        return cross_entropy(logits, labels);
    }
    let [b, c] = logits.dims();
    let target = labels
        .one_hot::<2>(c)
        .float()
        .mul_scalar(1.0 - e)
        .add_scalar(e / c as f64);
    log_softmax(logits, 1)
        .mul(target)
        .sum()
        .div_scalar(b.max(1) as f64)
        .neg()
}

/// Per-column mean and standard deviation of `x` `[N, D]` (deviation floored at 1e-6).
pub fn column_stats(x: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let mean = x.clone().mean_dim(0);
    let var = x.clone().sub(mean.clone()).square().mean_dim(0);
    (mean, var.sqrt().clamp_min(1e-6))
}

/// What a linear probe reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LinearProbeReport {
    /// Accuracy on the test features.
    pub test: Accuracy,
    /// Accuracy on the training features (how well the classes separate linearly).
    pub train: Accuracy,
}

/// Trains a linear classifier on `train` `[N, D]` and measures it on `test` `[M, D]`.
/// Runs on the features' device with autodiff.
pub fn linear_probe(
    train: Tensor<2>,
    train_labels: &[usize],
    test: Tensor<2>,
    test_labels: &[usize],
    num_classes: usize,
    cfg: &LinearProbeConfig,
) -> Result<LinearProbeReport> {
    cfg.validate()?;
    let [n, d] = train.dims();
    let [_, d2] = test.dims();
    if d != d2 {
        return Err(Error::Invalid(format!(
            "linear probe: train features have width {d}, test features {d2}"
        )));
    }
    if n != train_labels.len() || n == 0 {
        return Err(Error::Invalid(format!(
            "linear probe: {n} training features for {} labels",
            train_labels.len()
        )));
    }
    if let Some(bad) = train_labels
        .iter()
        .chain(test_labels)
        .find(|&&l| l >= num_classes)
    {
        return Err(Error::Invalid(format!(
            "linear probe: label {bad} out of range for {num_classes} classes"
        )));
    }
    let plain: Device = train.device();
    let device = plain.clone().autodiff();
    let (mean, std) = column_stats(&train);
    let train = train.sub(mean.clone()).div(std.clone());
    let test = test.sub(mean).div(std);
    let train_ad = Tensor::<2>::from_data(train.clone().into_data(), &device);
    let labels_all = Tensor::<1, Int>::from_data(
        TensorData::new(
            train_labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            [n],
        ),
        &device,
    );

    let mut model: Linear = seed::init_module(&device, cfg.seed, |dev| {
        LinearConfig::new(d, num_classes).init(dev)
    });
    let (mut opt, counter) = optim::SelfsupOptimizer::module_optimizer(OptimizerConfig {
        kind: OptimizerKind::Adamw,
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..OptimizerConfig::default()
    });
    let bs = cfg.batch_size.min(n);
    let spe = n.div_ceil(bs);
    let total = spe * cfg.epochs;
    let schedule = LrSchedule::new(
        &ScheduleConfig {
            warmup_epochs: 0.0,
            final_lr_ratio: 0.0,
            final_weight_decay: None,
        },
        cfg.lr,
        spe,
        total,
    );
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut seed::rng(cfg.seed, STREAM_SHUFFLE, epoch as u64, 7));
        for chunk in order.chunks(bs) {
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(
                    chunk.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [chunk.len()],
                ),
                &device,
            );
            let x = train_ad.clone().select(0, idx.clone());
            let y = labels_all.clone().select(0, idx);
            let loss = cross_entropy(model.forward(x), y);
            let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
            counter.set(step as u64 + 1);
            model = opt.step(schedule.lr(step), model, grads);
            step += 1;
        }
    }
    let model = model.valid();
    let train_acc = topk_accuracy(model.forward(train), train_labels)?;
    let test_acc = topk_accuracy(model.forward(test), test_labels)?;
    Ok(LinearProbeReport {
        test: test_acc,
        train: train_acc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, n: usize, d: usize) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, [n, d]), &Device::flex())
    }

    #[test]
    fn smoothed_cross_entropy_hand_computed() {
        // Logits (0, ln 3): log p = (ln 1/4, ln 3/4); label 1, e = 0.1: q = (0.05, 0.95).
        let logits = t(vec![0.0, 3f32.ln()], 1, 2);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &Device::flex());
        let got = smoothed_cross_entropy(logits.clone(), labels.clone(), 0.1).into_scalar::<f64>();
        let want = -(0.05 * 0.25f64.ln() + 0.95 * 0.75f64.ln());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let plain = smoothed_cross_entropy(logits.clone(), labels.clone(), 0.0);
        assert_eq!(
            plain.into_scalar::<f64>(),
            cross_entropy(logits, labels).into_scalar::<f64>()
        );
    }

    #[test]
    fn cross_entropy_hand_computed() {
        // Row 1: logits (0, ln 3): softmax (1/4, 3/4), label 1 -> -ln(3/4).
        // Row 2: logits (0, 0): label 0 -> ln 2.
        let logits = t(vec![0.0, 3f32.ln(), 0.0, 0.0], 2, 2);
        let labels =
            Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &Device::flex());
        let got = cross_entropy(logits, labels).into_scalar::<f64>();
        let want = (-(0.75f64.ln()) + 2f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn topk_counts_ranks() {
        // 6 classes; true class ranked 1st, 3rd and 6th.
        let logits = t(
            vec![
                9.0, 1.0, 2.0, 3.0, 4.0, 5.0, // label 0: rank 0
                1.0, 2.0, 9.0, 8.0, 0.0, 0.0, // label 1: rank 2
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, // label 0: rank 5
            ],
            3,
            6,
        );
        let a = topk_accuracy(logits, &[0, 1, 0]).unwrap();
        assert!((a.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.top5 - 2.0 / 3.0).abs() < 1e-12);
    }

    /// Three Gaussian blobs, linearly separable, on a non-trivial scale and offset (the
    /// standardization must cope): the probe reaches 100 % on held-out points.
    #[test]
    fn separable_blobs_reach_full_accuracy() {
        use rand::Rng;
        let mut rng = seed::rng(1, 99, 0, 0);
        let centres = [[5.0f32, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]];
        let mut make = |n: usize| {
            let mut v = Vec::new();
            let mut l = Vec::new();
            for i in 0..n {
                let c = i % 3;
                for (j, &m) in centres[c].iter().enumerate() {
                    let noise: f32 = rng.random_range(-1.0..1.0);
                    v.push(1000.0 + 50.0 * (m + noise) + j as f32);
                }
                l.push(c);
            }
            (t(v, n, 3), l)
        };
        let (tr, trl) = make(300);
        let (te, tel) = make(90);
        let cfg = LinearProbeConfig {
            epochs: 20,
            batch_size: 32,
            lr: 0.05,
            ..LinearProbeConfig::default()
        };
        let r = linear_probe(tr, &trl, te, &tel, 3, &cfg).unwrap();
        assert_eq!(r.test.top1, 1.0, "{r:?}");
        assert_eq!(r.train.top1, 1.0, "{r:?}");
        assert_eq!(r.test.top5, 1.0);
    }

    /// Labels that are not a function of the features: no better than chance on new points.
    #[test]
    fn random_labels_stay_near_chance() {
        use rand::Rng;
        let mut rng = seed::rng(2, 99, 0, 0);
        let n = 400;
        let v: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
        let l: Vec<usize> = (0..n).map(|_| rng.random_range(0..2)).collect();
        let (tr, te) = (
            t(v[..n * 2].to_vec(), n / 2, 4),
            t(v[n * 2..].to_vec(), n / 2, 4),
        );
        let r = linear_probe(
            tr,
            &l[..n / 2],
            te,
            &l[n / 2..],
            2,
            &LinearProbeConfig {
                epochs: 5,
                ..LinearProbeConfig::default()
            },
        )
        .unwrap();
        assert!(r.test.top1 < 0.65, "{r:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = t(vec![0.0; 4], 2, 2);
        let e = linear_probe(
            x.clone(),
            &[0, 5],
            x.clone(),
            &[0, 1],
            2,
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("label 5"), "{e}");
        let e = linear_probe(
            x.clone(),
            &[0, 1],
            x,
            &[0, 1],
            2,
            &LinearProbeConfig {
                lr: 0.0,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("linear.lr"), "{e}");
    }
}
