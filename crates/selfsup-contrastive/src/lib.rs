//! # selfsup-contrastive
//!
//! Contrastive methods: SimCLR with its NT-Xent loss. CLIP-style image-text training will
//! join it here.

pub mod loss;
pub mod simclr;

pub use loss::{l2_normalize, nt_xent};
pub use simclr::{SimClr, SimClrConfig, SimClrModel};
