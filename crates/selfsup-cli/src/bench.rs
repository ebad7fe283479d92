//! `selfsup bench step`: times training steps of a method on synthetic images and prints one
//! JSON line, so scripts can compare runs, machines and backends.

use crate::run_config::{Method, RunConfig};
use selfsup_contrastive::{Clip, ClipModel, SimClr, SimClrModel};
use selfsup_core::{
    BatchSource, DeviceSpec, Objective, OptimizerKind, Prefetch, Result, StepInfo, StepResult,
    Stepper, ViewGenerator, seed,
};
use selfsup_data::{CaptionLoader, ImageSet, MultiView, ViewLoader};
use selfsup_dino::{Dino, DinoModel};
use selfsup_encoders::{Arch, Backbone};
use selfsup_mae::{Mae, MaeModel};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// What to time (the flags of `selfsup bench step`).
#[derive(Clone, Debug, clap::Args)]
pub struct StepBenchArgs {
    /// The method.
    #[arg(long, value_enum, default_value = "simclr")]
    pub method: Method,
    /// Backbone: resnet18, resnet34, resnet50, convnet, vit (the method preset's ViT shape at
    /// `--image-size`).
    #[arg(long, default_value = "resnet18")]
    pub encoder: Arch,
    /// ConvNet base width.
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Source images per step (each gives the method's views).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first (allocator and caches warm up).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Side of the square images.
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Image channels.
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Projection head hidden width.
    #[arg(long, default_value_t = 2048)]
    pub head_hidden: usize,
    /// Projection head output width.
    #[arg(long, default_value_t = 128)]
    pub head_out: usize,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long, default_value = "flex")]
    pub device: DeviceSpec,
    /// Optimizer in place of the method preset's (same learning rate): sgd, adamw, lars.
    #[arg(long, value_parser = optimizer_kind)]
    pub optimizer: Option<OptimizerKind>,
}

fn optimizer_kind(s: &str) -> std::result::Result<OptimizerKind, String> {
    selfsup_core::config::from_toml::<std::collections::BTreeMap<String, OptimizerKind>>(
        &format!("kind = \"{s}\""),
        "--optimizer",
    )
    .map(|m| m["kind"])
    .map_err(|_| format!("unknown optimizer `{s}`: use sgd, adamw or lars"))
}

/// One JSON line of results.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    /// Method name.
    pub method: String,
    /// Backbone name.
    pub encoder: String,
    /// Device.
    pub device: String,
    /// Source images per step.
    pub batch: usize,
    /// `[C, H, W]` of each view.
    pub image: [usize; 3],
    /// Timed steps.
    pub steps: usize,
    /// Source images per second over the timed steps.
    pub images_per_sec: f64,
    /// Median wall time of a whole step, ms (waiting for the batch included).
    pub ms_per_step_median: f64,
    /// Fastest step, ms.
    pub ms_per_step_min: f64,
    /// Median forward time, ms.
    pub forward_ms: f64,
    /// Median backward time, ms.
    pub backward_ms: f64,
    /// Median optimizer time, ms.
    pub optimizer_ms: f64,
    /// Median time a step waited for its batch (augmentation runs ahead in the background), ms.
    pub wait_for_batch_ms: f64,
    /// Building one batch of augmented views without overlap, ms (what prefetching hides).
    pub build_batch_ms: f64,
    /// Peak resident memory of the process, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// Threads available to the process.
    pub threads: usize,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Random 8-bit images (a fixed seed), as a dataset the real loader and augmentations use.
fn synthetic(n: usize, channels: usize, size: usize) -> ImageSet {
    use rand::RngCore;
    let mut rng = seed::rng(0, seed::STREAM_OBJECTIVE, 0xbe7c, 0);
    let mut pixels = vec![0u8; n * channels * size * size];
    rng.fill_bytes(&mut pixels);
    ImageSet {
        channels,
        height: size,
        width: size,
        pixels,
        labels: None,
        captions: None,
        class_names: Vec::new(),
    }
}

