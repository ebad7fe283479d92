//! The full configuration of a run, as written to `RUN_DIR/config.toml`.

use clap::ValueEnum;
use selfsup_contrastive::{ClipConfig, SimClrConfig};
use selfsup_core::config::{from_toml, to_toml};
use selfsup_core::{
    DeviceSpec, Error, OptimizerConfig, OptimizerKind, Precision, Result, TrainConfig,
};
use selfsup_data::{AugmentConfig, DataConfig};
use selfsup_dino::DinoConfig;
use selfsup_encoders::{Arch, DcganConfig, EncoderConfig, VitConfig};
use selfsup_eval::{FinetuneConfig, KnnConfig, LinearProbeConfig};
use selfsup_gan::GanConfig;
use selfsup_mae::MaeConfig;
use selfsup_pretext::{JigsawConfig, RotNetConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The pretraining methods this binary knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SimCLR: two views, NT-Xent.
    Simclr,
    /// MAE: a ViT reconstructs the hidden patches of each image.
    Mae,
    /// DINO: a student matches an EMA teacher's centred, sharpened outputs over multi-crop
    /// views.
    Dino,
    /// CLIP: an image encoder and a text transformer learn a shared space from image-caption
    /// pairs (a manifest, or captions made from a labelled set's class names).
    Clip,
    /// RotNet: name which of four rotations was applied to each image.
    Rotnet,
    /// Jigsaw: name which permutation shuffled the tiles of each image.
    Jigsaw,
    /// GAN: a DCGAN generator and discriminator trained against each other; the
    /// discriminator's features are kept.
    Gan,
}

/// Everything a run needs; every key has a default, unknown keys are rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The pretraining method.
    pub method: Method,
    /// Compute device: `flex` (CPU), `wgpu` or `cuda:N`.
    pub device: DeviceSpec,
    /// Data-parallel training over these devices (the first one is `device`, which holds the
    /// model); empty: `device` alone. Every method but the GAN.
    pub devices: Vec<DeviceSpec>,
    /// The images.
    pub data: DataConfig,
    /// The augmentations of each view.
    pub augment: AugmentConfig,
    /// The backbone.
    pub encoder: EncoderConfig,
    /// The training loop.
    pub train: TrainConfig,
    /// SimCLR's settings.
    pub simclr: SimClrConfig,
    /// MAE's settings.
    pub mae: MaeConfig,
    /// DINO's settings.
    pub dino: DinoConfig,
    /// CLIP's settings.
    pub clip: ClipConfig,
    /// RotNet's settings.
    pub rotnet: RotNetConfig,
    /// The jigsaw task's settings.
    pub jigsaw: JigsawConfig,
    /// The GAN's settings.
    pub gan: GanConfig,
    /// The kNN evaluation.
    pub knn: KnnConfig,
    /// The linear probe.
    pub linear: LinearProbeConfig,
    /// Fine-tuning (`selfsup eval finetune`).
    pub finetune: FinetuneConfig,
    /// What runs during and after pretraining.
    pub eval: EvalConfig,
    /// A method from a crate of its own ([`crate::Recipe`]): its name and settings. Unset for
    /// the built-in methods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomMethod>,
}

/// The `[custom]` section: a method that is not built in, added by a crate's own
/// [`crate::Recipe`], which reads its settings from here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMethod {
    /// The recipe's name (run folders, checkpoints, the bench table); a file over a recipe's
    /// preset may leave it out.
    #[serde(default)]
    pub name: String,
    /// The recipe's own keys, `[custom.settings]`.
    #[serde(default)]
    pub settings: toml::Table,
}

impl CustomMethod {
    /// A section named `name` holding `settings` (any serializable struct).
    pub fn new(name: &str, settings: &impl Serialize) -> Result<Self> {
        let settings = toml::Table::try_from(settings)
            .map_err(|e| Error::config("custom.settings", e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            settings,
        })
    }

    /// The settings as the recipe's own struct; a wrong key or type is an error naming
    /// `custom.settings`.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.settings
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| Error::config("custom.settings", e.message().to_string()))
    }
}

