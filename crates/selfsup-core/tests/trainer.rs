//! The training engine on a toy problem: finite-loss guard, checkpoints and exact resume.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_core::{
    BatchSource, Error, LossOutput, Objective, OptimizerKind, ParamSettings, Result, StepInfo,
    TrainConfig, TrainOutcome, Trainer, checkpoint, seed,
};
use std::path::Path;

#[derive(Module, Debug)]
struct Toy {
    lin: Linear,
}

struct Regress {
    /// The step whose loss is NaN.
    poison_at: Option<usize>,
    /// The step whose loss is finite but whose gradient is NaN.
    poison_grad_at: Option<usize>,
    /// How the weight (not the bias) trains, as a parameter group.
    weight: Option<ParamSettings>,
}

impl Objective for Regress {
    type Model = Toy;
    type Batch = Tensor<2>;
    fn name(&self) -> &str {
        "toy"
    }
    fn loss(&mut self, model: &Toy, x: &Tensor<2>, _phase: usize, info: &StepInfo) -> LossOutput {
        let y = model.lin.forward(x.clone());
        let mut l = y.sub(x.clone().mul_scalar(2.0)).square().mean();
        if self.poison_at == Some(info.step) {
            l = l.mul_scalar(f64::NAN);
        }
        if self.poison_grad_at == Some(info.step) {
            // 0 * sqrt(|w - w|): worth 0, but its gradient is 0 * infinity.
            let w = model.lin.weight.val();
            l = l + w.clone().sub(w.detach()).abs().sqrt().sum().mul_scalar(0.0);
        }
        LossOutput::new(l)
    }
    fn divergence_hint(&self) -> String {
        "the toy's poison".into()
    }
    fn param_settings(&self, model: &Toy, _phase: usize) -> Vec<(ParamId, ParamSettings)> {
        self.weight
            .map(|s| vec![(model.lin.weight.id, s)])
            .unwrap_or_default()
    }
}

struct Data(Device);

impl BatchSource for Data {
    type Batch = Tensor<2>;
    fn steps_per_epoch(&self) -> usize {
        4
    }
    fn batch_size(&self) -> usize {
        8
    }
    fn batch(&self, epoch: usize, index: usize) -> Result<Tensor<2>> {
        use rand::Rng;
        let mut rng = seed::rng(1, seed::STREAM_SHUFFLE, epoch as u64, index as u64);
        let v: Vec<f32> = (0..24).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Ok(Tensor::from_data(TensorData::new(v, [8, 3]), &self.0))
    }
}

fn config(kind: OptimizerKind) -> TrainConfig {
    let mut c = TrainConfig {
        epochs: 3,
        batch_size: 8,
        checkpoint_every: 5,
        keep_checkpoints: 10,
        log_every: 2,
        ..Default::default()
    };
    c.optimizer.kind = kind;
    c.optimizer.lr = 0.05;
    c.optimizer.trust_coefficient = 0.5;
    c.grad_clip_norm = 5.0;
    c
}

fn model(device: &Device) -> Toy {
    seed::init_module(device, 7, |d| Toy {
        lin: LinearConfig::new(3, 3).init(d),
    })
}

struct Flat(Vec<f32>);
impl ModuleVisitor for Flat {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0
            .extend(p.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

fn weights(m: &Toy) -> Vec<f32> {
    let mut f = Flat(Vec::new());
    m.visit(&mut f);
    f.0
}

/// Trains a fresh toy model with `cfg` in `dir`.
fn run(
    cfg: TrainConfig,
    dir: &Path,
    poison_at: Option<usize>,
    resume: bool,
) -> Result<TrainOutcome<Toy>> {
    fit(
        cfg,
        dir,
        Regress {
            poison_at,
            poison_grad_at: None,
            weight: None,
        },
        resume,
    )
}

fn fit(cfg: TrainConfig, dir: &Path, mut obj: Regress, resume: bool) -> Result<TrainOutcome<Toy>> {
    let device = Device::flex().autodiff();
    Trainer::new(cfg, dir)?.with_progress(false).fit(
        &mut obj,
        model(&device),
        &Data(device.clone()),
        selfsup_core::FitOptions::new().resume(resume),
    )
}

#[test]
fn loss_decreases_and_resume_is_exact() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adamw,
        OptimizerKind::Lars,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let a = run(config(kind), &dir.path().join("a"), None, false).unwrap();
        assert_eq!(a.steps, 12);
        let first: f64 = {
            let text = std::fs::read_to_string(dir.path().join("a/metrics.jsonl")).unwrap();
            let line = text.lines().next().unwrap();
            line.split("\"loss\":")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            a.last_loss < first,
            "{kind:?}: loss {first} -> {}",
            a.last_loss
        );

        // Same seed, fresh run: bit-identical weights.
        let c = run(config(kind), &dir.path().join("c"), None, false).unwrap();
        assert_eq!(
            weights(&a.model),
            weights(&c.model),
            "{kind:?}: seeded runs differ"
        );

        // Interrupted after step 5: only that checkpoint survives; resuming gives the same weights.
        let b_dir = dir.path().join("b");
        std::fs::create_dir_all(checkpoint::checkpoints_dir(&b_dir)).unwrap();
        let five = checkpoint::checkpoints_dir(&dir.path().join("a")).join("step-00000005");
        let dst = checkpoint::checkpoints_dir(&b_dir).join("step-00000005");
        std::fs::create_dir(&dst).unwrap();
        for f in std::fs::read_dir(&five).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
        }
        let b = run(config(kind), &b_dir, None, true).unwrap();
        assert_eq!(
            weights(&a.model),
            weights(&b.model),
            "{kind:?}: resume differs"
        );
    }
}

