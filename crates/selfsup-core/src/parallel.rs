//! Data parallelism over several devices of one machine.
//!
//! A step splits the batch into one shard per device, runs the model's forward pass on each
//! device over its shard, gathers the per-sample outputs of every shard on the first device
//! and computes the loss there over the *whole* gathered batch. The gradient of that loss with
//! respect to each gathered output is sent back to the device that produced it and
//! back-propagated through that device's replica; the replicas' parameter gradients are then
//! summed on the first device, which takes the optimizer step, and the next step's replicas
//! are copies of the updated model.
//!
//! Because the loss sees the gathered batch, a contrastive loss compares every sample with
//! the negatives of every device, and the gradient reaching each sample includes what the
//! other devices' samples contribute (the "gather with gradients" that PyTorch code gets
//! from a custom all-gather). The step equals one device's step over the combined batch up to
//! floating-point summation order, for any model without BatchNorm; see
//! `docs/backends.md` for BatchNorm, learning rates and what the devices may be.

use crate::error::{Error, Result};
use crate::objective::{LossOutput, Objective, StepInfo};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::kind::Basic;
use burn::tensor::{Device, Tensor};

/// An objective whose loss is a function of per-sample outputs, so that its batch can be
/// split over devices and its loss computed over the outputs of every device.
///
/// `loss` of a one-device step must equal `gathered_loss(model, outputs(model, batch))`;
/// implementing `loss` that way keeps the two paths one.
pub trait Shardable: Objective {
    /// Splits `batch` into `devices.len()` consecutive shards of equal size, shard `k` on
    /// `devices[k]`. [`split_rows`] does it for one tensor.
    fn shard(&self, batch: &Self::Batch, devices: &[Device]) -> Result<Vec<Self::Batch>>;

    /// Per-sample outputs of `model` over one shard: tensors whose first dimension runs over
    /// the shard's samples (embeddings of each view, logits, ...). Computed on the shard's
    /// device by that device's replica.
    fn outputs(&self, model: &Self::Model, shard: &Self::Batch, info: &StepInfo) -> Vec<Tensor<2>>;

    /// The loss over the outputs of every shard, each output concatenated along its first
    /// dimension in shard order (so in the order of the unsplit batch). `model` is the
    /// first device's: parameters the loss itself uses (CLIP's temperature) get their
    /// gradient from here.
    fn gathered_loss(
        &mut self,
        model: &Self::Model,
        outputs: Vec<Tensor<2>>,
        info: &StepInfo,
    ) -> LossOutput;
}

/// Splits the first dimension of `t` (float or integer) into `devices.len()` equal
/// consecutive parts, part `k` moved to `devices[k]`. An error when the size does not divide
/// evenly.
pub fn split_rows<const D: usize, K: Basic>(
    t: &Tensor<D, K>,
    devices: &[Device],
) -> Result<Vec<Tensor<D, K>>> {
    let n = t.dims()[0];
    let parts = devices.len().max(1);
    if !n.is_multiple_of(parts) {
        return Err(Error::config(
            "train.batch_size",
            format!(
                "a batch of {n} rows does not split evenly over {parts} devices; use a multiple of {parts}"
            ),
        ));
    }
    let rows = n / parts;
    Ok(devices
        .iter()
        .enumerate()
        .map(|(k, d)| t.clone().narrow(0, k * rows, rows).to_device(d))
        .collect())
}

/// A copy of `model` on `device` whose parameters are new leaves of the autodiff graph and
/// whose BatchNorm running statistics are its own (a `clone()` would share them with
/// `model`; `valid()` then `train()` gives fresh ones).
pub fn replicate<M: Module>(model: &M, device: &Device) -> M {
    model.valid().train().fork(device)
}

