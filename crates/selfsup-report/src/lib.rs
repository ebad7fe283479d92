//! # selfsup-report
//!
//! Pictures of a run, as PNG files: line charts of logged values over steps or epochs, and
//! scatter plots of embeddings projected to two dimensions by PCA.

pub mod chart;
pub mod pca;

pub use chart::{Series, line_chart, scatter_chart};
pub use pca::{Pca, pca_2d};
