//! The GAN as a selfsup method: its config, the two networks, and the two-phase objective.

use crate::generator::{Generator, growth};
use crate::loss::{GanLoss, discriminator_accuracy};
use burn::module::{Module, ParamId};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use selfsup_core::config::ensure;
use selfsup_core::grads::param_ids;
use selfsup_core::parallel::{split_rows, whole_batch_loss};
use selfsup_core::{Error, LossOutput, Objective, Result, Shardable, StepInfo, seed};
use selfsup_encoders::{DcganConfig, DcganEncoder};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The `[gan]` section of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GanConfig {
    /// `non-saturating` (DCGAN's) or `hinge`.
    pub loss: GanLoss,
    /// Length of the generator's noise vectors (DCGAN: 100).
    pub noise_dim: usize,
    /// Channels of the generator's last hidden layer; earlier layers double it.
    pub generator_width: usize,
    /// BatchNorm after the generator's hidden layers (DCGAN's); `false`: none, biases instead
    /// (with `encoder.dcgan.batch_norm = false` too, a run over several devices or ranks
    /// equals one process exactly).
    pub generator_batch_norm: bool,
    /// Discriminator updates per generator update (WGAN's `n_critic`); each on its own batch.
    pub d_steps: usize,
    /// Images in the sample grid written after every epoch (from fixed noise).
    pub samples: usize,
    /// Real and generated images the Frechet distance compares after every epoch (0: skip it).
    pub fid_images: usize,
    /// A run folder of `selfsup pretrain` whose encoder measures the Frechet distance; empty:
    /// the built-in RotNet ConvNet-32 trained on Fashion-MNIST (see `fid`).
    pub fid_encoder: String,
    /// Warn of mode collapse when the generated images' feature spread (trace of the
    /// covariance) falls below this fraction of the real images'.
    pub collapse_threshold: f64,
}

impl Default for GanConfig {
    fn default() -> Self {
        Self {
            loss: GanLoss::NonSaturating,
            noise_dim: 100,
            generator_width: 64,
            generator_batch_norm: true,
            d_steps: 1,
            samples: 64,
            fid_images: 2000,
            fid_encoder: String::new(),
            collapse_threshold: 0.05,
        }
    }
}

impl GanConfig {
    /// Checks the ranges, naming the field as `gan.FIELD`.
    pub fn validate(&self) -> Result<()> {
        ensure(self.noise_dim >= 1, "gan.noise_dim", || {
            "must be at least 1".into()
        })?;
        ensure(self.generator_width >= 1, "gan.generator_width", || {
            "must be at least 1".into()
        })?;
        ensure(self.d_steps >= 1, "gan.d_steps", || {
            "must be at least 1 (discriminator updates per generator update)".into()
        })?;
        ensure(self.samples >= 1, "gan.samples", || {
            "must be at least 1".into()
        })?;
        ensure(
            self.fid_images == 0 || self.fid_images >= 2,
            "gan.fid_images",
            || {
                format!(
                    "{} is too few to estimate a covariance: use at least 2 (0 skips the distance)",
                    self.fid_images
                )
            },
        )?;
        ensure(
            (0.0..1.0).contains(&self.collapse_threshold),
            "gan.collapse_threshold",
            || format!("{} must be in [0, 1)", self.collapse_threshold),
        )
    }
}

/// The DCGAN discriminator: the trunk (whose features are the representation) and a linear
/// real/fake logit over its last map (DCGAN's final 4x4 convolution, as a matrix).
#[derive(Module, Debug)]
pub struct Discriminator {
    /// Strided convolutions; `selfsup_core::Encoder` for evaluation.
    pub trunk: DcganEncoder,
    head: Linear,
}

impl Discriminator {
    /// A discriminator over `size`-pixel images around `trunk` (shaped by `cfg`).
    pub fn new(
        trunk: DcganEncoder,
        cfg: &DcganConfig,
        size: usize,
        device: &Device,
    ) -> Result<Self> {
        check_shape(cfg, size)?;
        let side = cfg.final_size(size);
        let head = LinearConfig::new(trunk.last_channels() * side * side, 1)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            })
            .init(device);
        Ok(Self { trunk, head })
    }

    /// Real/fake logits `[N]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<1> {
        let n = images.dims()[0];
        self.head
            .forward(self.trunk.last_map(images).flatten::<2>(1, 3))
            .reshape([n])
    }
}

