//! The JSON file beside an exported `FILE.safetensors` (`FILE.json`): what a user of the
//! weights needs to feed the network the images it was trained on.

use crate::layout::Layout;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What an exported encoder expects and gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// `resnet18`, `resnet34`, `resnet50`, `vit`, `convnet`, `dcgan`.
    pub arch: String,
    /// `torchvision`, `timm` or `burn`: whose names and shapes the file uses.
    pub layout: String,
    /// Image channels.
    pub channels: usize,
    /// Side of the square images the encoder was trained on.
    pub input_size: usize,
    /// Per-channel mean subtracted from pixels in [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the pixels are divided by.
    pub std: Vec<f32>,
    /// ResNet stem: `cifar` (3x3 stride 1, no max-pool: replace torchvision's `conv1` and
    /// `maxpool` before loading) or `imagenet` (torchvision's 7x7 stride 2 + max-pool);
    /// `null` for other architectures.
    pub stem: Option<String>,
    /// Width of the pooled features.
    pub feature_dim: usize,
    /// ViT only: patch side, depth, heads, MLP ratio, pooling, as timm's `VisionTransformer`
    /// takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vit: Option<serde_json::Value>,
    /// The method and run it came from.
    #[serde(default)]
    pub source: String,
}

impl Sidecar {
    /// `FILE.json` beside `FILE.safetensors`.
    pub fn path_for(weights: &Path) -> PathBuf {
        weights.with_extension("json")
    }

    /// Writes it beside `weights`.
    pub fn write(&self, weights: &Path) -> Result<PathBuf> {
        let p = Self::path_for(weights);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("sidecar: {e}")))?;
        selfsup_core::atomic::write(&p, text + "\n")?;
        Ok(p)
    }

    /// The sidecar beside `weights`, when there is one.
    pub fn read(weights: &Path) -> Result<Option<Self>> {
        let p = Self::path_for(weights);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
    }

    /// Its layout.
    pub fn layout(&self) -> Result<Layout> {
        self.layout.parse()
    }
}
