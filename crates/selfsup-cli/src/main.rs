//! `selfsup`: pretrain self-supervised encoders, evaluate them, print configs.

use clap::{Parser, Subcommand};
use selfsup_cli::registry;
use selfsup_core::{DeviceSpec, Error, OptimizerKind, Result};
use selfsup_data::DataSpec;
use selfsup_encoders::Arch;
use selfsup_pipeline::run_dir::{CONFIG_FILE, ENCODER_FILE};
use selfsup_pipeline::step_bench::{StepBenchArgs, bench_step};
use selfsup_pipeline::suite::{Budget, CHILD_ENV, SuiteArgs, run_suite};
use selfsup_pipeline::{
    EvalArgs, EvalPlan, RunConfig, eval_finetune, eval_frozen, pretrain, report,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

// burn's CPU backend allocates and frees large buffers every step; glibc's allocator returns
// them to the kernel and page-faults them back. `StepAllocator` keeps the big ones by size for
// the next step and leaves the rest to mimalloc, told to keep freed memory
// (`selfsup_kernels::keep_freed_memory`, first thing in `main`).
#[global_allocator]
static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;

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
        /// The method (`selfsup methods` lists them) [default: the config file's, else simclr].
        #[arg(long)]
        method: Option<String>,
        /// A TOML config (see `selfsup config`); flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data: sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH,
        /// stl10:PATH, folder:PATH (streamed; `train/` + `val/` are two splits),
        /// manifest:PATH (image-caption pairs), shards:PATTERN (WebDataset tar shards,
        /// `data/train-{000..099}.tar` or a glob).
        #[arg(long)]
        data: Option<DataSpec>,
        /// Device: flex (CPU), wgpu, cuda:N.
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Train and save the encoder without the final scoring (score later with
        /// `selfsup eval`).
        #[arg(long)]
        no_eval: bool,
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
        /// Set any config key, `KEY=VALUE` (repeatable; TOML values): `--set train.epochs=3
        /// --set dino.teacher_temperature=0.05`. Applied after the flags above.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Train as one rank of a job of several processes, each on its part of every global
        /// batch: `mpirun -np 2 selfsup pretrain --distributed mpi ...` (a build with the `mpi`
        /// feature; docs/backends.md). Rank 0 writes the run folder. Every method but the GAN
        /// and VICReg.
        #[arg(long, value_enum, default_value_t = Launch::None)]
        distributed: Launch,
    },
    /// List the methods with a line on each.
    Methods,
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
    /// Write a run's encoder as safetensors that PyTorch loads: ResNets in torchvision's
    /// names and shapes, the ViT in timm's (docs/interop.md has the loading snippet), with a
    /// sidecar FILE.json (architecture, input size, mean, std, stem, feature width).
    Export {
        /// A run folder, or one of its checkpoints/step-N folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The file format; safetensors is the one there is.
        #[arg(long, default_value = "safetensors", value_parser = ["safetensors"])]
        format: String,
        /// torchvision (ResNets), timm (ViT) or burn (ours, any encoder) [default: the one
        /// the architecture has].
        #[arg(long)]
        layout: Option<selfsup_interop::Layout>,
        /// The file to write, FILE.safetensors (the sidecar goes to FILE.json).
        #[arg(long)]
        out: PathBuf,
    },
    /// The encoder's features of a dataset under the evaluation transform, one row per
    /// image in dataset order: FILE.npy (+ FILE.labels.npy), FILE.safetensors (`features`,
    /// `labels`) or FILE.csv.
    Embed {
        #[command(flatten)]
        opts: EvalOpts,
        /// Which split: train or test.
        #[arg(long, default_value = "test")]
        split: selfsup_pipeline::Split,
        /// At most this many images (the first ones).
        #[arg(long)]
        max: Option<usize>,
        /// The file to write (.npy, .safetensors or .csv).
        #[arg(long)]
        out: PathBuf,
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
        suite: SuiteFlags,
    },
    /// Print the default config of a method as TOML, each key with its doc line.
    Config {
        /// The method (`selfsup methods` lists them) [default: the first, simclr].
        #[arg(long)]
        method: Option<String>,
    },
}