/// Checks that a generator can make `size`-pixel images ([`growth`]) and that the
/// discriminator's blocks leave something of them, naming the field to change.
pub fn check_shape(trunk: &DcganConfig, size: usize) -> Result<()> {
    growth(size)?;
    if trunk.final_size(size) == 0 {
        return Err(Error::config(
            "encoder.dcgan.blocks",
            format!(
                "{} blocks halve {size}-pixel images to nothing: use fewer",
                trunk.blocks
            ),
        ));
    }
    Ok(())
}

/// Both networks, trained together, saved together.
#[derive(Module, Debug)]
pub struct GanModel {
    /// Noise to images.
    pub generator: Generator,
    /// Images to a real/fake logit.
    pub discriminator: Discriminator,
}

impl GanModel {
    /// A generator of `channels` x `size` x `size` images as `cfg` says, and a discriminator
    /// around `trunk`.
    pub fn new(
        trunk: DcganEncoder,
        trunk_cfg: &DcganConfig,
        channels: usize,
        size: usize,
        cfg: &GanConfig,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            generator: Generator::new(
                cfg.noise_dim,
                channels,
                size,
                cfg.generator_width,
                cfg.generator_batch_norm,
                device,
            )?,
            discriminator: Discriminator::new(trunk, trunk_cfg, size, device)?,
        })
    }
}

/// `n` noise vectors `[n, dim]` from the standard normal, drawn from `(seed, stream a, b)`.
pub fn noise(seed_value: u64, a: u64, b: u64, n: usize, dim: usize, device: &Device) -> Tensor<2> {
    let mut rng = seed::rng(seed_value, seed::STREAM_NOISE, a, b);
    let v = seed::standard_normal(&mut rng, n * dim);
    Tensor::from_data(TensorData::new(v, [n, dim]), device)
}

/// The adversarial objective: phase 0 updates the discriminator on a batch of real images
/// and as many generated ones; phase 1 (every `d_steps`-th step) updates the generator
/// through the discriminator on the same generated images. Logs each network's loss and the
/// discriminator's accuracy on real and on fake images.
///
/// [`Shardable`]: the noise is drawn for the whole batch and split with the real images, so
/// a step over devices or ranks generates the images one process would; phase 0 gathers
/// every shard's real and fake logits, phase 1 the generated images' logits under the updated
/// discriminator.
pub struct Gan {
    loss: GanLoss,
    noise_dim: usize,
    d_steps: u64,
    seed: u64,
    /// The generated images of the step in flight, one per shard in the order phase 0 made
    /// them, with the generator's graph, and the step that made them.
    fakes: VecDeque<(usize, Tensor<4>)>,
}

/// One device's or rank's part of a GAN batch: its real images and its rows of the noise
/// drawn for the whole batch.
#[derive(Clone, Debug)]
pub struct GanShard {
    /// Real images `[n, C, H, W]`.
    pub real: Tensor<4>,
    /// Noise `[n, noise_dim]`.
    pub noise: Tensor<2>,
}

impl Gan {
    /// The objective as `cfg` says; noise drawn from `seed`.
    pub fn new(cfg: &GanConfig, seed: u64) -> Self {
        Self {
            loss: cfg.loss,
            noise_dim: cfg.noise_dim,
            d_steps: cfg.d_steps.max(1) as u64,
            seed,
            fakes: VecDeque::new(),
        }
    }

    /// The noise of step `step`'s `n` generated images.
    fn step_noise(&self, n: usize, step: usize, device: &Device) -> Tensor<2> {
        noise(self.seed, step as u64, 0, n, self.noise_dim, device)
    }
}

/// Logits `[n]` as a per-sample output `[n, 1]`, and back.
fn column(logits: Tensor<1>) -> Tensor<2> {
    let n = logits.dims()[0];
    logits.reshape([n, 1])
}

fn flat(logits: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0];
    logits.reshape([n])
}

