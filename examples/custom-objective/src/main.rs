//! `selfsup-vicreg`: `selfsup pretrain`, `eval`, `bench` and `config` for VICReg, on the
//! pipeline library alone.
//!
//! ```text
//! cargo run --release -p selfsup-vicreg -- pretrain --out runs/vicreg
//! cargo run --release -p selfsup-vicreg -- eval --checkpoint runs/vicreg/checkpoints/step-00000100
//! cargo run --release -p selfsup-vicreg -- bench --out bench   # joins a `selfsup bench` folder
//! ```

use clap::{Parser, Subcommand};
use selfsup_core::{DeviceSpec, Error, Result};
use selfsup_data::DataSpec;
use selfsup_pipeline::suite::{Budget, CHILD_ENV, SuiteArgs, run_suite};
use selfsup_pipeline::{EvalArgs, EvalPlan, Recipe, Registry, RunConfig, eval_frozen, pretrain};
use selfsup_vicreg::VicRegRecipe;
use std::path::PathBuf;
use std::process::ExitCode;

// The binary chooses its allocator (burn's CPU backend frees and reallocates large buffers
// every step; `selfsup_kernels::StepAllocator` keeps them for the next step, and
// `selfsup_kernels::keep_freed_memory` tells mimalloc, under it, to keep the small ones).
#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

#[derive(Parser)]
#[command(
    name = "selfsup-vicreg",
    version,
    about = "VICReg on selfsup's pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain with VICReg, then score the encoder (kNN, linear probe) on the test split.
    Pretrain {
        /// A TOML config: keys over VICReg's preset (`[vicreg]` holds VICReg's own).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data: sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, folder:PATH, ...
        #[arg(long)]
        data: Option<DataSpec>,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Set any config key, `KEY=VALUE` (repeatable): `--set vicreg.variance_weight=20`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run folder.
        #[arg(long, default_value = "runs/vicreg")]
        out: PathBuf,
        /// Continue the run in --out from its newest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// kNN (and with --linear a linear probe) of a run folder or one of its step checkpoints.
    Eval {
        /// A run folder, or one of its checkpoints/step-N folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Also a linear probe.
        #[arg(long)]
        linear: bool,
    },
    /// VICReg's row of a `selfsup bench` folder (same flags as `selfsup bench`'s).
    Bench {
        /// The bench folder.
        #[arg(long, default_value = "bench")]
        out: PathBuf,
        /// Data.
        #[arg(long, default_value = "sample")]
        data: DataSpec,
        /// Training: epochs (`3`) or minutes (`10m`).
        #[arg(long, default_value = "1")]
        budget: Budget,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long, default_value = "flex")]
        device: DeviceSpec,
        /// Cap the steps (0: none).
        #[arg(long, default_value_t = 0)]
        max_steps: usize,
        /// Use at most this many training images (0: all).
        #[arg(long, default_value_t = 0)]
        max_train: usize,
        /// Score on at most this many test images (0: all).
        #[arg(long, default_value_t = 0)]
        max_test: usize,
        /// Run in this process instead of a child process.
        #[arg(long)]
        in_process: bool,
        /// Hide the progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Print VICReg's preset config as TOML.
    Config,
}

fn run(cli: Cli) -> Result<()> {
    let registry = Registry::new().with(VicRegRecipe);
    match cli.command {
        Command::Pretrain {
            config,
            data,
            device,
            epochs,
            set,
            out,
            resume,
            quiet,
        } => {
            let mut cfg = match config {
                Some(p) => RunConfig::load(&p, &registry)?,
                None => VicRegRecipe::preset(),
            };
            if let Some(d) = data {
                cfg.data.spec = d;
                cfg.data.mean.clear();
                cfg.data.std.clear();
            }
            if let Some(d) = device {
                cfg.device = d;
            }
            if let Some(e) = epochs {
                cfg.train.epochs = e;
            }
            for kv in &set {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Error::config("--set", format!("`{kv}`: write KEY=VALUE")))?;
                cfg.set(k.trim(), v.trim())?;
            }
            let r = pretrain(&VicRegRecipe, cfg, &out, resume, !quiet)?;
            println!(
                "trained {} steps in {:.0} s, final loss {:.4}; encoder in {}",
                r.steps,
                r.train_seconds,
                r.final_loss,
                out.display()
            );
            Ok(())
        }
        Command::Eval { checkpoint, linear } => {
            let args = EvalArgs {
                checkpoint,
                ..EvalArgs::default()
            };
            let plan = EvalPlan {
                knn: true,
                linear,
                baselines: true,
            };
            eval_frozen(&args, &registry, plan, None, None).map(|_| ())
        }
        Command::Bench {
            out,
            data,
            budget,
            seed,
            device,
            max_steps,
            max_train,
            max_test,
            in_process,
            quiet,
        } => {
            let args = SuiteArgs {
                methods: vec![VicRegRecipe.name().to_string()],
                out,
                data,
                budget,
                seed,
                device,
                max_steps,
                max_train,
                max_test,
                in_process,
                quiet,
            };
            let r = run_suite(&args, &registry)?;
            if std::env::var_os(CHILD_ENV).is_none() {
                let md =
                    std::fs::read_to_string(&r.markdown).map_err(|e| Error::io(&r.markdown, e))?;
                print!("{md}");
            }
            Ok(())
        }
        Command::Config => {
            let schema = VicRegRecipe.settings_schema();
            print!(
                "{}",
                VicRegRecipe::preset().to_commented_toml(schema.as_ref())?
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    selfsup_kernels::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
