//! The DINO model (backbone and head), its settings, and the objective: the student sees every
//! view, an EMA teacher only the two global ones, and the student learns the teacher's centred
//! and sharpened outputs.

use crate::head::{DinoHead, DinoHeadConfig};
use crate::loss::{
    CollapseMonitor, CollapseReport, batch_entropy, dino_loss, mean_entropy, mean_kl,
    teacher_targets, updated_center,
};
use crate::multicrop::MultiCropConfig;
use crate::schedule::teacher_temperature;
use burn::module::{Module, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use selfsup_core::config::ensure;
use selfsup_core::ema::Ema;
use selfsup_core::parallel::{replicate_as, split_each, whole_batch_loss};
use selfsup_core::schedule::cosine_ramp;
use selfsup_core::{Encoder, Error, LossOutput, Objective, Result, Shardable, StepInfo};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// DINO's own settings (the paper's values unless said otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DinoConfig {
    /// The multi-crop views.
    pub crops: MultiCropConfig,
    /// The projection head.
    pub head: DinoHeadConfig,
    /// The student's softmax temperature.
    pub student_temperature: f64,
    /// The teacher's temperature after its warm-up.
    pub teacher_temperature: f64,
    /// The teacher's temperature at the start.
    pub warmup_teacher_temperature: f64,
    /// Epochs of the teacher temperature's linear warm-up, one value per epoch as the
    /// reference's `np.linspace` (the paper: 30 of 100 or more; a short CPU run wants a few).
    pub warmup_teacher_epochs: usize,
    /// Momentum of the centre's moving average.
    pub center_momentum: f64,
    /// The teacher's EMA momentum at the start; it follows a cosine to `momentum_end`.
    pub momentum_start: f64,
    /// The teacher's EMA momentum at the end.
    pub momentum_end: f64,
    /// Epochs during which the head's last layer stays frozen.
    pub freeze_last_layer_epochs: usize,
}

impl Default for DinoConfig {
    fn default() -> Self {
        Self {
            crops: MultiCropConfig::default(),
            head: DinoHeadConfig::default(),
            student_temperature: 0.1,
            teacher_temperature: 0.07,
            warmup_teacher_temperature: 0.04,
            warmup_teacher_epochs: 2,
            center_momentum: 0.9,
            momentum_start: 0.996,
            momentum_end: 1.0,
            freeze_last_layer_epochs: 1,
        }
    }
}

impl DinoConfig {
    /// The settings of the small-CPU Fashion-MNIST recipe (`selfsup pretrain --method dino`),
    /// measured on Fashion-MNIST (docs/methods/dino.md): BatchNorm in the head and a free
    /// last-layer norm (the paper's ResNet options), local crops of 12 px, a fast, sharp
    /// teacher for short runs (momentum from 0.99, temperature 0.04 throughout). The paper's
    /// ViT recipe (momentum 0.996, temperature 0.04 -> 0.07) left the teacher near uniform.
    pub fn fashion_mnist() -> Self {
        let mut s = Self::default();
        s.crops.local_size = 12;
        s.head.batch_norm = true;
        s.head.norm_last_layer = false;
        s.momentum_start = 0.99;
        s.warmup_teacher_temperature = 0.04;
        s.teacher_temperature = 0.04;
        s
    }

    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.crops.validate("dino.crops")?;
        self.head.validate("dino.head")?;
        for (name, t) in [
            ("dino.student_temperature", self.student_temperature),
            ("dino.teacher_temperature", self.teacher_temperature),
            (
                "dino.warmup_teacher_temperature",
                self.warmup_teacher_temperature,
            ),
        ] {
            ensure(t.is_finite() && t > 0.0, name, || {
                format!("{t} must be a positive number")
            })?;
        }
        for (name, m) in [
            ("dino.center_momentum", self.center_momentum),
            ("dino.momentum_start", self.momentum_start),
            ("dino.momentum_end", self.momentum_end),
        ] {
            ensure((0.0..=1.0).contains(&m), name, || {
                format!("{m} must be in [0, 1]")
            })?;
        }
        Ok(())
    }
}

