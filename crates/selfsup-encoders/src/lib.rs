//! # selfsup-encoders
//!
//! Backbones implementing [`selfsup_core::Encoder`] (ResNet-18/34/50, a small ConvNet, a Vision
//! Transformer, the DCGAN discriminator's trunk), a causal text transformer for image-text
//! training, and projection heads. [`Backbone`] picks one at run time from an [`EncoderConfig`].

pub mod convnet;
pub mod dcgan;
pub mod head;
pub mod resnet;
pub mod text;
pub mod vit;

pub use convnet::ConvNet;
pub use dcgan::{DcganConfig, DcganEncoder};
pub use head::{HeadConfig, ProjectionHead};
pub use resnet::{ResNet, ResNetDepth};
pub use text::{TextConfig, TextTransformer};
pub use vit::{LinearInit, Pool, PosEmbed, VisionTransformer, VitConfig};

use burn::module::{Module, ParamId};
use burn::tensor::{Device, Tensor};
use selfsup_core::config::ensure;
use selfsup_core::{Encoder, Result};
use serde::{Deserialize, Serialize};

/// Which backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// ResNet-18.
    Resnet18,
    /// ResNet-34.
    Resnet34,
    /// ResNet-50.
    Resnet50,
    /// The small ConvNet (fast on a CPU).
    Convnet,
    /// A Vision Transformer, shaped by the `vit` section.
    Vit,
    /// The DCGAN discriminator's trunk, shaped by the `dcgan` section (a GAN's encoder).
    Dcgan,
}

impl std::str::FromStr for Arch {
    type Err = selfsup_core::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "resnet18" => Ok(Arch::Resnet18),
            "resnet34" => Ok(Arch::Resnet34),
            "resnet50" => Ok(Arch::Resnet50),
            "convnet" => Ok(Arch::Convnet),
            "vit" => Ok(Arch::Vit),
            "dcgan" => Ok(Arch::Dcgan),
            other => Err(selfsup_core::Error::Invalid(format!(
                "unknown encoder `{other}`: use resnet18, resnet34, resnet50, convnet, vit or dcgan"
            ))),
        }
    }
}

/// Backbone settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// `resnet18`, `resnet34`, `resnet50`, `convnet`, `vit` or `dcgan`.
    pub arch: Arch,
    /// ResNet: 3x3 stride-1 stem without max-pool, for images of about 32 pixels.
    pub cifar_stem: bool,
    /// ConvNet and DCGAN: base width (ConvNet features = 4 x width).
    pub width: usize,
    /// ViT: its shape (`image_size` must be the size of the images it is fed).
    pub vit: VitConfig,
    /// DCGAN: blocks and feature pooling.
    pub dcgan: DcganConfig,
    /// Start training from these weights instead of a random initialisation: a
    /// `.safetensors` file or a PyTorch `.pth` / `.pt` `state_dict`, in torchvision's ResNet or
    /// timm's ViT layout, or ours (what `selfsup export` writes); every key and shape is
    /// checked against this section.
    /// Empty: random initialisation.
    pub init: String,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet18,
            cifar_stem: true,
            width: 32,
            vit: VitConfig::default(),
            dcgan: DcganConfig::default(),
            init: String::new(),
        }
    }
}

impl EncoderConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure(self.width >= 1, "encoder.width", || {
            "must be at least 1".into()
        })?;
        if !self.init.is_empty() {
            let p = std::path::Path::new(&self.init);
            ensure(p.is_file(), "encoder.init", || {
                format!("{}: no such file", self.init)
            })?;
            ensure(
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("safetensors" | "pth" | "pt" | "bin")
                ),
                "encoder.init",
                || format!("{}: give a .safetensors, .pth or .pt file", self.init),
            )?;
        }
        match self.arch {
            Arch::Vit => self.vit.validate(),
            Arch::Dcgan => self.dcgan.validate(),
            _ => Ok(()),
        }
    }

    /// Builds the backbone for `channels`-channel images on `device`. Call
    /// [`EncoderConfig::validate`] first: a ViT shape it rejects panics here.
    pub fn init(&self, channels: usize, device: &Device) -> Backbone {
        match self.arch {
            Arch::Resnet18 => Backbone::ResNet(ResNet::new(
                ResNetDepth::R18,
                channels,
                self.cifar_stem,
                device,
            )),
            Arch::Resnet34 => Backbone::ResNet(ResNet::new(
                ResNetDepth::R34,
                channels,
                self.cifar_stem,
                device,
            )),
            Arch::Resnet50 => Backbone::ResNet(ResNet::new(
                ResNetDepth::R50,
                channels,
                self.cifar_stem,
                device,
            )),
            Arch::Convnet => Backbone::ConvNet(ConvNet::new(channels, self.width, device)),
            Arch::Vit => Backbone::Vit(
                self.vit
                    .init(channels, device)
                    .expect("EncoderConfig::validate accepts only valid ViT shapes"),
            ),
            Arch::Dcgan => {
                Backbone::Dcgan(DcganEncoder::new(channels, self.width, &self.dcgan, device))
            }
        }
    }
}

