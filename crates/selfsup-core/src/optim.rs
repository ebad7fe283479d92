//! Our optimizers: SGD (PyTorch semantics), AdamW and LARS behind burn's [`Optimizer`] trait.
//!
//! Written here rather than taken from burn because burn's SGD dampens momentum by default,
//! burn has no LARS, and we want one rule for every optimizer: parameters of rank 1 (biases
//! and normalization weights) get neither weight decay nor LARS adaptation.

use crate::config::{OptimizerConfig, OptimizerKind};
use burn::optim::{ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-parameter state: a momentum buffer (or Adam's first moment), Adam's second moment, and
/// how many updates this parameter has had.
#[derive(Clone)]
pub struct ParamState<const D: usize> {
    /// Momentum buffer, or AdamW's first moment.
    pub m: Option<Tensor<D>>,
    /// AdamW's second moment.
    pub v: Option<Tensor<D>>,
    /// Updates this parameter has had, the one just made included: AdamW's bias correction
    /// counts them per parameter, as PyTorch does (`state["step"]`), so a parameter that
    /// starts late (DINO's last layer after its frozen epoch, a group unfrozen mid-run) gets
    /// a first update of the same size as one trained from step 1. `None` in checkpoints
    /// written before the count was kept: those fall back to the run's global step, the
    /// rule they were trained with.
    pub steps: Option<u64>,
}

impl<const D: usize> RecordState for ParamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(m) = &self.m {
            out.push_tensor(prefix, "m", m.clone().into_data());
        }
        if let Some(v) = &self.v {
            out.push_tensor(prefix, "v", v.clone().into_data());
        }
        if let Some(steps) = self.steps {
            out.push_scalar(prefix, "steps", steps.into());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        Some(Self {
            m: src
                .take_tensor(prefix, "m")
                .map(|d| Tensor::from_data(d, device)),
            v: src
                .take_tensor(prefix, "v")
                .map(|d| Tensor::from_data(d, device)),
            steps: src
                .take_scalar(prefix, "steps")
                .and_then(|s| u64::try_from(s).ok()),
        })
    }
}

/// SGD, AdamW or LARS, as configured by [`OptimizerConfig`].
///
/// AdamW's bias correction counts each parameter's own updates ([`ParamState::steps`]); the
/// trainer's global count ([`StepCounter`]) is only the fallback for states saved before that
/// count was kept.
#[derive(Clone)]
pub struct SelfsupOptimizer {
    config: OptimizerConfig,
    step: StepCounter,
    /// This parameter group's settings ([`ParamSettings`]; the default for the rest).
    settings: ParamSettings,
}

/// How one group of parameters trains, beside the config's optimizer: a factor on the learning
/// rate and whether weight decay applies. What PyTorch's optimizer parameter groups carry in
/// MAE's fine-tuning (`lr_scale` per layer for layer-wise decay, `weight_decay = 0` for the
/// class token and position embeddings). Parameters of rank 1 (biases, norms) never decay,
/// whatever their group says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSettings {
    /// Factor on the scheduled learning rate.
    pub lr_scale: f64,
    /// Whether the config's (or the scheduled) weight decay applies.
    pub weight_decay: bool,
}

impl Default for ParamSettings {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            weight_decay: true,
        }
    }
}

/// What the trainer tells the optimizer before each step: the 1-based count of steps taken
/// (AdamW's bias correction for optimizer states saved without their own count) and, when
/// scheduled, the weight decay. Shared between the trainer and the optimizer.
#[derive(Clone, Debug)]
pub struct StepCounter {
    steps: Arc<AtomicU64>,
    /// `f64` bits of the scheduled weight decay; [`UNSET`] when the config's applies.
    decay: Arc<AtomicU64>,
}

const UNSET: u64 = u64::MAX;

impl Default for StepCounter {
    fn default() -> Self {
        Self {
            steps: Arc::default(),
            decay: Arc::new(AtomicU64::new(UNSET)),
        }
    }
}