/// The flags of `selfsup bench`.
#[derive(Clone, Debug, clap::Args)]
struct SuiteFlags {
    /// Methods, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    methods: Vec<String>,
    /// Data: sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH,
    /// folder:PATH, manifest:PATH.
    #[arg(long, default_value = "sample")]
    data: DataSpec,
    /// Training per method: epochs (`3`, `3e`) or minutes (`10m`).
    #[arg(long, default_value = "1")]
    budget: Budget,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// The bench folder: results.md, results.csv, results.png, runs/METHOD.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Seed of every run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Cap every method's steps (0: none): a quick check that each method runs.
    #[arg(long, default_value_t = 0)]
    max_steps: usize,
    /// Use at most this many training images (0: all).
    #[arg(long, default_value_t = 0)]
    max_train: usize,
    /// Score on at most this many test images (0: all).
    #[arg(long, default_value_t = 0)]
    max_test: usize,
    /// Run the methods in this process instead of one child process each (peak memory is
    /// then the process's, shared by the methods).
    #[arg(long)]
    in_process: bool,
    /// Hide the progress bars.
    #[arg(long)]
    quiet: bool,
}

impl SuiteFlags {
    fn args(self) -> SuiteArgs {
        SuiteArgs {
            methods: self.methods,
            data: self.data,
            budget: self.budget,
            device: self.device,
            out: self.out,
            seed: self.seed,
            max_steps: self.max_steps,
            max_train: self.max_train,
            max_test: self.max_test,
            in_process: self.in_process,
            quiet: self.quiet,
        }
    }
}

/// The flags of `selfsup bench step`.
#[derive(Clone, Debug, clap::Args)]
struct StepFlags {
    /// The method.
    #[arg(long, default_value = "simclr")]
    method: String,
    /// Backbone: resnet18, resnet34, resnet50, convnet, vit (the method preset's ViT shape at
    /// `--image-size`), dcgan.
    #[arg(long, default_value = "resnet18")]
    encoder: Arch,
    /// ConvNet base width.
    #[arg(long, default_value_t = 32)]
    width: usize,
    /// Source images per step (each gives the method's views).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first (allocator and caches warm up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Side of the square images.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Image channels.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Projection head hidden width (SimCLR).
    #[arg(long, default_value_t = 2048)]
    head_hidden: usize,
    /// Projection head output width (SimCLR).
    #[arg(long, default_value_t = 128)]
    head_out: usize,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Optimizer in place of the method preset's (same learning rate): sgd, adamw, lars.
    #[arg(long, value_parser = optimizer_kind)]
    optimizer: Option<OptimizerKind>,
    /// ViT width (`encoder.vit.dim`; with `--encoder vit`).
    #[arg(long)]
    vit_dim: Option<usize>,
    /// ViT depth, transformer blocks (`encoder.vit.depth`).
    #[arg(long)]
    vit_depth: Option<usize>,
    /// ViT attention heads (`encoder.vit.heads`).
    #[arg(long)]
    vit_heads: Option<usize>,
    /// ViT patch side, pixels (`encoder.vit.patch_size`).
    #[arg(long)]
    patch_size: Option<usize>,
    /// MAE decoder width (`mae.decoder_dim`).
    #[arg(long)]
    decoder_dim: Option<usize>,
    /// MAE decoder depth (`mae.decoder_depth`).
    #[arg(long)]
    decoder_depth: Option<usize>,
    /// DINO head output dimension, the prototypes (`dino.head.output_dim`).
    #[arg(long)]
    dino_out: Option<usize>,
    /// DINO local crops per image (`dino.crops.local_crops`).
    #[arg(long)]
    local_crops: Option<usize>,
    /// DINO local crop side, pixels (`dino.crops.local_size`).
    #[arg(long)]
    local_size: Option<usize>,
    /// Time the step alone: one batch of views is built before timing and every step trains on
    /// it (as the PyTorch peer script does with its random batch). Without it, batches are
    /// augmented on other threads while steps run, as in training.
    #[arg(long)]
    fixed_batch: bool,
    /// Any config key over the preset, `KEY=VALUE` (repeatable): `--set mae.mask_ratio=0.9`,
    /// `--set dino.head.hidden_dim=1024` (applied after the flags above).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl StepFlags {
    fn args(self) -> StepBenchArgs {
        let named = [
            ("encoder.vit.dim", self.vit_dim),
            ("encoder.vit.depth", self.vit_depth),
            ("encoder.vit.heads", self.vit_heads),
            ("encoder.vit.patch_size", self.patch_size),
            ("mae.decoder_dim", self.decoder_dim),
            ("mae.decoder_depth", self.decoder_depth),
            ("dino.head.output_dim", self.dino_out),
            ("dino.crops.local_crops", self.local_crops),
            ("dino.crops.local_size", self.local_size),
        ];
        let set = named
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
            .chain(self.set)
            .collect();
        StepBenchArgs {
            method: self.method,
            encoder: self.encoder,
            width: self.width,
            batch: self.batch,
            steps: self.steps,
            warmup: self.warmup,
            image_size: self.image_size,
            channels: self.channels,
            head_hidden: self.head_hidden,
            head_out: self.head_out,
            device: self.device,
            optimizer: self.optimizer,
            fixed_batch: self.fixed_batch,
            set,
        }
    }
}

