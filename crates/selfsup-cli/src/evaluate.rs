//! kNN evaluation of an encoder, with the raw-pixel and random-init baselines beside it.

use crate::pretrain::{CONFIG_FILE, ENCODER_FILE};
use crate::run_config::RunConfig;
use burn::module::Module;
use burn::tensor::Device;
use selfsup_core::{Encoder, Error, Result, seed};
use selfsup_data::ImageSet;
use selfsup_encoders::Backbone;
use selfsup_eval::{EvalTransform, extract, knn_accuracy, raw_pixels};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// kNN top-1 accuracies on a test split.
#[derive(Clone, Debug, Serialize)]
pub struct KnnReport {
    /// The trained encoder's features.
    pub encoder: f64,
    /// Raw pixels.
    pub raw_pixels: f64,
    /// The same architecture with random weights, when computed.
    pub random_init: Option<f64>,
    /// Training images that voted.
    pub train_images: usize,
    /// Test images classified.
    pub test_images: usize,
    /// Neighbours.
    pub k: usize,
}

fn labels(set: &ImageSet, what: &str) -> Result<Vec<usize>> {
    set.labels.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "the {what} split has no labels, so kNN cannot be measured"
        ))
    })
}

/// kNN of `encoder` (an inference copy) from `train` to `test`, with baselines.
pub fn knn_report(
    cfg: &RunConfig,
    encoder: &Backbone,
    train: &ImageSet,
    test: &ImageSet,
    random_baseline: bool,
) -> Result<KnnReport> {
    let device = cfg.device.device()?;
    let train_labels = labels(train, "training")?;
    let test_labels = labels(test, "test")?;
    let classes = train.num_classes().max(test.num_classes());
    let size = if cfg.augment.crop_size == 0 {
        train.height
    } else {
        cfg.augment.crop_size
    };
    let tf = EvalTransform {
        size,
        mean: cfg.data.mean.clone(),
        std: cfg.data.std.clone(),
    };
    let acc = |e: &Backbone| -> Result<f64> {
        let a = extract(e, train, &tf, 512, &device);
        let b = extract(e, test, &tf, 512, &device);
        knn_accuracy(a, &train_labels, b, &test_labels, classes, &cfg.knn)
    };
    let encoder_acc = acc(encoder)?;
    let raw = knn_accuracy(
        raw_pixels(train, &tf, &device),
        &train_labels,
        raw_pixels(test, &tf, &device),
        &test_labels,
        classes,
        &cfg.knn,
    )?;
    let random_init = if random_baseline {
        // Another seed than the pretrained encoder's initial weights.
        let random = seed::init_module(&device, cfg.train.seed ^ 0x5eed, |d| {
            cfg.encoder.init(train.channels, d)
        })
        .valid();
        Some(acc(&random)?)
    } else {
        None
    };
    let report = KnnReport {
        encoder: encoder_acc,
        raw_pixels: raw,
        random_init,
        train_images: train.len(),
        test_images: test.len(),
        k: cfg.knn.k,
    };
    print_report(&report);
    Ok(report)
}

/// Prints the kNN table.
pub fn print_report(r: &KnnReport) {
    println!(
        "kNN top-1 (k={}, {} train -> {} test images):",
        r.k, r.train_images, r.test_images
    );
    println!(
        "  {:<24} {:>6.2} %",
        "pretrained encoder",
        100.0 * r.encoder
    );
    if let Some(x) = r.random_init {
        println!("  {:<24} {:>6.2} %", "random-init encoder", 100.0 * x);
    }
    println!("  {:<24} {:>6.2} %", "raw pixels", 100.0 * r.raw_pixels);
}

/// The run folder and encoder weights a `--checkpoint` argument names: a run folder (with
/// `encoder.bpk`) or one of its `checkpoints/step-N` folders.
fn locate(checkpoint: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if checkpoint.join(ENCODER_FILE).is_file() {
        return Ok((checkpoint.to_path_buf(), None));
    }
    if checkpoint.join("model.bpk").is_file()
        && let Some(run) = checkpoint.parent().and_then(Path::parent)
    {
        return Ok((run.to_path_buf(), Some(checkpoint.to_path_buf())));
    }
    Err(Error::checkpoint(
        checkpoint,
        format!(
            "neither a run folder with {ENCODER_FILE} nor a checkpoints/step-N folder; pass the --out folder of `selfsup pretrain`"
        ),
    ))
}

/// Loads the encoder of a run (or of one of its step checkpoints) on `device`.
pub fn load_encoder(checkpoint: &Path, device: &Device) -> Result<(RunConfig, Backbone)> {
    let (run, step) = locate(checkpoint)?;
    let cfg = RunConfig::load(&run.join(CONFIG_FILE))?;
    let channels = if cfg.data.mean.is_empty() {
        1
    } else {
        cfg.data.mean.len()
    };
    let fresh = cfg.encoder.init(channels, device);
    let encoder = match step {
        None => {
            let p = run.join(ENCODER_FILE);
            fresh
                .try_load_file(&p)
                .map_err(|e| Error::checkpoint(&p, e.to_string()))?
        }
        Some(dir) => {
            let model = selfsup_contrastive::SimClrModel::new(fresh, &cfg.simclr, device);
            selfsup_core::checkpoint::load_model(&dir, model)?.encoder
        }
    };
    Ok((cfg, encoder.valid()))
}

/// `selfsup eval knn`: the encoder of `checkpoint` on `data` (default: the run's own data).
pub fn eval_knn(
    checkpoint: &Path,
    data: Option<selfsup_data::DataSpec>,
    k: Option<usize>,
    device: Option<selfsup_core::DeviceSpec>,
) -> Result<KnnReport> {
    let dev_spec = device.unwrap_or_default();
    let (mut cfg, encoder) = load_encoder(checkpoint, &dev_spec.device()?)?;
    cfg.device = dev_spec;
    if let Some(d) = data {
        cfg.data.spec = d;
    }
    if let Some(k) = k {
        cfg.knn.k = k;
    }
    cfg.knn.validate()?;
    let channels = cfg.data.mean.len();
    let mut data_cfg = cfg.data.clone();
    data_cfg.channels = channels;
    let splits = data_cfg.load(cfg.train.seed)?;
    let test = splits.test.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no test split to evaluate on",
            cfg.data.spec
        ))
    })?;
    eprintln!(
        "selfsup: {} encoder output width {}",
        checkpoint.display(),
        encoder.output_dim()
    );
    knn_report(&cfg, &encoder, &splits.train, &test, false)
}
