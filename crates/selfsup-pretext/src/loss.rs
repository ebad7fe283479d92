//! The loss both pretext tasks share: the cross-entropy of naming the transformation applied,
//! with how often it was named right.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor};
use selfsup_core::LossOutput;

/// The fraction of rows whose largest logit is their label.
pub fn top1(logits: Tensor<2>, labels: Tensor<1, Int>) -> f64 {
    let [n, _] = logits.dims();
    let hits = logits
        .argmax(1)
        .reshape([n])
        .equal(labels)
        .int()
        .sum()
        .into_scalar::<i64>();
    hits as f64 / n.max(1) as f64
}

/// The cross-entropy of `logits` `[N, K]` against the transformation `labels` `[N]`, mean over
/// the rows: `-(1/N) sum_i log softmax(logits_i)[labels_i]`; logs `pretext_top1` ([`top1`]).
pub fn pretext_loss(logits: Tensor<2>, labels: Tensor<1, Int>) -> LossOutput {
    let accuracy = top1(logits.clone().detach(), labels.clone());
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels);
    LossOutput {
        loss,
        metrics: vec![("pretext_top1".into(), accuracy)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn accuracy_counts_rows_whose_best_logit_is_the_label() {
        let dev = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.1f32, 2.0, 0.0, 0.0, 3.0, 1.0, 0.0, 0.0], [2, 4]),
            &dev,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 1], [2]), &dev);
        assert_eq!(top1(logits, labels), 0.5);
    }

    #[test]
    fn the_loss_is_the_mean_cross_entropy() {
        let dev = Device::flex();
        // Row 0: logits (0, ln 3) with label 1: -ln(3/4). Row 1: (0, 0) with label 0: ln 2.
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 3f32.ln(), 0.0, 0.0], [2, 2]),
            &dev,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &dev);
        let out = pretext_loss(logits, labels);
        let want = 0.5 * (-(0.75f64).ln() + 2f64.ln());
        assert!((out.loss.into_scalar::<f64>() - want).abs() < 1e-6);
        assert_eq!(out.metrics, vec![("pretext_top1".to_string(), 1.0)]);
    }
}