#[test]
fn nan_loss_stops_with_the_step_and_leaves_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(config(OptimizerKind::Sgd), dir.path(), Some(3), false)
        .err()
        .unwrap();
    assert!(matches!(err, Error::NonFinite { step: 3, .. }), "{err}");
    assert!(err.to_string().contains("step 3"));
    assert!(checkpoint::latest(dir.path()).unwrap().is_none());

    let mut c = config(OptimizerKind::Sgd);
    c.skip_nonfinite = true;
    let dir2 = tempfile::tempdir().unwrap();
    let out = run(c, dir2.path(), Some(3), false).unwrap();
    assert_eq!(out.steps, 12);
    let st = checkpoint::read_state(&checkpoint::latest(dir2.path()).unwrap().unwrap()).unwrap();
    assert_eq!(st.skipped_steps, 1);
}

/// A finite loss with a NaN gradient, unclipped: caught at its step, named with the method's
/// likely cause; the run folder resumes from its last checkpoint to the weights of a clean
/// run; with `skip_nonfinite` the step is skipped and counted in metrics and checkpoints.
#[test]
fn nan_gradient_is_named_and_the_run_resumes_from_its_last_checkpoint() {
    let mut c = config(OptimizerKind::Adamw);
    c.grad_clip_norm = 0.0;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let poisoned = || Regress {
        poison_at: None,
        poison_grad_at: Some(7),
        weight: None,
    };
    let clean = || Regress {
        poison_at: None,
        poison_grad_at: None,
        weight: None,
    };
    let err = fit(c.clone(), &a, poisoned(), false).err().unwrap();
    assert!(matches!(err, Error::NonFinite { step: 7, .. }), "{err}");
    let msg = err.to_string();
    for part in [
        "step 7",
        "toy gradient norm",
        "Likely cause: the toy's poison",
        "--resume",
        "train.skip_nonfinite",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    let last = checkpoint::latest(&a).unwrap().unwrap();
    assert_eq!(checkpoint::read_state(&last).unwrap().step, 5);
    let resumed = fit(c.clone(), &a, clean(), true).unwrap();
    let straight = fit(c.clone(), &dir.path().join("b"), clean(), false).unwrap();
    assert_eq!(weights(&resumed.model), weights(&straight.model));

    c.skip_nonfinite = true;
    let s = dir.path().join("s");
    let out = fit(c, &s, poisoned(), false).unwrap();
    assert_eq!(out.steps, 12);
    assert_ne!(weights(&out.model), weights(&straight.model));
    let st = checkpoint::read_state(&checkpoint::latest(&s).unwrap().unwrap()).unwrap();
    assert_eq!(st.skipped_steps, 1);
    let metrics = std::fs::read_to_string(s.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"skipped_steps\":1"), "{metrics}");
}

/// A checkpoint whose file no longer matches its checksum: loading it names the file; a resume
/// passes over it to the one before (and sets it aside), and still ends where a clean run does.
#[test]
fn damaged_checkpoints_are_named_and_passed_over() {
    let mut c = config(OptimizerKind::Sgd);
    c.checkpoint_every = 2;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let straight = run(c.clone(), &a, None, false).unwrap();
    let all = checkpoint::list(&a).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all[0].join(checkpoint::SUMS).is_file());
    checkpoint::verify(&all[5]).unwrap();
    // Keep steps 2..8; flip a byte of step 8's weights.
    for d in &all[4..] {
        std::fs::remove_dir_all(d).unwrap();
    }
    let model_file = all[3].join("model.bpk");
    let mut bytes = std::fs::read(&model_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model_file, bytes).unwrap();
    let err = checkpoint::verify(&all[3]).unwrap_err().to_string();
    assert!(
        err.contains("model.bpk") && err.contains("checksum"),
        "{err}"
    );
    let device = Device::flex().autodiff();
    let err = checkpoint::load_model(&all[3], model(&device))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.bpk") && err.contains("checksum"),
        "{err}"
    );
    let resumed = run(c, &a, None, true).unwrap();
    assert_eq!(weights(&resumed.model), weights(&straight.model));
    let aside = checkpoint::checkpoints_dir(&a).join(".step-00000008.damaged");
    assert!(aside.is_dir(), "the damaged checkpoint was not set aside");
}

