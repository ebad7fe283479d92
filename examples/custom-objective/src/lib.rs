//! VICReg (variance-invariance-covariance regularization) as a method crate of its own: what
//! `docs/tutorial-custom-objective.md` builds step by step. It uses selfsup's crates only
//! through their public API:
//!
//! - [`loss`]: the loss as pure functions over tensors, tested against hand-computed values;
//! - [`vicreg`]: the model (an encoder from `selfsup-encoders` and an expander) and the
//!   [`selfsup_core::Objective`] the shared engine trains;
//! - [`recipe`]: the [`selfsup_pipeline::Recipe`] that lets selfsup's pipeline pretrain,
//!   score, evaluate and bench it; the `selfsup-vicreg` binary is `selfsup pretrain`,
//!   `selfsup eval`, `selfsup bench` and `selfsup config` for VICReg, on the pipeline library
//!   alone (no dependency on the `selfsup` command).

pub mod loss;
pub mod recipe;
pub mod vicreg;

pub use loss::{Weights, covariance, invariance, variance, vicreg_loss};
pub use recipe::{NAME, VicRegRecipe};
pub use vicreg::{VicReg, VicRegConfig, VicRegModel};
