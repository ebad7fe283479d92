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
//!
//! Mixed precision (`train.precision = "bf16"` or `"f16"`) is the same machinery with
//! reduced-precision copies: every device (the first one too) runs the passes on a copy of the
//! model cast to the reduced type, over a batch cast to it; the outputs are cast back to `f32`
//! for the loss, and the copies' gradients are cast back to `f32` before they are summed, so
//! the weights, the optimizer and the loss stay `f32`. BatchNorm running statistics come back
//! from the first device's copy.

use crate::config::Precision;
use crate::error::{Error, Result};
use crate::objective::{LossOutput, Objective, StepInfo};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::kind::Basic;
use burn::tensor::{Device, FloatDType, Tensor};
use std::collections::HashMap;

/// An objective whose loss is a function of per-sample outputs, so that its batch can be
/// split over devices and its loss computed over the outputs of every device.
///
/// `loss` of a one-device step must equal, phase by phase,
/// `gathered_loss(model, outputs(model, whole(batch), phase), phase)`; implementing
/// [`Objective::loss`] as [`whole_batch_loss`] keeps the two paths one. A method of several
/// phases (a GAN) is asked for each phase's outputs and loss in turn, with the model as the
/// earlier phases left it; what one phase makes for the next (a GAN's generated images, with
/// their graph) it keeps itself, one per [`Shardable::outputs`] call, in call order.
pub trait Shardable: Objective {
    /// One device's part of a batch: the batch type itself for most objectives; what else a
    /// shard needs of the whole batch's step (MAE's masks, drawn for the whole batch) besides.
    type Shard;

    /// Splits `batch` of step `info.step` for `model` (the first device's) into
    /// `devices.len()` consecutive shards of equal size, shard `k` on `devices[k]`.
    /// [`split_rows`] does it for one tensor.
    fn shard(
        &self,
        model: &Self::Model,
        batch: &Self::Batch,
        devices: &[Device],
        info: &StepInfo,
    ) -> Result<Vec<Self::Shard>>;

    /// The whole batch of step `info.step` as the one shard of a one-device step (what
    /// [`whole_batch_loss`] computes over). For most objectives the batch itself.
    fn whole(&self, model: &Self::Model, batch: &Self::Batch, info: &StepInfo) -> Self::Shard;

    /// The shard with its floating-point inputs (images) cast to `dtype`, for mixed
    /// precision; integer tensors (token ids) and random draws stay as they are.
    fn cast(&self, shard: Self::Shard, dtype: FloatDType) -> Self::Shard;

    /// Per-sample outputs of `model` over one shard for `phase`: tensors whose first
    /// dimension runs over the shard's samples (embeddings of each view, logits, ...).
    /// Computed on the shard's device by that device's replica; the shards of a step are
    /// asked in order.
    fn outputs(
        &mut self,
        model: &Self::Model,
        shard: &Self::Shard,
        phase: usize,
        info: &StepInfo,
    ) -> Vec<Tensor<2>>;

