//! The library behind the `selfsup` command, so tests and other tools can run it in-process.

pub mod bench;
pub mod clip_eval;
pub mod evaluate;
pub mod gan;
pub mod pretrain;
pub mod provenance;
pub mod recipe;
pub mod report;
pub mod run_config;
pub mod suite;

pub use evaluate::{EvalArgs, EvalPlan, EvalReport, eval_finetune, eval_frozen};
pub use pretrain::{PretrainReport, pretrain, pretrain_with};
pub use recipe::{Recipe, TrainRun, Trained};
pub use report::{ReportFiles, report};
pub use run_config::{CustomMethod, Method, RunConfig};
