//! Tensor names and shapes in the layouts other libraries load: torchvision's ResNets, timm's
//! Vision Transformer, and our own (burn's module paths).
//!
//! A name of ours is a burn module path with enum variants left out (`stem.conv.weight`,
//! `blocks.3.c1.bn.gamma`, `patch.weight`); [`to_layout`] gives the name another library uses
//! for it and how its values are laid out there ([`Transform`]).

use selfsup_core::{Error, Result};
use selfsup_encoders::Arch;

/// Whose names and shapes a weights file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Ours: burn's module paths, burn's shapes (a `Linear` weight is `[in, out]`).
    Burn,
    /// torchvision's `resnet18` / `resnet34` / `resnet50` `state_dict` without `fc`.
    Torchvision,
    /// timm's `VisionTransformer` `state_dict` without `head`.
    Timm,
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "burn" => Ok(Layout::Burn),
            "torchvision" => Ok(Layout::Torchvision),
            "timm" => Ok(Layout::Timm),
            other => Err(Error::config(
                "layout",
                format!("unknown layout `{other}`: use torchvision, timm or burn"),
            )),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Burn => "burn",
            Layout::Torchvision => "torchvision",
            Layout::Timm => "timm",
        })
    }
}

impl Layout {
    /// The layout another library uses for `arch`: torchvision for ResNets, timm for the
    /// ViT, ours for the rest (which no other library has).
    pub fn native(arch: Arch) -> Layout {
        match arch {
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => Layout::Torchvision,
            Arch::Vit => Layout::Timm,
            Arch::Convnet | Arch::Dcgan => Layout::Burn,
        }
    }

    /// Refuses a layout that has no model of `arch`.
    pub fn check(self, arch: Arch) -> Result<()> {
        let ok = match self {
            Layout::Burn => true,
            Layout::Torchvision => matches!(arch, Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50),
            Layout::Timm => arch == Arch::Vit,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                "layout",
                format!(
                    "{self} has no {} encoder: use --layout {} (torchvision holds the ResNets, \
                     timm the ViT)",
                    arch_name(arch),
                    Layout::native(arch)
                ),
            ))
        }
    }

    /// The layout a file's names are in, read from its names: torchvision's stem `conv1`,
    /// timm's `patch_embed`, else ours.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Layout {
        let mut layout = Layout::Burn;
        for n in names {
            if n == "conv1.weight" {
                layout = Layout::Torchvision;
            } else if n.starts_with("patch_embed.") {
                layout = Layout::Timm;
            }
        }
        layout
    }

    /// Names a file of this layout may hold that an encoder has no use for: the classifier
    /// of a whole torchvision or timm model (`fc.*`, `head.*`) and BatchNorm's step counters.
    pub fn ignored(self, name: &str) -> bool {
        match self {
            Layout::Burn => false,
            Layout::Torchvision => {
                name.starts_with("fc.") || name.ends_with(".num_batches_tracked")
            }
            Layout::Timm => name.starts_with("head."),
        }
    }
}

/// The lowercase name of an architecture, as configs write it.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet34 => "resnet34",
        Arch::Resnet50 => "resnet50",
        Arch::Convnet => "convnet",
        Arch::Vit => "vit",
        Arch::Dcgan => "dcgan",
    }
}

/// How a tensor's values are laid out in the other library, given ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The same shape and order.
    Same,
    /// A `Linear` weight: ours `[in, out]`, PyTorch's `[out, in]`.
    Transpose,
    /// The ViT's patch projection: ours a `Linear` `[C·p·p, D]` over patches flattened as
    /// (channel, row, column), timm's a convolution `[D, C, p, p]`: the transpose, reshaped.
    PatchConv {
        /// Image channels.
        channels: usize,
        /// Patch side.
        patch: usize,
    },
}

impl Transform {
    /// Our `[rows, cols]` values to the other library's shape and order.
    pub fn forward(self, shape: &[usize], values: &[f32]) -> (Vec<usize>, Vec<f32>) {
        match self {
            Transform::Same => (shape.to_vec(), values.to_vec()),
            Transform::Transpose => {
                let (r, c) = (shape[0], shape[1]);
                (vec![c, r], transpose(values, r, c))
            }
            Transform::PatchConv { channels, patch } => {
                let (r, c) = (shape[0], shape[1]);
                (vec![c, channels, patch, patch], transpose(values, r, c))
            }
        }
    }