#[test]
fn existing_run_needs_resume_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(OptimizerKind::Sgd);
    c.epochs = 1;
    run(c.clone(), dir.path(), None, false).unwrap();
    let err = run(c.clone(), dir.path(), None, false).err().unwrap();
    assert!(err.to_string().contains("--resume"), "{err}");
    c.optimizer.lr = 0.0;
    let err = run(c, dir.path(), None, false).err().unwrap();
    assert!(err.to_string().contains("train.optimizer.lr"), "{err}");
}

/// `lin`'s weight and bias values, apart.
fn weight_and_bias(m: &Toy) -> (Vec<f32>, Vec<f32>) {
    let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    (
        v(m.lin.weight.val().flatten(0, 1)),
        v(m.lin.bias.as_ref().unwrap().val()),
    )
}

#[test]
fn parameter_groups_scale_the_rate_switch_off_decay_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let grouped = |s: ParamSettings| Regress {
        poison_at: None,
        poison_grad_at: None,
        weight: Some(s),
    };
    let start = weight_and_bias(&model(&Device::flex().autodiff()));
    // A rate scale of 0 freezes the weight; the bias trains.
    let frozen = ParamSettings {
        lr_scale: 0.0,
        weight_decay: true,
    };
    let a = fit(
        config(OptimizerKind::Sgd),
        &dir.path().join("a"),
        grouped(frozen),
        false,
    )
    .unwrap();
    let (w, b) = weight_and_bias(&a.model);
    assert_eq!(w, start.0);
    assert_ne!(b, start.1);
    // Without decay in its group, the weight moves as with no weight decay at all (the bias,
    // of rank 1, never decays).
    let mut decayed = config(OptimizerKind::Sgd);
    decayed.optimizer.weight_decay = 0.5;
    decayed.optimizer.momentum = 0.0;
    decayed.max_steps = 1;
    let mut plain = decayed.clone();
    plain.optimizer.weight_decay = 0.0;
    let no_decay = ParamSettings {
        lr_scale: 1.0,
        weight_decay: false,
    };
    let c = fit(
        decayed.clone(),
        &dir.path().join("c"),
        grouped(no_decay),
        false,
    )
    .unwrap();
    let d = run(plain, &dir.path().join("d"), None, false).unwrap();
    let e = run(decayed, &dir.path().join("e"), None, false).unwrap();
    assert_eq!(weights(&c.model), weights(&d.model));
    assert_ne!(weights(&c.model), weights(&e.model));
    // Half the rate, with momentum: resuming keeps the group's state (groups are set before
    // the checkpoint's optimizer states are loaded, which setting them would clear).
    let half = ParamSettings {
        lr_scale: 0.5,
        weight_decay: true,
    };
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let f_dir = dir.path().join(format!("f-{kind:?}"));
        let f = fit(config(kind), &f_dir, grouped(half), false).unwrap();
        let g_dir = dir.path().join(format!("g-{kind:?}"));
        let five = checkpoint::checkpoints_dir(&f_dir).join("step-00000005");
        let dst = checkpoint::checkpoints_dir(&g_dir).join("step-00000005");
        std::fs::create_dir_all(&dst).unwrap();
        for file in std::fs::read_dir(&five).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dst.join(file.file_name().unwrap())).unwrap();
        }
        let g = fit(config(kind), &g_dir, grouped(half), true).unwrap();
        assert_eq!(
            weights(&f.model),
            weights(&g.model),
            "{kind:?}: resume differs"
        );
        let ungrouped = run(
            config(kind),
            &dir.path().join(format!("h-{kind:?}")),
            None,
            false,
        );
        assert_ne!(weights(&f.model), weights(&ungrouped.unwrap().model));
    }
}

/// The toy regression as a per-sample objective: each sample's residual `lin(x) - 2x` is its
/// output, the loss their mean square over the gathered batch.
struct Residual;

