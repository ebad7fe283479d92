//! # selfsup-pretext
//!
//! Pretext tasks that predict a transformation applied to the image: which of four rotations
//! (Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
//! Rotations", ICLR 2018), and which permutation shuffled the tiles of a jigsaw puzzle
//! (Noroozi, Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
//! Puzzles", ECCV 2016). Both keep the encoder and discard the head that solved the task.

pub mod jigsaw;
pub mod loss;
pub mod permutations;
#[cfg(feature = "recipe")]
pub mod recipe;
pub mod rotation;
pub mod rotnet;
pub mod tiles;

pub use jigsaw::{Jigsaw, JigsawConfig, JigsawModel, shuffled_rows};
pub use loss::{pretext_loss, top1};
pub use permutations::{PermutationSet, hamming};
pub use rotation::{rotate, rotations_batch};
pub use rotnet::{RotNet, RotNetConfig, RotNetModel};
pub use tiles::{AugmentedTiles, JigsawTiles, inverse, permute, puzzle_picture};