/// Evaluation during and after pretraining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Online monitor: kNN top-1 on the test split every this many epochs (0: never).
    pub monitor_every: usize,
    /// Training images the monitor's kNN votes with (0: all).
    pub monitor_train: usize,
    /// Test images the monitor scores (0: all).
    pub monitor_test: usize,
    /// Run the linear probe after pretraining (kNN always runs).
    pub linear: bool,
    /// Score the raw-pixel and random-init baselines beside the encoder.
    pub baselines: bool,
    /// Features for kNN, the probe and the monitor: 1, the encoder's pooled output; `g > 1`,
    /// a convolutional encoder's last feature map averaged over `g x g` cells (the jigsaw
    /// preset's 2). The random-init baseline is read the same way.
    pub grid: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            monitor_every: 1,
            monitor_train: 10_000,
            monitor_test: 2_000,
            linear: true,
            baselines: true,
            grid: 1,
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self::preset(Method::Simclr)
    }
}

impl RunConfig {
    /// The default config of `method`: sized to finish the embedded sample in a few minutes on
    /// a 2-core CPU.
    pub fn preset(method: Method) -> Self {
        let mut train = TrainConfig {
            epochs: 15,
            batch_size: 128,
            checkpoint_every: 100,
            ..TrainConfig::default()
        };
        train.optimizer.kind = OptimizerKind::Lars;
        train.optimizer.lr = 0.6;
        train.optimizer.weight_decay = 1e-5;
        train.optimizer.momentum = 0.9;
        train.optimizer.trust_coefficient = 0.02;
        train.schedule.warmup_epochs = 1.0;
        Self {
            method,
            device: DeviceSpec::Flex,
            devices: Vec::new(),
            data: DataConfig::default(),
            augment: AugmentConfig {
                crop_min_scale: 0.2,
                ..AugmentConfig::simclr()
            },
            encoder: EncoderConfig {
                arch: Arch::Convnet,
                width: 32,
                cifar_stem: true,
                vit: VitConfig::default(),
                dcgan: DcganConfig::default(),
            },
            train,
            // 0.1 measured slightly better than 0.2 on the sample (77.6 against 77.3 % kNN).
            simclr: SimClrConfig {
                temperature: 0.1,
                ..SimClrConfig::default()
            },
            knn: KnnConfig::default(),
            linear: LinearProbeConfig::default(),
            finetune: FinetuneConfig::default(),
            eval: EvalConfig::default(),
            mae: MaeConfig::default(),
            dino: DinoConfig::default(),
            clip: ClipConfig::default(),
            rotnet: RotNetConfig::default(),
            jigsaw: JigsawConfig::default(),
            gan: GanConfig::default(),
            custom: None,
        }
        .for_method(method)
    }

