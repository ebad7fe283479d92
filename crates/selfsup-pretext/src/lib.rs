//! # selfsup-pretext
//!
//! Pretext tasks that predict a transformation applied to the image: which of four rotations
//! (Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
//! Rotations", ICLR 2018), and which permutation shuffled the tiles of a jigsaw puzzle
//! (Noroozi, Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
//! Puzzles", ECCV 2016). In progress (issue 8): the transformations, the permutation set and
//! the RotNet objective, jigsaw tiles.

pub mod jigsaw;
pub mod permutations;
pub mod rotation;
pub mod rotnet;

pub use jigsaw::{JigsawTiles, inverse, permute};
pub use permutations::{PermutationSet, hamming};
pub use rotation::{rotate, rotations_batch};
pub use rotnet::{RotNet, RotNetModel, top1};
