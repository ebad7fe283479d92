//! `selfsup`: pretrain self-supervised encoders, evaluate them, print configs.

use clap::{Parser, Subcommand};
use selfsup_cli::{EvalArgs, EvalPlan, Method, RunConfig, eval_finetune, eval_frozen, pretrain};
use selfsup_core::{DeviceSpec, Error, Result};
use selfsup_data::DataSpec;
use std::path::PathBuf;
use std::process::ExitCode;

// burn's CPU backend allocates and frees large buffers every step; glibc's allocator returns
// them to the kernel and page-faults them back. mimalloc, told to keep freed memory
// (`selfsup_kernels::keep_freed_memory`, first thing in `main`), reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "selfsup",
    version,
    about = "Self-supervised visual representation learning on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain an encoder without labels, then score it (kNN, linear probe) on the test split.
    Pretrain {
        /// The method.
        #[arg(long, value_enum, default_value = "simclr")]
        method: Method,
        /// A TOML config (see `selfsup config`); flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data: sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH, folder:PATH.
        #[arg(long)]
        data: Option<DataSpec>,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Data-parallel training over several devices, comma-separated (cuda:0,cuda:1): each
        /// step's batch is split over them; the first holds the model. Every method but the GAN.
        #[arg(long, value_delimiter = ',', conflicts_with = "device")]
        devices: Option<Vec<DeviceSpec>>,
        /// Number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Images per step.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Stop after this many steps in total.
        #[arg(long)]
        max_steps: Option<usize>,
        /// Random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Run folder for checkpoints, metrics and the final encoder [default: runs/METHOD].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in --out from its newest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a pretrained encoder.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Pictures and a Markdown summary of a run: loss and lr curves, the kNN monitor, a PCA
    /// of the test embeddings, the evaluation tables.
    Report {
        /// The run folder (`--out` of `selfsup pretrain`).
        run: PathBuf,
        /// Where to write (default: RUN/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Test images in the embedding picture (0: none).
        #[arg(long, default_value_t = 2000)]
        points: usize,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long)]
        device: Option<DeviceSpec>,
    },
    /// Images from the generator of a GAN run (`--method gan`), as a grid PNG.
    Sample {
        /// A GAN run folder, or one of its checkpoints/step-N folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Number of images.
        #[arg(short, default_value_t = 64)]
        n: usize,
        /// The PNG to write.
        #[arg(long, default_value = "samples.png")]
        out: PathBuf,
        /// Noise seed (default: the run's, which repeats its per-epoch grids).
        #[arg(long)]
        seed: Option<u64>,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long)]
        device: Option<DeviceSpec>,
    },
    /// Compare methods: pretrain each on the same data with the same budget, score each with
    /// the same kNN and linear probe, write results.md, results.csv and results.png (accuracy
    /// against training time). A rerun of the same command resumes. `bench step` times steps.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<BenchCommand>,
        #[command(flatten)]
        suite: selfsup_cli::suite::SuiteArgs,
    },
    /// Print the default config of a method as TOML.
    Config {
        /// The method.
        #[arg(long, value_enum, default_value = "simclr")]
        method: Method,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time training steps on synthetic images (after a warm-up) and print one JSON line:
    /// images/s, median ms per step and its parts, peak memory.
    Step(selfsup_cli::bench::StepBenchArgs),
}

#[derive(clap::Args)]
struct EvalOpts {
    /// A run folder of `selfsup pretrain`, or one of its checkpoints/step-N folders.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data to evaluate on (default: the run's own).
    #[arg(long)]
    data: Option<DataSpec>,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long)]
    device: Option<DeviceSpec>,
}