    /// Adjusts the SimCLR-shaped defaults for `method`.
    fn for_method(mut self, method: Method) -> Self {
        match method {
            Method::Simclr => {}
            Method::Dino => {
                // Measured on Fashion-MNIST (docs/methods/dino.md): LARS as for SimCLR at a
                // lower rate, no clipping, constant small weight decay; BatchNorm in the head
                // and a free last-layer norm (the paper's ResNet options); a fast, sharp
                // teacher for short runs (momentum from 0.99, temperature 0.04 throughout).
                // The paper's ViT recipe (AdamW, weight decay 0.04 -> 0.4, clipping at 3,
                // momentum 0.996, temperature 0.04 -> 0.07) left the teacher near uniform.
                let opt = &mut self.train.optimizer;
                opt.kind = OptimizerKind::Lars;
                opt.lr = 0.3;
                opt.weight_decay = 1e-5;
                self.train.grad_clip_norm = 0.0;
                self.dino.crops.local_size = 12;
                self.dino.head.batch_norm = true;
                self.dino.head.norm_last_layer = false;
                self.dino.momentum_start = 0.99;
                self.dino.warmup_teacher_temperature = 0.04;
                self.dino.teacher_temperature = 0.04;
            }
            Method::Rotnet => {
                // Crops and flips (a flip never changes which rotation was applied), no colour
                // changes.
                self.train.optimizer = pretext_sgd(self.train.optimizer);
                self.augment = crops_and_flips(0.5);
            }
            Method::Jigsaw => {
                // RotNet's optimizer; crops and flips of the whole image before it is cut (each
                // tile is normalized on its own, so colour changes would do nothing), upscaled
                // to 48 px and cut into 12 px tiles in 16 px cells: 8 px tiles of 28 px images
                // learned less (docs/methods/pretext.md).
                self.train.optimizer = pretext_sgd(self.train.optimizer);
                self.augment = crops_and_flips(0.5);
                self.jigsaw.image_size = 48;
                self.jigsaw.tile = 12;
                // Features read as the whole last map (4 x 4 cells of 28 px images): the
                // encoder learned where parts sit in a tile, which one global average throws
                // away (kNN 84.28 against 79.48 pooled; docs/methods/pretext.md).
                self.eval.grid = 4;
            }
            Method::Gan => {
                // DCGAN's recipe: the discriminator's trunk at width 64 (64, 128, 256
                // channels), Adam with betas (0.5, 0.999) at 2e-4 for both networks, no weight
                // decay, a constant rate. The images go in unaugmented.
                self.encoder.arch = Arch::Dcgan;
                self.encoder.width = 64;
                let opt = &mut self.train.optimizer;
                opt.kind = OptimizerKind::Adamw;
                opt.lr = 2e-4;
                opt.weight_decay = 0.0;
                opt.beta1 = 0.5;
                opt.beta2 = 0.999;
                opt.eps = 1e-8;
                self.train.schedule.warmup_epochs = 0.0;
                self.train.schedule.final_lr_ratio = 1.0;
                self.train.epochs = 10;
            }
            Method::Clip => {
                // CLIP's optimizer (AdamW, betas 0.9 / 0.98, weight decay 0.2) at a small
                // model's learning rate; crops and flips only, as CLIP trains.
                let opt = &mut self.train.optimizer;
                opt.kind = OptimizerKind::Adamw;
                opt.lr = 1e-3;
                opt.weight_decay = 0.2;
                opt.beta1 = 0.9;
                opt.beta2 = 0.98;
                opt.eps = 1e-6;
                self.augment = crops_and_flips(0.5);
            }
            Method::Mae => {
                // A ViT on 28-pixel images (7x7 patches of 4), narrower and shallower than
                // ViT-Tiny so the sample finishes in minutes; AdamW with the paper's betas and
                // weight decay; crops and flips only (He et al.: colour augmentation hurts).
                self.encoder.arch = Arch::Vit;
                self.encoder.vit = VitConfig {
                    dim: 128,
                    depth: 6,
                    heads: 4,
                    ..VitConfig::tiny(28, 4)
                };
                self.augment = crops_and_flips(0.2);
                let opt = &mut self.train.optimizer;
                opt.kind = OptimizerKind::Adamw;
                opt.lr = 1e-3;
                opt.weight_decay = 0.05;
                opt.beta1 = 0.9;
                opt.beta2 = 0.95;
                // Fine-tuning a ViT: AdamW with a warm-up, not the ConvNets' SGD.
                let ft = &mut self.finetune.train;
                ft.optimizer.kind = OptimizerKind::Adamw;
                ft.optimizer.lr = 1e-3;
                ft.optimizer.weight_decay = 0.05;
                ft.optimizer.beta1 = 0.9;
                ft.optimizer.beta2 = 0.999;
                ft.schedule.warmup_epochs = 1.0;
            }
        }
        self
    }

    /// The method's name: `custom.name`, or the built-in method's.
    pub fn method_name(&self) -> String {
        match &self.custom {
            Some(c) => c.name.clone(),
            None => format!("{:?}", self.method).to_lowercase(),
        }
    }

    /// Reads a TOML file; keys it leaves out keep the defaults of its `method`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg = Self::from_toml_text(&text, &path.display().to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text: the keys it sets over the [`RunConfig::preset`] of its `method` (a file
    /// that says `method = "mae"` and nothing about the encoder gets MAE's ViT). Unknown keys
    /// and wrong types are errors naming the line, from `origin`.
    pub fn from_toml_text(text: &str, origin: &str) -> Result<Self> {
        // Checks every key and type against the schema, with the line in the message.
        let plain: RunConfig = from_toml(text, origin)?;
        Self::from_toml_over(RunConfig::preset(plain.method), text, origin)
    }