    /// The loss of `phase` over the outputs of every shard, each output concatenated along
    /// its first dimension in shard order (so in the order of the unsplit batch). `model` is
    /// the first device's: parameters the loss itself uses (CLIP's temperature) get their
    /// gradient from here.
    fn gathered_loss(
        &mut self,
        model: &Self::Model,
        outputs: Vec<Tensor<2>>,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput;
}

/// The loss of `phase` of a one-device step of a [`Shardable`] objective: its
/// [`Shardable::gathered_loss`] over the [`Shardable::outputs`] of the whole batch. The body
/// of every built-in objective's [`Objective::loss`], so the one-device and the data-parallel
/// paths are one.
pub fn whole_batch_loss<O: Shardable>(
    objective: &mut O,
    model: &O::Model,
    batch: &O::Batch,
    phase: usize,
    info: &StepInfo,
) -> LossOutput {
    let shard = objective.whole(model, batch, info);
    let outputs = objective.outputs(model, &shard, phase, info);
    objective.gathered_loss(model, outputs, phase, info)
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

/// [`split_rows`] of each of `tensors` (the views of a batch), regrouped by device: shard `k`
/// holds part `k` of every tensor, in order.
pub fn split_each<const D: usize>(
    tensors: &[Tensor<D>],
    devices: &[Device],
) -> Result<Vec<Vec<Tensor<D>>>> {
    let mut shards: Vec<Vec<Tensor<D>>> = vec![Vec::new(); devices.len()];
    for t in tensors {
        for (shard, part) in shards.iter_mut().zip(split_rows(t, devices)?) {
            shard.push(part);
        }
    }
    Ok(shards)
}

/// A copy of `model` on `device` whose parameters are new leaves of the autodiff graph and
/// whose BatchNorm running statistics are its own (a `clone()` would share them with
/// `model`; `valid()` then `train()` gives fresh ones).
pub fn replicate<M: Module>(model: &M, device: &Device) -> M {
    model.valid().train().fork(device)
}

/// Casts every float tensor of a module, keeping trainable parameters leaves of the graph.
struct CastTo(FloatDType);

impl ModuleMapper for CastTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let grad = tensor.is_require_grad();
        let mut t = Tensor::from_inner(tensor.inner().cast(self.0));
        if grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// [`replicate`], with every float tensor cast to `dtype` when it is `Some`.
pub fn replicate_as<M: Module>(model: &M, device: &Device, dtype: Option<FloatDType>) -> M {
    let copy = replicate(model, device);
    match dtype {
        Some(dt) => copy.map(&mut CastTo(dt)),
        None => copy,
    }
}

struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// Writes the values `from` holds into the tensors of a module that need no gradient (its
/// BatchNorm running statistics), where they differ.
struct Buffers(HashMap<ParamId, Tensor<1>>);

impl ModuleMapper for Buffers {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.is_require_grad() {
            return param;
        }
        let Some(new) = self.0.remove(&param.id) else {
            return param;
        };
        param.map(|old| {
            let (shape, dtype, device) = (old.shape(), old.dtype(), old.device());
            let new: Tensor<D> = Tensor::from_inner(new.to_device(&device.clone().inner()))
                .reshape(shape)
                .cast(dtype);
            // A frozen parameter comes back rounded to the reduced type: keep the original.
            let same = old
                .clone()
                .inner()
                .cast(new.dtype())
                .equal(new.clone().inner())
                .all()
                .into_scalar::<bool>();
            if same { old } else { new }
        })
    }
}

/// Copies the BatchNorm running statistics of `copy` (a reduced-precision replica that ran
/// the forward pass) into `model`, in place: a module's clones share their running state, so
/// mapping a clone writes into `model`'s own.
fn copy_running_state<M: Module>(copy: &M, model: &M) {
    let mut values = Collect(HashMap::new());
    // `valid()` folds the pending per-thread updates of the running state into its value.
    copy.valid().visit(&mut values);
    let _ = model.clone().map(&mut Buffers(values.0));
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
    factor: f64,
) {
    if let Some(g) = from.remove::<D>(id) {
        let mut g = g.to_device(device).cast(FloatDType::F32);
        if factor != 1.0 {
            g = g.mul_scalar(factor);
        }
        let sum = match into.remove::<D>(id) {
            Some(acc) => acc.add(g),
            None => g,
        };
        into.register(id, sum);
    }
}

/// Adds the gradients of `from`, moved to `device`, cast to `f32` and multiplied by `factor`,
/// to those of `into`, parameter by parameter of `module`: the all-reduce of a data-parallel
/// step, done on the first device.
pub fn sum_gradients<M: Module>(
    module: &M,
    into: &mut GradientsParams,
    mut from: GradientsParams,
    device: &Device,
    factor: f64,
) {
    let mut ranks = Ranks(Vec::new());
    module.visit(&mut ranks);
    for (id, rank) in ranks.0 {
        match rank {
            1 => add_rank::<1>(into, &mut from, id, device, factor),
            2 => add_rank::<2>(into, &mut from, id, device, factor),
            3 => add_rank::<3>(into, &mut from, id, device, factor),
            4 => add_rank::<4>(into, &mut from, id, device, factor),
            5 => add_rank::<5>(into, &mut from, id, device, factor),
            _ => {}
        }
    }
}

/// The devices of a data-parallel run, the first one holding the model and the optimizer.
#[derive(Clone, Debug)]
pub struct DataParallel {
    devices: Vec<Device>,
    precision: Precision,
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
        Ok(Self {
            devices,
            precision: Precision::F32,
        })
    }

