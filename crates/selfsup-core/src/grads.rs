//! Utilities over whole modules: parameter ids and values, the gradients' global norm and
//! clipping by it.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => {
                    let d = t.device();
                    t.add(s.to_device(&d))
                }
                None => s,
            });
        }
    }
}

struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}

/// The ids of every float parameter of `module`, in visiting order: what
/// [`crate::Objective::phase_params`] returns to update one network of several.
pub fn param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0.into_iter().map(|(id, _)| id).collect()
}

struct Values(Vec<f32>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        self.0
            .extend(data.try_to_vec::<f32>().expect("converted to f32"));
    }
}

/// Every float parameter of `module` as `f32`, in visiting order: for comparing two models'
/// weights (a resumed run against an uninterrupted one, one backend against another).
pub fn param_values<M: Module>(module: &M) -> Vec<f32> {
    let mut v = Values(Vec::new());
    module.visit(&mut v);
    v.0
}

/// The largest absolute difference between two equally long lists of values (of
/// [`param_values`], say); `f32::INFINITY` when their lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The global L2 norm of all gradients of `module` (0 when it has none).
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm { grads, total: None };
    module.visit(&mut v);
    v.total
        .map(|t| t.sqrt().into_scalar::<f64>())
        .unwrap_or(0.0)
}

fn scale_rank<const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f64) {
    if let Some(g) = grads.remove::<D>(id) {
        grads.register(id, g.mul_scalar(factor));
    }
}

/// Scales every gradient so their global norm is at most `max_norm`; returns the norm before.
/// Global, not per tensor: the direction of the whole update is kept (PyTorch's
/// `clip_grad_norm_`).
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let total = global_norm(module, grads);
    if total.is_finite() && total > max_norm && total > 0.0 {
        let factor = max_norm / (total + 1e-6);
        let mut ids = Ids(Vec::new());
        module.visit(&mut ids);
        for (id, rank) in ids.0 {
            match rank {
                1 => scale_rank::<1>(grads, id, factor),
                2 => scale_rank::<2>(grads, id, factor),
                3 => scale_rank::<3>(grads, id, factor),
                4 => scale_rank::<4>(grads, id, factor),
                5 => scale_rank::<5>(grads, id, factor),
                _ => {}
            }
        }
    }
    total
}