/// Per-step times in milliseconds of the timed steps, and their total in seconds.
#[derive(Default)]
struct Timings {
    step_ms: Vec<f64>,
    forward: Vec<f64>,
    backward: Vec<f64>,
    optimizer: Vec<f64>,
    wait: Vec<f64>,
    timed: f64,
    losses: Vec<f64>,
    initial: Vec<f32>,
    weights: Vec<f32>,
}

/// What the steps of [`trace_steps`] computed: for comparing backends.
#[derive(Clone, Debug, Default)]
pub struct StepTrace {
    /// The loss of every step (warm-up steps included; `NaN` for a skipped step).
    pub losses: Vec<f64>,
    /// Every parameter before the first step, in the model's visiting order.
    pub initial: Vec<f32>,
    /// Every parameter after the last step.
    pub weights: Vec<f32>,
}

/// Runs `args.warmup + args.steps` training steps of `objective` and times the last `steps`.
fn time_steps<O, S>(
    mut objective: O,
    mut model: O::Model,
    loader: &S,
    cfg: &RunConfig,
    args: &StepBenchArgs,
    keep_weights: bool,
) -> Result<Timings>
where
    O: Objective,
    S: BatchSource<Batch = O::Batch>,
{
    let total = args.warmup + args.steps;
    let mut stepper = Stepper::new(&cfg.train, objective.phases());
    let mut t_all = Timings::default();
    if keep_weights {
        t_all.initial = selfsup_core::grads::param_values(&model);
    }
    for step in 0..total {
        let t = Instant::now();
        let batch = loader.batch(0, step)?;
        let waited = t.elapsed().as_secs_f64();
        let info = StepInfo {
            step,
            epoch: 0,
            total_steps: total,
            steps_per_epoch: total,
        };
        let (next, result) = stepper.step(
            &mut objective,
            model,
            &batch,
            &info,
            cfg.train.optimizer.lr,
            step as u64 + 1,
        )?;
        model = next;
        // EMA teachers and centres move after every step, as in training.
        if let StepResult::Updated { loss, .. } = &result {
            objective.after_step(&model, &info);
            t_all.losses.push(*loss);
        } else {
            t_all.losses.push(f64::NAN);
        }
        let secs = t.elapsed().as_secs_f64();
        if step >= args.warmup {
            t_all.timed += secs;
            t_all.step_ms.push(1e3 * secs);
            t_all.wait.push(1e3 * waited);
            if let StepResult::Updated { times, .. } = result {
                t_all.forward.push(1e3 * times.forward);
                t_all.backward.push(1e3 * times.backward);
                t_all.optimizer.push(1e3 * times.optimizer);
            }
        }
    }
    if keep_weights {
        t_all.weights = selfsup_core::grads::param_values(&model);
    }
    Ok(t_all)
}

/// Runs the benchmark and returns its line (also printed by the command).
pub fn bench_step(args: &StepBenchArgs) -> Result<StepBench> {
    Ok(run_steps(args, false)?.0)
}

/// Runs the steps of [`bench_step`] and returns each step's loss and the final weights:
/// the same arguments on two devices should give the same numbers (the data, the initial
/// weights and every random draw of the objectives are made on the CPU).
pub fn trace_steps(args: &StepBenchArgs) -> Result<StepTrace> {
    Ok(run_steps(args, true)?.1)
}

