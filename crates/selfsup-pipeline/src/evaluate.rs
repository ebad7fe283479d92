//! Evaluation of a run's encoder (kNN, linear probe, fine-tuning), with the raw-pixel and
//! random-init baselines beside it, and the `selfsup eval` commands.

use crate::config::RunConfig;
use crate::registry::Registry;
use crate::run_dir::{CONFIG_FILE, ENCODER_FILE, FINETUNE_FILE, locate, run_dir, write_json};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use selfsup_core::{DeviceSpec, Encoder, Error, Result, seed};
use selfsup_data::{DataSpec, ImageSet};
use selfsup_encoders::Backbone;
use selfsup_eval::{
    Accuracy, EvalTransform, FinetuneReport, extract, finetune, knn_accuracy, linear_probe,
    raw_pixels,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Row name of the pretrained encoder.
pub const PRETRAINED: &str = "pretrained";
/// Row name of the random-init baseline.
pub const RANDOM_INIT: &str = "random init";
/// Row name of the raw-pixel baseline.
pub const RAW_PIXELS: &str = "raw pixels";

/// One kind of features and how well they classify.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    /// Which features: [`PRETRAINED`], [`RANDOM_INIT`] or [`RAW_PIXELS`].
    pub features: String,
    /// Width of the features.
    pub dim: usize,
    /// Weighted-kNN top-1, when measured.
    pub knn_top1: Option<f64>,
    /// Linear-probe accuracy on the test split, when measured.
    pub linear: Option<Accuracy>,
}

/// Frozen-feature evaluation on a test split: the encoder and its baselines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// The pretrained encoder first, then the baselines.
    pub rows: Vec<EvalRow>,
    /// Labelled training images the kNN and the probe learn from.
    pub train_images: usize,
    /// Test images scored.
    pub test_images: usize,
    /// kNN neighbours.
    pub k: usize,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

impl EvalReport {
    /// The row of `features`.
    pub fn row(&self, features: &str) -> Option<&EvalRow> {
        self.rows.iter().find(|r| r.features == features)
    }

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
        let mut s = format!(
            "| features | dim | kNN top-1 (k={}) | linear top-1 | linear top-5 |\n|---|---:|---:|---:|---:|\n",
            self.k
        );
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                r.features,
                r.dim,
                pct(r.knn_top1),
                pct(r.linear.map(|a| a.top1)),
                pct(r.linear.map(|a| a.top5)),
            );
        }
        s
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "frozen features, {} train -> {} test images (accuracy in %):",
            self.train_images, self.test_images
        );
        print!("{}", self.markdown());
    }
}

/// What [`evaluate`] measures.
#[derive(Clone, Copy, Debug)]
pub struct EvalPlan {
    /// Weighted kNN.
    pub knn: bool,
    /// Linear probe.
    pub linear: bool,
    /// Raw-pixel and random-init rows beside the encoder.
    pub baselines: bool,
}

fn labels(set: &ImageSet, what: &str) -> Result<Vec<usize>> {
    set.labels.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "the {what} split has no labels, so the features cannot be scored"
        ))
    })
}

/// How a run's images are fed to the encoder for evaluation.
pub fn eval_transform(cfg: &RunConfig, images: &ImageSet) -> EvalTransform {
    EvalTransform {
        size: cfg.crop_side(images.height),
        center_crop: cfg.data.center_crop_for(images),
        mean: cfg.data.mean.clone(),
        std: cfg.data.std.clone(),
        grid: cfg.eval.grid,
    }
}

/// A random-init encoder of the run's architecture (another seed than the pretrained
/// encoder's initial weights), trainable; `.valid()` gives the inference copy.
pub fn random_encoder(cfg: &RunConfig, channels: usize, device: &Device) -> Backbone {
    seed::init_module(device, cfg.train.seed ^ 0x5eed, |d| {
        cfg.encoder.init(channels, d)
    })
}

/// The labels and class count of a labelled train / test pair.
fn labelled(train: &ImageSet, test: &ImageSet) -> Result<(Vec<usize>, Vec<usize>, usize)> {
    Ok((
        labels(train, "training")?,
        labels(test, "test")?,
        train.num_classes().max(test.num_classes()),
    ))
}

/// Scores one kind of features (`a` of the training images, `b` of the test images) with
/// the kNN and the linear probe of `cfg`, as `plan` asks.
fn score(
    cfg: &RunConfig,
    plan: EvalPlan,
    name: &str,
    (a, b): (Tensor<2>, Tensor<2>),
    (train_labels, test_labels, classes): &(Vec<usize>, Vec<usize>, usize),
) -> Result<EvalRow> {
    let dim = a.dims()[1];
    let knn_top1 = if plan.knn {
        Some(knn_accuracy(
            a.clone(),
            train_labels,
            b.clone(),
            test_labels,
            *classes,
            &cfg.knn,
        )?)
    } else {
        None
    };
    let linear = if plan.linear {
        Some(linear_probe(a, train_labels, b, test_labels, *classes, &cfg.linear)?.test)
    } else {
        None
    };
    Ok(EvalRow {
        features: name.to_string(),
        dim,
        knn_top1,
        linear,
    })
}

