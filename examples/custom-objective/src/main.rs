//! `selfsup-vicreg`: `selfsup pretrain` and `selfsup bench` with VICReg beside the built-in
//! methods.
//!
//! ```text
//! cargo run --release -p selfsup-vicreg -- pretrain --out runs/vicreg
//! cargo run --release -p selfsup-vicreg -- bench --methods vicreg --out bench
//! ```

use clap::{Parser, Subcommand};
use selfsup_cli::suite::{SuiteArgs, builtin_recipes, run_suite};
use selfsup_cli::{Recipe, RunConfig, pretrain_with};
use selfsup_core::{DeviceSpec, Error, Result};
use selfsup_data::DataSpec;
use selfsup_vicreg::VicRegRecipe;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "selfsup-vicreg", version, about = "VICReg on selfsup's engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain with VICReg, then score the encoder (kNN, linear probe) on the test split.
    Pretrain {
        /// A TOML config: keys over VICReg's preset (`[custom.settings]` holds VICReg's own).
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
    /// `selfsup bench` with VICReg among the methods (`--methods vicreg`, or `all`).
    Bench(SuiteArgs),
    /// Print VICReg's preset config as TOML.
    Config,
}

fn run(cli: Cli) -> Result<()> {
    let recipe = VicRegRecipe;
    match cli.command {
        Command::Pretrain {
            config,
            data,
            device,
            epochs,
            out,
            resume,
            quiet,
        } => {
            let mut cfg = match config {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                    RunConfig::from_toml_over(recipe.preset(), &text, &p.display().to_string())?
                }
                None => recipe.preset(),
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
            let r = pretrain_with(&recipe, cfg, &out, resume, !quiet)?;
            println!(
                "trained {} steps in {:.0} s, final loss {:.4}; encoder in {}",
                r.steps,
                r.train_seconds,
                r.final_loss,
                out.display()
            );
            Ok(())
        }
        Command::Bench(args) => {
            let mut recipes = builtin_recipes();
            recipes.push(Box::new(recipe));
            let r = run_suite(&args, &recipes)?;
            if std::env::var_os(selfsup_cli::suite::CHILD_ENV).is_none() {
                let md =
                    std::fs::read_to_string(&r.markdown).map_err(|e| Error::io(&r.markdown, e))?;
                print!("{md}");
            }
            Ok(())
        }
        Command::Config => {
            print!("{}", recipe.preset().to_toml()?);
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
