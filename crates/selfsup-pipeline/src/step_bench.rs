//! `selfsup bench step`: times training steps of a method on synthetic images and gives one
//! JSON line, so scripts can compare runs, machines and backends. The pipeline builds the
//! config and the data; each recipe's [`crate::Recipe::bench_step`] builds its views, model and
//! objective and calls [`StepBench::time`].

use crate::config::RunConfig;
use crate::registry::Registry;
use burn::tensor::Device;
use selfsup_core::{
    BatchSource, DeviceSpec, Objective, OptimizerKind, Prefetch, Result, StepInfo, StepResult,
    Stepper, ViewGenerator, seed,
};
use selfsup_data::{ImageSet, MultiView, ViewLoader};
use selfsup_encoders::Arch;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// What to time (the flags of `selfsup bench step`).
#[derive(Clone, Debug)]
pub struct StepBenchArgs {
    /// The method.
    pub method: String,
    /// Backbone: resnet18, resnet34, resnet50, convnet, vit (the method preset's ViT shape at
    /// `image_size`), dcgan.
    pub encoder: Arch,
    /// ConvNet base width.
    pub width: usize,
    /// Source images per step (each gives the method's views).
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (allocator and caches warm up).
    pub warmup: usize,
    /// Side of the square images.
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Projection head hidden width (methods with a projection head: SimCLR).
    pub head_hidden: usize,
    /// Projection head output width.
    pub head_out: usize,
    /// Device.
    pub device: DeviceSpec,
    /// Optimizer in place of the method preset's (same learning rate).
    pub optimizer: Option<OptimizerKind>,
    /// Time the step alone: one batch is built before timing and every step trains on it.
    /// Otherwise batches are augmented on other threads while steps run, as in training.
    pub fixed_batch: bool,
    /// `key=value` settings over the preset (as `selfsup pretrain --set`): a ViT's shape,
    /// DINO's head and local crops, any method's own settings.
    pub set: Vec<String>,
}

impl Default for StepBenchArgs {
    fn default() -> Self {
        Self {
            method: String::new(),
            encoder: Arch::Resnet18,
            width: 32,
            batch: 128,
            steps: 5,
            warmup: 2,
            image_size: 32,
            channels: 3,
            head_hidden: 2048,
            head_out: 128,
            device: DeviceSpec::Flex,
            optimizer: None,
            fixed_batch: false,
            set: Vec::new(),
        }
    }
}

/// One JSON line of results.
#[derive(Clone, Debug, Serialize)]
pub struct StepLine {
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
    /// Whether every step trained on one batch built before timing (`--fixed-batch`).
    pub fixed_batch: bool,
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
    /// Threads the kernels run on (rayon's pool: every core, or `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// The vectors the CPU kernels ran with on this machine: `avx512`, `avx2`, `baseline`.
    pub isa: String,
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
        stream: None,
        labels: None,
        captions: None,
        class_names: Vec::new(),
    }
}

/// Per-step times in milliseconds of the timed steps, their total in seconds, and what the
/// steps computed: what [`crate::Recipe::bench_step`] returns.
#[derive(Default)]
pub struct Timings {
    step_ms: Vec<f64>,
    forward: Vec<f64>,
    backward: Vec<f64>,
    optimizer: Vec<f64>,
    wait: Vec<f64>,
    timed: f64,
    losses: Vec<f64>,
    initial: Vec<f32>,
    weights: Vec<f32>,
    build_batch_ms: f64,
}

/// What a recipe's step bench gets: the config (the method's preset with the bench's
/// encoder, batch, device and settings; seed 0), the synthetic images and the device.
pub struct StepBench<'a> {
    /// The config to build the model and objective from.
    pub cfg: RunConfig,
    /// The flags.
    pub args: &'a StepBenchArgs,
    /// Random 8-bit images, a batch for every step.
    pub data: Arc<ImageSet>,
    /// The training device (autodiff).
    pub device: Device,
    keep_weights: bool,
}