/// The random-init baseline of a run: an encoder of its architecture, untrained, read as the
/// run reads its own (`eval.grid`).
pub fn random_init_row(
    cfg: &RunConfig,
    train: &ImageSet,
    test: &ImageSet,
    plan: EvalPlan,
) -> Result<EvalRow> {
    let device = cfg.device.device()?;
    let tf = eval_transform(cfg, train);
    let random = random_encoder(cfg, train.channels, &device).valid();
    let feats = (
        extract(&random, train, &tf, 512, &device)?,
        extract(&random, test, &tf, 512, &device)?,
    );
    score(cfg, plan, RANDOM_INIT, feats, &labelled(train, test)?)
}

/// The raw-pixel baseline: the normalized pixels of the run's evaluation crops.
pub fn raw_pixel_row(
    cfg: &RunConfig,
    train: &ImageSet,
    test: &ImageSet,
    plan: EvalPlan,
) -> Result<EvalRow> {
    let device = cfg.device.device()?;
    let tf = eval_transform(cfg, train);
    let feats = (
        raw_pixels(train, &tf, &device)?,
        raw_pixels(test, &tf, &device)?,
    );
    score(cfg, plan, RAW_PIXELS, feats, &labelled(train, test)?)
}

/// Scores frozen features of `encoder` (an inference copy) from `train` to `test`, with the
/// baselines when `plan` asks, and prints the table.
pub fn evaluate(
    cfg: &RunConfig,
    encoder: &Backbone,
    train: &ImageSet,
    test: &ImageSet,
    plan: EvalPlan,
) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let device = cfg.device.device()?;
    let labels = labelled(train, test)?;
    let tf = eval_transform(cfg, train);
    let feats = (
        extract(encoder, train, &tf, 512, &device)?,
        extract(encoder, test, &tf, 512, &device)?,
    );
    let mut rows = vec![score(cfg, plan, PRETRAINED, feats, &labels)?];
    if plan.baselines {
        rows.push(random_init_row(cfg, train, test, plan)?);
        rows.push(raw_pixel_row(cfg, train, test, plan)?);
    }
    let report = EvalReport {
        rows,
        train_images: train.len(),
        test_images: test.len(),
        k: cfg.knn.k,
        seconds: start.elapsed().as_secs_f64(),
    };
    report.print();
    Ok(report)
}

/// The encoder of a run (its `encoder.bpk`) or of one of its step checkpoints (read by the
/// recipe of the run's method, which `registry` must know), trainable, on `device`.
pub fn load_trainable_encoder(
    checkpoint: &Path,
    registry: &Registry,
    device: &Device,
) -> Result<(RunConfig, Backbone)> {
    let (run, step) = locate(checkpoint)?;
    let cfg = RunConfig::load_saved(&run.join(CONFIG_FILE))?;
    let encoder = match step {
        None => {
            let p = run.join(ENCODER_FILE);
            crate::run_dir::load_module(&p, cfg.encoder.init(cfg.channels(), device))?
        }
        Some(dir) => {
            let recipe = registry.get(&cfg.method).map_err(|_| {
                Error::checkpoint(
                    &dir,
                    format!(
                        "a step checkpoint of `{}` holds that method's own model, and this program does not know the method (it knows {}): evaluate the run folder (its {ENCODER_FILE}), or use the binary of the crate that adds the method",
                        cfg.method,
                        registry.names().join(", ")
                    ),
                )
            })?;
            recipe.step_encoder(&cfg, &run, &dir, device)?
        }
    };
    Ok((cfg, encoder))
}

/// The final encoder of a run folder (`encoder.bpk`), for inference, without a registry.
pub fn load_final_encoder(run: &Path, device: &Device) -> Result<(RunConfig, Backbone)> {
    let cfg = RunConfig::load_saved(&run.join(CONFIG_FILE))?;
    let p = run.join(ENCODER_FILE);
    let enc = crate::run_dir::load_module(&p, cfg.encoder.init(cfg.channels(), device))?;
    Ok((cfg, enc.valid()))
}

/// Loads the encoder of a run (or of one of its step checkpoints) on `device`, for inference.
pub fn load_encoder(
    checkpoint: &Path,
    registry: &Registry,
    device: &Device,
) -> Result<(RunConfig, Backbone)> {
    let (cfg, enc) = load_trainable_encoder(checkpoint, registry, device)?;
    Ok((cfg, enc.valid()))
}

/// The options every `selfsup eval` command shares.
#[derive(Clone, Debug, Default)]
pub struct EvalArgs {
    /// A run folder or one of its step checkpoints.
    pub checkpoint: PathBuf,
    /// Data to evaluate on (default: the run's own).
    pub data: Option<DataSpec>,
    /// Device (default: flex).
    pub device: Option<DeviceSpec>,
    /// `(key, value)` settings applied to the run's config before evaluating, as `--set`
    /// does (`finetune.layer_decay`, `eval.grid`, ...).
    pub sets: Vec<(String, String)>,
}