fn optimizer_kind(s: &str) -> std::result::Result<OptimizerKind, String> {
    selfsup_core::config::from_toml::<std::collections::BTreeMap<String, OptimizerKind>>(
        &format!("kind = \"{s}\""),
        "--optimizer",
    )
    .map(|m| m["kind"])
    .map_err(|_| format!("unknown optimizer `{s}`: use sgd, adamw or lars"))
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time training steps on synthetic images (after a warm-up) and print one JSON line:
    /// images/s, median ms per step and its parts, peak memory.
    Step(StepFlags),
}

#[derive(clap::Args)]
struct EvalOpts {
    /// A run folder of `selfsup pretrain`, or one of its checkpoints/step-N folders.
    #[arg(long, required_unless_present = "weights")]
    checkpoint: Option<PathBuf>,
    /// Score an external encoder instead: a .safetensors file (torchvision / timm layout or
    /// ours); it becomes the run folder runs/external-STEM (or --checkpoint's path).
    #[arg(long, requires = "arch")]
    weights: Option<PathBuf>,
    /// The architecture of --weights: resnet18, resnet34, resnet50, vit, convnet.
    #[arg(long)]
    arch: Option<Arch>,
    /// Data to evaluate on (default: the run's own).
    #[arg(long)]
    data: Option<DataSpec>,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Override a setting of the run's config for this evaluation, KEY=VALUE (repeatable),
    /// e.g. --set finetune.layer_decay=1 --set eval.grid=4.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl EvalOpts {
    /// The run to evaluate; with --weights, first the run folder made from those weights.
    fn args(self, registry: &selfsup_pipeline::Registry) -> Result<EvalArgs> {
        let sets = self
            .sets
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| Error::config("--set", format!("`{kv}`: write KEY=VALUE")))
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some(weights), Some(arch)) = (&self.weights, self.arch) else {
            return Ok(EvalArgs {
                checkpoint: self.checkpoint.unwrap_or_default(),
                data: self.data,
                device: self.device,
                sets,
            });
        };
        let out = self.checkpoint.clone().unwrap_or_else(|| {
            let stem = weights
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("weights");
            PathBuf::from("runs").join(format!("external-{stem}"))
        });
        let run = selfsup_pipeline::export::import_run(weights, arch, self.data, registry, &out)?;
        Ok(EvalArgs {
            checkpoint: run,
            data: None,
            device: self.device,
            sets,
        })
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