/// A backbone and DINO's head.
#[derive(Module, Debug)]
pub struct DinoModel<E: Encoder> {
    /// The backbone whose features are kept (the teacher's, after pretraining).
    pub backbone: E,
    /// The head, discarded after pretraining.
    pub head: DinoHead,
}

impl<E: Encoder> DinoModel<E> {
    /// `backbone` with a head built from `cfg`.
    pub fn new(backbone: E, cfg: &DinoHeadConfig, device: &Device) -> Self {
        let head = DinoHead::new(cfg, backbone.output_dim(), device);
        Self { backbone, head }
    }

    /// The head's logits `[N, K]` for `images`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.features(images))
    }
}

/// The teacher's weights in a checkpoint folder.
pub const TEACHER_FILE: &str = "dino-teacher.bpk";
/// The centre in a checkpoint folder (JSON list of numbers).
pub const CENTER_FILE: &str = "dino-center.json";

/// The DINO objective. Views come as `[global 1, global 2, local 1, ..]`, each `[N, C, H, W]`
/// (the locals may be smaller).
pub struct Dino<E: Encoder> {
    cfg: DinoConfig,
    teacher: Ema<DinoModel<E>>,
    center: Tensor<1>,
    /// The teacher's outputs of the step in flight, for the centre's update.
    pending: Vec<Tensor<2>>,
    epoch: usize,
    monitor: CollapseMonitor,
}

impl<E: Encoder> Dino<E> {
    /// The objective for `student`, whose teacher starts from `fresh` (a newly built model of
    /// the same architecture on the student's device) loaded with the student's weights. On
    /// the student's autodiff device the teacher's BatchNorm layers use the batch's statistics,
    /// as the paper's teacher in training mode does; its parameters never require gradients.
    pub fn new(cfg: &DinoConfig, fresh: DinoModel<E>, student: &DinoModel<E>) -> Self {
        let device = fresh
            .devices()
            .into_iter()
            .next()
            .expect("a model has parameters");
        Self {
            cfg: cfg.clone(),
            teacher: Ema::new(fresh, student),
            center: Tensor::zeros([cfg.head.output_dim], &device),
            pending: Vec::new(),
            epoch: 0,
            monitor: CollapseMonitor::default(),
        }
    }

    /// The teacher (its backbone is what DINO's evaluation uses).
    pub fn teacher(&self) -> &DinoModel<E> {
        self.teacher.teacher()
    }

    /// The centre `[K]` subtracted from the teacher's outputs.
    pub fn center(&self) -> Tensor<1> {
        self.center.clone()
    }

    /// The teacher's EMA momentum at `info`'s point of training.
    pub fn momentum(&self, info: &StepInfo) -> f64 {
        cosine_ramp(
            info.progress(),
            self.cfg.momentum_start,
            self.cfg.momentum_end,
        )
    }

    /// The teacher temperature in `info`'s epoch.
    pub fn teacher_temperature(&self, info: &StepInfo) -> f64 {
        let epoch = info.step / info.steps_per_epoch.max(1);
        teacher_temperature(
            self.cfg.warmup_teacher_temperature,
            self.cfg.teacher_temperature,
            self.cfg.warmup_teacher_epochs,
            epoch,
        )
    }

    /// The epoch's mean teacher entropy and teacher-student KL, with a warning when they look
    /// like a collapse; starts the next epoch's means.
    pub fn finish_epoch(&mut self) -> CollapseReport {
        self.monitor.finish(self.cfg.head.output_dim)
    }
}