/// The run's config (with `args` applied), its encoder on the evaluation device (trainable
/// when `trainable`), and the training and test splits.
pub fn open_run(
    args: &EvalArgs,
    registry: &Registry,
    trainable: bool,
) -> Result<(RunConfig, Backbone, ImageSet, ImageSet)> {
    let dev_spec = args.device.clone().unwrap_or_default();
    let device = if trainable {
        dev_spec.train_device()?
    } else {
        dev_spec.device()?
    };
    let (mut cfg, encoder) = load_trainable_encoder(&args.checkpoint, registry, &device)?;
    let encoder = if trainable { encoder } else { encoder.valid() };
    for (k, v) in &args.sets {
        cfg.set(k, v)?;
    }
    cfg.device = dev_spec;
    if let Some(d) = &args.data {
        cfg.data.spec = d.clone();
    }
    let mut data_cfg = cfg.data.clone();
    data_cfg.channels = cfg.data.mean.len();
    let splits = data_cfg.load(cfg.train.seed)?;
    let test = splits.test.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no test split to evaluate on",
            cfg.data.spec
        ))
    })?;
    eprintln!(
        "selfsup: {} encoder output width {}, {} train / {} test images",
        args.checkpoint.display(),
        encoder.output_dim(),
        splits.train.len(),
        test.len()
    );
    Ok((cfg, encoder, splits.train, test))
}

/// `selfsup eval knn` / `selfsup eval linear`: frozen features of the run's encoder, with the
/// baselines when `baselines`; the report is also written to `RUN/eval-{knn,linear}.json`.
pub fn eval_frozen(
    args: &EvalArgs,
    registry: &Registry,
    plan: EvalPlan,
    k: Option<usize>,
    linear_epochs: Option<usize>,
) -> Result<EvalReport> {
    let (mut cfg, encoder, train, test) = open_run(args, registry, false)?;
    if let Some(k) = k {
        cfg.knn.k = k;
    }
    if let Some(e) = linear_epochs {
        cfg.linear.epochs = e;
    }
    cfg.knn.validate()?;
    cfg.linear.validate()?;
    let report = evaluate(&cfg, &encoder, &train, &test, plan)?;
    let name = if plan.linear {
        "eval-linear.json"
    } else {
        "eval-knn.json"
    };
    write_json(&run_dir(&args.checkpoint)?.join(name), &report)?;
    Ok(report)
}

/// `selfsup eval finetune`: fine-tunes a copy of the run's encoder on each label fraction
/// (in `RUN/finetune-P/`); with `baseline`, also a random-init encoder of the same
/// architecture the same way (supervised from scratch, in `RUN/finetune-P-scratch/`).
/// Prints and writes `RUN/finetune.json`.
pub fn eval_finetune(
    args: &EvalArgs,
    registry: &Registry,
    fractions: Option<Vec<f64>>,
    epochs: Option<usize>,
    baseline: bool,
    progress: bool,
) -> Result<Vec<FinetuneReport>> {
    let (mut cfg, _, train, test) = open_run(args, registry, false)?;
    if let Some(f) = fractions {
        cfg.finetune.fractions = f;
    }
    if let Some(e) = epochs {
        cfg.finetune.train.epochs = e;
    }
    cfg.finetune.validate()?;
    let run = run_dir(&args.checkpoint)?;
    let device = cfg.device.train_device()?;
    let tf = eval_transform(&cfg, &train);
    let mut out = Vec::new();
    for &fraction in &cfg.finetune.fractions {
        for scratch in [false, true] {
            if scratch && !baseline {
                continue;
            }
            // A fresh copy of the starting weights for each run.
            let (encoder, init, suffix) = if scratch {
                let enc = random_encoder(&cfg, train.channels, &device);
                (enc, RANDOM_INIT, "-scratch")
            } else {
                (
                    load_trainable_encoder(&args.checkpoint, registry, &device)?.1,
                    PRETRAINED,
                    "",
                )
            };
            let dir = run.join(format!("finetune-{}{suffix}", fraction_name(fraction)));
            let mut r = finetune(
                encoder,
                &train,
                &test,
                fraction,
                &cfg.finetune,
                &tf,
                &dir,
                &device,
                progress,
            )?;
            r.init = init.to_string();
            println!(
                "{init:>11} fine-tuned on {:>5.1} % of the labels ({} images) in {:.0} s: top-1 {:.2} %, top-5 {:.2} %",
                100.0 * fraction,
                r.labelled_images,
                r.seconds,
                100.0 * r.test.top1,
                100.0 * r.test.top5
            );
            out.push(r);
        }
    }
    write_json(&run.join(FINETUNE_FILE), &out)?;
    Ok(out)
}

/// `0.01` -> `1pct`, `0.005` -> `0.5pct`.
fn fraction_name(f: f64) -> String {
    let p = 100.0 * f;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}pct", p.round() as i64)
    } else {
        format!("{p}pct")
    }
}
