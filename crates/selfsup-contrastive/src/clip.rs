//! CLIP-style image-text training (Radford et al., "Learning Transferable Visual Models From
//! Natural Language Supervision", 2021): an image encoder and a text transformer, each followed
//! by a linear projection to a shared space, trained so that each image is closest to its own
//! caption among the batch's captions, and the reverse ([`crate::clip_loss`]).

use crate::loss::{clip_loss, l2_normalize};
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, FloatDType, Int, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::parallel::{split_rows, whole_batch_loss};
use selfsup_core::{Encoder, LossOutput, Objective, Result, Shardable, StepInfo};
use selfsup_data::ImageTextBatch;
use selfsup_encoders::{TextConfig, TextTransformer};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Captions made from class names for training on a labelled set: varied, so the text tower
/// learns the class word rather than one sentence.
pub const TRAIN_TEMPLATES: [&str; 12] = [
    "a photo of a {}.",
    "a picture of a {}.",
    "a {}, worn.",
    "a {} on a plain background.",
    "a product photo of a {}.",
    "a grayscale photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "an image of a {}.",
    "a small photo of a {}.",
    "a catalogue picture of a {}.",
];

/// Prompts for zero-shot classification, averaged per class as CLIP does: the first is also a
/// training template, the other three use words the training captions never had.
pub const ZERO_SHOT_TEMPLATES: [&str; 4] = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a photo of my {}.",
];

/// The tokenizer: CLIP's own merges, or merges learned from the training captions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// CLIP's `bpe_simple_vocab_16e6.txt.gz` (or a merges file saved by a run); unset: learn
    /// merges from the training captions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merges: Option<PathBuf>,
    /// Ids in a learned vocabulary (bytes and markers take 514): training stops earlier when
    /// no pair repeats.
    pub vocab_size: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            merges: None,
            vocab_size: 2048,
        }
    }
}

/// CLIP's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    /// Width of the shared image-text space.
    pub embed_dim: usize,
    /// Initial temperature of the logits (CLIP: 0.07, a scale of 1/0.07).
    pub init_temperature: f64,
    /// Largest logit scale (CLIP: 100, a temperature of 0.01).
    pub max_scale: f64,
    /// The text tower.
    pub text: TextConfig,
    /// How captions become ids.
    pub tokenizer: TokenizerConfig,
    /// Caption templates for labelled data (`{}`: the class name).
    pub templates: Vec<String>,
    /// Prompt templates of zero-shot classification.
    pub zero_shot_templates: Vec<String>,
    /// Held-out images the retrieval evaluation searches among (0: all).
    pub retrieval_images: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            init_temperature: 0.07,
            max_scale: 100.0,
            text: TextConfig::default(),
            tokenizer: TokenizerConfig::default(),
            templates: TRAIN_TEMPLATES.map(String::from).to_vec(),
            zero_shot_templates: ZERO_SHOT_TEMPLATES.map(String::from).to_vec(),
            retrieval_images: 1000,
        }
    }
}

impl ClipConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(self.embed_dim >= 1, "clip.embed_dim", || {
            "must be at least 1".into()
        })?;
        ensure(
            self.init_temperature.is_finite() && self.init_temperature > 0.0,
            "clip.init_temperature",
            || format!("{} must be > 0 (CLIP: 0.07)", self.init_temperature),
        )?;
        ensure(
            self.max_scale.is_finite() && self.max_scale >= 1.0 / self.init_temperature,
            "clip.max_scale",
            || {
                format!(
                    "{} must be at least 1 / init_temperature ({:.2})",
                    self.max_scale,
                    1.0 / self.init_temperature
                )
            },
        )?;
        self.text.validate("clip.text")?;
        ensure(
            self.tokenizer.merges.is_some() || self.tokenizer.vocab_size > 514,
            "clip.tokenizer.vocab_size",
            || {
                format!(
                    "{} leaves no room for merges: bytes and markers take 514 ids",
                    self.tokenizer.vocab_size
                )
            },
        )?;
        for (field, list) in [
            ("clip.templates", &self.templates),
            ("clip.zero_shot_templates", &self.zero_shot_templates),
        ] {
            ensure(!list.is_empty(), field, || {
                "needs at least one template".into()
            })?;
            if let Some(t) = list.iter().find(|t| !t.contains("{}")) {
                return Err(selfsup_core::Error::config(
                    field,
                    format!("{t:?} has no {{}} where the class name goes"),
                ));
            }
        }
        Ok(())
    }
}

