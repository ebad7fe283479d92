//! # selfsup-pipeline
//!
//! What runs around a method's training, as a library: a run folder and its files
//! ([`run_dir`]), the run config with each method's typed settings ([`RunConfig`]), data
//! loading by spec, the [`Recipe`] trait a method implements and the [`Registry`] that lists
//! them, the online kNN monitor, pretraining with its save and score ([`pretrain()`]),
//! evaluation of a run ([`evaluate`]), the step bench ([`step_bench`]), the method comparison
//! ([`suite`]) and run reports ([`report()`]).
//!
//! It holds no command-line parsing, no global allocator and no log subscriber: those belong
//! to the binaries (`selfsup`, a crate's own).

pub mod config;
pub mod embed;
pub mod evaluate;
pub mod export;
pub mod monitor;
pub mod pretrain;
pub mod recipe;
pub mod registry;
pub mod report;
pub mod run_dir;
pub mod step_bench;
pub mod suite;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{EvalConfig, RunConfig};
pub use embed::{Embedded, Split, embed};
pub use evaluate::{EvalArgs, EvalPlan, EvalReport, eval_finetune, eval_frozen};
pub use export::{Exported, export};
pub use pretrain::{PretrainReport, pretrain, pretrain_distributed, pretrain_only};
pub use recipe::{Recipe, ReportPart, TrainRun, Trained};
pub use registry::Registry;
pub use report::{ReportContext, ReportFiles, report};
pub use step_bench::{StepBench, StepBenchArgs, Timings};

/// The crates a recipe builds on, re-exported so a method crate and its users build against
/// the same versions.
pub use {burn, selfsup_core, selfsup_data, selfsup_encoders, selfsup_eval};