impl Objective for Residual {
    type Model = Toy;
    type Batch = Tensor<2>;
    fn name(&self) -> &str {
        "toy"
    }
    fn loss(&mut self, model: &Toy, x: &Tensor<2>, phase: usize, info: &StepInfo) -> LossOutput {
        selfsup_core::parallel::whole_batch_loss(self, model, x, phase, info)
    }
}

impl selfsup_core::Shardable for Residual {
    type Shard = Tensor<2>;
    fn shard(
        &self,
        _model: &Toy,
        x: &Tensor<2>,
        devices: &[Device],
        _info: &StepInfo,
    ) -> Result<Vec<Tensor<2>>> {
        selfsup_core::parallel::split_rows(x, devices)
    }
    fn whole(&self, _model: &Toy, x: &Tensor<2>, _info: &StepInfo) -> Tensor<2> {
        x.clone()
    }
    fn cast(&self, x: Tensor<2>, _dtype: burn::tensor::FloatDType) -> Tensor<2> {
        x
    }
    fn outputs(
        &mut self,
        model: &Toy,
        x: &Tensor<2>,
        _phase: usize,
        _info: &StepInfo,
    ) -> Vec<Tensor<2>> {
        vec![model.lin.forward(x.clone()).sub(x.clone().mul_scalar(2.0))]
    }
    fn gathered_loss(
        &mut self,
        _model: &Toy,
        outputs: Vec<Tensor<2>>,
        _phase: usize,
        _info: &StepInfo,
    ) -> LossOutput {
        LossOutput::new(outputs[0].clone().square().mean())
    }
}

/// `ranks` threads, each a rank of one `LocalGroup`, fitting the toy in `dir`; their outcomes
/// in rank order.
fn fit_ranks(
    cfg: &TrainConfig,
    dir: &Path,
    ranks: usize,
    resume: bool,
) -> Vec<Result<TrainOutcome<Toy>>> {
    use selfsup_core::{Distributed, FitOptions, LocalGroup};
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(ranks)
            .into_iter()
            .map(|group| {
                s.spawn(move || {
                    let device = Device::flex().autodiff();
                    let dist = Distributed::new(std::sync::Arc::new(group), device.clone())?;
                    Trainer::new(cfg.clone(), dir)?.with_progress(false).fit(
                        &mut Residual,
                        model(&device),
                        &Data(device.clone()),
                        FitOptions::new().resume(resume).distributed(&dist),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Two ranks (threads) train as one process does over the whole batch; rank 0 alone writes the
/// run folder; a 2-rank run resumed from its step-5 checkpoint ends where the uninterrupted one
/// did, bit for bit; 3 ranks cannot split a batch of 8 and every rank says so.
#[test]
fn two_ranks_train_as_one_process_write_once_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(OptimizerKind::Adamw);
    let device = Device::flex().autodiff();
    let one = Trainer::new(cfg.clone(), dir.path().join("one"))
        .unwrap()
        .with_progress(false)
        .fit(
            &mut Residual,
            model(&device),
            &Data(device.clone()),
            selfsup_core::FitOptions::new(),
        )
        .unwrap();

    let two_dir = dir.path().join("two");
    let two: Vec<TrainOutcome<Toy>> = fit_ranks(&cfg, &two_dir, 2, false)
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    let w = weights(&one.model);
    for (r, o) in two.iter().enumerate() {
        let d = selfsup_core::grads::max_abs_diff(&w, &weights(&o.model));
        assert!(
            d < 1e-5,
            "rank {r}'s weights differ from one process's by {d}"
        );
        assert_eq!(o.steps, 12);
    }
    assert_eq!(
        weights(&two[0].model),
        weights(&two[1].model),
        "the ranks drifted apart"
    );
    let lines = |p: &Path| {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        lines(&two_dir),
        lines(&dir.path().join("one")),
        "a metrics line per log, written once"
    );
    assert_eq!(two[1].checkpoint, two[0].checkpoint);

    // Interrupted after step 5: both ranks resume from rank 0's checkpoint.
    let b_dir = dir.path().join("b");
    let five = checkpoint::step_dir(&two_dir, 5);
    let dst = checkpoint::step_dir(&b_dir, 5);
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&five).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
    let b: Vec<TrainOutcome<Toy>> = fit_ranks(&cfg, &b_dir, 2, true)
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    for o in &b {
        assert_eq!(weights(&o.model), weights(&two[0].model), "resume differs");
    }

    for r in fit_ranks(&cfg, &dir.path().join("three"), 3, false) {
        let err = r.err().expect("8 rows over 3 ranks");
        assert!(err.to_string().contains("train.batch_size"), "{err}");
    }
}
