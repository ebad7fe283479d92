//! # selfsup-report
//!
//! Pictures of a run, as PNG files: line charts of logged values over steps or epochs, and
//! scatter plots of embeddings projected to two dimensions by PCA, grids of images, and
//! heat maps (a ViT's attention) to lay beside them.

pub mod chart;
pub mod grid;
pub mod heatmap;
pub mod moments;
pub mod pca;

pub use chart::{Series, line_chart, scatter_chart};
pub use grid::image_grid;
pub use heatmap::{heat, heat_image, normalize};
pub use moments::{Moments, moments};
pub use pca::{Pca, pca_2d};
