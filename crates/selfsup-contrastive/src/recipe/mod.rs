//! SimCLR and CLIP as [`selfsup_pipeline::Recipe`]s (the `recipe` feature): their presets,
//! checks, training, step benches, and CLIP's zero-shot and retrieval evaluation.

pub mod clip;
pub mod clip_eval;
pub mod simclr;

pub use clip::ClipRecipe;
pub use simclr::SimClrRecipe;