impl EvalOpts {
    fn args(self) -> EvalArgs {
        EvalArgs {
            checkpoint: self.checkpoint,
            data: self.data,
            device: self.device,
        }
    }
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Weighted kNN top-1 on the test split, beside raw pixels and a random-init encoder.
    Knn {
        #[command(flatten)]
        opts: EvalOpts,
        /// Neighbours (default: the run's config, 200).
        #[arg(long)]
        k: Option<usize>,
        /// Leave out the raw-pixel and random-init rows.
        #[arg(long)]
        no_baselines: bool,
    },
    /// kNN and a linear probe on frozen features (top-1 and top-5), beside the baselines.
    Linear {
        #[command(flatten)]
        opts: EvalOpts,
        /// Epochs of the linear classifier (default: the run's config, 30).
        #[arg(long)]
        epochs: Option<usize>,
        /// Leave out the raw-pixel and random-init rows.
        #[arg(long)]
        no_baselines: bool,
    },
    /// Zero-shot classification of a CLIP run: each test image gets the class whose prompts
    /// (`clip.zero_shot_templates`, averaged) its embedding is nearest to.
    ZeroShot {
        #[command(flatten)]
        opts: EvalOpts,
        /// Prompt templates, `{}` standing for the class name, separated by `|` (default: the
        /// run's `clip.zero_shot_templates`).
        #[arg(long, value_delimiter = '|')]
        templates: Option<Vec<String>>,
    },
    /// Image-to-text and text-to-image recall at 1, 5 and 10 of a CLIP run on held-out images
    /// and their captions.
    Retrieval {
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Fine-tune the encoder with a linear head on fractions of the labels.
    Finetune {
        #[command(flatten)]
        opts: EvalOpts,
        /// Label fractions, comma-separated (default: the run's config, 0.01,0.1).
        #[arg(long, value_delimiter = ',')]
        fractions: Option<Vec<f64>>,
        /// Epochs per fine-tuning run (default: the run's config, 20).
        #[arg(long)]
        epochs: Option<usize>,
        /// Also fine-tune a random-init encoder the same way (supervised from scratch).
        #[arg(long)]
        baseline: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain {
            method,
            config,
            data,
            device,
            devices,
            epochs,
            batch_size,
            max_steps,
            seed,
            out,
            resume,
            quiet,
        } => {
            let from_file = config.as_deref().map(RunConfig::load).transpose()?;
            let out = out.unwrap_or_else(|| {
                let m = from_file.as_ref().map_or(method, |c| c.method);
                PathBuf::from("runs").join(format!("{m:?}").to_lowercase())
            });
            let saved = out.join(selfsup_cli::pretrain::CONFIG_FILE);
            let mut cfg = match (from_file, resume && saved.is_file()) {
                (Some(cfg), _) => cfg,
                (None, true) => RunConfig::load(&saved)?,
                (None, false) => RunConfig::preset(method),
            };
            if let Some(d) = data {
                if d != cfg.data.spec {
                    cfg.data.mean.clear();
                    cfg.data.std.clear();
                }
                cfg.data.spec = d;
            }
            if let Some(d) = device {
                cfg.device = d;
                cfg.devices.clear();
            }
            if let Some(list) = devices {
                if let Some(first) = list.first() {
                    cfg.device = first.clone();
                }
                cfg.devices = list;
            }
            if let Some(e) = epochs {
                cfg.train.epochs = e;
            }
            if let Some(b) = batch_size {
                cfg.train.batch_size = b;
            }
            if let Some(m) = max_steps {
                cfg.train.max_steps = m;
            }
            if let Some(s) = seed {
                cfg.train.seed = s;
            }
            let report = pretrain(cfg, &out, resume, !quiet)?;
            let peak = report
                .peak_rss_mib
                .map(|m| format!(", peak memory {m:.0} MiB"))
                .unwrap_or_default();
            println!(
                "trained {} steps in {:.0} s ({:.0} images/s{peak}), final loss {:.4}; encoder in {}",
                report.steps,
                report.train_seconds,
                report.images_per_sec,
                report.final_loss,
                out.join(selfsup_cli::pretrain::ENCODER_FILE).display()
            );
            Ok(())
        }
        Command::Eval { what } => match what {
            EvalCommand::Knn {
                opts,
                k,
                no_baselines,
            } => {
                let plan = EvalPlan {
                    knn: true,
                    linear: false,
                    baselines: !no_baselines,
                };
                eval_frozen(&opts.args(), plan, k, None).map(|_| ())
            }
            EvalCommand::Linear {
                opts,
                epochs,
                no_baselines,
            } => {
                let plan = EvalPlan {
                    knn: true,
                    linear: true,
                    baselines: !no_baselines,
                };
                eval_frozen(&opts.args(), plan, None, epochs).map(|_| ())
            }
            EvalCommand::ZeroShot { opts, templates } => {
                selfsup_cli::clip_eval::eval_clip(&opts.args(), true, false, templates).map(|_| ())
            }
            EvalCommand::Retrieval { opts } => {
                selfsup_cli::clip_eval::eval_clip(&opts.args(), false, true, None).map(|_| ())
            }
            EvalCommand::Finetune {
                opts,
                fractions,
                epochs,
                baseline,
                quiet,
            } => eval_finetune(&opts.args(), fractions, epochs, baseline, !quiet).map(|_| ()),
        },
        Command::Report {
            run,
            out,
            points,
            device,
        } => {
            let files = selfsup_cli::report(&run, out.as_deref(), points, device)?;
            println!("wrote {}", files.summary.display());
            for p in files.pictures {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Sample {
            checkpoint,
            n,
            out,
            seed,
            device,
        } => {
            let p = selfsup_cli::gan::sample(&checkpoint, n, &out, seed, device)?;
            println!("wrote {n} samples to {}", p.display());
            Ok(())
        }
        Command::Bench { what: None, suite } => {
            let r = selfsup_cli::suite::run_suite(&suite, &selfsup_cli::suite::builtin_recipes())?;
            if std::env::var_os(selfsup_cli::suite::CHILD_ENV).is_none() {
                print!(
                    "{}",
                    std::fs::read_to_string(&r.markdown).map_err(|e| Error::io(&r.markdown, e))?
                );
                println!(
                    "wrote {}, {} and {}",
                    r.markdown.display(),
                    r.csv.display(),
                    r.chart.display()
                );
            }
            Ok(())
        }
        Command::Bench {
            what: Some(BenchCommand::Step(args)),
            ..
        } => {
            let r = selfsup_cli::bench::bench_step(&args)?;
            println!(
                "{}",
                serde_json::to_string(&r).expect("bench line serializes")
            );
            Ok(())
        }
        Command::Config { method } => {
            print!("{}", RunConfig::preset(method).to_toml()?);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    selfsup_kernels::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
