//! # selfsup-eval
//!
//! How good are the features: weighted kNN on frozen features, feature extraction and the
//! raw-pixel baseline.

pub mod features;
pub mod knn;

pub use features::{EvalTransform, extract, raw_pixels};
pub use knn::{KnnConfig, accuracy, knn_accuracy, knn_predict};