impl<E: Encoder> Objective for Dino<E> {
    type Model = DinoModel<E>;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "dino"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for the batch, a teacher temperature too low (dino.teacher_temperature) or the last layer unfrozen too early (dino.freeze_last_layer_epochs); the paper clips each parameter's gradient norm at 3 (train.grad_clip_norm = 3 with train.clip_mode = \"per_tensor\")".into()
    }

    /// The cross-entropy between the teacher's centred, sharpened targets and the student's
    /// outputs: [`Shardable::gathered_loss`] of the whole batch as one shard.
    fn loss(
        &mut self,
        model: &Self::Model,
        views: &Self::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, views, phase, info)
    }

    fn phase_params(&self, model: &Self::Model, _phase: usize) -> Option<Vec<ParamId>> {
        if self.epoch >= self.cfg.freeze_last_layer_epochs {
            return None;
        }
        let frozen = model.head.last_layer_ids();
        Some(
            selfsup_core::grads::param_ids(model)
                .into_iter()
                .filter(|id| !frozen.contains(id))
                .collect(),
        )
    }

    /// The epoch's mean teacher entropy and teacher-student KL; a warning when they look like
    /// a collapse.
    fn end_epoch(&mut self, epoch: usize) -> Vec<(String, f64)> {
        let r = self.finish_epoch();
        if let Some(w) = &r.warning {
            tracing::warn!("DINO epoch {}: {w}", epoch + 1);
        }
        vec![
            ("teacher_entropy".into(), r.teacher_entropy),
            ("teacher_batch_entropy".into(), r.batch_entropy),
            ("teacher_student_kl".into(), r.kl),
        ]
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        self.teacher.save_file(&dir.join(TEACHER_FILE))?;
        let center = self
            .center
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("DINO centre: {e:?}")))?;
        let path = dir.join(CENTER_FILE);
        let json = serde_json::to_string(&center).expect("floats serialize");
        std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
    }

    fn load_state(&mut self, dir: &Path) -> Result<()> {
        self.teacher.load_file(&dir.join(TEACHER_FILE))?;
        let path = dir.join(CENTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let center: Vec<f32> =
            serde_json::from_str(&text).map_err(|e| Error::checkpoint(&path, e.to_string()))?;
        let k = self.cfg.head.output_dim;
        if center.len() != k {
            return Err(Error::checkpoint(
                &path,
                format!("{} values, but dino.head.output_dim is {k}", center.len()),
            ));
        }
        let device = self.center.device();
        self.center = Tensor::from_data(TensorData::new(center, [k]), &device);
        Ok(())
    }

    fn after_step(&mut self, model: &Self::Model, info: &StepInfo) {
        let teacher_out = std::mem::take(&mut self.pending);
        if !teacher_out.is_empty() {
            self.center =
                updated_center(self.center.clone(), &teacher_out, self.cfg.center_momentum);
        }
        let momentum = self.momentum(info);
        self.teacher.update(model, momentum);
    }
}

/// Over several devices each runs the teacher (a copy of it on its own device) over its
/// shard's global views and the student over all its views; the targets, the loss and the
/// centre's update see every device's teacher outputs, as over the whole batch on one device.
/// The teacher's BatchNorm layers, like the student's, use each shard's own statistics.
impl<E: Encoder> Shardable for Dino<E> {
    type Shard = Vec<Tensor<4>>;

    fn shard(
        &self,
        _: &Self::Model,
        views: &Vec<Tensor<4>>,
        devices: &[Device],
        _: &StepInfo,
    ) -> Result<Vec<Vec<Tensor<4>>>> {
        split_each(views, devices)
    }

    fn whole(&self, _: &Self::Model, views: &Vec<Tensor<4>>, _: &StepInfo) -> Vec<Tensor<4>> {
        views.clone()
    }

    fn cast(&self, views: Vec<Tensor<4>>, dtype: FloatDType) -> Vec<Tensor<4>> {
        views.into_iter().map(|v| v.cast(dtype)).collect()
    }

    /// The teacher's outputs `[n, K]` for the two global views (detached), then the
    /// student's for every view.
    fn outputs(
        &mut self,
        model: &Self::Model,
        views: &Vec<Tensor<4>>,
        _phase: usize,
        _: &StepInfo,
    ) -> Vec<Tensor<2>> {
        assert!(
            views.len() >= 2,
            "DINO needs two global views, got {}",
            views.len()
        );
        let n = views[0].dims()[0];
        let globals = Tensor::cat(views[..2].to_vec(), 0);
        // The teacher: global views only, nothing tracked; copied to the shard's device and
        // type when they are not its own.
        let teacher = self.teacher.teacher();
        let (device, dtype) = (globals.device(), globals.dtype());
        let same = teacher
            .devices()
            .first()
            .is_some_and(|d| *d == device && dtype == burn::tensor::DType::F32);
        let t = if same {
            teacher.forward(globals.clone().detach())
        } else {
            let low = match dtype {
                burn::tensor::DType::F32 => None,
                d => Some(d.into()),
            };
            replicate_as(teacher, &device, low).forward(globals.clone().detach())
        }
        .detach();
        let mut out = vec![t.clone().narrow(0, 0, n), t.narrow(0, n, n)];
        // The student: the backbone once per crop size, then the head once over every crop's
        // features together, as the reference's `MultiCropWrapper` does: the head's
        // BatchNorm (on in the Fashion-MNIST preset) normalizes globals and locals with one
        // set of batch statistics.
        let mut features = model.backbone.features(globals);
        if views.len() > 2 {
            let locals = model.backbone.features(Tensor::cat(views[2..].to_vec(), 0));
            features = Tensor::cat(vec![features, locals], 0);
        }
        let s = model.head.forward(features);
        out.extend((0..views.len()).map(|i| s.clone().narrow(0, i * n, n)));
        out
    }

