//! The `selfsup` command's library part: [`registry`], the one list of the built-in methods.
//! Everything else the command does is `selfsup-pipeline`'s, and each method's recipe lives in
//! its own crate.

use selfsup_pipeline::Registry;

/// The built-in methods, in the order of `--help` and the bench table; the first is the
/// default. Adding a method to `selfsup` is its crate (with a `recipe` feature) and one line
/// here.
pub fn registry() -> Registry {
    Registry::new()
        .with(selfsup_contrastive::recipe::SimClrRecipe)
        .with(selfsup_mae::recipe::MaeRecipe)
        .with(selfsup_dino::recipe::DinoRecipe)
        .with(selfsup_contrastive::recipe::ClipRecipe)
        .with(selfsup_pretext::recipe::RotNetRecipe)
        .with(selfsup_pretext::recipe::JigsawRecipe)
        .with(selfsup_gan::recipe::GanRecipe)
}

pub use selfsup_pipeline;
