//! # selfsup-text
//!
//! Captions to token ids for CLIP-style training: a byte-level byte-pair-encoding tokenizer
//! ([`Tokenizer`]) that reads the original CLIP vocabulary (`bpe_simple_vocab_16e6.txt.gz`,
//! a list of merges) when a user has it, and learns merges from the user's own captions when
//! they do not. Every byte has a symbol, so no text is ever unknown.

pub mod bpe;
pub mod pretokenize;

pub use bpe::{Encoded, Tokenizer};
pub use pretokenize::{clean, pretokenize};
