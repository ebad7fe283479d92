//! # selfsup-data
//!
//! Datasets (MNIST / Fashion-MNIST IDX, CIFAR-10/100 binary, image folders, the embedded
//! Fashion-MNIST sample), augmentations and the parallel batch loader.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod sample;
pub mod spec;

pub use augment::{AugmentConfig, MultiView, Pipeline};
pub use dataset::{ImageSet, Splits};
pub use loader::{LabelledBatch, LabelledLoader, ViewLoader};
pub use spec::{DataConfig, DataSpec};
