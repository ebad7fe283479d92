//! DINO's tuned recipe through the pipeline library, without the `selfsup` command: the preset
//! `selfsup pretrain --method dino` runs, its checks, the online monitor, the saved encoder
//! and its kNN / linear-probe table, from a program of your own.
//!
//! `cargo run --release -p selfsup-examples --example pipeline_library`

use selfsup_core::Result;
use selfsup_dino::DinoConfig;
use selfsup_dino::recipe::DinoRecipe;
use selfsup_pipeline::{Recipe, pretrain};

fn main() -> Result<()> {
    // The tuned small-CPU recipe, its settings typed.
    let mut cfg = DinoRecipe::preset();
    cfg.train.epochs = 2;
    cfg.edit_settings(|s: &mut DinoConfig| s.crops.local_crops = 4)?;
    // Any key as `--set` would: checked with the rest by the recipe.
    cfg.set("data.max_train", "2048")?;
    DinoRecipe.validate(&cfg)?;
    let out = std::env::temp_dir().join("selfsup-example-dino");
    let _ = std::fs::remove_dir_all(&out);
    let report = pretrain(&DinoRecipe, cfg, &out, false, true)?;
    println!(
        "{} steps, final loss {:.4}, encoder in {}",
        report.steps,
        report.final_loss,
        out.join("encoder.bpk").display()
    );
    Ok(())
}
