//! MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021): hide most
//! patches of each image, encode the rest with a ViT, reconstruct the hidden ones' pixels.

use crate::decoder::MaeDecoder;
use crate::loss::{masked_errors, masked_reconstruction_loss, normalize_patches};
use crate::masking::{
    Masking, gather_tokens, kept, masking_from_noise, random_masking, seeded_noise,
};
use burn::module::Module;
use burn::tensor::{Device, FloatDType, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::parallel::{split_rows, whole_batch_loss};
use selfsup_core::{LossOutput, Objective, Result, Shardable, StepInfo};
use selfsup_encoders::VisionTransformer;
use selfsup_encoders::vit::{patchify, unpatchify};
use serde::{Deserialize, Serialize};

/// MAE's own settings. The decoder defaults are sized for small images on a CPU (the paper's
/// decoder is 512 wide and 8 deep).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MaeConfig {
    /// Fraction of patches hidden from the encoder, in `[0, 1)`.
    pub mask_ratio: f64,
    /// Reconstruct each patch standardised by its own mean and variance (the paper's better
    /// variant) instead of raw pixels.
    pub norm_pix_loss: bool,
    /// Decoder width (a multiple of 4 and of `decoder_heads`).
    pub decoder_dim: usize,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Decoder attention heads.
    pub decoder_heads: usize,
}

impl Default for MaeConfig {
    fn default() -> Self {
        Self {
            mask_ratio: 0.75,
            norm_pix_loss: true,
            decoder_dim: 128,
            decoder_depth: 2,
            decoder_heads: 4,
        }
    }
}

impl MaeConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.mask_ratio.is_finite() && (0.0..1.0).contains(&self.mask_ratio),
            "mae.mask_ratio",
            || format!("{} must be in [0, 1) (the paper: 0.75)", self.mask_ratio),
        )?;
        ensure(self.decoder_depth >= 1, "mae.decoder_depth", || {
            "must be at least 1".into()
        })?;
        ensure(
            self.decoder_heads >= 1
                && self.decoder_dim.is_multiple_of(self.decoder_heads)
                && self.decoder_dim.is_multiple_of(4)
                && self.decoder_dim >= 4,
            "mae.decoder_dim",
            || {
                format!(
                    "{} must be a positive multiple of 4 and of decoder_heads ({})",
                    self.decoder_dim, self.decoder_heads
                )
            },
        )
    }
}

/// What one forward pass produced, for the loss and for pictures.
pub struct MaeOutput {
    /// Predicted patches `[N, L, C p p]` (normalized pixels when `norm_pix_loss`).
    pub pred: Tensor<3>,
    /// The patches to reconstruct `[N, L, C p p]`, normalized like `pred`.
    pub target: Tensor<3>,
    /// The masking used.
    pub masking: Masking,
    /// The reconstruction loss over the hidden patches.
    pub loss: Tensor<1>,
}

/// Encoder plus decoder.
#[derive(Module, Debug)]
pub struct MaeModel {
    /// The ViT whose features are kept after pretraining.
    pub encoder: VisionTransformer,
    /// The decoder, discarded after pretraining.
    pub decoder: MaeDecoder,
}

impl MaeModel {
    /// Wraps `encoder` (for `channels`-channel images) with a decoder built from `cfg`.
    pub fn new(
        encoder: VisionTransformer,
        channels: usize,
        cfg: &MaeConfig,
        device: &Device,
    ) -> Self {
        let p = encoder.patch_size();
        let decoder = MaeDecoder::new(
            encoder.dim(),
            channels * p * p,
            encoder.grid(),
            cfg.decoder_dim,
            cfg.decoder_depth,
            cfg.decoder_heads,
            device,
        );
        Self { encoder, decoder }
    }

    /// Masks `images` by `masking`, encodes the visible patches, reconstructs all of them.
    pub fn reconstruct(
        &self,
        images: Tensor<4>,
        masking: Masking,
        norm_pix_loss: bool,
    ) -> MaeOutput {
        let patches = patchify(images.clone(), self.encoder.patch_size());
        let visible = gather_tokens(self.encoder.embed(images), masking.keep.clone());
        let (latent, _) = self.encoder.encode(visible);
        let pred = self.decoder.forward(latent, masking.restore.clone());
        let target = if norm_pix_loss {
            normalize_patches(patches, 1e-6)
        } else {
            patches
        };
        let loss = masked_reconstruction_loss(pred.clone(), target.clone(), masking.mask.clone());
        MaeOutput {
            pred,
            target,
            masking,
            loss,
        }
    }