fn run_steps(args: &StepBenchArgs, keep_weights: bool) -> Result<(StepBench, StepTrace)> {
    let mut cfg = RunConfig::preset(args.method);
    cfg.encoder.arch = args.encoder;
    cfg.encoder.width = args.width;
    cfg.simclr.head.hidden_dim = args.head_hidden;
    cfg.simclr.head.output_dim = args.head_out;
    cfg.encoder.vit.image_size = args.image_size;
    cfg.train.batch_size = args.batch;
    if let Some(kind) = args.optimizer {
        cfg.train.optimizer.kind = kind;
    }
    cfg.device = args.device.clone();
    cfg.validate()?;
    if args.batch == 0 || args.steps == 0 {
        return Err(selfsup_core::Error::Invalid(
            "--batch and --steps must be at least 1".into(),
        ));
    }
    let device = cfg.device.train_device()?;
    let total = args.warmup + args.steps;
    let data = Arc::new(synthetic(
        args.batch * total,
        args.channels,
        args.image_size,
    ));
    let mean = vec![0.5; args.channels];
    let std = vec![0.25; args.channels];
    let one_view = || {
        MultiView::default().with(
            cfg.augment
                .pipeline(args.image_size, mean.clone(), std.clone()),
            1,
        )
    };
    let views: Arc<dyn ViewGenerator> = match args.method {
        Method::Mae | Method::Clip | Method::Rotnet => Arc::new(one_view()),
        Method::Simclr => Arc::new(
            MultiView::default().with(
                cfg.augment
                    .pipeline(args.image_size, mean.clone(), std.clone()),
                2,
            ),
        ),
        Method::Dino => Arc::new(cfg.dino.crops.views(
            &cfg.augment,
            args.image_size,
            mean.clone(),
            std.clone(),
        )),
        Method::Gan => Arc::new(MultiView::default().with(
            selfsup_data::augment::eval_pipeline(
                args.image_size,
                vec![0.5; args.channels],
                vec![0.5; args.channels],
            ),
            1,
        )),
        Method::Jigsaw => Arc::new(crate::pretrain::jigsaw_views(
            &cfg,
            args.image_size,
            mean.clone(),
            std.clone(),
        )),
    };
    let plain = ViewLoader::new(data.clone(), views, args.batch, 0, device.clone());
    let t = Instant::now();
    let _ = plain.batch(0, 0)?;
    let build_batch_ms = 1e3 * t.elapsed().as_secs_f64();
    let loader = Prefetch::new(plain);

    let mut times = match args.method {
        Method::Clip => {
            // Synthetic captions of a few words, a tokenizer learned from them.
            let captions: Vec<String> = (0..data.len())
                .map(|i| format!("a synthetic picture, number {} of {}", i % 97, i % 13))
                .collect();
            let tok = selfsup_text::Tokenizer::train(
                captions.iter().map(String::as_str),
                cfg.clip.tokenizer.vocab_size,
            );
            let context = cfg.clip.text.context;
            let encoded: Vec<Vec<selfsup_text::Encoded>> = captions
                .iter()
                .map(|c| vec![tok.encode_padded(c, context)])
                .collect();
            let views = ViewLoader::new(
                data.clone(),
                Arc::new(one_view()),
                args.batch,
                0,
                device.clone(),
            );
            let loader = Prefetch::new(CaptionLoader::new(views, Arc::new(encoded), 0)?);
            let vocab = tok.vocab_size();
            let model = seed::init_module(&device, 0, |d| {
                ClipModel::new(cfg.encoder.init(args.channels, d), vocab, &cfg.clip, d)
                    .expect("validated above")
            });
            time_steps(
                Clip::<Backbone>::new(&cfg.clip),
                model,
                &loader,
                &cfg,
                args,
                keep_weights,
            )?
        }
        Method::Simclr => {
            let model = seed::init_module(&device, 0, |d| {
                SimClrModel::new(cfg.encoder.init(args.channels, d), &cfg.simclr, d)
            });
            let objective = SimClr::<Backbone>::new(&cfg.simclr);
            time_steps(objective, model, &loader, &cfg, args, keep_weights)?
        }
        Method::Rotnet => {
            let model = seed::init_module(&device, 0, |d| {
                selfsup_pretext::RotNetModel::new(
                    cfg.encoder.init(args.channels, d),
                    &cfg.rotnet,
                    d,
                )
            });
            let objective = selfsup_pretext::RotNet::<Backbone>::new();
            time_steps(objective, model, &loader, &cfg, args, keep_weights)?
        }
        Method::Jigsaw => {
            let j = &cfg.jigsaw;
            let model = seed::init_module(&device, 0, |d| {
                selfsup_pretext::JigsawModel::new(
                    cfg.encoder.init(args.channels, d),
                    &cfg.jigsaw,
                    d,
                )
            });
            let objective = selfsup_pretext::Jigsaw::<Backbone>::new(j.permutation_set(0)?, 0);
            time_steps(objective, model, &loader, &cfg, args, keep_weights)?
        }
        Method::Gan => {
            selfsup_gan::gan::check_shape(&cfg.encoder.dcgan, args.image_size)?;
            let model = seed::init_module(&device, 0, |d| {
                let trunk = selfsup_encoders::DcganEncoder::new(
                    args.channels,
                    cfg.encoder.width,
                    &cfg.encoder.dcgan,
                    d,
                );
                crate::gan::gan_model(&cfg, trunk, args.channels, args.image_size, d)
                    .expect("checked above")
            });
            time_steps(
                selfsup_gan::Gan::new(&cfg.gan, 0),
                model,
                &loader,
                &cfg,
                args,
                keep_weights,
            )?
        }
        Method::Mae => {
            let model = seed::init_module(&device, 0, |d| {
                let vit = cfg
                    .encoder
                    .vit
                    .init(args.channels, d)
                    .expect("validated above");
                MaeModel::new(vit, args.channels, &cfg.mae, d)
            });
            time_steps(Mae::new(&cfg.mae), model, &loader, &cfg, args, keep_weights)?
        }
        Method::Dino => {
            let build = |d: &burn::tensor::Device| {
                DinoModel::new(cfg.encoder.init(args.channels, d), &cfg.dino.head, d)
            };
            let model = seed::init_module(&device, 0, build);
            let objective = Dino::new(&cfg.dino, seed::init_module(&device, 0, build), &model);
            time_steps(objective, model, &loader, &cfg, args, keep_weights)?
        }
    };
    let (step_ms, fwd, bwd, opt, wait) = (
        &mut times.step_ms,
        &mut times.forward,
        &mut times.backward,
        &mut times.optimizer,
        &mut times.wait,
    );
    let timed = times.timed;
    let ms_per_step_min = step_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let median = |v: &mut Vec<f64>| median(v);
    let trace = StepTrace {
        losses: std::mem::take(&mut times.losses),
        initial: std::mem::take(&mut times.initial),
        weights: std::mem::take(&mut times.weights),
    };
    let line = StepBench {
        method: format!("{:?}", args.method).to_lowercase(),
        encoder: format!("{:?}", args.encoder).to_lowercase(),
        device: cfg.device.to_string(),
        batch: args.batch,
        image: [args.channels, args.image_size, args.image_size],
        steps: args.steps,
        images_per_sec: (args.steps * args.batch) as f64 / timed.max(1e-12),
        ms_per_step_median: median(step_ms),
        ms_per_step_min,
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        optimizer_ms: median(opt),
        wait_for_batch_ms: median(wait),
        build_batch_ms,
        peak_rss_mib: selfsup_core::metrics::peak_rss_mib(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok((line, trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_tiny_step() {
        let r = bench_step(&StepBenchArgs {
            method: Method::Simclr,
            encoder: Arch::Convnet,
            width: 4,
            batch: 8,
            steps: 2,
            warmup: 1,
            image_size: 16,
            channels: 3,
            head_hidden: 16,
            head_out: 8,
            device: DeviceSpec::Flex,
            optimizer: None,
        })
        .unwrap();
        assert_eq!(r.steps, 2);
        assert!(r.images_per_sec > 0.0 && r.ms_per_step_median > 0.0);
        for v in [
            r.forward_ms,
            r.backward_ms,
            r.optimizer_ms,
            r.build_batch_ms,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{r:?}");
        }
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"images_per_sec\""));
    }

    #[test]
    fn times_a_tiny_clip_step() {
        let r = bench_step(&StepBenchArgs {
            method: Method::Clip,
            encoder: Arch::Convnet,
            width: 4,
            batch: 8,
            steps: 1,
            warmup: 1,
            image_size: 16,
            channels: 1,
            head_hidden: 16,
            head_out: 8,
            device: DeviceSpec::Flex,
            optimizer: None,
        })
        .unwrap();
        assert_eq!((r.method.as_str(), r.steps), ("clip", 1));
        assert!(r.images_per_sec > 0.0);
    }
}