impl Objective for Gan {
    type Model = GanModel;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "gan"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for one of the networks (lower train.optimizer.lr; the DCGAN paper uses 2e-4 with Adam beta1 0.5), or the non-saturating loss on a discriminator that wins outright (try gan.loss = 'hinge')".into()
    }

    fn phases(&self) -> usize {
        2
    }

    fn loss(
        &mut self,
        model: &GanModel,
        views: &Self::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, views, phase, info)
    }

    fn phase_params(&self, model: &GanModel, phase: usize) -> Option<Vec<ParamId>> {
        Some(if phase == 0 {
            param_ids(&model.discriminator)
        } else {
            param_ids(&model.generator)
        })
    }

    fn phase_updates(&self, phase: usize, updates: u64) -> Option<u64> {
        if phase == 0 {
            Some(updates)
        } else {
            updates
                .is_multiple_of(self.d_steps)
                .then_some(updates / self.d_steps)
        }
    }
}

impl Shardable for Gan {
    type Shard = GanShard;

    fn shard(
        &self,
        _: &GanModel,
        views: &Self::Batch,
        devices: &[Device],
        info: &StepInfo,
    ) -> Result<Vec<GanShard>> {
        let real = &views[0];
        let z = self.step_noise(real.dims()[0], info.step, &real.device());
        Ok(split_rows(real, devices)?
            .into_iter()
            .zip(split_rows(&z, devices)?)
            .map(|(real, noise)| GanShard { real, noise })
            .collect())
    }

    fn whole(&self, _: &GanModel, views: &Self::Batch, info: &StepInfo) -> GanShard {
        let real = views[0].clone();
        let noise = self.step_noise(real.dims()[0], info.step, &real.device());
        GanShard { real, noise }
    }

    fn cast(&self, shard: GanShard, dtype: FloatDType) -> GanShard {
        GanShard {
            real: shard.real.cast(dtype),
            noise: shard.noise.cast(dtype),
        }
    }

    /// Phase 0: the real images' and the generated images' logits (the generated images
    /// detached, kept with their graph for phase 1). Phase 1: the kept images' logits under
    /// the updated discriminator (the generator is unchanged since): PyTorch's DCGAN step,
    /// one generator pass per step. A phase 1 without its phase 0 generates anew.
    fn outputs(
        &mut self,
        model: &GanModel,
        shard: &GanShard,
        phase: usize,
        info: &StepInfo,
    ) -> Vec<Tensor<2>> {
        if phase == 0 {
            // Images a skipped step left behind are not this step's.
            self.fakes.retain(|(step, _)| *step == info.step);
            let fake = model.generator.forward(shard.noise.clone());
            let d_real = model.discriminator.forward(shard.real.clone());
            let d_fake = model.discriminator.forward(fake.clone().detach());
            self.fakes.push_back((info.step, fake));
            vec![column(d_real), column(d_fake)]
        } else {
            let fake = match self.fakes.pop_front() {
                Some((step, fake)) if step == info.step => fake,
                _ => model.generator.forward(shard.noise.clone()),
            };
            vec![column(model.discriminator.forward(fake))]
        }
    }

    fn gathered_loss(
        &mut self,
        _: &GanModel,
        outputs: Vec<Tensor<2>>,
        phase: usize,
        _: &StepInfo,
    ) -> LossOutput {
        let mut outputs = outputs.into_iter().map(flat);
        if phase == 0 {
            let (d_real, d_fake) = match (outputs.next(), outputs.next()) {
                (Some(r), Some(f)) => (r, f),
                _ => unreachable!("phase 0 has two outputs"),
            };
            let (real_acc, fake_acc) =
                discriminator_accuracy(d_real.clone().detach(), d_fake.clone().detach());
            let loss = self.loss.discriminator(d_real, d_fake);
            let value = loss.clone().into_scalar::<f64>();
            LossOutput {
                loss,
                metrics: vec![
                    ("d_loss".into(), value),
                    ("d_real_acc".into(), real_acc),
                    ("d_fake_acc".into(), fake_acc),
                ],
            }
        } else {
            let d_fake = outputs.next().expect("phase 1 has one output");
            let loss = self.loss.generator(d_fake);
            let value = loss.clone().into_scalar::<f64>();
            LossOutput {
                loss,
                metrics: vec![("g_loss".into(), value)],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use selfsup_core::config::{OptimizerConfig, OptimizerKind, TrainConfig};
    use selfsup_core::{StepResult, Stepper};

    struct Values(Vec<Vec<f32>>);

    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .unwrap(),
            );
        }
    }

    fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
        let mut v = Values(Vec::new());
        m.visit(&mut v);
        v.0
    }

    fn tiny(dev: &Device) -> (GanModel, GanConfig) {
        let cfg = GanConfig {
            noise_dim: 8,
            generator_width: 4,
            ..GanConfig::default()
        };
        let trunk_cfg = DcganConfig {
            blocks: 2,
            pool: 1,
            ..DcganConfig::default()
        };
        let model = selfsup_core::seed::init_module(dev, 7, |d| {
            GanModel::new(
                DcganEncoder::new(1, 4, &trunk_cfg, d),
                &trunk_cfg,
                1,
                8,
                &cfg,
                d,
            )
            .unwrap()
        });
        (model, cfg)
    }

    fn train_cfg() -> TrainConfig {
        TrainConfig {
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Adamw,
                lr: 1e-2,
                weight_decay: 0.0,
                beta1: 0.5,
                ..OptimizerConfig::default()
            },
            ..TrainConfig::default()
        }
    }

    /// Runs only `phase` of the GAN objective.
    struct OnePhase(Gan, usize);

    impl Objective for OnePhase {
        type Model = GanModel;
        type Batch = Vec<Tensor<4>>;
        fn name(&self) -> &str {
            "one phase"
        }
        fn loss(&mut self, m: &GanModel, b: &Self::Batch, _: usize, i: &StepInfo) -> LossOutput {
            self.0.loss(m, b, self.1, i)
        }
        fn phase_params(&self, m: &GanModel, _: usize) -> Option<Vec<ParamId>> {
            self.0.phase_params(m, self.1)
        }
    }

    fn info() -> StepInfo {
        StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        }
    }

    fn batch(dev: &Device) -> Vec<Tensor<4>> {
        vec![Tensor::random(
            [6, 1, 8, 8],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            dev,
        )]
    }

    #[test]
    fn each_phase_updates_only_its_network() {
        let dev = Device::flex().autodiff();
        for phase in [0, 1] {
            let (model, cfg) = tiny(&dev);
            let (g0, d0) = (values(&model.generator), values(&model.discriminator));
            let mut obj = OnePhase(Gan::new(&cfg, 1), phase);
            let mut stepper = Stepper::new(&train_cfg(), 1);
            let (model, r) = stepper
                .step(&mut obj, model, &batch(&dev), &info(), 1e-2, 1)
                .unwrap();
            assert!(matches!(r, StepResult::Updated { .. }));
            let (g1, d1) = (values(&model.generator), values(&model.discriminator));
            if phase == 0 {
                assert_eq!(g0, g1, "a discriminator update changed the generator");
                assert_ne!(d0, d1, "the discriminator did not move");
            } else {
                assert_eq!(d0, d1, "a generator update changed the discriminator");
                assert_ne!(g0, g1, "the generator did not move");
            }
        }
    }

    #[test]
    fn a_step_updates_both_and_logs_both_losses() {
        let dev = Device::flex().autodiff();
        let (model, cfg) = tiny(&dev);
        let (g0, d0) = (values(&model.generator), values(&model.discriminator));
        let mut obj = Gan::new(&cfg, 1);
        let mut stepper = Stepper::new(&train_cfg(), obj.phases());
        let (model, r) = stepper
            .step(&mut obj, model, &batch(&dev), &info(), 1e-2, 1)
            .unwrap();
        let StepResult::Updated { loss, metrics, .. } = r else {
            panic!("skipped")
        };
        let get = |k: &str| metrics.iter().find(|(n, _)| n == k).unwrap().1;
        assert!((get("d_loss") + get("g_loss") - loss).abs() < 1e-5);
        // At initialization the discriminator is unsure: both losses near ln 2 (x2 for D).
        assert!(
            (get("d_loss") - 2.0 * 2f64.ln()).abs() < 0.3,
            "{}",
            get("d_loss")
        );
        assert!((0.0..=1.0).contains(&get("d_real_acc")));
        assert_ne!(g0, values(&model.generator));
        assert_ne!(d0, values(&model.discriminator));
    }

    /// Both phases over two ranks (threads) equal one device with the whole batch: the same
    /// noise, the same generated images, one discriminator loss over every rank's logits,
    /// then one generator loss; BatchNorm-free networks. The rate is high so that the step
    /// moves the weights far more than the tolerance (at 0.05 a rank that drew its own noise
    /// passed).
    #[test]
    fn a_step_over_two_ranks_equals_one_process() {
        use selfsup_core::grads::{max_abs_diff, param_values};

        let dev = Device::flex().autodiff();
        let cfg = GanConfig {
            noise_dim: 8,
            generator_width: 4,
            generator_batch_norm: false,
            ..GanConfig::default()
        };
        let trunk_cfg = DcganConfig {
            blocks: 2,
            pool: 1,
            batch_norm: false,
        };
        let start = selfsup_core::seed::init_module(&dev, 7, |d| {
            GanModel::new(
                DcganEncoder::new(1, 4, &trunk_cfg, d),
                &trunk_cfg,
                1,
                8,
                &cfg,
                d,
            )
            .unwrap()
        });
        let w0 = param_values(&start);
        let (g0, d0) = (values(&start.generator), values(&start.discriminator));
        let x = batch(&dev);
        let info = StepInfo { step: 3, ..info() };
        let mut train = train_cfg();
        train.optimizer.kind = OptimizerKind::Sgd;
        let lr = 20.0;
        let (one, ranks) = selfsup_core::distributed::one_process_and_ranks(
            || Gan::new(&cfg, 5),
            &train,
            start,
            &x,
            &info,
            lr,
            2,
        )
        .unwrap();
        assert_ne!(
            g0,
            values(&one.model.generator),
            "the generator did not move"
        );
        assert_ne!(
            d0,
            values(&one.model.discriminator),
            "the discriminator did not move"
        );
        let w1 = param_values(&one.model);
        let moved = max_abs_diff(&w0, &w1);
        assert!(moved > 1e-2, "the step moved the weights by {moved} only");
        for (r, rank) in ranks.iter().enumerate() {
            assert!(
                (one.loss - rank.loss).abs() < 1e-5,
                "one process {}, rank {r} {}",
                one.loss,
                rank.loss
            );
            let d = max_abs_diff(&w1, &param_values(&rank.model));
            assert!(d < 1e-5, "rank {r}'s weights differ by {d}");
        }
    }

    #[test]
    fn the_generator_runs_every_d_steps_updates() {
        let gan = Gan::new(
            &GanConfig {
                d_steps: 3,
                ..GanConfig::default()
            },
            0,
        );
        let g: Vec<Option<u64>> = (1..=7).map(|u| gan.phase_updates(1, u)).collect();
        assert_eq!(g, [None, None, Some(1), None, None, Some(2), None]);
        assert_eq!(gan.phase_updates(0, 5), Some(5));
    }

    #[test]
    fn noise_is_reproducible_and_standard() {
        let dev = Device::flex();
        let a = noise(1, 2, 3, 500, 20, &dev);
        let b = noise(1, 2, 3, 500, 20, &dev);
        assert_eq!(a.clone().into_data(), b.into_data());
        let v = a.into_data().try_to_vec::<f32>().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (cfg, field) in [
            (
                GanConfig {
                    d_steps: 0,
                    ..GanConfig::default()
                },
                "gan.d_steps",
            ),
            (
                GanConfig {
                    fid_images: 1,
                    ..GanConfig::default()
                },
                "gan.fid_images",
            ),
            (
                GanConfig {
                    collapse_threshold: 1.5,
                    ..GanConfig::default()
                },
                "gan.collapse_threshold",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let dev = Device::flex();
        let trunk_cfg = DcganConfig {
            blocks: 4,
            pool: 1,
            ..DcganConfig::default()
        };
        let err = Discriminator::new(
            DcganEncoder::new(1, 2, &trunk_cfg, &dev),
            &trunk_cfg,
            8,
            &dev,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("encoder.dcgan.blocks"), "{err}");
    }
}