    /// [`MaeModel::reconstruct`] with a fresh random masking at `ratio`.
    pub fn forward(&self, images: Tensor<4>, ratio: f64, norm_pix_loss: bool) -> MaeOutput {
        let [n, ..] = images.dims();
        let grid = self.encoder.grid();
        let masking = random_masking(n, grid * grid, ratio, &images.device());
        self.reconstruct(images, masking, norm_pix_loss)
    }
}

/// Images to look at: `(masked, reconstructed)`, both `[N, C, H, W]` in the input's scale.
/// `masked` is the input with its hidden patches set to zero (the data mean once the
/// normalization is undone); `reconstructed` is the input's visible patches beside the decoder's
/// predictions for the hidden ones, mapped back to pixels with each patch's own mean and
/// standard deviation when the target was normalized.
pub fn reconstruction_images(
    model: &MaeModel,
    images: Tensor<4>,
    masking: Masking,
    norm_pix_loss: bool,
) -> (Tensor<4>, Tensor<4>) {
    let [_, channels, _, _] = images.dims();
    let (p, grid) = (model.encoder.patch_size(), model.encoder.grid());
    let patches = patchify(images.clone(), p);
    let out = model.reconstruct(images, masking, norm_pix_loss);
    let pred = if norm_pix_loss {
        // The inverse of `normalize_patches` (unbiased variance, as the reference).
        let (var, mean) = patches.clone().var_mean(2);
        out.pred * (var + 1e-6).sqrt() + mean
    } else {
        out.pred
    };
    let [n, l] = out.masking.mask.dims();
    let hidden = out.masking.mask.reshape([n, l, 1]);
    let shown = hidden.clone().neg() + 1.0;
    let masked = patches.clone() * shown.clone();
    let recon = patches * shown + pred * hidden;
    (
        unpatchify(masked, p, channels, grid),
        unpatchify(recon, p, channels, grid),
    )
}

/// The MAE objective: reconstruction of the hidden patches of one view of each image (the
/// first of the batch's views; MAE needs no second).
pub struct Mae {
    mask_ratio: f64,
    norm_pix_loss: bool,
    seed: u64,
}

impl Mae {
    /// The objective with `cfg`'s mask ratio and target; masks drawn from seed 0.
    pub fn new(cfg: &MaeConfig) -> Self {
        Self {
            mask_ratio: cfg.mask_ratio,
            norm_pix_loss: cfg.norm_pix_loss,
            seed: 0,
        }
    }

    /// The same objective drawing its masks from `seed` (and the step: [`crate::seeded_masking`]).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Objective for Mae {
    type Model = MaeModel;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "mae"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for AdamW on a ViT (lower train.optimizer.lr, lengthen train.schedule.warmup_epochs, set train.grad_clip_norm)".into()
    }

    /// The mean squared error over the hidden patches of every image, masks drawn from
    /// `(seed, step)`: [`Shardable::gathered_loss`] of the whole batch as one shard.
    fn loss(
        &mut self,
        model: &MaeModel,
        views: &Vec<Tensor<4>>,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, views, phase, info)
    }
}

/// One device's images and the noise its masks are sorted from.
#[derive(Clone, Debug)]
pub struct MaeShard {
    /// `[n, C, H, W]`.
    pub images: Tensor<4>,
    /// `[n, L]` uniform noise: [`masking_from_noise`] turns it into the masks.
    pub noise: Tensor<2>,
}

/// Over several devices the masks are drawn for the whole batch (each image masked as on one
/// device) and split with the images; the loss is every device's summed masked error over
/// the hidden patches of every image.
impl Shardable for Mae {
    type Shard = MaeShard;

    fn shard(
        &self,
        model: &MaeModel,
        views: &Vec<Tensor<4>>,
        devices: &[Device],
        info: &StepInfo,
    ) -> Result<Vec<MaeShard>> {
        let whole = self.whole(model, views, info);
        Ok(split_rows(&whole.images, devices)?
            .into_iter()
            .zip(split_rows(&whole.noise, devices)?)
            .map(|(images, noise)| MaeShard { images, noise })
            .collect())
    }

    /// The whole batch as one shard: its images with the noise of `(seed, step)`.
    fn whole(&self, model: &MaeModel, views: &Vec<Tensor<4>>, info: &StepInfo) -> MaeShard {
        let images = views[0].clone();
        let [n, ..] = images.dims();
        let grid = model.encoder.grid();
        let noise = seeded_noise(
            n,
            grid * grid,
            self.seed,
            info.step as u64,
            &images.device(),
        );
        MaeShard { images, noise }
    }

    fn cast(&self, shard: MaeShard, dtype: FloatDType) -> MaeShard {
        MaeShard {
            images: shard.images.cast(dtype),
            noise: shard.noise,
        }
    }