struct Ranks(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ranks {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}

fn add_rank<const D: usize>(
    into: &mut GradientsParams,
    from: &mut GradientsParams,
    id: ParamId,
    device: &Device,
) {
    if let Some(g) = from.remove::<D>(id) {
        let g = g.to_device(device);
        let sum = match into.remove::<D>(id) {
            Some(acc) => acc.add(g),
            None => g,
        };
        into.register(id, sum);
    }
}

/// Adds the gradients of `from` to those of `into` (moved to `device`), parameter by
/// parameter of `module`: the all-reduce of a data-parallel step, done on the first device.
pub fn sum_gradients<M: Module>(
    module: &M,
    into: &mut GradientsParams,
    mut from: GradientsParams,
    device: &Device,
) {
    let mut ranks = Ranks(Vec::new());
    module.visit(&mut ranks);
    for (id, rank) in ranks.0 {
        match rank {
            1 => add_rank::<1>(into, &mut from, id, device),
            2 => add_rank::<2>(into, &mut from, id, device),
            3 => add_rank::<3>(into, &mut from, id, device),
            4 => add_rank::<4>(into, &mut from, id, device),
            5 => add_rank::<5>(into, &mut from, id, device),
            _ => {}
        }
    }
}

/// The devices of a data-parallel run, the first one holding the model and the optimizer.
#[derive(Clone, Debug)]
pub struct DataParallel {
    devices: Vec<Device>,
}

/// The loss and gradients of one data-parallel forward and backward pass.
pub struct ParallelGrads {
    /// The gathered loss's value.
    pub loss: f64,
    /// The objective's extra metrics.
    pub metrics: Vec<(String, f64)>,
    /// The gradients of every parameter, summed over the devices, on the first device.
    pub grads: GradientsParams,
}

impl DataParallel {
    /// Data parallelism over `devices` (autodiff devices; the first is where the model lives).
    /// The same device may appear more than once: its replicas are then separate copies on
    /// it, which tests use to check the arithmetic on a machine with one device.
    pub fn new(devices: Vec<Device>) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::config("devices", "name at least one device"));
        }
        if let Some(d) = devices.iter().find(|d| !d.is_autodiff()) {
            return Err(Error::Invalid(format!(
                "data-parallel training needs autodiff devices; {d:?} is not one"
            )));
        }
        Ok(Self { devices })
    }

    /// The devices, the first one holding the model.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Forward and backward over `batch` split across the devices, for `model` (on the first
    /// device): the gathered loss and the summed gradients of `phase`'s parameters. `None`
    /// when the loss is not finite (nothing was back-propagated).
    pub fn gradients<O: Shardable>(
        &self,
        objective: &mut O,
        model: &O::Model,
        batch: &O::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> Result<std::result::Result<ParallelGrads, f64>> {
        let main = &self.devices[0];
        let shards = objective.shard(batch, &self.devices)?;
        let replicas: Vec<O::Model> = self.devices[1..]
            .iter()
            .map(|d| replicate(model, d))
            .collect();
        let models: Vec<&O::Model> = std::iter::once(model).chain(replicas.iter()).collect();
        // Every device's forward pass. GPU backends queue the work, so the devices compute
        // while the host goes on to the next one.
        let outputs: Vec<Vec<Tensor<2>>> = models
            .iter()
            .zip(&shards)
            .map(|(m, s)| objective.outputs(m, s, info))
            .collect();
        let streams = outputs[0].len();
        if outputs.iter().any(|o| o.len() != streams) {
            return Err(Error::Invalid(format!(
                "{}: shards gave different numbers of outputs",
                objective.name()
            )));
        }
        let rows: Vec<usize> = outputs
            .iter()
            .map(|o| o.first().map_or(0, |t| t.dims()[0]))
            .collect();
        // Gather: detached copies on the first device, leaves of the loss's own graph.
        let gathered: Vec<Tensor<2>> = (0..streams)
            .map(|s| {
                let parts = outputs
                    .iter()
                    .map(|o| o[s].clone().detach().to_device(main))
                    .collect();
                Tensor::cat(parts, 0).require_grad()
            })
            .collect();
        let out = objective.gathered_loss(model, gathered.clone(), info);
        let value = out.loss.clone().into_scalar::<f64>();
        if !value.is_finite() {
            return Ok(Err(value));
        }
        let ids = objective.phase_params(model, phase);
        let mut loss_grads = out.loss.backward();
        // d loss / d output, for each gathered output.
        let upstream: Vec<Option<Tensor<2>>> =
            gathered.iter().map(|g| g.grad(&loss_grads)).collect();
        let mut total = match &ids {
            Some(ids) => GradientsParams::from_params(&mut loss_grads, model, ids),
            None => GradientsParams::from_grads(loss_grads, model),
        };
        // Each device back-propagates its slice of those gradients through its replica.
        let mut offset = 0;
        for ((m, outs), (&n, device)) in models
            .iter()
            .zip(outputs)
            .zip(rows.iter().zip(&self.devices))
        {
            let mut surrogate: Option<Tensor<1>> = None;
            for (o, up) in outs.into_iter().zip(&upstream) {
                let Some(up) = up else { continue };
                let g = up
                    .clone()
                    .narrow(0, offset, n)
                    .to_device(&device.clone().inner());
                let term = o.mul(g).sum();
                surrogate = Some(match surrogate {
                    Some(s) => s.add(term),
                    None => term,
                });
            }
            offset += n;
            let Some(surrogate) = surrogate else { continue };
            let mut raw = surrogate.backward();
            let g = match &ids {
                Some(ids) => GradientsParams::from_params(&mut raw, *m, ids),
                None => GradientsParams::from_grads(raw, *m),
            };
            sum_gradients(model, &mut total, g, main);
        }
        Ok(Ok(ParallelGrads {
            loss: value,
            metrics: out.metrics,
            grads: total,
        }))
    }
}