    /// The same devices running the passes in `precision` (mixed precision for `bf16` and
    /// `f16`); an error naming `train.precision` when a device does not support the type.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if let Some(dt) = precision.reduced()
            && let Some(d) = self.devices.iter().find(|d| !d.supports_dtype(dt))
        {
            return Err(Error::config(
                "train.precision",
                format!("{d:?} does not compute in {dt:?}; use f32 on it"),
            ));
        }
        self.precision = precision;
        Ok(self)
    }

    /// The type of the passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The devices, the first one holding the model.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Forward and backward over `batch` split across the devices, for `model` (on the first
    /// device): the gathered loss and the summed gradients of `phase`'s parameters; the inner
    /// `Err` holds the loss when it is not finite (nothing was back-propagated).
    pub fn gradients<O: Shardable>(
        &self,
        objective: &mut O,
        model: &O::Model,
        batch: &O::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> Result<std::result::Result<ParallelGrads, f64>> {
        let main = &self.devices[0];
        let low = self.precision.reduced();
        let mut shards = objective.shard(model, batch, &self.devices, info)?;
        if let Some(dt) = low {
            shards = shards.into_iter().map(|s| objective.cast(s, dt)).collect();
        }
        // In f32 the first device runs `model` itself; in mixed precision every device runs
        // a reduced copy.
        let first = usize::from(low.is_none());
        let replicas: Vec<O::Model> = self.devices[first..]
            .iter()
            .map(|d| replicate_as(model, d, low))
            .collect();
        let models: Vec<&O::Model> = if low.is_some() {
            replicas.iter().collect()
        } else {
            std::iter::once(model).chain(replicas.iter()).collect()
        };
        // Every device's forward pass, issued in turn from this thread (GPU backends queue
        // work asynchronously, so devices may overlap; not measured).
        let outputs: Vec<Vec<Tensor<2>>> = models
            .iter()
            .zip(&shards)
            .map(|(m, s)| objective.outputs(m, s, phase, info))
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
                    .map(|o| o[s].clone().detach().to_device(main).cast(FloatDType::F32))
                    .collect();
                Tensor::cat(parts, 0).require_grad()
            })
            .collect();
        let out = objective.gathered_loss(model, gathered.clone(), phase, info);
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
        // Each device back-propagates its slice of those gradients through its replica (in
        // f16, scaled up first and the parameter gradients scaled back down).
        let scale = self.precision.loss_scale();
        let mut offset = 0;
        for ((m, outs), (&n, device)) in models
            .iter()
            .zip(outputs)
            .zip(rows.iter().zip(&self.devices))
        {
            let mut surrogate: Option<Tensor<1>> = None;
            for (o, up) in outs.into_iter().zip(&upstream) {
                let Some(up) = up else { continue };
                let mut g = up
                    .clone()
                    .narrow(0, offset, n)
                    .to_device(&device.clone().inner());
                if let Some(dt) = low {
                    g = g.mul_scalar(scale).cast(dt);
                }
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
            sum_gradients(model, &mut total, g, main, 1.0 / scale);
        }
        if low.is_some() {
            copy_running_state(&replicas[0], model);
        }
        Ok(Ok(ParallelGrads {
            loss: value,
            metrics: out.metrics,
            grads: total,
        }))
    }
}

/// `(model, loss)` after one step on one device, then after the step over two.
pub type OneAndTwo<M> = ((M, f64), (M, f64));

/// One optimizer step of `model` (at `lr`, with `cfg`'s optimizer) on one device and the same
/// step over two replicas on that device: what a [`Shardable`] implementation's test compares
/// (with no BatchNorm in the model, losses and weights should agree to rounding). Returns
/// `(model, loss)` for one device, then for two.
pub fn one_and_two_devices<O: Shardable>(
    mut objective: impl FnMut() -> O,
    cfg: &crate::TrainConfig,
    model: O::Model,
    batch: &O::Batch,
    info: &StepInfo,
    lr: f64,
) -> Result<OneAndTwo<O::Model>> {
    let device = model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("the model has no parameters".into()))?;
    let loss = |r: crate::StepResult| match r {
        crate::StepResult::Updated { loss, .. } => Ok(loss),
        crate::StepResult::Skipped => Err(Error::Invalid("the step was skipped".into())),
    };
    let phases = objective().phases();
    let (one, r1) = crate::Stepper::new(cfg, phases).step(
        &mut objective(),
        replicate(&model, &device),
        batch,
        info,
        lr,
        1,
    )?;
    let dp = DataParallel::new(vec![device.clone(), device])?;
    let (two, r2) = crate::Stepper::new(cfg, phases).step_parallel(
        &dp,
        &mut objective(),
        model,
        batch,
        info,
        lr,
        1,
    )?;
    Ok(((one, loss(r1)?), (two, loss(r2)?)))
}