    /// Each image's summed error over its hidden patches, `[n, 1]` ([`masked_errors`]).
    fn outputs(
        &mut self,
        model: &MaeModel,
        shard: &MaeShard,
        _phase: usize,
        _: &StepInfo,
    ) -> Vec<Tensor<2>> {
        let masking = masking_from_noise(shard.noise.clone(), self.mask_ratio);
        let out = model.reconstruct(shard.images.clone(), masking, self.norm_pix_loss);
        vec![masked_errors(out.pred, out.target, out.masking.mask)]
    }

    fn gathered_loss(
        &mut self,
        model: &MaeModel,
        errors: Vec<Tensor<2>>,
        _phase: usize,
        _: &StepInfo,
    ) -> LossOutput {
        let n = errors[0].dims()[0];
        let patches = model.encoder.grid().pow(2);
        let hidden = (patches - kept(patches, self.mask_ratio)) * n;
        LossOutput::new(errors[0].clone().sum().div_scalar(hidden.max(1) as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use selfsup_encoders::VitConfig;
    use selfsup_encoders::vit::{Pool, PosEmbed};

    fn tiny_vit(device: &Device) -> VisionTransformer {
        VitConfig {
            image_size: 8,
            patch_size: 2,
            dim: 16,
            depth: 1,
            heads: 2,
            mlp_ratio: 2.0,
            pos_embed: PosEmbed::Sincos,
            pool: Pool::Cls,
        }
        .init(1, device)
        .unwrap()
    }

    fn cfg() -> MaeConfig {
        MaeConfig {
            decoder_dim: 8,
            decoder_depth: 1,
            decoder_heads: 2,
            ..MaeConfig::default()
        }
    }

    #[test]
    fn shapes_and_a_finite_loss() {
        let dev = Device::flex();
        let model = MaeModel::new(tiny_vit(&dev), 1, &cfg(), &dev);
        let x = Tensor::<4>::random([3, 1, 8, 8], Distribution::Default, &dev);
        let out = model.forward(x, 0.75, true);
        assert_eq!(out.pred.dims(), [3, 16, 4]);
        assert_eq!(out.target.dims(), [3, 16, 4]);
        assert_eq!(out.masking.keep.dims(), [3, 4]);
        let loss: f32 = out.loss.into_scalar::<f32>();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
    }

    #[test]
    fn training_lowers_the_reconstruction_loss() {
        use burn::optim::{AdamConfig, GradientsParams};
        let dev = Device::flex().autodiff();
        let mut model = MaeModel::new(tiny_vit(&dev), 1, &cfg(), &dev);
        let mut opt = AdamConfig::new().init();
        let x = Tensor::<4>::random([8, 1, 8, 8], Distribution::Default, &dev);
        // The same masking every step, so the loss is comparable.
        let masking = random_masking(8, 16, 0.75, &dev);
        let mut losses = Vec::new();
        for _ in 0..30 {
            let out = model.reconstruct(x.clone(), masking.clone(), false);
            losses.push(out.loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = opt.step(3e-3, model, grads);
        }
        assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
    }

    fn step0() -> StepInfo {
        StepInfo {
            step: 3,
            epoch: 0,
            total_steps: 4,
            steps_per_epoch: 4,
        }
    }

    #[test]
    fn the_objective_is_the_masked_loss_of_its_seeded_masks() {
        use crate::masking::seeded_masking;
        let dev = Device::flex();
        let model = MaeModel::new(tiny_vit(&dev), 1, &cfg(), &dev);
        let x = Tensor::<4>::random([3, 1, 8, 8], Distribution::Default, &dev);
        let c = cfg();
        let got = Mae::new(&c)
            .with_seed(7)
            .loss(&model, &vec![x.clone()], 0, &step0())
            .loss
            .into_scalar::<f64>();
        let masking = seeded_masking(3, 16, c.mask_ratio, 7, 3, &dev);
        let want = model
            .reconstruct(x, masking, c.norm_pix_loss)
            .loss
            .into_scalar::<f64>();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    /// Masks drawn for the whole batch and split with it; no BatchNorm in a ViT, so the two
    /// steps agree to rounding.
    #[test]
    fn a_step_over_two_devices_equals_one_device_with_the_whole_batch() {
        use selfsup_core::TrainConfig;
        use selfsup_core::grads::param_values;
        use selfsup_core::parallel::one_and_two_devices;
        use selfsup_core::seed::init_module;

        let dev = selfsup_core::DeviceSpec::for_tests().autodiff();
        let start = init_module(&dev, 2, |d| MaeModel::new(tiny_vit(d), 1, &cfg(), d));
        // The ranks start from a copy: a second `init_module` can differ while other tests
        // draw from burn's generator at the same time.
        let again = selfsup_core::parallel::replicate(&start, &dev);
        let x = vec![Tensor::<4>::from_data(
            burn::tensor::TensorData::new(
                (0..4 * 64).map(|i| ((i * 37) % 11) as f32 / 11.0).collect(),
                [4, 1, 8, 8],
            ),
            &dev,
        )];
        let mut train = TrainConfig::default();
        train.optimizer.kind = selfsup_core::OptimizerKind::Sgd;
        let make = || Mae::new(&cfg()).with_seed(5);
        let before = param_values(&start);
        let ((one, l1), (two, l2)) =
            one_and_two_devices(make, &train, start, &x, &step0(), 0.1).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "one device {l1}, two {l2}");
        let (w1, w2) = (param_values(&one), param_values(&two));
        assert!(
            selfsup_core::grads::max_abs_diff(&w1, &before) > 1e-4,
            "the step changed nothing"
        );
        let d = selfsup_core::grads::max_abs_diff(&w1, &w2);
        assert!(d < 1e-5, "weights differ by {d}");

        // Two ranks (threads, `LocalGroup`): the same masks, and the masked-patch count of
        // the loss's mean over the whole global batch.
        let (_, ranks) = selfsup_core::distributed::one_process_and_ranks(
            make,
            &train,
            again,
            &x,
            &step0(),
            0.1,
            2,
        )
        .unwrap();
        for (r, rank) in ranks.iter().enumerate() {
            assert!(
                (l1 - rank.loss).abs() < 1e-5,
                "one device {l1}, rank {r} {}",
                rank.loss
            );
            let d = selfsup_core::grads::max_abs_diff(&w1, &param_values(&rank.model));
            assert!(d < 1e-5, "rank {r}'s weights differ by {d}");
        }
    }

    /// bf16 and f16 passes (reduced copies of the model, masks from the same f32 noise) give
    /// the f32 loss to reduced precision.
    #[test]
    fn mixed_precision_steps_give_the_f32_loss() {
        use selfsup_core::config::Precision;
        use selfsup_core::seed::init_module;
        use selfsup_core::{DataParallel, Stepper, TrainConfig};

        let dev = Device::flex().autodiff();
        let start = init_module(&dev, 2, |d| MaeModel::new(tiny_vit(d), 1, &cfg(), d));
        let x = vec![Tensor::<4>::random(
            [4, 1, 8, 8],
            Distribution::Default,
            &dev,
        )];
        let train = TrainConfig::default();
        let mut losses = Vec::new();
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            let dp = DataParallel::new(vec![dev.clone()])
                .unwrap()
                .with_precision(p)
                .unwrap();
            let model = selfsup_core::parallel::replicate(&start, &dev);
            let (_, r) = Stepper::new(&train, 1)
                .step_parallel(&dp, &mut Mae::new(&cfg()), model, &x, &step0(), 1e-3, 1)
                .unwrap();
            let selfsup_core::StepResult::Updated { loss, .. } = r else {
                panic!("{p:?}: the step was skipped")
            };
            losses.push(loss);
        }
        for l in &losses[1..] {
            assert!((l - losses[0]).abs() < 3e-2 * losses[0], "{losses:?}");
        }
    }

    #[test]
    fn reconstructions_keep_the_visible_patches_and_blank_the_hidden_ones() {
        let dev = Device::flex();
        let model = MaeModel::new(tiny_vit(&dev), 1, &cfg(), &dev);
        let x = Tensor::<4>::random([2, 1, 8, 8], Distribution::Default, &dev);
        let masking = random_masking(2, 16, 0.75, &dev);
        let mask: Vec<f32> = masking.mask.clone().into_data().try_to_vec().unwrap();
        let (masked, recon) = reconstruction_images(&model, x.clone(), masking, true);
        let px = |t: Tensor<4>| -> Vec<f32> { patchify(t, 2).into_data().try_to_vec().unwrap() };
        let (orig, masked, recon) = (px(x), px(masked), px(recon));
        for (i, &m) in mask.iter().enumerate() {
            let cell = i * 4..i * 4 + 4;
            if m == 0.0 {
                assert_eq!(recon[cell.clone()], orig[cell.clone()]);
                assert_eq!(masked[cell.clone()], orig[cell]);
            } else {
                assert!(masked[cell].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (c, field) in [
            (
                MaeConfig {
                    mask_ratio: 1.0,
                    ..cfg()
                },
                "mae.mask_ratio",
            ),
            (
                MaeConfig {
                    decoder_depth: 0,
                    ..cfg()
                },
                "mae.decoder_depth",
            ),
            (
                MaeConfig {
                    decoder_dim: 10,
                    ..cfg()
                },
                "mae.decoder_dim",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(MaeConfig::default().validate().is_ok());
    }
}