    fn gathered_loss(
        &mut self,
        _: &Self::Model,
        mut outputs: Vec<Tensor<2>>,
        _phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        self.epoch = info.epoch;
        let student = outputs.split_off(2);
        let teacher_out: Vec<Tensor<2>> = outputs.into_iter().map(|t| t.detach()).collect();
        let temperature = self.teacher_temperature(info);
        let targets: Vec<Tensor<2>> = teacher_out
            .iter()
            .map(|t| teacher_targets(t.clone(), self.center.clone(), temperature))
            .collect();
        let loss = dino_loss(&student, &targets, self.cfg.student_temperature);

        let tau_s = self.cfg.student_temperature;
        let (mut entropy, mut kl) = (0.0, 0.0);
        for (p, s) in targets.iter().zip(&student) {
            entropy += mean_entropy(p.clone()) / 2.0;
            let log_q = log_softmax(s.clone().detach().inner().div_scalar(tau_s), 1);
            kl += mean_kl(p.clone(), log_q) / 2.0;
        }
        let batch = batch_entropy(Tensor::cat(targets.clone(), 0));
        self.monitor.record(entropy, batch, kl);
        self.pending = teacher_out;
        LossOutput {
            loss,
            metrics: vec![
                ("teacher_entropy".into(), entropy),
                ("teacher_batch_entropy".into(), batch),
                ("teacher_student_kl".into(), kl),
                ("teacher_temperature".into(), temperature),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Distribution;
    use selfsup_core::{Stepper, TrainConfig, seed};
    use selfsup_encoders::{Arch, Backbone, EncoderConfig};

    struct Flat(Vec<f32>);
    impl ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .extend(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }

    fn flat<M: Module>(m: &M) -> Vec<f32> {
        let mut f = Flat(Vec::new());
        m.visit(&mut f);
        f.0
    }

    /// Per value of [`flat`]: whether it belongs to a trained parameter (not a BatchNorm
    /// running statistic, which forward passes in training mode move).
    struct Trained(Vec<bool>);
    impl ModuleVisitor for Trained {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let n = p.val().shape().num_elements();
            let trained = p.val().is_require_grad();
            self.0.extend(std::iter::repeat_n(trained, n));
        }
    }

    fn trained<M: Module>(m: &M, student: &M) -> Vec<f32> {
        let mut mask = Trained(Vec::new());
        student.visit(&mut mask);
        flat(m)
            .into_iter()
            .zip(mask.0)
            .filter_map(|(v, t)| t.then_some(v))
            .collect()
    }

    fn flat_tensor(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn setup() -> (
        DinoConfig,
        DinoModel<Backbone>,
        Dino<Backbone>,
        Vec<Tensor<4>>,
    ) {
        setup_with_head_norm(false)
    }

    /// A tiny student, its objective and three views (two 16 px, one 8 px), the head with
    /// BatchNorm or without.
    fn setup_with_head_norm(
        batch_norm: bool,
    ) -> (
        DinoConfig,
        DinoModel<Backbone>,
        Dino<Backbone>,
        Vec<Tensor<4>>,
    ) {
        let cfg = DinoConfig {
            head: DinoHeadConfig {
                layers: 2,
                hidden_dim: 16,
                bottleneck_dim: 8,
                output_dim: 32,
                norm_last_layer: true,
                batch_norm,
            },
            ..DinoConfig::default()
        };
        let enc = EncoderConfig {
            arch: Arch::Convnet,
            width: 4,
            ..EncoderConfig::default()
        };
        let train = Device::flex().autodiff();
        let build = |d: &Device| DinoModel::new(enc.init(1, d), &cfg.head, d);
        let student = seed::init_module(&train, 1, build);
        let fresh = seed::init_module(&train, 2, build);
        let dino = Dino::new(&cfg, fresh, &student);
        train.seed(3);
        let views = [16, 16, 8]
            .map(|s| Tensor::random([4, 1, s, s], Distribution::Normal(0.0, 1.0), &train))
            .to_vec();
        (cfg, student, dino, views)
    }

    fn info(step: usize, epoch: usize) -> StepInfo {
        StepInfo {
            step,
            epoch,
            total_steps: 100,
            steps_per_epoch: 10,
        }
    }

    #[test]
    fn the_student_head_runs_once_over_every_crop() {
        let (cfg, student, mut dino, views) = setup_with_head_norm(true);
        let out = dino.outputs(&student, &views, 0, &info(0, 1));
        assert_eq!(out.len(), 2 + views.len());
        // The reference: backbone per crop size, one head pass over all the features, so the
        // head's BatchNorm sees globals and locals together.
        let g = student
            .backbone
            .features(Tensor::cat(views[..2].to_vec(), 0));
        let l = student.backbone.features(views[2].clone());
        let all = student.head.forward(Tensor::cat(vec![g.clone(), l], 0));
        let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let (n, k) = (4, cfg.head.output_dim);
        for (i, o) in out[2..].iter().enumerate() {
            let want = values(all.clone().slice([i * n..(i + 1) * n, 0..k]));
            let got = values(o.clone());
            let d = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-5, "crop {i}: {d}");
        }
        // Heads run per crop size would normalize the globals alone: different outputs.
        let apart = values(student.head.forward(g).slice([0..n, 0..k]));
        let d = values(out[2].clone())
            .iter()
            .zip(&apart)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            d > 1e-4,
            "the locals did not enter the head's batch statistics"
        );
    }

    #[test]
    fn teacher_gets_no_gradient_and_moves_by_the_ema_rule() {
        let (_, student, mut dino, views) = setup();
        assert_eq!(
            flat(dino.teacher()),
            flat(&student.valid()),
            "the teacher starts as the student"
        );
        let w = dino.teacher().head.last_layer_weights();
        assert!(w.is_autodiff() && !w.is_require_grad() && !w.is_tracked());
        // Same weights, and BatchNorm on the batch's statistics in both: the same outputs.
        let t = flat_tensor(dino.teacher().forward(views[0].clone().detach()));
        let s = flat_tensor(student.forward(views[0].clone()));
        for (a, b) in t.iter().zip(&s) {
            assert!((a - b).abs() < 1e-5, "teacher {a} vs student {b}");
        }
        let teacher0 = trained(dino.teacher(), &student);
        let mut stepper = Stepper::new(&TrainConfig::default(), 1);
        let step = info(50, 5);
        let (next, _) = stepper
            .step(&mut dino, student.clone(), &views, &step, 0.1, 1)
            .unwrap();
        // `step` ran the optimizer on the student only; `after_step` is the trainer's call.
        assert_eq!(
            trained(dino.teacher(), &student),
            teacher0,
            "the optimizer moved the teacher"
        );
        let s1 = trained(&next, &student);
        assert_ne!(s1, teacher0, "the student did not move");
        dino.after_step(&next, &step);
        let m = dino.momentum(&step);
        assert!(m > 0.996 && m < 1.0);
        let t1 = trained(dino.teacher(), &student);
        for ((t, t0), s) in t1.iter().zip(&teacher0).zip(&s1) {
            let want = m * *t0 as f64 + (1.0 - m) * *s as f64;
            assert!((*t as f64 - want).abs() < 1e-6, "{t} vs {want}");
        }
        // The schedule's end points.
        assert_eq!(dino.momentum(&info(0, 0)), 0.996);
        assert_eq!(dino.momentum(&info(100, 9)), 1.0);
    }

    /// Two replicas of a ViT student (no BatchNorm anywhere, teacher included) over half the
    /// views each: the loss, the updated student and the centre equal one device's, last
    /// layer frozen or not.
    #[test]
    fn a_step_over_two_devices_equals_one_device_with_the_whole_batch() {
        use selfsup_core::DataParallel;
        use selfsup_core::grads::param_values;
        use selfsup_core::parallel::replicate;
        use selfsup_encoders::VitConfig;

        let cfg = DinoConfig {
            head: DinoHeadConfig {
                layers: 2,
                hidden_dim: 16,
                bottleneck_dim: 8,
                output_dim: 32,
                norm_last_layer: true,
                batch_norm: false,
            },
            ..DinoConfig::default()
        };
        let enc = EncoderConfig {
            arch: Arch::Vit,
            vit: VitConfig {
                dim: 8,
                depth: 1,
                heads: 2,
                ..VitConfig::tiny(8, 4)
            },
            ..EncoderConfig::default()
        };
        let dev = selfsup_core::DeviceSpec::for_tests().autodiff();
        let build = |d: &Device| DinoModel::new(enc.init(1, d), &cfg.head, d);
        let student = seed::init_module(&dev, 1, build);
        let objective = || Dino::new(&cfg, seed::init_module(&dev, 2, build), &student);
        let views: Vec<Tensor<4>> = (0..3)
            .map(|v| {
                Tensor::from_data(
                    TensorData::new(
                        (0..4 * 64)
                            .map(|i| (((i + 7 * v) * 37) % 11) as f32 / 11.0 - 0.5)
                            .collect(),
                        [4, 1, 8, 8],
                    ),
                    &dev,
                )
            })
            .collect();
        let train = TrainConfig::default();
        // Epoch 0 freezes the last layer; epoch 1 trains it.
        for step in [info(3, 0), info(13, 1)] {
            let (mut d1, mut d2) = (objective(), objective());
            let (m1, r1) = Stepper::new(&train, 1)
                .step(&mut d1, replicate(&student, &dev), &views, &step, 0.1, 1)
                .unwrap();
            let dp = DataParallel::new(vec![dev.clone(), dev.clone()]).unwrap();
            let (m2, r2) = Stepper::new(&train, 1)
                .step_parallel(
                    &dp,
                    &mut d2,
                    replicate(&student, &dev),
                    &views,
                    &step,
                    0.1,
                    1,
                )
                .unwrap();
            let (
                selfsup_core::StepResult::Updated { loss: l1, .. },
                selfsup_core::StepResult::Updated { loss: l2, .. },
            ) = (r1, r2)
            else {
                panic!("a step was skipped")
            };
            assert!((l1 - l2).abs() < 1e-5, "one device {l1}, two {l2}");
            let (w0, w1, w2) = (param_values(&student), param_values(&m1), param_values(&m2));
            assert!(
                selfsup_core::grads::max_abs_diff(&w1, &w0) > 1e-5,
                "the step changed nothing"
            );
            assert!(
                selfsup_core::grads::max_abs_diff(&w1, &w2) < 1e-5,
                "weights differ by {}",
                selfsup_core::grads::max_abs_diff(&w1, &w2)
            );
            d1.after_step(&m1, &step);
            d2.after_step(&m2, &step);
            let (c1, c2) = (
                d1.center().into_data().try_to_vec::<f32>().unwrap(),
                d2.center().into_data().try_to_vec::<f32>().unwrap(),
            );
            assert!(c1.iter().any(|&c| c != 0.0), "the centre did not move");
            assert!(
                selfsup_core::grads::max_abs_diff(&c1, &c2) < 1e-6,
                "centres differ by {}",
                selfsup_core::grads::max_abs_diff(&c1, &c2)
            );
            assert!(
                selfsup_core::grads::max_abs_diff(
                    &param_values(d1.teacher()),
                    &param_values(d2.teacher())
                ) < 1e-6,
                "teachers differ"
            );

            // Two ranks (threads, `LocalGroup`): the same student, and after `after_step` the
            // same teacher and a centre over every rank's teacher outputs.
            let (_, ranks) = selfsup_core::distributed::one_process_and_ranks(
                objective,
                &train,
                replicate(&student, &dev),
                &views,
                &step,
                0.1,
                2,
            )
            .unwrap();
            for (r, rank) in ranks.iter().enumerate() {
                let d = selfsup_core::grads::max_abs_diff(&w1, &param_values(&rank.model));
                assert!(d < 1e-5, "rank {r}'s weights differ by {d}");
                assert!(
                    (l1 - rank.loss).abs() < 1e-5,
                    "one device {l1}, rank {r} {}",
                    rank.loss
                );
                let c = rank
                    .objective
                    .center()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let d = selfsup_core::grads::max_abs_diff(&c1, &c);
                assert!(d < 1e-6, "rank {r}'s centre differs by {d}");
                let t = param_values(rank.objective.teacher());
                let d = selfsup_core::grads::max_abs_diff(&param_values(d1.teacher()), &t);
                assert!(d < 1e-6, "rank {r}'s teacher differs by {d}");
            }
        }
    }

    #[test]
    fn teacher_and_centre_survive_a_checkpoint() {
        let (_, student, mut dino, views) = setup();
        let step = info(3, 0);
        let _ = dino.loss(&student, &views, 0, &step);
        dino.after_step(&student, &step);
        let dir = tempfile::tempdir().unwrap();
        dino.save_state(dir.path()).unwrap();
        let (_, _, mut other, _) = setup();
        other.load_state(dir.path()).unwrap();
        assert_eq!(flat(other.teacher()), flat(dino.teacher()));
        assert_eq!(
            other.center().into_data().try_to_vec::<f32>().unwrap(),
            dino.center().into_data().try_to_vec::<f32>().unwrap()
        );
        assert!(!other.teacher().head.last_layer_weights().is_require_grad());
        std::fs::write(dir.path().join(CENTER_FILE), "[1.0]").unwrap();
        let err = other.load_state(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(CENTER_FILE) && err.contains("output_dim"),
            "{err}"
        );
    }

    #[test]
    fn last_layer_is_frozen_during_the_first_epoch_only() {
        let (_, student, mut dino, views) = setup();
        let last = |m: &DinoModel<Backbone>| flat(&m.head.valid());
        let mut stepper = Stepper::new(&TrainConfig::default(), 1);
        let before = student.head.last_layer_weights().inner();
        let before = before.into_data().try_to_vec::<f32>().unwrap();
        let head_before = last(&student);
        let (student, _) = stepper
            .step(&mut dino, student, &views, &info(0, 0), 0.1, 1)
            .unwrap();
        let frozen = student.head.last_layer_weights().inner();
        assert_eq!(frozen.into_data().try_to_vec::<f32>().unwrap(), before);
        assert_ne!(last(&student), head_before, "the rest of the head trains");
        let (student, _) = stepper
            .step(&mut dino, student, &views, &info(10, 1), 0.1, 2)
            .unwrap();
        let moved = student.head.last_layer_weights().inner();
        assert_ne!(moved.into_data().try_to_vec::<f32>().unwrap(), before);
    }

    #[test]
    fn centre_follows_the_teacher_outputs_and_the_monitor_reports() {
        let (cfg, student, mut dino, views) = setup();
        let out = dino.loss(&student, &views, 0, &info(0, 0));
        assert!(out.loss.into_scalar::<f64>().is_finite());
        let names: Vec<&str> = out.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "teacher_entropy",
                "teacher_batch_entropy",
                "teacher_student_kl",
                "teacher_temperature"
            ]
        );
        assert_eq!(out.metrics[3].1, cfg.warmup_teacher_temperature);
        let pending = dino.pending.clone();
        dino.after_step(&student, &info(0, 0));
        let want = updated_center(
            Tensor::zeros([cfg.head.output_dim], &Device::flex().autodiff()),
            &pending,
            cfg.center_momentum,
        );
        assert_eq!(
            dino.center().into_data().try_to_vec::<f32>().unwrap(),
            want.into_data().try_to_vec::<f32>().unwrap()
        );
        let report = dino.finish_epoch();
        assert!(report.teacher_entropy > 0.0 && report.kl >= 0.0);
        assert_eq!(cfg.validate().map_err(|e| e.to_string()), Ok(()));
        let bad = DinoConfig {
            student_temperature: 0.0,
            ..cfg
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("dino.student_temperature")
        );
    }
}