/// The two towers, their projections and the learned logit scale.
#[derive(Module, Debug)]
pub struct ClipModel<E: Encoder> {
    /// The image encoder: what kNN and linear probes evaluate afterwards.
    pub image: E,
    /// The text transformer.
    pub text: TextTransformer,
    image_proj: Linear,
    text_proj: Linear,
    /// `ln` of the logit scale, `[1]` (CLIP learns the logarithm).
    log_scale: Param<Tensor<1>>,
}

impl<E: Encoder> ClipModel<E> {
    /// The model for `image` and a text tower over `vocab_size` ids, on `device`.
    pub fn new(image: E, vocab_size: usize, cfg: &ClipConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let text = cfg.text.init(vocab_size, device)?;
        let proj = |from: usize| {
            LinearConfig::new(from, cfg.embed_dim)
                .with_bias(false)
                .init(device)
        };
        Ok(Self {
            image_proj: proj(image.output_dim()),
            text_proj: proj(text.output_dim()),
            image,
            text,
            log_scale: Param::from_tensor(Tensor::full(
                [1],
                (1.0 / cfg.init_temperature).ln(),
                device,
            )),
        })
    }

    /// Image embeddings `[N, embed_dim]` (not normalized).
    pub fn embed_images(&self, images: Tensor<4>) -> Tensor<2> {
        self.image_proj.forward(self.image.features(images))
    }

    /// Caption embeddings `[N, embed_dim]` (not normalized) from ids `[N, T]` and end
    /// positions `[N]`.
    pub fn embed_texts(&self, tokens: Tensor<2, Int>, eot: Tensor<1, Int>) -> Tensor<2> {
        self.text_proj.forward(self.text.forward(tokens, eot))
    }

    /// The logit scale `exp(log_scale)`. Its limit is kept on the parameter between steps
    /// ([`ClipModel::clamp_scale`]), not here: a clamp in the forward pass would stop the
    /// gradient above the limit, and a scale that reached it could never come back down.
    pub fn scale(&self) -> Tensor<1> {
        self.log_scale.val().exp()
    }

    /// The model with `log_scale` clamped to `[0, ln max]` (the scale to `[1, max]`), outside
    /// the gradient graph: what open_clip does to the parameter after every optimizer step.
    pub fn clamp_scale(mut self, max: f64) -> Self {
        let hi = max.ln();
        self.log_scale = self.log_scale.map(|t| {
            // Off the graph and back as a fresh leaf, as burn's optimizers hand parameters back.
            let (autodiff, tracked) = (t.is_autodiff(), t.is_require_grad());
            let clamped = t.inner().clamp(0.0, hi);
            match (autodiff, tracked) {
                (true, true) => Tensor::from_inner(clamped).require_grad(),
                (true, false) => Tensor::from_inner(clamped),
                (false, _) => clamped,
            }
        });
        self
    }
}

/// The CLIP objective over image-caption batches.
pub struct Clip<E> {
    max_scale: f64,
    _encoder: std::marker::PhantomData<E>,
}

impl<E> Clip<E> {
    /// The objective with `cfg`'s scale limit.
    pub fn new(cfg: &ClipConfig) -> Self {
        Self {
            max_scale: cfg.max_scale,
            _encoder: std::marker::PhantomData,
        }
    }
}

impl<E: Encoder> Objective for Clip<E> {
    type Model = ClipModel<E>;
    type Batch = ImageTextBatch;

    fn name(&self) -> &str {
        "clip"
    }

    /// open_clip's `logit_scale.clamp_(0, ln 100)` after each optimizer step.
    fn constrain(&self, model: Self::Model, _phase: usize) -> Self::Model {
        model.clamp_scale(self.max_scale)
    }

    fn divergence_hint(&self) -> String {
        "a logit scale grown too large (lower clip.max_scale; the paper caps it at 100) or a learning rate too high for AdamW without warm-up (lower train.optimizer.lr, lengthen train.schedule.warmup_epochs, set train.grad_clip_norm)".into()
    }

    fn loss(
        &mut self,
        model: &Self::Model,
        batch: &ImageTextBatch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, batch, phase, info)
    }
}

/// Over several devices, every image is contrasted with the captions of every device and
/// the reverse; the logit scale gets its gradient on the first device.
impl<E: Encoder> Shardable for Clip<E> {
    type Shard = ImageTextBatch;

    fn shard(
        &self,
        _: &Self::Model,
        batch: &ImageTextBatch,
        devices: &[Device],
        _: &StepInfo,
    ) -> Result<Vec<ImageTextBatch>> {
        let images = split_rows(&batch.images, devices)?;
        let tokens = split_rows(&batch.tokens, devices)?;
        let eot = split_rows(&batch.eot, devices)?;
        Ok(images
            .into_iter()
            .zip(tokens)
            .zip(eot)
            .map(|((images, tokens), eot)| ImageTextBatch {
                images,
                tokens,
                eot,
            })
            .collect())
    }

