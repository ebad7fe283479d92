//! Data parallelism over processes: every rank runs one copy of the model on its own device
//! and its own part of every global batch, and the ranks exchange what a step needs through a
//! [`Collective`] (MPI in the `selfsup-mpi` crate, threads of one process in [`LocalGroup`]).
//!
//! A step is [`crate::parallel`]'s gathered loss with the gather done across processes:
//!
//! 1. every rank splits the global batch the way a [`DataParallel`](crate::DataParallel) run
//!    over `size` devices would ([`Shardable::shard`]) and keeps part `rank`;
//! 2. it runs the forward pass over that part and **all-gathers** the per-sample outputs, so
//!    every rank holds the outputs of the whole global batch, in the order of the unsplit
//!    batch;
//! 3. every rank computes the same gathered loss (SimCLR's and CLIP's negatives from every
//!    rank, DINO's centre over every teacher output, MAE's masked-patch count over the whole
//!    batch) and back-propagates it to the gathered outputs;
//! 4. it back-propagates its own rows of that gradient through its copy of the model (the
//!    "all-gather with gradients": each sample's gradient includes what every other rank's
//!    samples contribute), and
//! 5. the parameter gradients are **all-reduced** (summed), so every rank takes the same
//!    optimizer step over the global batch and the copies stay equal.
//!
//! Parameters the gathered loss uses itself (CLIP's temperature) get the same whole gradient on
//! every rank from step 3: only rank 0's copy enters the sum.
//!
//! The sum of step 5 has the same value on every rank ([`Collective::all_reduce_sum`] says so),
//! so ranks on identical machines keep bit-identical weights; BatchNorm's running statistics
//! are each rank's own (as PyTorch's DDP without `SyncBatchNorm`), and rank 0's are the ones
//! its checkpoints keep.

use crate::error::{Error, Result};
use crate::objective::{LossOutput, StepInfo};
use crate::parallel::{ParallelGrads, Shardable};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

/// The processes of a distributed run and the exchanges a step needs. Every call is
/// collective: every rank makes it, in the same order, or the run hangs (an MPI
/// implementation stops the job instead where it can).
pub trait Collective: Send + Sync {
    /// This process's place, `0..size`.
    fn rank(&self) -> usize;
    /// How many processes take part.
    fn size(&self) -> usize;
    /// Every rank's `local` (equally long on every rank), concatenated in rank order, on every
    /// rank.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Every rank's `local` bytes (equally long on every rank), concatenated in rank order, on
    /// every rank: for checks that ranks agree (config hashes).
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<u8>>;
    /// The element-wise sum over ranks of `values`, written back into `values` on every rank.
    /// Implementations must give every rank the very same bits (a reduction in one fixed order,
    /// or one rank's result broadcast), so that the ranks' weights never drift apart.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;
}

/// Ranks that are threads of one process, for tests and for checking an objective's
/// distributed step without MPI: [`LocalGroup::new`] makes `size` handles, one per thread.
/// The sum adds the ranks' values in rank order, the same order on every rank.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
}

