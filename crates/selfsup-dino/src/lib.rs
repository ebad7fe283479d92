//! # selfsup-dino
//!
//! DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", 2021): a
//! student network learns to match, on every view of an image, the centred and sharpened
//! output of a momentum teacher that sees only the two global views. No negative pairs; the
//! centring and sharpening keep it from collapsing. Written from the paper.
//!
//! The pieces: the multi-crop views ([`multicrop`]), the head with its L2-normalized bottleneck and weight-normalized last layer
//! ([`head`]), the loss, its centre and the collapse monitor as pure functions over tensors
//! ([`loss`]), and the teacher temperature's warm-up ([`schedule`]); the momentum and weight
//! decay schedules are the engine's.

pub mod dino;
pub mod head;
pub mod loss;
pub mod multicrop;
#[cfg(feature = "recipe")]
pub mod recipe;
pub mod schedule;

pub use dino::{Dino, DinoConfig, DinoModel};
pub use head::{DinoHead, DinoHeadConfig};
pub use loss::{
    CollapseMonitor, CollapseReport, batch_entropy, dino_loss, mean_entropy, mean_kl,
    teacher_targets, updated_center,
};
pub use multicrop::MultiCropConfig;
pub use schedule::teacher_temperature;
