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

/// How [`rescale_all`] changes each gradient.
#[derive(Clone, Copy)]
enum Rescale {
    /// Multiplied by one factor.
    By(f64),
    /// Scaled down to this norm where its own norm is above it.
    ToNorm(f64),
}

fn rescale_rank<const D: usize>(grads: &mut GradientsParams, id: ParamId, how: Rescale) {
    if let Some(g) = grads.remove::<D>(id) {
        let g = match how {
            Rescale::By(factor) => g.mul_scalar(factor),
            Rescale::ToNorm(max_norm) => {
                // min(1, max / (|g| + 1e-6)) as a tensor: no read-back per parameter.
                let factor = g
                    .clone()
                    .square()
                    .sum()
                    .sqrt()
                    .add_scalar(1e-6)
                    .recip()
                    .mul_scalar(max_norm)
                    .clamp_max(1.0);
                g.mul(factor.reshape([1; D]))
            }
        };
        grads.register(id, g);
    }
}

/// Applies `how` to the gradient of every parameter of `module` that has one.
fn rescale_all<M: Module>(module: &M, grads: &mut GradientsParams, how: Rescale) {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    for (id, rank) in ids.0 {
        match rank {
            1 => rescale_rank::<1>(grads, id, how),
            2 => rescale_rank::<2>(grads, id, how),
            3 => rescale_rank::<3>(grads, id, how),
            4 => rescale_rank::<4>(grads, id, how),
            5 => rescale_rank::<5>(grads, id, how),
            _ => {}
        }
    }
}

/// Scales each parameter's gradient on its own so that its norm is at most `max_norm`
/// (DINO's `clip_gradients`: `g *= max_norm / (|g| + 1e-6)` where `|g| > max_norm`); returns
/// the global norm before, for the log. Every tensor is clipped on the device without reading
/// its norm back: the factor is `min(1, max_norm / (|g| + 1e-6))`, computed as a tensor.
pub fn clip_per_tensor_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let total = global_norm(module, grads);
    if total.is_finite() {
        rescale_all(module, grads, Rescale::ToNorm(max_norm));
    }
    total
}

/// Scales every gradient so their global norm is at most `max_norm`; returns the norm before.
/// Global, not per tensor: the direction of the whole update is kept (PyTorch's
/// `clip_grad_norm_`).
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let total = global_norm(module, grads);
    if total.is_finite() && total > max_norm && total > 0.0 {
        rescale_all(module, grads, Rescale::By(max_norm / (total + 1e-6)));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    /// A 2x2 linear layer (weight and bias) with gradients of norm 5 (weight) and 0.5 (bias).
    fn setup() -> (Linear, GradientsParams) {
        let device = Device::flex();
        let layer = LinearConfig::new(2, 2).init(&device);
        let mut g = GradientsParams::new();
        let w = Tensor::<2>::from_data(TensorData::from([[3.0f32, 0.0], [0.0, 4.0]]), &device);
        let b = Tensor::<1>::from_data(TensorData::from([0.3f32, 0.4]), &device);
        g.register(layer.weight.id, w);
        g.register(layer.bias.as_ref().unwrap().id, b);
        (layer, g)
    }

    fn values(layer: &Linear, g: &GradientsParams) -> (Vec<f32>, Vec<f32>) {
        let w = g
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let b = g.get::<1>(layer.bias.as_ref().unwrap().id).unwrap();
        (w, b.into_data().try_to_vec().unwrap())
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn global_clipping_keeps_the_direction() {
        let (layer, mut g) = setup();
        let total = clip_global_norm(&layer, &mut g, 1.0);
        let expect = (25.0f64 + 0.25).sqrt();
        assert!((total - expect).abs() < 1e-5, "{total}");
        let f = (1.0 / (expect + 1e-6)) as f32;
        let (w, b) = values(&layer, &g);
        close(&w, &[3.0 * f, 0.0, 0.0, 4.0 * f]);
        close(&b, &[0.3 * f, 0.4 * f]);
    }

    #[test]
    fn per_tensor_clipping_bounds_each_tensor_alone() {
        let (layer, mut g) = setup();
        // Weight norm 5 > 1: scaled by 1 / (5 + 1e-6); bias norm 0.5 <= 1: untouched.
        let total = clip_per_tensor_norm(&layer, &mut g, 1.0);
        assert!((total - (25.25f64).sqrt()).abs() < 1e-5, "{total}");
        let f = (1.0 / (5.0 + 1e-6)) as f32;
        let (w, b) = values(&layer, &g);
        close(&w, &[3.0 * f, 0.0, 0.0, 4.0 * f]);
        close(&b, &[0.3, 0.4]);
    }
}
