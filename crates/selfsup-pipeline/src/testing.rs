//! What recipe crates' end-to-end tests share (the `testing` feature): test-size configs, a
//! run's encoder weights, bit-for-bit comparison, a run stopped at a checkpoint.

use crate::config::RunConfig;
use crate::evaluate::{EvalArgs, EvalPlan, EvalReport};
use crate::pretrain::PretrainReport;
use crate::registry::Registry;
use crate::report::ReportFiles;
use selfsup_core::{Result, checkpoint};
use std::path::Path;

/// The pipeline's entry points over the registry of the recipes a test runs.
pub struct Harness(pub Registry);

impl Harness {
    /// [`crate::pretrain`] of `cfg`'s method.
    pub fn pretrain(
        &self,
        cfg: RunConfig,
        out: &Path,
        resume: bool,
        progress: bool,
    ) -> Result<PretrainReport> {
        crate::pretrain(self.0.get(&cfg.method)?, cfg, out, resume, progress)
    }

    /// [`crate::eval_frozen`].
    pub fn eval_frozen(
        &self,
        args: &EvalArgs,
        plan: EvalPlan,
        k: Option<usize>,
        linear_epochs: Option<usize>,
    ) -> Result<EvalReport> {
        crate::eval_frozen(args, &self.0, plan, k, linear_epochs)
    }

    /// [`crate::report`] into `RUN/report`, with `points` test embeddings.
    pub fn report(&self, run: &Path, points: usize) -> Result<ReportFiles> {
        crate::report(run, &self.0, None, points, None)
    }

    /// `cfg` trained over two (flex) replicas in bf16 into `out`: as many steps as the f32
    /// run `f32_run` and a final loss within 5 % of its.
    pub fn split_in_bf16_follows(&self, cfg: &RunConfig, f32_run: &PretrainReport, out: &Path) {
        let mut split = cfg.clone();
        split.devices = vec![
            selfsup_core::DeviceSpec::Flex,
            selfsup_core::DeviceSpec::Flex,
        ];
        split.train.precision = selfsup_core::Precision::Bf16;
        let r = self.pretrain(split, out, false, false).unwrap();
        assert_eq!(r.steps, f32_run.steps);
        let (l, l32) = (r.final_loss, f32_run.final_loss);
        assert!(
            (l - l32).abs() < 0.05 * l32,
            "bf16 over two replicas {l}, f32 {l32}"
        );
    }

    /// `cfg` trained over two (flex) replicas in bf16 and in f32 (into `out/bf16`, `out/f32`):
    /// the same steps and final losses within `tolerance` (relative) of each other. For models
    /// whose BatchNorm normalizes each replica's shard on its own (as the references' per-GPU
    /// BatchNorm), so that one replica and two differ by more than the rounding does.
    pub fn split_bf16_follows_split_f32(&self, cfg: &RunConfig, out: &Path, tolerance: f64) {
        let mut split = cfg.clone();
        split.devices = vec![
            selfsup_core::DeviceSpec::Flex,
            selfsup_core::DeviceSpec::Flex,
        ];
        let r32 = self
            .pretrain(split.clone(), &out.join("f32"), false, false)
            .unwrap();
        split.train.precision = selfsup_core::Precision::Bf16;
        let r = self
            .pretrain(split, &out.join("bf16"), false, false)
            .unwrap();
        assert_eq!(r.steps, r32.steps);
        let (l, l32) = (r.final_loss, r32.final_loss);
        assert!(
            (l - l32).abs() < tolerance * l32,
            "bf16 over two replicas {l}, f32 over two replicas {l32}"
        );
    }

    /// [`encoder_weights`] of a run of these recipes.
    pub fn encoder_weights(&self, run: &Path) -> Vec<f32> {
        encoder_weights(run, &self.0)
    }
}

/// `preset` at test size ([`tiny`]) with `settings` (`key=value`) of the method's own.
pub fn tiny_with(preset: RunConfig, settings: &[(&str, &str)]) -> RunConfig {
    let mut c = tiny(preset);
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    c
}

/// `preset` on 96 training images for 2 epochs of 32, a 4-wide encoder, a checkpoint every 2
/// steps, short probes.
pub fn small_run(preset: RunConfig) -> RunConfig {
    let mut c = preset;
    c.data.max_train = 96;
    c.data.max_test = 40;
    c.encoder.width = 4;
    c.train.batch_size = 32;
    c.train.epochs = 2;
    c.train.checkpoint_every = 2;
    c.train.keep_checkpoints = 10;
    c.train.log_every = 1;
    c.knn.k = 5;
    c.linear.epochs = 3;
    c.finetune.train.epochs = 1;
    c.finetune.train.batch_size = 16;
    c
}

/// `preset` at test size: 64 training images, one epoch of batches of 32, a 4-wide encoder (a
/// ViT 16 wide, one block of two heads), kNN only. The method's own settings are the caller's
/// to shrink.
pub fn tiny(preset: RunConfig) -> RunConfig {
    let mut c = preset;
    c.data.max_train = 64;
    c.data.max_test = 16;
    c.train.batch_size = 32;
    c.train.epochs = 1;
    c.encoder.width = 4;
    c.encoder.vit.dim = 16;
    c.encoder.vit.depth = 1;
    c.encoder.vit.heads = 2;
    c.knn.k = 5;
    c.eval.linear = false;
    c.eval.baselines = false;
    c
}

/// Every float parameter of the encoder a run folder (or step checkpoint) holds.
pub fn encoder_weights(run: &Path, registry: &Registry) -> Vec<f32> {
    let (_, enc) =
        crate::evaluate::load_encoder(run, registry, &burn::tensor::Device::flex()).unwrap();
    selfsup_core::grads::param_values(&enc)
}

/// `Ok` when `a` and `b` are equal bit for bit; else how many values differ and the first.
pub fn same(a: &[f32], b: &[f32]) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} vs {} values", a.len(), b.len()));
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    match diff.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{} of {} values differ; first at {i}: {} vs {}",
            diff.len(),
            a.len(),
            a[i],
            b[i]
        )),
    }
}

/// Makes `run` look like a run stopped right after the step checkpoint `step` (of another
/// run): that checkpoint copied into its checkpoints folder, nothing else.
pub fn interrupted_at(step: &Path, run: &Path) {
    let dst = checkpoint::checkpoints_dir(run).join(step.file_name().unwrap());
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(step).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
}
