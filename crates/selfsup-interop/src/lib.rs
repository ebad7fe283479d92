//! # selfsup-interop
//!
//! Encoder weights in and out: an encoder trained here saved as safetensors in the names and
//! shapes torchvision (ResNet-18/34/50) and timm (ViT) use, so `load_state_dict(strict=True)`
//! takes it, with a JSON sidecar saying how to feed it; and the weights of such files (ours,
//! torchvision's, timm's) loaded into an encoder here, every key and shape checked.
//!
//! ```no_run
//! # fn main() -> selfsup_core::Result<()> {
//! use selfsup_encoders::{Arch, EncoderConfig};
//! use selfsup_interop::{Layout, export, file, import};
//! let cfg = EncoderConfig { arch: Arch::Resnet18, ..EncoderConfig::default() };
//! let encoder = cfg.init(3, &burn::tensor::Device::flex());
//! let tensors = export(&encoder, cfg.arch, 3, Layout::Torchvision)?;
//! file::write("resnet18.safetensors".as_ref(), &tensors, Default::default())?;
//! let (back, _) = file::read("resnet18.safetensors".as_ref())?;
//! let (encoder, layout) = import(cfg.init(3, &burn::tensor::Device::flex()), &cfg, 3, &back, "resnet18.safetensors")?;
//! assert_eq!(layout, Layout::Torchvision);
//! # let _ = encoder; Ok(()) }
//! ```

pub mod file;
pub mod layout;
pub mod sidecar;
pub mod weights;

pub use file::{Named, Values};
pub use layout::{Layout, Transform};
pub use sidecar::Sidecar;
pub use weights::{export, import};
