//! # selfsup-data
//!
//! Datasets (MNIST / Fashion-MNIST IDX, CIFAR-10/100 and STL-10 binary, image folders,
//! image-text manifests and WebDataset tar shards streamed from their originals, the embedded
//! Fashion-MNIST sample), captions, augmentations and the parallel batch loaders.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod decode;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod manifest;
pub mod sample;
pub mod shards;
pub mod spec;
pub mod stl10;
pub mod stream;

pub use augment::{AugmentConfig, MultiView, Pipeline};
pub use dataset::{ImageSet, Splits};
pub use loader::{CaptionLoader, ImageTextBatch, LabelledBatch, LabelledLoader, ViewLoader};
pub use spec::{DataConfig, DataSpec};