impl StepCounter {
    /// Sets the count of steps taken so far, including the one about to run.
    pub fn set(&self, steps: u64) {
        self.steps.store(steps, Ordering::Relaxed)
    }
    /// Current count.
    pub fn get(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }
    /// Sets the weight decay of the coming steps; `None` restores the config's.
    pub fn set_weight_decay(&self, decay: Option<f64>) {
        let bits = decay.map_or(UNSET, f64::to_bits);
        self.decay.store(bits, Ordering::Relaxed)
    }
    /// The scheduled weight decay, if any.
    pub fn weight_decay(&self) -> Option<f64> {
        let bits = self.decay.load(Ordering::Relaxed);
        (bits != UNSET).then(|| f64::from_bits(bits))
    }
}

impl SelfsupOptimizer {
    /// A new optimizer and the counter the trainer advances.
    pub fn new(config: OptimizerConfig) -> (Self, StepCounter) {
        let step = StepCounter::default();
        (
            Self {
                config,
                step: step.clone(),
                settings: ParamSettings::default(),
            },
            step,
        )
    }

    /// The same optimizer (sharing its step counter) for a group of parameters trained as
    /// `settings` say.
    pub fn for_group(&self, settings: ParamSettings) -> Self {
        Self {
            settings,
            ..self.clone()
        }
    }

    /// Wrapped for whole modules.
    pub fn module_optimizer(config: OptimizerConfig) -> (ModuleOptimizer, StepCounter) {
        let (opt, step) = Self::new(config);
        (ModuleOptimizer::from(opt), step)
    }
}

/// L2 norm of a tensor as a `[1]` tensor (no device sync).
fn norm<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    t.square().sum().sqrt()
}

/// Broadcastable `[1, .., 1]` view of a one-element tensor.
fn bcast<const D: usize>(s: Tensor<1>) -> Tensor<D> {
    s.reshape([1; D])
}

