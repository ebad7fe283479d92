//! # selfsup-eval
//!
//! How good are the features: weighted kNN and linear probes on frozen features, fine-tuning
//! on a fraction of the labels, feature extraction and the raw-pixel baseline; for image-text
//! models, zero-shot classification and retrieval recall.

pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear;
pub mod retrieval;

pub use features::{EvalTransform, extract, raw_pixels};
pub use finetune::{Classifier, FinetuneConfig, FinetuneReport, Supervised, finetune};
pub use knn::{KnnConfig, accuracy, knn_accuracy, knn_predict};
pub use linear::{Accuracy, LinearProbeConfig, LinearProbeReport, linear_probe, topk_accuracy};
pub use retrieval::{RetrievalReport, class_embeddings, retrieval_recall, zero_shot_accuracy};
