//! What the end-to-end tests share: the built-in registry, tiny configs of every method, the
//! pipeline's entry points over that registry, and a run's encoder weights to compare.
#![allow(dead_code, unused_imports)]

use selfsup_cli::registry;
use selfsup_core::Result;
use selfsup_encoders::Arch;
use selfsup_pipeline::{EvalArgs, EvalPlan, EvalReport, PretrainReport, ReportFiles, RunConfig};
use std::path::Path;

/// The preset of the built-in method `method`.
pub fn preset(method: &str) -> RunConfig {
    registry().get(method).unwrap().preset()
}

/// `cfg` checked by its method's recipe.
pub fn validate(cfg: &RunConfig) -> Result<()> {
    registry().get(&cfg.method)?.validate(cfg)
}

/// `cfg` for `method` instead (that method's own settings, its preset's), the shared sections
/// kept.
pub fn retarget(mut cfg: RunConfig, method: &str) -> RunConfig {
    let p = preset(method);
    cfg.method = p.method;
    cfg.settings = p.settings;
    cfg
}

/// Sets `key` when it is a key of `cfg`'s own method (its first part is the method's name).
pub fn set_own(cfg: &mut RunConfig, key: &str, value: &str) {
    if key.split('.').next() == Some(cfg.method.as_str()) {
        cfg.set(key, value).unwrap();
    }
}

/// `selfsup pretrain` of `cfg`'s method.
pub fn pretrain(
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<PretrainReport> {
    let r = registry();
    selfsup_pipeline::pretrain(r.get(&cfg.method)?, cfg, out, resume, progress)
}

/// `selfsup eval knn|linear`.
pub fn eval_frozen(
    args: &EvalArgs,
    plan: EvalPlan,
    k: Option<usize>,
    linear_epochs: Option<usize>,
) -> Result<EvalReport> {
    selfsup_pipeline::eval_frozen(args, &registry(), plan, k, linear_epochs)
}

/// `selfsup report`.
pub fn report(run: &Path, points: usize) -> Result<ReportFiles> {
    selfsup_pipeline::report(run, &registry(), None, points, None)
}

/// A SimCLR run on the sample small enough for a test: a 4-wide ConvNet, 96 images, 2 epochs.
pub fn tiny() -> RunConfig {
    let mut c = small_run("simclr");
    c.encoder.arch = Arch::Convnet;
    c.set("simclr.head.hidden_dim", "16").unwrap();
    c.set("simclr.head.output_dim", "8").unwrap();
    c
}

/// `method`'s preset at [`selfsup_pipeline::testing::small_run`]'s size.
pub fn small_run(method: &str) -> RunConfig {
    selfsup_pipeline::testing::small_run(preset(method))
}

/// Any method at test size: 64 training images, one epoch of batches of 32, every network a
/// few units wide, kNN only.
pub fn tiny_of(method: &str) -> RunConfig {
    let mut c = selfsup_pipeline::testing::tiny(preset(method));
    for (k, v) in [
        ("mae.decoder_dim", "8"),
        ("mae.decoder_depth", "1"),
        ("mae.decoder_heads", "2"),
        ("dino.head.hidden_dim", "16"),
        ("dino.head.bottleneck_dim", "8"),
        ("dino.head.output_dim", "32"),
        ("jigsaw.permutations", "10"),
        ("jigsaw.hidden_dim", "16"),
        ("gan.noise_dim", "8"),
        ("gan.generator_width", "4"),
        ("gan.fid_images", "16"),
    ] {
        set_own(&mut c, k, v);
    }
    c
}

/// Every float parameter of the encoder a run folder saved.
pub fn encoder_weights(run: &Path) -> Vec<f32> {
    selfsup_pipeline::testing::encoder_weights(run, &registry())
}

pub use selfsup_pipeline::testing::same;