impl LocalGroup {
    /// `size` handles of one group; hand handle `r` to the thread that plays rank `r`.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank's bytes in rank order, after every rank has put its own.
    fn exchange(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let poisoned = || Error::Invalid("a rank of the local group panicked".into());
        self.shared.slots.lock().map_err(|_| poisoned())?[self.rank] = local.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().map_err(|_| poisoned())?.clone();
        // Nobody writes the next exchange's slot before everyone has read this one.
        self.shared.barrier.wait();
        if all.iter().any(|a| a.len() != local.len()) {
            return Err(Error::Invalid(format!(
                "ranks exchanged buffers of different lengths: {:?}",
                all.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        Ok(all)
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(&to_bytes(local))?;
        Ok(all.iter().flat_map(|b| from_bytes(b)).collect())
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<u8>> {
        Ok(self.exchange(local)?.concat())
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let all = self.exchange(&to_bytes(values))?;
        values.iter_mut().for_each(|v| *v = 0.0);
        for part in &all {
            for (v, x) in values.iter_mut().zip(from_bytes(part)) {
                *v += x;
            }
        }
        Ok(())
    }
}

/// Fails on every rank, naming `what` and each rank's value, unless every rank passed the
/// same `value`: the start-of-run check that ranks run the same config and build.
pub fn check_agree(collective: &dyn Collective, what: &str, value: u64) -> Result<()> {
    let all = collective.all_gather_bytes(&value.to_le_bytes())?;
    let values: Vec<u64> = all
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if values.iter().all(|v| *v == values[0]) {
        return Ok(());
    }
    let list: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(r, v)| format!("rank {r}: {v:016x}"))
        .collect();
    Err(Error::Invalid(format!(
        "the ranks disagree on {what} ({}): launch every rank with the same binary, config and data",
        list.join(", ")
    )))
}

/// One process's part of a distributed run: its [`Collective`] and the device its copy of the
/// model lives on (an autodiff device).
#[derive(Clone)]
pub struct Distributed {
    collective: Arc<dyn Collective>,
    device: Device,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributed")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("device", &self.device)
            .finish()
    }
}

/// A float parameter of a module: its id, rank, shape and the device its gradient lives on.
struct ParamSlot {
    id: ParamId,
    shape: Vec<usize>,
    device: Device,
}

struct Slots(Vec<ParamSlot>);

impl ModuleVisitor for Slots {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        self.0.push(ParamSlot {
            id: param.id,
            shape: value.dims().to_vec(),
            device: value.device().inner(),
        });
    }
}

fn take_values<const D: usize>(grads: &mut GradientsParams, id: ParamId) -> Option<Vec<f32>> {
    grads.remove::<D>(id).map(|g| {
        g.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32")
    })
}

fn put_values<const D: usize>(grads: &mut GradientsParams, slot: &ParamSlot, values: Vec<f32>) {
    let shape: [usize; D] = slot.shape.clone().try_into().expect("the parameter's rank");
    let t = Tensor::<D>::from_data(TensorData::new(values, shape), &slot.device);
    grads.register(slot.id, t);
}

impl Distributed {
    /// This process as rank `collective.rank()` of `collective.size()`, its model on `device`
    /// (an autodiff device).
    pub fn new(collective: Arc<dyn Collective>, device: Device) -> Result<Self> {
        if !device.is_autodiff() {
            return Err(Error::Invalid(format!(
                "distributed training needs an autodiff device; {device:?} is not one"
            )));
        }
        if collective.size() == 0 || collective.rank() >= collective.size() {
            return Err(Error::Invalid(format!(
                "rank {} of {} processes",
                collective.rank(),
                collective.size()
            )));
        }
        Ok(Self { collective, device })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// How many processes take part.
    pub fn size(&self) -> usize {
        self.collective.size()
    }

    /// Whether this rank writes the run's files (rank 0).
    pub fn is_writer(&self) -> bool {
        self.rank() == 0
    }

    /// The exchanges.
    pub fn collective(&self) -> &dyn Collective {
        &*self.collective
    }

    /// The device this rank's model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Forward and backward over this rank's part of the global `batch`, for this rank's copy
    /// of `model`: the gathered loss (the same on every rank) and the gradients of `phase`'s
    /// parameters summed over the ranks; the inner `Err` holds the loss when it is not finite
    /// (the same on every rank: nothing was back-propagated or exchanged after it).
    pub fn gradients<O: Shardable>(
        &self,
        objective: &mut O,
        model: &O::Model,
        batch: &O::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> Result<std::result::Result<ParallelGrads, f64>> {
        let (rank, size) = (self.rank(), self.size());
        let devices = vec![self.device.clone(); size];
        let shard = objective
            .shard(model, batch, &devices, info)?
            .into_iter()
            .nth(rank)
            .ok_or_else(|| {
                Error::Invalid(format!("{}: fewer shards than ranks", objective.name()))
            })?;
        let outputs = objective.outputs(model, &shard, phase, info);
        // What this rank sends: its outputs (all-gather), then the gradient buffer (sum).
        let mut sent: usize = outputs
            .iter()
            .map(|o| o.dims().iter().product::<usize>())
            .sum();
        let t = Instant::now();
        let gathered = self.gather_outputs(objective.name(), &outputs)?;
        let mut comm = t.elapsed().as_secs_f64();
        let out: LossOutput = objective.gathered_loss(model, gathered.clone(), phase, info);
        let value = out.loss.clone().into_scalar::<f64>();
        if !value.is_finite() {
            return Ok(Err(value));
        }
        let ids = objective.phase_params(model, phase);
        let mut loss_grads = out.loss.backward();
        let upstream: Vec<Option<Tensor<2>>> =
            gathered.iter().map(|g| g.grad(&loss_grads)).collect();
        // The loss's own parameters: the same whole gradient on every rank; rank 0's counts.
        let mut total = if rank == 0 {
            match &ids {
                Some(ids) => GradientsParams::from_params(&mut loss_grads, model, ids),
                None => GradientsParams::from_grads(loss_grads, model),
            }
        } else {
            GradientsParams::new()
        };
        let mut surrogate: Option<Tensor<1>> = None;
        for (o, up) in outputs.into_iter().zip(&upstream) {
            let Some(up) = up else { continue };
            let n = o.dims()[0];
            let g = up
                .clone()
                .narrow(0, rank * n, n)
                .to_device(&self.device.clone().inner());
            let term = o.mul(g).sum();
            surrogate = Some(match surrogate {
                Some(s) => s.add(term),
                None => term,
            });
        }
        if let Some(surrogate) = surrogate {
            let mut raw = surrogate.backward();
            let g = match &ids {
                Some(ids) => GradientsParams::from_params(&mut raw, model, ids),
                None => GradientsParams::from_grads(raw, model),
            };
            crate::parallel::sum_gradients(model, &mut total, g, &self.device.clone().inner(), 1.0);
        }
        let t = Instant::now();
        let (grads, count) = self.all_reduce(model, total)?;
        sent += count;
        comm += t.elapsed().as_secs_f64();
        let mut metrics = out.metrics;
        // The exchanges' share of the step, and their size (f32 values, 4 bytes each).
        metrics.push(("comm_seconds".into(), comm));
        metrics.push(("comm_bytes_sent".into(), 4.0 * sent as f64));
        Ok(Ok(ParallelGrads {
            loss: value,
            metrics,
            grads,
        }))
    }

    /// Every rank's outputs, concatenated along the first dimension in rank order, as new
    /// leaves of this rank's loss graph.
    fn gather_outputs(&self, method: &str, outputs: &[Tensor<2>]) -> Result<Vec<Tensor<2>>> {
        // The shapes first: a rank whose outputs differ would otherwise mis-slice the rest.
        let dims: Vec<u8> = outputs
            .iter()
            .flat_map(|o| o.dims())
            .flat_map(|d| (d as u64).to_le_bytes())
            .chain((outputs.len() as u64).to_le_bytes())
            .collect();
        let all = self.collective.all_gather_bytes(&dims)?;
        if all.chunks_exact(dims.len()).any(|c| c != dims.as_slice()) {
            return Err(Error::Invalid(format!(
                "{method}: the ranks' outputs differ in number or shape; every rank must run the same method, config and global batch"
            )));
        }
        outputs
            .iter()
            .map(|o| {
                let [rows, cols] = o.dims();
                let local = o
                    .clone()
                    .detach()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| Error::Invalid(format!("{method}: an output: {e:?}")))?;
                let every = self.collective.all_gather(&local)?;
                let data = TensorData::new(every, [rows * self.size(), cols]);
                Ok(Tensor::<2>::from_data(data, &self.device).require_grad())
            })
            .collect()
    }

    /// The sum over ranks of every parameter's gradient, as one exchange: the gradients laid
    /// end to end in the module's visiting order, behind one flag per parameter that says
    /// which ranks have a gradient for it (a parameter no rank has one for stays without).
    /// Also returns the number of values exchanged.
    fn all_reduce<M: Module>(
        &self,
        model: &M,
        mut grads: GradientsParams,
    ) -> Result<(GradientsParams, usize)> {
        let mut slots = Slots(Vec::new());
        model.visit(&mut slots);
        let slots = slots.0;
        let count: usize = slots
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        let mut buf = Vec::with_capacity(slots.len() + count);
        buf.resize(slots.len(), 0.0);
        for (k, slot) in slots.iter().enumerate() {
            let n: usize = slot.shape.iter().product();
            let values = match slot.shape.len() {
                1 => take_values::<1>(&mut grads, slot.id),
                2 => take_values::<2>(&mut grads, slot.id),
                3 => take_values::<3>(&mut grads, slot.id),
                4 => take_values::<4>(&mut grads, slot.id),
                5 => take_values::<5>(&mut grads, slot.id),
                _ => None,
            };
            match values {
                Some(v) => {
                    buf[k] = 1.0;
                    buf.extend(v);
                }
                None => buf.resize(buf.len() + n, 0.0),
            }
        }
        self.collective.all_reduce_sum(&mut buf)?;
        let mut out = GradientsParams::new();
        let mut offset = slots.len();
        for (k, slot) in slots.iter().enumerate() {
            let n: usize = slot.shape.iter().product();
            let values = buf[offset..offset + n].to_vec();
            offset += n;
            if buf[k] == 0.0 {
                continue;
            }
            match slot.shape.len() {
                1 => put_values::<1>(&mut out, slot, values),
                2 => put_values::<2>(&mut out, slot, values),
                3 => put_values::<3>(&mut out, slot, values),
                4 => put_values::<4>(&mut out, slot, values),
                5 => put_values::<5>(&mut out, slot, values),
                _ => {}
            }
        }
        Ok((out, buf.len()))
    }
}

/// One process's or one rank's state after a step of [`one_process_and_ranks`].
pub struct AfterStep<O: crate::Objective> {
    /// The updated model.
    pub model: O::Model,
    /// The step's loss.
    pub loss: f64,
    /// The objective after its `after_step` (DINO's teacher and centre).
    pub objective: O,
}

/// One step of one process over the whole batch, then of each of `ranks` threads (a
/// [`LocalGroup`]) over its part of it, in rank order, each followed by the objective's
/// `after_step` as the trainer runs it: what a [`Shardable`] implementation's test compares to
/// check its distributed step (with no BatchNorm in the model, losses and weights should agree
/// to rounding, and the ranks' weights bit for bit).
pub fn one_process_and_ranks<O>(
    objective: impl Fn() -> O + Sync,
    cfg: &crate::TrainConfig,
    model: O::Model,
    batch: &O::Batch,
    info: &StepInfo,
    lr: f64,
    ranks: usize,
) -> Result<(AfterStep<O>, Vec<AfterStep<O>>)>
where
    O: Shardable + Send,
    O::Batch: Sync,
{
    let device = model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("the model has no parameters".into()))?;
    let finish = |mut objective: O, (model, r): (O::Model, crate::StepResult)| match r {
        crate::StepResult::Updated { loss, .. } => {
            objective.after_step(&model, info);
            Ok(AfterStep {
                model,
                loss,
                objective,
            })
        }
        crate::StepResult::Skipped => Err(Error::Invalid("the step was skipped".into())),
    };
    let mut first = objective();
    let phases = first.phases();
    let one = crate::Stepper::new(cfg, phases).step(
        &mut first,
        crate::parallel::replicate(&model, &device),
        batch,
        info,
        lr,
        1,
    )?;
    let one = finish(first, one)?;
    let copies: Vec<O::Model> = (0..ranks)
        .map(|_| crate::parallel::replicate(&model, &device))
        .collect();
    let results: Vec<Result<AfterStep<O>>> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(ranks)
            .into_iter()
            .zip(copies)
            .map(|(group, copy)| {
                let (objective, device, finish) = (&objective, device.clone(), &finish);
                s.spawn(move || {
                    let dist = Distributed::new(Arc::new(group), device)?;
                    let mut o = objective();
                    let r = crate::Stepper::new(cfg, phases)
                        .step_distributed(&dist, &mut o, copy, batch, info, lr, 1)?;
                    finish(o, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("a rank's thread panicked".into())))
            })
            .collect()
    });
    Ok((one, results.into_iter().collect::<Result<_>>()?))
}