    fn whole(&self, _: &Self::Model, batch: &ImageTextBatch, _: &StepInfo) -> ImageTextBatch {
        batch.clone()
    }

    fn cast(&self, batch: ImageTextBatch, dtype: FloatDType) -> ImageTextBatch {
        ImageTextBatch {
            images: batch.images.cast(dtype),
            ..batch
        }
    }

    /// Image and caption embeddings, `[n, embed_dim]` each.
    fn outputs(
        &mut self,
        model: &Self::Model,
        batch: &ImageTextBatch,
        _phase: usize,
        _: &StepInfo,
    ) -> Vec<Tensor<2>> {
        vec![
            model.embed_images(batch.images.clone()),
            model.embed_texts(batch.tokens.clone(), batch.eot.clone()),
        ]
    }

    fn gathered_loss(
        &mut self,
        model: &Self::Model,
        outputs: Vec<Tensor<2>>,
        _phase: usize,
        _: &StepInfo,
    ) -> LossOutput {
        let [u, v]: [Tensor<2>; 2] = outputs.try_into().expect("images and captions");
        let scale = model.scale();
        // How often an image's own caption scores highest within the batch.
        let [n, _] = u.dims();
        let sims =
            l2_normalize(u.clone().detach()).matmul(l2_normalize(v.clone().detach()).transpose());
        let picked = sims.argmax(1).reshape([n]);
        let right = Tensor::<1, Int>::arange(0..n as i64, &picked.device());
        let accuracy = picked.equal(right).int().sum().into_scalar::<i64>() as f64 / n as f64;
        let scale_value = scale.clone().detach().into_scalar::<f64>();
        LossOutput {
            loss: clip_loss(u, v, scale),
            metrics: vec![
                ("logit_scale".into(), scale_value),
                ("batch_top1".into(), accuracy),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use selfsup_encoders::{Backbone, EncoderConfig};

    fn tiny() -> (ClipConfig, ClipModel<Backbone>, Device) {
        let device = selfsup_core::DeviceSpec::for_tests().autodiff();
        let cfg = ClipConfig {
            embed_dim: 8,
            text: TextConfig {
                context: 6,
                dim: 8,
                depth: 1,
                heads: 2,
                mlp_ratio: 2.0,
            },
            ..ClipConfig::default()
        };
        let enc = EncoderConfig {
            width: 4,
            ..EncoderConfig::default()
        };
        let image = enc.init(1, &device);
        let model = ClipModel::new(image, 30, &cfg, &device).unwrap();
        (cfg, model, device)
    }

    #[test]
    fn the_scale_starts_at_one_over_the_temperature_and_is_clamped() {
        let (cfg, model, device) = tiny();
        let s = model.scale().into_scalar::<f64>();
        assert!((s - 1.0 / 0.07).abs() < 1e-3, "{s}");
        // At the limit the forward pass still carries a gradient (ds/dlog = s), so a step
        // can bring the scale back down; the clamp acts on the parameter between steps.
        let big = ClipModel {
            log_scale: Param::from_tensor(Tensor::full([1], 100f64.ln(), &device)),
            ..model
        };
        let s = big.scale();
        let grads = s.clone().sum().backward();
        let g = big
            .log_scale
            .val()
            .grad(&grads)
            .map(|g| g.into_scalar::<f64>());
        assert!(g.is_some_and(|g| (g - 100.0).abs() < 1e-3), "{g:?}");
        let over = ClipModel {
            log_scale: Param::from_tensor(Tensor::full([1], 7.0, &device)),
            ..big
        }
        .clamp_scale(cfg.max_scale);
        let s = over.scale().into_scalar::<f64>();
        assert!((s - 100.0).abs() < 1e-3, "{s}");
        assert!(over.log_scale.val().is_require_grad(), "still trained");
        let under = ClipModel {
            log_scale: Param::from_tensor(Tensor::full([1], -1.0, &device)),
            ..over
        }
        .clamp_scale(cfg.max_scale);
        assert!((under.scale().into_scalar::<f64>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_step_gives_a_finite_loss_and_batch_metrics() {
        let (cfg, model, device) = tiny();
        let images =
            Tensor::<4>::random([4, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let ids: Vec<i64> = vec![
            27, 3, 4, 28, 0, 0, //
            27, 5, 28, 0, 0, 0, //
            27, 6, 7, 8, 28, 0, //
            27, 9, 28, 0, 0, 0,
        ];
        let batch = ImageTextBatch {
            images,
            tokens: Tensor::from_data(TensorData::new(ids, [4, 6]), &device),
            eot: Tensor::from_data(TensorData::new(vec![3i64, 2, 4, 2], [4]), &device),
        };
        let mut clip = Clip::<Backbone>::new(&cfg);
        let info = StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        };
        let out = clip.loss(&model, &batch, 0, &info);
        let loss = out.loss.into_scalar::<f64>();
        // Random towers: about ln 4 per direction.
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        let names: Vec<&str> = out.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["logit_scale", "batch_top1"]);
        assert!((0.0..=1.0).contains(&out.metrics[1].1));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = |f: fn(&mut ClipConfig), field: &str| {
            let mut c = ClipConfig::default();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        bad(|c| c.init_temperature = 0.0, "clip.init_temperature");
        bad(|c| c.max_scale = 5.0, "clip.max_scale");
        bad(|c| c.templates = vec!["no slot".into()], "clip.templates");
        bad(
            |c| c.zero_shot_templates.clear(),
            "clip.zero_shot_templates",
        );
        bad(
            |c| c.tokenizer.vocab_size = 300,
            "clip.tokenizer.vocab_size",
        );
        bad(|c| c.text.heads = 3, "clip.text.dim");
        assert!(ClipConfig::default().validate().is_ok());
    }

    /// CLIP over two (flex) replicas: the same loss and the same updated weights as one
    /// device with the whole batch, the logit scale included (its gradient comes from the
    /// gathered loss on the first device). A ViT: no BatchNorm.
    #[test]
    fn a_step_over_two_devices_equals_one_device_with_the_whole_batch() {
        use selfsup_core::TrainConfig;
        use selfsup_core::grads::param_values;
        use selfsup_core::parallel::one_and_two_devices;
        use selfsup_core::seed::{init_module, rng, standard_normal};
        use selfsup_encoders::{Arch, VitConfig};

        let (cfg, _, device) = tiny();
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
        let start = init_module(&device, 1, |d| {
            ClipModel::new(enc.init(1, d), 30, &cfg, d).unwrap()
        });
        // The ranks start from a copy: a second `init_module` can differ while other tests
        // draw from burn's generator at the same time.
        let again = selfsup_core::parallel::replicate(&start, &device);
        let mut r = rng(9, 0, 0, 0);
        let ids: Vec<i64> = vec![
            27, 3, 4, 28, 0, 0, //
            27, 5, 28, 0, 0, 0, //
            27, 6, 7, 8, 28, 0, //
            27, 9, 28, 0, 0, 0,
        ];
        let batch = ImageTextBatch {
            images: Tensor::from_data(
                TensorData::new(standard_normal(&mut r, 4 * 64), [4, 1, 8, 8]),
                &device,
            ),
            tokens: Tensor::from_data(TensorData::new(ids, [4, 6]), &device),
            eot: Tensor::from_data(TensorData::new(vec![3i64, 2, 4, 2], [4]), &device),
        };
        let info = StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        };
        let mut train = TrainConfig::default();
        train.optimizer.kind = selfsup_core::OptimizerKind::Sgd;
        let scale0 = start.scale().into_scalar::<f64>();
        let ((one, l1), (two, l2)) = one_and_two_devices(
            || Clip::<Backbone>::new(&cfg),
            &train,
            start,
            &batch,
            &info,
            0.1,
        )
        .unwrap();
        assert!((l1 - l2).abs() < 1e-5, "one device {l1}, two {l2}");
        let (w1, w2) = (param_values(&one), param_values(&two));
        let d = selfsup_core::grads::max_abs_diff(&w1, &w2);
        assert!(d < 1e-5, "weights differ by {d}");
        let (s1, s2) = (
            one.scale().into_scalar::<f64>(),
            two.scale().into_scalar::<f64>(),
        );
        assert!((s1 - scale0).abs() > 1e-6, "the scale did not train");
        assert!((s1 - s2).abs() < 1e-6 * s1, "scale {s1} vs {s2}");

        // Two ranks (threads, `LocalGroup`): every rank computes the gathered loss and its
        // scale gradient; only rank 0's enters the sum, so the scale moves as one process's.
        let (_, ranks) = selfsup_core::distributed::one_process_and_ranks(
            || Clip::<Backbone>::new(&cfg),
            &train,
            again,
            &batch,
            &info,
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
            let s = rank.model.scale().into_scalar::<f64>();
            assert!((s1 - s).abs() < 1e-6 * s1, "scale {s1} vs rank {r}'s {s}");
        }
    }
}