impl StepBench<'_> {
    /// Normalization of the synthetic images: 0.5 per channel.
    pub fn mean(&self) -> Vec<f32> {
        vec![0.5; self.args.channels]
    }

    /// Normalization of the synthetic images: 0.25 per channel.
    pub fn std(&self) -> Vec<f32> {
        vec![0.25; self.args.channels]
    }

    /// `count` views of each image through the config's augmentations.
    pub fn views(&self, count: usize) -> MultiView {
        MultiView::default().with(
            self.cfg
                .augment
                .pipeline(self.args.image_size, self.mean(), self.std()),
            count,
        )
    }

    /// Batches of `views` of the synthetic images (seed 0).
    pub fn view_loader(&self, views: impl ViewGenerator + 'static) -> ViewLoader {
        ViewLoader::new(
            self.data.clone(),
            Arc::new(views),
            self.args.batch,
            0,
            self.device.clone(),
        )
    }

    /// Times the steps of `objective` from `model` over `views` (prefetched, as in training).
    pub fn time<O>(
        &self,
        objective: O,
        model: O::Model,
        views: impl ViewGenerator + 'static,
    ) -> Result<Timings>
    where
        O: Objective<Batch = Vec<burn::tensor::Tensor<4>>>,
    {
        self.time_source(objective, model, self.view_loader(views))
    }

    /// [`StepBench::time`] over any source of batches (prefetched here).
    pub fn time_source<O, S>(&self, objective: O, model: O::Model, source: S) -> Result<Timings>
    where
        O: Objective,
        S: BatchSource<Batch = O::Batch> + Send + Sync + 'static,
        O::Batch: Clone + Send + 'static,
    {
        let t = Instant::now();
        let first = source.batch(0, 0)?;
        let build_batch_ms = 1e3 * t.elapsed().as_secs_f64();
        let mut times = if self.args.fixed_batch {
            let fixed = Fixed {
                batch: first,
                size: source.batch_size(),
            };
            time_steps(
                objective,
                model,
                &fixed,
                &self.cfg,
                self.args,
                self.keep_weights,
            )?
        } else {
            drop(first);
            let loader = Prefetch::new(source);
            time_steps(
                objective,
                model,
                &loader,
                &self.cfg,
                self.args,
                self.keep_weights,
            )?
        };
        times.build_batch_ms = build_batch_ms;
        Ok(times)
    }
}

/// The same batch for every step (`--fixed-batch`).
struct Fixed<B> {
    batch: B,
    size: usize,
}

impl<B: Clone> BatchSource for Fixed<B> {
    type Batch = B;
    fn steps_per_epoch(&self) -> usize {
        usize::MAX
    }
    fn batch_size(&self) -> usize {
        self.size
    }
    fn batch(&self, _epoch: usize, _index: usize) -> Result<B> {
        Ok(self.batch.clone())
    }
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
pub fn bench_step(registry: &Registry, args: &StepBenchArgs) -> Result<StepLine> {
    Ok(run_steps(registry, args, false)?.0)
}

/// Runs the steps of [`bench_step`] and returns each step's loss and the final weights:
/// the same arguments on two devices should give the same numbers (the data, the initial
/// weights and every random draw of the objectives are made on the CPU).
pub fn trace_steps(registry: &Registry, args: &StepBenchArgs) -> Result<StepTrace> {
    Ok(run_steps(registry, args, true)?.1)
}

fn run_steps(
    registry: &Registry,
    args: &StepBenchArgs,
    keep_weights: bool,
) -> Result<(StepLine, StepTrace)> {
    let recipe = registry.get(&args.method)?;
    let mut cfg = recipe.preset();
    cfg.encoder.arch = args.encoder;
    cfg.encoder.width = args.width;
    cfg.encoder.vit.image_size = args.image_size;
    cfg.train.batch_size = args.batch;
    cfg.train.seed = 0;
    if let Some(kind) = args.optimizer {
        cfg.train.optimizer.kind = kind;
    }
    cfg.device = args.device.clone();
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            selfsup_core::Error::config("--set", format!("`{kv}`: write KEY=VALUE"))
        })?;
        cfg.set(k.trim(), v.trim())?;
    }
    recipe.validate(&cfg)?;
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
    let bench = StepBench {
        cfg,
        args,
        data,
        device,
        keep_weights,
    };
    let mut times = recipe.bench_step(&bench)?;
    let cfg = bench.cfg;
    let build_batch_ms = times.build_batch_ms;
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
    let line = StepLine {
        method: args.method.clone(),
        encoder: format!("{:?}", args.encoder).to_lowercase(),
        device: cfg.device.to_string(),
        batch: args.batch,
        image: [args.channels, args.image_size, args.image_size],
        steps: args.steps,
        fixed_batch: args.fixed_batch,
        images_per_sec: (args.steps * args.batch) as f64 / timed.max(1e-12),
        ms_per_step_median: median(step_ms),
        ms_per_step_min,
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        optimizer_ms: median(opt),
        wait_for_batch_ms: median(wait),
        build_batch_ms,
        peak_rss_mib: selfsup_core::metrics::peak_rss_mib(),
        threads: rayon::current_num_threads(),
        isa: selfsup_kernels::isa().name().to_string(),
    };
    Ok((line, trace))
}