    /// The other library's values back to our shape `ours` (the inverse of
    /// [`Transform::forward`]).
    pub fn backward(self, ours: &[usize], values: &[f32]) -> Vec<f32> {
        match self {
            Transform::Same => values.to_vec(),
            // Theirs is [ours[1], ours[0]] (conv: [D, C·p·p] once flattened).
            Transform::Transpose | Transform::PatchConv { .. } => {
                transpose(values, ours[1], ours[0])
            }
        }
    }

    /// The shape the other library gives a tensor whose shape is `ours` here.
    pub fn their_shape(self, ours: &[usize]) -> Vec<usize> {
        match self {
            Transform::Same => ours.to_vec(),
            Transform::Transpose => vec![ours[1], ours[0]],
            Transform::PatchConv { channels, patch } => vec![ours[1], channels, patch, patch],
        }
    }
}

/// `values` of a row-major `rows x cols` matrix, transposed.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = values[i * cols + j];
        }
    }
    out
}

/// Where the encoder `arch` keeps a tensor in `layout`: its name there and how its values
/// are laid out. `channels` and `patch` shape the ViT's patch convolution.
pub fn to_layout(
    arch: Arch,
    layout: Layout,
    name: &str,
    channels: usize,
    patch: usize,
) -> Result<(String, Transform)> {
    layout.check(arch)?;
    let unknown = || {
        Error::Invalid(format!(
            "no {layout} name for the {} tensor `{name}`",
            arch_name(arch)
        ))
    };
    match layout {
        Layout::Burn => Ok((name.to_string(), Transform::Same)),
        Layout::Torchvision => resnet_name(arch, name)
            .map(|n| (n, Transform::Same))
            .ok_or_else(unknown),
        Layout::Timm => vit_name(name, channels, patch).ok_or_else(unknown),
    }
}

/// torchvision's name of a BatchNorm tensor of ours.
fn bn_param(p: &str) -> Option<&'static str> {
    Some(match p {
        "gamma" => "weight",
        "beta" => "bias",
        "running_mean" => "running_mean",
        "running_var" => "running_var",
        _ => return None,
    })
}

/// Blocks per stage of a ResNet.
pub fn resnet_stages(arch: Arch) -> [usize; 4] {
    match arch {
        Arch::Resnet18 => [2, 2, 2, 2],
        _ => [3, 4, 6, 3],
    }
}

/// torchvision's name for `name` of our ResNet (`stem.conv.weight` -> `conv1.weight`,
/// `blocks.2.c1.bn.gamma` -> `layer2.0.bn1.weight`, `blocks.2.down.conv.weight` ->
/// `layer2.0.downsample.0.weight`).
fn resnet_name(arch: Arch, name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["stem", "conv", "weight"] => Some("conv1.weight".into()),
        ["stem", "bn", p] => Some(format!("bn1.{}", bn_param(p)?)),
        ["blocks", i, unit, kind, p] => {
            let mut i: usize = i.parse().ok()?;
            let mut stage = 0;
            for n in resnet_stages(arch) {
                if i < n {
                    break;
                }
                i -= n;
                stage += 1;
            }
            if stage == 4 {
                return None;
            }
            let block = format!("layer{}.{i}", stage + 1);
            let leaf = match (*unit, *kind) {
                ("down", "conv") => "downsample.0".to_string(),
                ("down", "bn") => "downsample.1".to_string(),
                (c, "conv") => format!("conv{}", c.strip_prefix('c')?),
                (c, "bn") => format!("bn{}", c.strip_prefix('c')?),
                _ => return None,
            };
            let p = if *kind == "bn" { bn_param(p)? } else { p };
            Some(format!("{block}.{leaf}.{p}"))
        }
        _ => None,
    }
}