impl Optimizer for SelfsupOptimizer {
    type State<const D: usize> = ParamState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let c = &self.config;
        let lr = lr * self.settings.lr_scale;
        let weight_decay = if self.settings.weight_decay {
            self.step.weight_decay().unwrap_or(c.weight_decay)
        } else {
            0.0
        };
        let decayed = D > 1 && weight_decay > 0.0;
        let (m, v, steps) = match state {
            // A state from an old checkpoint has no count: the global step it was trained by.
            Some(s) => (s.m, s.v, s.steps.unwrap_or(self.step.get().max(1) - 1)),
            None => (None, None, 0),
        };
        let steps = steps + 1;
        match c.kind {
            OptimizerKind::Sgd | OptimizerKind::Lars => {
                let mut g = grad;
                if c.kind == OptimizerKind::Lars && D > 1 {
                    // trust = eta * |w| / (|g| + wd * |w|), 1 where either norm is zero.
                    let wn = norm(tensor.clone());
                    let gn = norm(g.clone());
                    let ratio = wn
                        .clone()
                        .mul_scalar(c.trust_coefficient)
                        .div(gn.clone().add(wn.clone().mul_scalar(weight_decay)));
                    let ok = wn.greater_elem(0.0).bool_and(gn.greater_elem(0.0));
                    let trust = ratio.ones_like().mask_where(ok, ratio);
                    if decayed {
                        g = g.add(tensor.clone().mul_scalar(weight_decay));
                    }
                    g = g.mul(bcast::<D>(trust));
                } else if decayed {
                    g = g.add(tensor.clone().mul_scalar(weight_decay));
                }
                let (update, m) = if c.momentum > 0.0 {
                    let buf = match m {
                        Some(buf) => buf.mul_scalar(c.momentum).add(g.clone()),
                        None => g.clone(),
                    };
                    let update = if c.nesterov {
                        g.add(buf.clone().mul_scalar(c.momentum))
                    } else {
                        buf.clone()
                    };
                    (update, Some(buf))
                } else {
                    (g, None)
                };
                (
                    tensor.sub(update.mul_scalar(lr)),
                    Some(ParamState {
                        m,
                        v: None,
                        steps: Some(steps),
                    }),
                )
            }
            OptimizerKind::Adamw => {
                let t = steps.min(i32::MAX as u64) as i32;
                let (b1, b2) = (c.beta1, c.beta2);
                let m = match m {
                    Some(m) => m.mul_scalar(b1).add(grad.clone().mul_scalar(1.0 - b1)),
                    None => grad.clone().mul_scalar(1.0 - b1),
                };
                let v = match v {
                    Some(v) => v.mul_scalar(b2).add(grad.square().mul_scalar(1.0 - b2)),
                    None => grad.square().mul_scalar(1.0 - b2),
                };
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let update = m
                    .clone()
                    .div_scalar(bc1)
                    .div(v.clone().div_scalar(bc2).sqrt().add_scalar(c.eps));
                let mut w = tensor;
                if decayed {
                    w = w.mul_scalar(1.0 - lr * weight_decay);
                }
                (
                    w.sub(update.mul_scalar(lr)),
                    Some(ParamState {
                        m: Some(m),
                        v: Some(v),
                        steps: Some(steps),
                    }),
                )
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        ParamState {
            m: state.m.map(|t| t.to_device(device)),
            v: state.v.map(|t| t.to_device(device)),
            steps: state.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn t2(v: [[f32; 2]; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::from(v), &Device::flex())
    }

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn cfg(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            lr: 0.1,
            weight_decay: 0.0,
            momentum: 0.9,
            nesterov: false,
            ..Default::default()
        }
    }

    #[test]
    fn sgd_momentum_matches_pytorch_without_dampening() {
        let (opt, _) = SelfsupOptimizer::new(cfg(OptimizerKind::Sgd));
        let w = t2([[1.0, 2.0], [3.0, 4.0]]);
        let g = t2([[1.0, 1.0], [1.0, 1.0]]);
        let (w, s) = opt.step(0.1, w, g.clone(), None);
        close(&vals(w.clone()), &[0.9, 1.9, 2.9, 3.9]);
        // buf = 0.9 * 1 + 1 = 1.9 -> w -= 0.19
        let (w, _) = opt.step(0.1, w, g, s);
        close(&vals(w), &[0.71, 1.71, 2.71, 3.71]);
    }

    #[test]
    fn nesterov_and_weight_decay_skip_rank_one() {
        let mut c = cfg(OptimizerKind::Sgd);
        c.nesterov = true;
        c.weight_decay = 0.5;
        let (opt, _) = SelfsupOptimizer::new(c);
        // rank 2: g' = 1 + 0.5 * 2 = 2; buf = 2; update = 2 + 0.9 * 2 = 3.8
        let (w, _) = opt.step(0.1, t2([[2.0, 2.0], [2.0, 2.0]]), t2([[1.0; 2]; 2]), None);
        close(&vals(w), &[1.62; 4]);
        // rank 1: no decay: update = 1 + 0.9 = 1.9
        let b: Tensor<1> = Tensor::from_data(TensorData::from([2.0f32]), &Device::flex());
        let g: Tensor<1> = Tensor::from_data(TensorData::from([1.0f32]), &Device::flex());
        let (b, _) = opt.step(0.1, b, g, None);
        close(&vals(b), &[1.81]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let mut c = cfg(OptimizerKind::Adamw);
        c.weight_decay = 0.1;
        let (opt, step) = SelfsupOptimizer::new(c);
        step.set(1);
        // Bias-corrected first step is lr * sign(g) (up to eps); decay: w *= 1 - lr * wd.
        let (w, _) = opt.step(
            0.1,
            t2([[1.0, 1.0], [1.0, 1.0]]),
            t2([[2.0, -3.0], [0.5, -0.1]]),
            None,
        );
        close(&vals(w), &[0.89, 1.09, 0.89, 1.09]);
    }

    #[test]
    fn adamw_counts_steps_per_parameter() {
        let c = cfg(OptimizerKind::Adamw);
        let (opt, step) = SelfsupOptimizer::new(c);
        let w = t2([[1.0, 1.0], [1.0, 1.0]]);
        let g = t2([[2.0, -3.0], [0.5, -0.1]]);
        // A parameter whose first gradient comes at global step 500 (frozen until then) gets
        // PyTorch's first update, lr * sign(g), not one corrected as if for 500 steps.
        step.set(500);
        let (w1, s1) = opt.step(0.1, w.clone(), g.clone(), None);
        close(&vals(w1), &[0.9, 1.1, 0.9, 1.1]);
        let s1 = s1.expect("AdamW keeps a state");
        assert_eq!(s1.steps, Some(1));
        // Its second update with the same gradient: m = 0.19 g and v = 0.001999 g², corrected
        // by 1 - 0.9² and 1 - 0.999², is again lr * sign(g).
        step.set(501);
        let (w2, s2) = opt.step(0.1, w.clone(), g.clone(), Some(s1.clone()));
        assert_eq!(s2.expect("state").steps, Some(2));
        close(&vals(w2), &[0.9, 1.1, 0.9, 1.1]);
        // A state saved before the count was kept falls back to the global step (old rule).
        let old = ParamState {
            steps: None,
            ..s1.clone()
        };
        let (w3, s3) = opt.step(0.1, w.clone(), g.clone(), Some(old));
        assert_eq!(s3.expect("state").steps, Some(501));
        // Corrected as the 501st step: m / (1 - 0.9^501), v / (1 - 0.999^501), a move of
        // 0.1 * 0.19 / sqrt(0.001999 / 0.394) = 0.267 where PyTorch moves 0.1.
        let m = 0.19 / (1.0 - 0.9f64.powi(501));
        let v = 0.001999 / (1.0 - 0.999f64.powi(501));
        let moved: Vec<f32> = vals(w3).iter().map(|x| (1.0 - x).abs()).collect();
        close(&moved, &[(0.1 * m / v.sqrt()) as f32; 4]);
    }

    #[test]
    fn the_step_count_survives_a_checkpoint() {
        let state = ParamState::<2> {
            m: Some(t2([[1.0, 2.0], [3.0, 4.0]])),
            v: None,
            steps: Some(7),
        };
        let mut sink = StateSink::default();
        state.state_flatten("p", &mut sink);
        let mut src = StateSource::new(sink.scalars.into_iter().collect());
        for (name, data) in sink.tensors {
            src.insert_tensor(name, data);
        }
        let back = ParamState::<2>::state_unflatten("p", &mut src, &Device::flex()).unwrap();
        assert_eq!(back.steps, Some(7));
        assert_eq!(vals(back.m.unwrap()), vec![1.0, 2.0, 3.0, 4.0]);
        // Written before the count existed: no scalar, no count.
        let mut bare = StateSource::default();
        bare.insert_tensor("p.m".into(), t2([[0.0; 2]; 2]).into_data());
        let old = ParamState::<2>::state_unflatten("p", &mut bare, &Device::flex()).unwrap();
        assert_eq!(old.steps, None);
    }

    #[test]
    fn scheduled_weight_decay_replaces_the_configs() {
        let mut c = cfg(OptimizerKind::Adamw);
        c.weight_decay = 0.1;
        let (opt, step) = SelfsupOptimizer::new(c);
        step.set(1);
        step.set_weight_decay(Some(0.5));
        assert_eq!(step.weight_decay(), Some(0.5));
        // w *= 1 - 0.1 * 0.5, then -= lr * sign(g).
        let w = t2([[1.0, 1.0], [1.0, 1.0]]);
        let g = t2([[2.0, -3.0], [0.5, -0.1]]);
        let (w2, _) = opt.step(0.1, w.clone(), g.clone(), None);
        close(&vals(w2), &[0.85, 1.05, 0.85, 1.05]);
        step.set_weight_decay(None);
        let (w3, _) = opt.step(0.1, w, g, None);
        close(&vals(w3), &[0.89, 1.09, 0.89, 1.09]);
    }

    #[test]
    fn lars_scales_by_trust_ratio() {
        let mut c = cfg(OptimizerKind::Lars);
        c.momentum = 0.0;
        c.trust_coefficient = 0.01;
        let (opt, _) = SelfsupOptimizer::new(c);
        // |w| = 4 (all 2), |g| = 2 (all 1): trust = 0.01 * 4 / 2 = 0.02; w -= 0.1 * 0.02 * 1
        let (w, _) = opt.step(0.1, t2([[2.0; 2]; 2]), t2([[1.0; 2]; 2]), None);
        close(&vals(w), &[1.998; 4]);
        // zero weights: trust 1
        let (w, _) = opt.step(0.1, t2([[0.0; 2]; 2]), t2([[1.0; 2]; 2]), None);
        close(&vals(w), &[-0.1; 4]);
    }
}