/// `KEY=VALUE` pairs of `--set`, applied in order.
fn apply_sets(cfg: &mut RunConfig, sets: &[String]) -> Result<()> {
    for kv in sets {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::config("--set", format!("`{kv}`: write KEY=VALUE")))?;
        cfg.set(k.trim(), v.trim())?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let registry = registry();
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
            set,
            quiet,
            no_eval,
            distributed,
        } => {
            let from_file = config
                .as_deref()
                .map(|p| RunConfig::load(p, &registry))
                .transpose()?;
            if let (Some(m), Some(c), Some(p)) = (&method, &from_file, &config)
                && *m != c.method
            {
                return Err(Error::config(
                    "--method",
                    format!(
                        "`{m}` contradicts `method = \"{}\"` in {}: leave --method out, or change the file",
                        c.method,
                        p.display()
                    ),
                ));
            }
            let name = match (&method, &from_file) {
                (Some(m), _) => m.clone(),
                (None, Some(c)) => c.method.clone(),
                (None, None) => registry.default_method()?.to_string(),
            };
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&name));
            let saved = out.join(CONFIG_FILE);
            let mut cfg = match (from_file, resume && saved.is_file()) {
                (Some(cfg), _) => cfg,
                (None, true) => {
                    let c = RunConfig::load_saved(&saved)?;
                    if method.is_some() && c.method != name {
                        return Err(Error::config(
                            "--method",
                            format!(
                                "`{name}` contradicts the `{}` run in {}: leave --method out to resume it",
                                c.method,
                                out.display()
                            ),
                        ));
                    }
                    c
                }
                (None, false) => registry.get(&name)?.preset(),
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
            apply_sets(&mut cfg, &set)?;
            let recipe = registry.get(&cfg.method)?;
            let report = match distributed {
                Launch::Mpi => {
                    let world = ranks().world()?;
                    let writer = world.rank() == 0;
                    let report = selfsup_pipeline::pretrain_distributed(
                        recipe, cfg, &out, resume, !quiet, !no_eval, world,
                    )?;
                    ranks().end();
                    if !writer {
                        return Ok(());
                    }
                    report
                }
                Launch::None if no_eval => {
                    selfsup_pipeline::pretrain_only(recipe, cfg, &out, resume, !quiet)?
                }
                Launch::None => pretrain(recipe, cfg, &out, resume, !quiet)?,
            };
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
                out.join(ENCODER_FILE).display()
            );
            Ok(())
        }
        Command::Methods => {
            for r in registry.iter() {
                println!("{:<8} {}", r.name(), r.about());
            }
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
                eval_frozen(&opts.args(&registry)?, &registry, plan, k, None).map(|_| ())
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
                eval_frozen(&opts.args(&registry)?, &registry, plan, None, epochs).map(|_| ())
            }
            EvalCommand::ZeroShot { opts, templates } => {
                selfsup_contrastive::recipe::clip_eval::eval_clip(
                    &opts.args(&registry)?,
                    true,
                    false,
                    templates,
                )
                .map(|_| ())
            }
            EvalCommand::Retrieval { opts } => selfsup_contrastive::recipe::clip_eval::eval_clip(
                &opts.args(&registry)?,
                false,
                true,
                None,
            )
            .map(|_| ()),
            EvalCommand::Finetune {
                opts,
                fractions,
                epochs,
                baseline,
                quiet,
            } => eval_finetune(
                &opts.args(&registry)?,
                &registry,
                fractions,
                epochs,
                baseline,
                !quiet,
            )
            .map(|_| ()),
        },
        Command::Report {
            run,
            out,
            points,
            device,
        } => {
            let files = report(&run, &registry, out.as_deref(), points, device)?;
            println!("wrote {}", files.summary.display());
            for p in files.pictures {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Embed {
            opts,
            split,
            max,
            out,
        } => {
            let e = selfsup_pipeline::embed(&opts.args(&registry)?, &registry, split, max, &out)?;
            println!(
                "wrote {} ({} images x {} features){}",
                e.features.display(),
                e.rows,
                e.dim,
                e.labels
                    .map(|l| format!(" and {}", l.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Export {
            checkpoint,
            format: _,
            layout,
            out,
        } => {
            let e = selfsup_pipeline::export(&checkpoint, &registry, layout, &out)?;
            println!(
                "wrote {} ({} tensors, {} layout, {} features of {}x{}x{} images) and {}",
                e.weights.display(),
                e.tensors,
                e.layout,
                e.info.feature_dim,
                e.info.channels,
                e.info.input_size,
                e.info.input_size,
                e.sidecar.display()
            );
            Ok(())
        }
        Command::Sample {
            checkpoint,
            n,
            out,
            seed,
            device,
        } => {
            let p = selfsup_gan::recipe::sample(&checkpoint, n, &out, seed, device)?;
            println!("wrote {n} samples to {}", p.display());
            Ok(())
        }
        Command::Bench { what: None, suite } => {
            let r = run_suite(&suite.args(), &registry)?;
            if std::env::var_os(CHILD_ENV).is_none() {
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
            what: Some(BenchCommand::Step(flags)),
            ..
        } => {
            let r = bench_step(&registry, &flags.args())?;
            println!(
                "{}",
                serde_json::to_string(&r).expect("bench line serializes")
            );
            Ok(())
        }
        Command::Config { method } => {
            let recipe = match method {
                Some(m) => registry.get(&m)?,
                None => registry.get(registry.default_method()?)?,
            };
            let schema = recipe.settings_schema();
            print!("{}", recipe.preset().to_commented_toml(schema.as_ref())?);
            Ok(())
        }
    }
}

/// How `selfsup pretrain` runs: one process, or one rank of an MPI job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Launch {
    /// One process (its devices: `--device`, `--devices`).
    None,
    /// One rank of the processes `mpirun` started.
    Mpi,
}

/// How a `--distributed mpi` run reaches MPI. The `selfsup` binary links no MPI library, so
/// that it starts on machines without one: it hands such a run to `selfsup-rank` beside it
/// ([`HandOver`]), which is this same program with MPI linked (`src/bin/selfsup-rank.rs`) and
/// its own `Ranks`.
pub trait Ranks: Sync {
    /// This process as a rank of the job the launcher started.
    fn world(&self) -> Result<Arc<dyn selfsup_core::Collective>>;
    /// The run ended well: let MPI finish (every rank must, or the launcher reports a failed
    /// job).
    fn end(&self) {}
    /// The run failed on this rank: stop every rank of the job, which would otherwise wait for
    /// this one in their next exchange.
    fn stop(&self) {}
}

static RANKS: std::sync::OnceLock<&'static dyn Ranks> = std::sync::OnceLock::new();

fn ranks() -> &'static dyn Ranks {
    *RANKS.get_or_init(|| &HandOver)
}

/// `selfsup`'s [`Ranks`]: replaces this process with `selfsup-rank` (same arguments), after
/// checking that it is there, from the same build, and able to start (its MPI library found).
struct HandOver;

/// The program a `--distributed mpi` run becomes.
pub const RANK_PROGRAM: &str = "selfsup-rank";

impl Ranks for HandOver {
    fn world(&self) -> Result<Arc<dyn selfsup_core::Collective>> {
        if !cfg!(feature = "mpi") {
            return Err(Error::config(
                "--distributed",
                "this selfsup was built without MPI: build it with `cargo build --release -p selfsup-cli --features mpi` (needs Open MPI: apt install openmpi-bin libopenmpi-dev libclang-dev; docs/backends.md)",
            ));
        }
        let exe = std::env::current_exe().map_err(|e| {
            Error::Invalid(format!(
                "--distributed mpi: cannot find this program's path to start {RANK_PROGRAM} beside it: {e}"
            ))
        })?;
        let rank = exe.with_file_name(format!("{RANK_PROGRAM}{}", std::env::consts::EXE_SUFFIX));
        if !rank.is_file() {
            return Err(Error::Invalid(format!(
                "--distributed mpi: {} is missing; it is built beside selfsup with the `mpi` feature (`cargo build --release -p selfsup-cli --features mpi`, or `cargo install --features mpi`) and must stay beside it",
                rank.display()
            )));
        }
        // Started once without MPI work: a missing MPI library stops it in the loader, whose
        // message is all it can say; here it gets the what-to-do.
        let probe = std::process::Command::new(&rank)
            .arg(BUILD_FLAG)
            .output()
            .map_err(|e| {
                Error::Invalid(format!(
                    "--distributed mpi: cannot start {}: {e}",
                    rank.display()
                ))
            })?;
        if !probe.status.success() {
            let why = String::from_utf8_lossy(&probe.stderr);
            return Err(Error::Invalid(format!(
                "--distributed mpi: {} cannot start ({}): {}. The MPI library it was built against is missing or not on the library path: install it (Debian: apt install openmpi-bin), `module load` your cluster's MPI, or add its lib folder to LD_LIBRARY_PATH (`ldd {}` lists what it needs)",
                rank.display(),
                probe.status,
                why.trim(),
                rank.display()
            )));
        }
        let theirs = String::from_utf8_lossy(&probe.stdout).trim().to_string();
        let ours = selfsup_pipeline::run_dir::commit();
        if theirs != ours {
            return Err(Error::Invalid(format!(
                "--distributed mpi: {} is from another build (commit {theirs}, this selfsup {ours}): rebuild both with `cargo build --release -p selfsup-cli --features mpi`",
                rank.display()
            )));
        }
        let err = hand_over(&rank);
        Err(Error::Invalid(format!(
            "--distributed mpi: cannot start {}: {err}",
            rank.display()
        )))
    }
}

/// The argument that makes `selfsup-rank` print the commit it was built from and exit.
pub const BUILD_FLAG: &str = "--selfsup-build";

/// Becomes `program` with this process's arguments (on Unix the same process: the launcher
/// keeps tracking it); returns only on failure.
#[cfg(unix)]
fn hand_over(program: &std::path::Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .exec()
}

#[cfg(not(unix))]
fn hand_over(program: &std::path::Path) -> std::io::Error {
    match std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .status()
    {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(e) => e,
    }
}

/// Runs the command line with `ranks` for `--distributed mpi`: `selfsup`'s `main` and
/// `selfsup-rank`'s.
pub fn start(with: &'static dyn Ranks) -> ExitCode {
    let _ = RANKS.set(with);
    selfsup_kernels::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = run(Cli::parse());
    if std::env::var_os("SELFSUP_ALLOC_STATS").is_some() {
        // How the big blocks were served (reused, mapped, given back): `docs/benchmarks.md`.
        eprintln!(
            "allocator's big blocks: {:?}",
            selfsup_kernels::big_blocks()
        );
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ranks().stop();
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)] // `selfsup-rank` has its own.
fn main() -> ExitCode {
    start(&HandOver)
}