/// timm's name for `name` of our ViT and how its values are laid out.
fn vit_name(name: &str, channels: usize, patch: usize) -> Option<(String, Transform)> {
    let norm = |p: &str| match p {
        "gamma" => Some("weight"),
        "beta" => Some("bias"),
        _ => None,
    };
    let linear = |p: &str| match p {
        "weight" => Some(Transform::Transpose),
        "bias" => Some(Transform::Same),
        _ => None,
    };
    let parts: Vec<&str> = name.split('.').collect();
    Some(match parts.as_slice() {
        ["patch", "weight"] => (
            "patch_embed.proj.weight".into(),
            Transform::PatchConv { channels, patch },
        ),
        ["patch", "bias"] => ("patch_embed.proj.bias".into(), Transform::Same),
        ["cls"] => ("cls_token".into(), Transform::Same),
        ["pos"] => ("pos_embed".into(), Transform::Same),
        ["norm", "inner", p] => (format!("norm.{}", norm(p)?), Transform::Same),
        ["blocks", i, n @ ("norm1" | "norm2"), "inner", p] => {
            (format!("blocks.{i}.{n}.{}", norm(p)?), Transform::Same)
        }
        ["blocks", i, "attn", l @ ("qkv" | "proj"), p] => {
            (format!("blocks.{i}.attn.{l}.{p}"), linear(p)?)
        }
        ["blocks", i, l @ ("fc1" | "fc2"), p] => (format!("blocks.{i}.mlp.{l}.{p}"), linear(p)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_names_follow_torchvision() {
        let n = |a, s| to_layout(a, Layout::Torchvision, s, 3, 0).unwrap().0;
        assert_eq!(n(Arch::Resnet18, "stem.conv.weight"), "conv1.weight");
        assert_eq!(n(Arch::Resnet18, "stem.bn.gamma"), "bn1.weight");
        assert_eq!(
            n(Arch::Resnet18, "blocks.1.c2.bn.beta"),
            "layer1.1.bn2.bias"
        );
        assert_eq!(
            n(Arch::Resnet18, "blocks.2.down.conv.weight"),
            "layer2.0.downsample.0.weight"
        );
        assert_eq!(
            n(Arch::Resnet50, "blocks.15.c3.bn.running_var"),
            "layer4.2.bn3.running_var"
        );
        assert!(
            to_layout(
                Arch::Resnet18,
                Layout::Torchvision,
                "blocks.8.c1.conv.weight",
                3,
                0
            )
            .is_err()
        );
        let err = to_layout(Arch::Convnet, Layout::Torchvision, "x", 3, 0).unwrap_err();
        assert!(err.to_string().contains("convnet"), "{err}");
    }

    #[test]
    fn vit_names_follow_timm() {
        let n = |s| to_layout(Arch::Vit, Layout::Timm, s, 3, 4).unwrap();
        assert_eq!(
            n("patch.weight"),
            (
                "patch_embed.proj.weight".to_string(),
                Transform::PatchConv {
                    channels: 3,
                    patch: 4
                }
            )
        );
        assert_eq!(n("blocks.0.norm1.inner.gamma").0, "blocks.0.norm1.weight");
        assert_eq!(n("blocks.3.fc2.weight").0, "blocks.3.mlp.fc2.weight");
        assert_eq!(n("blocks.3.attn.qkv.weight").1, Transform::Transpose);
        assert_eq!(n("norm.inner.beta").0, "norm.bias");
    }

    #[test]
    fn transforms_invert() {
        let v: Vec<f32> = (0..48).map(|i| i as f32).collect();
        for t in [
            Transform::Same,
            Transform::Transpose,
            Transform::PatchConv {
                channels: 3,
                patch: 2,
            },
        ] {
            let (shape, theirs) = t.forward(&[12, 4], &v);
            assert_eq!(shape, t.their_shape(&[12, 4]));
            assert_eq!(t.backward(&[12, 4], &theirs), v);
        }
        // A patch's (channel, row, column) order is the convolution kernel's.
        let t = Transform::PatchConv {
            channels: 3,
            patch: 2,
        };
        let (_, theirs) = t.forward(&[12, 4], &v);
        // Output unit 1, channel 2, row 1, column 0 = our row 2·4 + 1·2 + 0 = 10, column 1.
        assert_eq!(theirs[((3 + 2) * 2 + 1) * 2], v[10 * 4 + 1]);
    }
}
