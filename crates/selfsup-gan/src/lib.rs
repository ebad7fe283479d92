//! # selfsup-gan
//!
//! Generative adversarial networks as representation learners (Radford, Metz, Chintala,
//! "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
//! Networks", ICLR 2016). A DCGAN generator and discriminator train against each other
//! through the shared engine's two optimizer phases; the discriminator's trunk
//! ([`selfsup_encoders::DcganEncoder`]) is kept as the encoder, its blocks' pooled maps the
//! features. While it trains, a sample grid from fixed noise, the Frechet distance to real
//! images in one of our own encoders' feature space, and a collapse warning show how the
//! generator is doing.

pub mod fid;
pub mod frechet;
pub mod gan;
pub mod generator;
pub mod loss;
pub mod monitor;
#[cfg(feature = "recipe")]
pub mod recipe;

pub use fid::FidEncoder;
pub use frechet::{Gaussian, frechet_distance};
pub use gan::{Discriminator, Gan, GanConfig, GanModel, noise};
pub use generator::{Generator, growth};
pub use loss::{
    GanLoss, discriminator_accuracy, hinge_d, hinge_g, non_saturating_d, non_saturating_g,
};
pub use monitor::{SampleMonitor, sample, to_pixels, write_grid};
