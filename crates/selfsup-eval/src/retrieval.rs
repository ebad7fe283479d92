//! Image-text evaluation on embeddings in a shared space: zero-shot classification from class
//! prompts, and retrieval recall in both directions.

use crate::linear::{Accuracy, topk_accuracy};
use burn::tensor::Tensor;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The `K`s of recall@K.
pub const RECALL_AT: [usize; 3] = [1, 5, 10];

fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x.div(norm)
}

/// One embedding per class from its prompts: `per_template[t]` holds the embeddings `[C, D]`
/// of template `t` filled with each class name; each is normalized, they are averaged, and the
/// mean normalized again (CLIP's prompt ensembling).
pub fn class_embeddings(per_template: &[Tensor<2>]) -> Tensor<2> {
    assert!(!per_template.is_empty(), "class_embeddings: no templates");
    let sum = per_template
        .iter()
        .map(|e| normalize(e.clone()))
        .reduce(|a, b| a + b)
        .expect("one template at least");
    normalize(sum)
}

/// Zero-shot classification: each image's class is the class embedding most similar (cosine)
/// to its embedding. `images` `[N, D]`, `classes` `[C, D]` (see [`class_embeddings`]).
pub fn zero_shot_accuracy(
    images: Tensor<2>,
    classes: Tensor<2>,
    labels: &[usize],
) -> Result<Accuracy> {
    topk_accuracy(
        normalize(images).matmul(normalize(classes).transpose()),
        labels,
    )
}

/// Recall@1, 5 and 10 of retrieval both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// Images searched over (and searching).
    pub images: usize,
    /// Distinct captions searched over (and searching).
    pub texts: usize,
    /// For each image, whether one of its captions is among the `K` captions nearest to it;
    /// the fraction of images, for `K` = 1, 5, 10.
    pub image_to_text: [f64; 3],
    /// For each caption, whether one of the images it describes is among the `K` images
    /// nearest to it; the fraction of captions, for `K` = 1, 5, 10.
    pub text_to_image: [f64; 3],
}

impl RetrievalReport {
    /// A Markdown table, in %.
    pub fn markdown(&self) -> String {
        let row = |name: &str, r: &[f64; 3]| {
            format!(
                "| {name} | {:.2} | {:.2} | {:.2} |\n",
                100.0 * r[0],
                100.0 * r[1],
                100.0 * r[2]
            )
        };
        format!(
            "| direction | R@1 | R@5 | R@10 |\n|---|---:|---:|---:|\n{}{}",
            row(
                &format!("image -> text ({} captions)", self.texts),
                &self.image_to_text
            ),
            row(
                &format!("text -> image ({} images)", self.images),
                &self.text_to_image
            )
        )
    }
}

/// Retrieval recall between `images` `[N, D]` and `texts` `[M, D]` (cosine similarity), where
/// `described[t]` lists the images caption `t` describes (one for a unique caption, many when
/// several images share a caption, as template captions of a labelled set do). A hit at `K`:
/// a relevant item scores above all but at most `K - 1` others (ties count in its favour).
pub fn retrieval_recall(
    images: Tensor<2>,
    texts: Tensor<2>,
    described: &[Vec<usize>],
) -> Result<RetrievalReport> {
    let [n, _] = images.dims();
    let [m, _] = texts.dims();
    if described.len() != m {
        return Err(Error::Invalid(format!(
            "retrieval: {m} captions but relevance lists for {}",
            described.len()
        )));
    }
    if let Some(i) = described.iter().flatten().find(|&&i| i >= n) {
        return Err(Error::Invalid(format!(
            "retrieval: a caption describes image {i} of {n}"
        )));
    }
    let sims: Vec<f32> = normalize(images)
        .matmul(normalize(texts).transpose())
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let mut captions_of = vec![Vec::new(); n];
    for (t, imgs) in described.iter().enumerate() {
        for &i in imgs {
            captions_of[i].push(t);
        }
    }
    // How many candidates beat the best relevant one.
    let rank = |scores: &mut dyn Iterator<Item = f32>, relevant: &[usize]| -> Option<usize> {
        let scores: Vec<f32> = scores.collect();
        let best = relevant
            .iter()
            .map(|&r| scores[r])
            .fold(f32::NEG_INFINITY, f32::max);
        (!relevant.is_empty()).then(|| scores.iter().filter(|&&s| s > best).count())
    };
    let recall = |ranks: Vec<usize>| -> [f64; 3] {
        let total = ranks.len().max(1) as f64;
        RECALL_AT.map(|k| ranks.iter().filter(|&&r| r < k).count() as f64 / total)
    };
    let i2t: Vec<usize> = (0..n)
        .filter_map(|i| {
            rank(
                &mut sims[i * m..(i + 1) * m].iter().copied(),
                &captions_of[i],
            )
        })
        .collect();
    let t2i: Vec<usize> = (0..m)
        .filter_map(|t| rank(&mut (0..n).map(|i| sims[i * m + t]), &described[t]))
        .collect();
    Ok(RetrievalReport {
        images: n,
        texts: m,
        image_to_text: recall(i2t),
        text_to_image: recall(t2i),
    })
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

    #[test]
    fn recall_counts_the_rank_of_the_best_relevant_item() {
        // Three images on the axes; captions: 0 -> image 0, 1 -> image 2, 2 -> images 1 and 2.
        let images = t(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
        let texts = t(&[&[0.9, 0.1, 0.0], &[0.0, 0.8, 0.2], &[0.1, 0.2, 0.9]]);
        let described = vec![vec![0], vec![2], vec![1, 2]];
        let r = retrieval_recall(images, texts, &described).unwrap();
        // Image 0: caption 0 ranks first. Image 1 (caption 2): caption 1 scores 0.8 vs 0.2,
        // rank 1. Image 2 (captions 1, 2): caption 2 first.
        assert_eq!(r.image_to_text, [2.0 / 3.0, 1.0, 1.0]);
        // Caption 0: image 0 first. Caption 1 (image 2): image 1 scores higher, rank 1.
        // Caption 2 (images 1, 2): image 2 first.
        assert_eq!(r.text_to_image, [2.0 / 3.0, 1.0, 1.0]);
        assert_eq!((r.images, r.texts), (3, 3));
        assert!(
            r.markdown().contains("| 66.67 | 100.00 | 100.00 |"),
            "{}",
            r.markdown()
        );
        assert!(retrieval_recall(t(&[&[1.0]]), t(&[&[1.0]]), &[vec![3]]).is_err());
    }

    #[test]
    fn zero_shot_picks_the_nearest_class_prompt() {
        // Two templates per class: their normalized mean points between them.
        let class_a = t(&[&[1.0, 0.0], &[0.0, 1.0]]); // template 1: class 0 -> x, class 1 -> y
        let class_b = t(&[&[2.0, 0.2], &[0.1, 3.0]]);
        let classes = class_embeddings(&[class_a, class_b]);
        let images = t(&[&[5.0, 1.0], &[0.2, 1.0], &[1.0, 0.9]]);
        let acc = zero_shot_accuracy(images, classes, &[0, 1, 1]).unwrap();
        // The third image leans to class 0: 2 of 3 right; top-5 covers both classes.
        assert!((acc.top1 - 2.0 / 3.0).abs() < 1e-9, "{acc:?}");
        assert_eq!(acc.top5, 1.0);
    }
}
