//! # selfsup-mae
//!
//! Masked autoencoders (He et al., 2021) over the Vision Transformer of `selfsup-encoders`:
//! per-sample random masking ([`masking`]), a light decoder ([`decoder`]), the reconstruction
//! loss on hidden patches with the normalized-pixel target ([`loss`]), and the model and
//! objective ([`mae`]). Written from the paper.

pub mod decoder;
pub mod loss;
pub mod mae;
pub mod masking;
#[cfg(feature = "recipe")]
pub mod recipe;

pub use decoder::MaeDecoder;
pub use loss::{masked_reconstruction_loss, normalize_patches};
pub use mae::{Mae, MaeConfig, MaeModel, MaeOutput, reconstruction_images};
pub use masking::{
    Masking, gather_tokens, kept, masking_from_noise, random_masking, seeded_masking,
};