    /// Parses TOML text as the keys it sets over `base` (a [`crate::Recipe`]'s preset), with
    /// the errors of [`RunConfig::from_toml_text`].
    pub fn from_toml_over(base: RunConfig, text: &str, origin: &str) -> Result<Self> {
        let _: RunConfig = from_toml(text, origin)?;
        let given: toml::Table = from_toml(text, origin)?;
        let invalid = |e: toml::ser::Error| Error::Invalid(format!("{origin}: {e}"));
        let mut merged = toml::Table::try_from(base).map_err(invalid)?;
        merge(&mut merged, given);
        merged
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(origin, e.message().to_string()))
    }

    /// Writes the config as TOML.
    pub fn save(&self, path: &Path) -> Result<()> {
        selfsup_core::atomic::write(path, self.to_toml()?)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        to_toml(self)
    }

    /// The devices a run trains on: `devices`, or `device` alone.
    pub fn train_devices(&self) -> Vec<DeviceSpec> {
        if self.devices.is_empty() {
            vec![self.device.clone()]
        } else {
            self.devices.clone()
        }
    }

    fn validate_devices(&self) -> Result<()> {
        // Every method but the GAN (two optimizer phases a step) splits its batch.
        let shardable = self.custom.is_some() || self.method != Method::Gan;
        if self.train.precision != Precision::F32 && !shardable {
            return Err(Error::config(
                "train.precision",
                format!(
                    "mixed precision runs every method but the GAN; {} trains in f32",
                    self.method_name()
                ),
            ));
        }
        let Some(first) = self.devices.first() else {
            return Ok(());
        };
        if *first != self.device {
            return Err(Error::config(
                "devices",
                format!(
                    "the first device ({first}) must be `device` ({}), which holds the model",
                    self.device
                ),
            ));
        }
        let n = self.devices.len();
        if n > 1 {
            if !shardable {
                return Err(Error::config(
                    "devices",
                    format!(
                        "data-parallel training runs every method but the GAN (two optimizer phases a step); {} trains on one device (leave `devices` empty)",
                        self.method_name()
                    ),
                ));
            }
            if !self.train.batch_size.is_multiple_of(n) {
                return Err(Error::config(
                    "train.batch_size",
                    format!(
                        "{} does not split evenly over {n} devices: use a multiple of {n}",
                        self.train.batch_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks every section, naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.augment.validate("augment")?;
        self.encoder.validate()?;
        self.train.validate()?;
        self.simclr.validate()?;
        self.mae.validate()?;
        self.dino.validate()?;
        self.clip.validate()?;
        self.rotnet.validate()?;
        self.validate_devices()?;
        if self.method == Method::Jigsaw {
            // The tiles' fit is checked again once the data's size is known.
            let side = match (self.jigsaw.image_size, self.augment.crop_size) {
                (0, 0) => None,
                (0, c) => Some(c),
                (s, _) => Some(s),
            };
            self.jigsaw.validate(side)?;
        }
        if self.method == Method::Dino && self.encoder.arch == Arch::Vit {
            let (p, crops) = (self.encoder.vit.patch_size, &self.dino.crops);
            for (field, side) in [
                ("global_size", crops.global_size),
                ("local_size", crops.local_size),
            ] {
                if field == "local_size" && crops.local_crops == 0 {
                    continue;
                }
                if side % p != 0 {
                    return Err(Error::config(
                        format!("dino.crops.{field}"),
                        format!(
                            "{side} px is not a whole number of the ViT's {p} px patches: use a multiple of {p}"
                        ),
                    ));
                }
            }
        }
        if self.method == Method::Gan {
            self.gan.validate()?;
            if self.encoder.arch != Arch::Dcgan {
                return Err(Error::config(
                    "encoder.arch",
                    "a GAN's discriminator is the DCGAN trunk: set encoder.arch = \"dcgan\"",
                ));
            }
            let half = |v: &[f32]| v.iter().all(|&x| x == 0.5);
            if !half(&self.data.mean) || !half(&self.data.std) {
                return Err(Error::config(
                    "data.mean",
                    "a GAN's generator ends in tanh, so real images are scaled to [-1, 1] (mean 0.5, std 0.5): leave data.mean and data.std unset",
                ));
            }
        }
        if self.method == Method::Mae && self.encoder.arch != Arch::Vit {
            return Err(Error::config(
                "encoder.arch",
                "MAE masks patches of a Vision Transformer: set encoder.arch = \"vit\"",
            ));
        }
        if self.custom.as_ref().is_some_and(|c| c.name.is_empty()) {
            return Err(Error::config(
                "custom.name",
                "a custom method needs its recipe's name",
            ));
        }
        if self.eval.grid == 0 {
            return Err(Error::config("eval.grid", "must be at least 1"));
        }
        if self.eval.grid > 1 && self.encoder.arch == Arch::Vit {
            return Err(Error::config(
                "eval.grid",
                "a ViT has no feature map to pool to a grid: use 1",
            ));
        }
        self.knn.validate()?;
        self.linear.validate()?;
        self.finetune.validate()
    }
}

/// SimCLR's random resized crop (smallest area `min_scale`) and flip, and nothing else: the
/// augmentation of methods that colour changes would hurt or not help (MAE, CLIP, RotNet).
fn crops_and_flips(min_scale: f64) -> AugmentConfig {
    AugmentConfig {
        crop_min_scale: min_scale,
        jitter_prob: 0.0,
        grayscale_prob: 0.0,
        blur_prob: 0.0,
        solarize_prob: 0.0,
        ..AugmentConfig::simclr()
    }
}

/// The RotNet paper's optimizer, which the jigsaw preset shares: SGD with Nesterov momentum
/// 0.9 (PyTorch's undampened momentum), lr 0.1, weight decay 5e-4.
fn pretext_sgd(base: OptimizerConfig) -> OptimizerConfig {
    OptimizerConfig {
        kind: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..base
    }
}

/// Writes every key of `over` into `base`, recursing into tables both have.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_roundtrips_through_toml() {
        for method in Method::value_variants() {
            let method = *method;
            let c = RunConfig::preset(method);
            c.validate().unwrap();
            let back: RunConfig = from_toml(&c.to_toml().unwrap(), "x").unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn a_gan_needs_the_dcgan_trunk_and_half_normalization() {
        let mut c = RunConfig::preset(Method::Gan);
        assert_eq!(c.encoder.arch, Arch::Dcgan);
        c.encoder.arch = Arch::Convnet;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("encoder.arch"), "{err}");
        let mut c = RunConfig::preset(Method::Gan);
        c.data.mean = vec![0.3];
        c.data.std = vec![0.5];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("data.mean"), "{err}");
        c.data.mean = vec![0.5];
        c.data.std = vec![0.5];
        c.validate().unwrap();
        c.gan.d_steps = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("gan.d_steps"), "{err}");
    }

    #[test]
    fn an_eval_grid_needs_a_feature_map() {
        let mut c = RunConfig::preset(Method::Mae);
        c.eval.grid = 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("eval.grid"), "{err}");
        let mut c = RunConfig::preset(Method::Rotnet);
        c.eval.grid = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("eval.grid"), "{err}");
        c.eval.grid = 3;
        c.validate().unwrap();
    }

    #[test]
    fn mae_needs_a_vit() {
        let mut c = RunConfig::preset(Method::Mae);
        c.encoder.arch = Arch::Convnet;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("encoder.arch"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[simclr]\ntemperature = 0.0\n").unwrap();
        let e = RunConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("simclr.temperature"), "{e}");
        std::fs::write(&p, "[train]\nepochs = 2\nbogus = 1\n").unwrap();
        let e = RunConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        std::fs::write(&p, "[train.optimizer]\nlr = -1.0\n").unwrap();
        let e = RunConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("train.optimizer.lr"), "{e}");
        let e = RunConfig::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn a_file_builds_on_the_preset_of_its_method() {
        let text = "method = \"mae\"\n[train]\nepochs = 3\n[encoder.vit]\ndepth = 2\n";
        let cfg = RunConfig::from_toml_text(text, "test.toml").unwrap();
        let preset = RunConfig::preset(Method::Mae);
        assert_eq!(cfg.encoder.arch, Arch::Vit);
        assert_eq!((cfg.train.epochs, cfg.encoder.vit.depth), (3, 2));
        assert_eq!(cfg.encoder.vit.dim, preset.encoder.vit.dim);
        assert_eq!(cfg.train.optimizer, preset.train.optimizer);
        cfg.validate().unwrap();
        // Unknown keys still name their line.
        let err = RunConfig::from_toml_text("method = \"mae\"\n[train]\nepoch = 3\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml: epoch") && err.contains("unknown field"),
            "{err}"
        );
    }
}
