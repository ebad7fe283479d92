//! Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, as in
//! solo-learn and lightly): cosine similarity, the `k` nearest training images vote for
//! their class with weight `exp(sim / T)`.

use burn::tensor::Tensor;
use rayon::prelude::*;
use selfsup_core::config::ensure;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// kNN settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KnnConfig {
    /// Neighbours that vote.
    pub k: usize,
    /// Temperature of the vote weights `exp(sim / T)`.
    pub temperature: f64,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 200,
            temperature: 0.1,
        }
    }
}

impl KnnConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(self.k >= 1, "knn.k", || "must be at least 1".into())?;
        ensure(
            self.temperature.is_finite() && self.temperature > 0.0,
            "knn.temperature",
            || format!("{} must be > 0", self.temperature),
        )
    }
}

fn normalize(x: Tensor<2>) -> Tensor<2> {
    let n = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x.div(n)
}

/// Predicted class of each row of `test`, from the labelled rows of `train`.
pub fn knn_predict(
    train: Tensor<2>,
    train_labels: &[usize],
    test: Tensor<2>,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<Vec<usize>> {
    cfg.validate()?;
    let [n_train, d] = train.dims();
    let [n_test, d2] = test.dims();
    if d != d2 {
        return Err(Error::Invalid(format!(
            "kNN: train features have width {d}, test features {d2}"
        )));
    }
    if n_train != train_labels.len() || n_train == 0 {
        return Err(Error::Invalid(format!(
            "kNN: {n_train} training features for {} labels",
            train_labels.len()
        )));
    }
    let k = cfg.k.min(n_train);
    let train_t = normalize(train).transpose();
    let test = normalize(test);
    let mut preds = Vec::with_capacity(n_test);
    let chunk = 256;
    let mut start = 0;
    while start < n_test {
        let len = chunk.min(n_test - start);
        let sim = test.clone().narrow(0, start, len).matmul(train_t.clone());
        let sim = sim
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        // burn's top-k sorts whole rows; a partial selection per row is far cheaper.
        let chunk_preds: Vec<usize> = sim
            .par_chunks(n_train)
            .map(|row| vote(row, train_labels, k, num_classes, cfg.temperature))
            .collect();
        preds.extend(chunk_preds);
        start += len;
    }
    Ok(preds)
}

/// The class with the largest weighted vote among the `k` most similar entries of `row`.
fn vote(row: &[f32], labels: &[usize], k: usize, num_classes: usize, temperature: f64) -> usize {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_sim = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_sim);
        idx.truncate(k);
    }
    let mut votes = vec![0f64; num_classes.max(1)];
    for &j in &idx {
        let label = labels[j as usize];
        if label < votes.len() {
            votes[label] += (row[j as usize] as f64 / temperature).exp();
        }
    }
    votes
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Fraction of `preds` equal to `labels`.
pub fn accuracy(preds: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// kNN top-1 accuracy of `test` features against `train` features.
pub fn knn_accuracy(
    train: Tensor<2>,
    train_labels: &[usize],
    test: Tensor<2>,
    test_labels: &[usize],
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<f64> {
    let preds = knn_predict(train, train_labels, test, num_classes, cfg)?;
    Ok(accuracy(&preds, test_labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: Vec<f32>, n: usize, d: usize) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, [n, d]), &Device::flex())
    }

    #[test]
    fn two_clusters_known_answer() {
        // Class 0 points near +x, class 1 near +y; queries clearly on either side.
        let train = t(
            vec![1.0, 0.1, 0.9, -0.1, 1.0, 0.0, 0.1, 1.0, -0.1, 0.9, 0.0, 1.0],
            6,
            2,
        );
        let labels = [0, 0, 0, 1, 1, 1];
        let test = t(vec![2.0, 0.3, 0.2, 3.0, 0.8, 0.7], 3, 2);
        let cfg = KnnConfig {
            k: 3,
            temperature: 0.1,
        };
        let p = knn_predict(train, &labels, test, 2, &cfg).unwrap();
        assert_eq!(&p[..2], &[0, 1]);
        // (0.8, 0.7) leans to +x: cosine with the x cluster is higher.
        assert_eq!(p[2], 0);
    }

    #[test]
    fn weights_decide_between_near_and_many() {
        // k = 3: one very close neighbour of class 1 against two far ones of class 0.
        let train = t(vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0], 3, 2);
        let labels = [1, 0, 0];
        let q = t(vec![1.0, 0.05], 1, 2);
        let sharp = knn_predict(
            train.clone(),
            &labels,
            q.clone(),
            2,
            &KnnConfig {
                k: 3,
                temperature: 0.1,
            },
        )
        .unwrap();
        assert_eq!(sharp, vec![1]);
        let flat = knn_predict(
            train,
            &labels,
            q,
            2,
            &KnnConfig {
                k: 3,
                temperature: 100.0,
            },
        )
        .unwrap();
        assert_eq!(flat, vec![0]);
    }

    #[test]
    fn k_larger_than_train_and_bad_config() {
        let train = t(vec![1.0, 0.0], 1, 2);
        let acc = knn_accuracy(
            train.clone(),
            &[3],
            train.clone(),
            &[3],
            4,
            &KnnConfig::default(),
        )
        .unwrap();
        assert_eq!(acc, 1.0);
        let err = knn_predict(
            train.clone(),
            &[0],
            train,
            1,
            &KnnConfig {
                k: 0,
                temperature: 0.1,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("knn.k"));
    }
}