/// A backbone chosen at run time.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// A ResNet.
    ResNet(ResNet),
    /// The small ConvNet.
    ConvNet(ConvNet),
    /// A Vision Transformer.
    Vit(VisionTransformer),
    /// The DCGAN discriminator's trunk.
    Dcgan(DcganEncoder),
}

impl Encoder for Backbone {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::ResNet(m) => m.features(images),
            Backbone::ConvNet(m) => m.features(images),
            Backbone::Vit(m) => m.features(images),
            Backbone::Dcgan(m) => m.features(images),
        }
    }

    fn output_dim(&self) -> usize {
        match self {
            Backbone::ResNet(m) => m.output_dim(),
            Backbone::ConvNet(m) => m.output_dim(),
            Backbone::Vit(m) => m.output_dim(),
            Backbone::Dcgan(m) => m.output_dim(),
        }
    }

    fn tokens(&self, images: Tensor<4>) -> Option<Tensor<3>> {
        match self {
            Backbone::Vit(m) => m.tokens(images),
            _ => None,
        }
    }

    fn feature_map(&self, images: Tensor<4>) -> Option<Tensor<4>> {
        match self {
            Backbone::ResNet(m) => Encoder::feature_map(m, images),
            Backbone::ConvNet(m) => m.feature_map(images),
            Backbone::Dcgan(m) => m.feature_map(images),
            Backbone::Vit(m) => Encoder::feature_map(m, images),
        }
    }

    fn blocks(&self) -> usize {
        match self {
            Backbone::Vit(m) => m.blocks(),
            _ => 0,
        }
    }

    fn finetune_features(
        &self,
        images: Tensor<4>,
        global_pool: bool,
        keep: &[Tensor<1>],
    ) -> Tensor<2> {
        match self {
            Backbone::Vit(m) => m.finetune_features(images, global_pool, keep),
            other => other.features(images),
        }
    }

    fn param_layers(&self) -> Vec<(ParamId, usize, bool)> {
        match self {
            Backbone::Vit(m) => m.param_layers(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes() {
        let dev = Device::flex();
        let x: Tensor<4> = Tensor::zeros([2, 3, 32, 32], &dev);
        for (arch, dim) in [
            (Arch::Resnet18, 512),
            (Arch::Resnet34, 512),
            (Arch::Resnet50, 2048),
            (Arch::Convnet, 128),
            (Arch::Vit, 192),
            (Arch::Dcgan, (32 + 64 + 128) * 16),
        ] {
            let m = EncoderConfig {
                arch,
                vit: VitConfig {
                    depth: 1,
                    ..VitConfig::default()
                },
                ..Default::default()
            }
            .init(3, &dev);
            assert_eq!(m.output_dim(), dim);
            assert_eq!(m.features(x.clone()).dims(), [2, dim], "{arch:?}");
        }
        let imagenet = EncoderConfig {
            cifar_stem: false,
            ..Default::default()
        }
        .init(1, &dev);
        assert_eq!(
            imagenet
                .features(Tensor::zeros([1, 1, 64, 64], &dev))
                .dims(),
            [1, 512]
        );
    }

    #[test]
    fn a_vit_encoder_checks_its_shape() {
        let mut cfg = EncoderConfig {
            arch: Arch::Vit,
            ..Default::default()
        };
        cfg.vit.heads = 5;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("vit.heads"), "{err}");
        // Other backbones ignore the section.
        cfg.arch = Arch::Convnet;
        assert!(cfg.validate().is_ok());
        assert_eq!("ViT".parse::<Arch>().unwrap(), Arch::Vit);
    }

    #[test]
    fn head_shapes() {
        let dev = Device::flex();
        let h = ProjectionHead::new(
            &HeadConfig {
                output_batch_norm: true,
                ..Default::default()
            },
            128,
            &dev,
        );
        assert_eq!(h.forward(Tensor::ones([4, 128], &dev)).dims(), [4, 128]);
        let h1 = ProjectionHead::new(
            &HeadConfig {
                layers: 1,
                output_dim: 7,
                ..Default::default()
            },
            16,
            &dev,
        );
        assert_eq!(h1.forward(Tensor::ones([3, 16], &dev)).dims(), [3, 7]);
    }
}
