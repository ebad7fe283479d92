//! # selfsup-contrastive
//!
//! Contrastive methods: SimCLR with its NT-Xent loss, and CLIP-style image-text training with
//! its symmetric loss over the batch's image-caption similarities.

pub mod clip;
pub mod loss;
#[cfg(feature = "recipe")]
pub mod recipe;
pub mod simclr;

pub use clip::{Clip, ClipConfig, ClipModel, TokenizerConfig};
pub use loss::{clip_loss, l2_normalize, nt_xent};
pub use simclr::{SimClr, SimClrConfig, SimClrModel};
