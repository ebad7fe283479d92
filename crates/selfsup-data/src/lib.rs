//! # selfsup-data
//!
//! Datasets (MNIST / Fashion-MNIST IDX, CIFAR-10/100 binary, image folders, image-text
//! manifests, the embedded Fashion-MNIST sample), captions, augmentations and the parallel
//! batch loaders.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod manifest;
pub mod sample;
pub mod spec;

pub use augment::{AugmentConfig, MultiView, Pipeline};
pub use dataset::{ImageSet, Splits};
pub use loader::{CaptionLoader, ImageTextBatch, LabelledBatch, LabelledLoader, ViewLoader};
pub use spec::{DataConfig, DataSpec};
