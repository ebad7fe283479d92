//! Data specs as typed on the command line: `sample`, `fashion-mnist:PATH`, `mnist:PATH`,
//! `cifar10:PATH`, `cifar100:PATH`, `folder:PATH`, `manifest:PATH`.

use crate::cifar::{self, Cifar};
use crate::dataset::{ImageSet, Splits};
use crate::folder::CorruptImages;
use crate::idx::{self, FASHION_CLASSES};
use crate::{folder, manifest, sample};
use selfsup_core::config::ensure;
use selfsup_core::{Error, Result, seed};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DataSpec {
    /// The embedded Fashion-MNIST sample.
    Sample,
    /// Fashion-MNIST IDX files in a folder (Debian: `/usr/share/datasets/fashion-mnist`).
    FashionMnist(PathBuf),
    /// MNIST IDX files in a folder.
    Mnist(PathBuf),
    /// CIFAR-10 binary batches.
    Cifar10(PathBuf),
    /// CIFAR-100 binary batches.
    Cifar100(PathBuf),
    /// A folder of images, with class subfolders or flat.
    Folder(PathBuf),
    /// An image-text manifest (`.jsonl` or `.csv`, see [`crate::manifest`]).
    Manifest(PathBuf),
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "sample" {
            return Ok(DataSpec::Sample);
        }
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            Error::config(
                "data",
                format!("`{s}`: expected sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH, folder:PATH or manifest:PATH"),
            )
        })?;
        if path.is_empty() {
            return Err(Error::config(
                "data",
                format!("`{s}`: the path after `{kind}:` is empty"),
            ));
        }
        let p = PathBuf::from(path);
        Ok(match kind {
            "fashion-mnist" | "fashion_mnist" => DataSpec::FashionMnist(p),
            "mnist" => DataSpec::Mnist(p),
            "cifar10" => DataSpec::Cifar10(p),
            "cifar100" => DataSpec::Cifar100(p),
            "folder" => DataSpec::Folder(p),
            "manifest" => DataSpec::Manifest(p),
            other => {
                return Err(Error::config(
                    "data",
                    format!(
                        "unknown data kind `{other}`; use fashion-mnist, mnist, cifar10, cifar100, folder or manifest"
                    ),
                ));
            }
        })
    }
}

impl TryFrom<String> for DataSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DataSpec> for String {
    fn from(d: DataSpec) -> String {
        d.to_string()
    }
}

/// In a config: a string, `sample`, `fashion-mnist:PATH`, `folder:PATH`, ...
impl schemars::JsonSchema for DataSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DataSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Sample => write!(f, "sample"),
            DataSpec::FashionMnist(p) => write!(f, "fashion-mnist:{}", p.display()),
            DataSpec::Mnist(p) => write!(f, "mnist:{}", p.display()),
            DataSpec::Cifar10(p) => write!(f, "cifar10:{}", p.display()),
            DataSpec::Cifar100(p) => write!(f, "cifar100:{}", p.display()),
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            DataSpec::Manifest(p) => write!(f, "manifest:{}", p.display()),
        }
    }
}

/// How to load a [`DataSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Where the images come from (see [`DataSpec`]).
    pub spec: DataSpec,
    /// Channels fed to the encoder: 0 keeps the source's, 1 converts to gray, 3 to RGB.
    pub channels: usize,
    /// Side length folder and manifest images are resized to.
    pub image_size: usize,
    /// Fraction of a labelled folder's (or a manifest's) images held out as the test split.
    pub holdout: f64,
    /// Use at most this many training images (0: all).
    pub max_train: usize,
    /// Use at most this many test images (0: all).
    pub max_test: usize,
    /// Per-channel mean for normalization (empty: measured on the training split).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation for normalization (empty: measured on the training split).
    pub std: Vec<f32>,
    /// Folder and manifest images that do not decode: `"error"` stops naming them, `"skip"`
    /// leaves them out and lists them in the run folder's `skipped-images.txt`.
    pub corrupt_images: CorruptImages,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            spec: DataSpec::Sample,
            channels: 0,
            image_size: 32,
            holdout: 0.1,
            max_train: 0,
            max_test: 0,
            mean: Vec::new(),
            std: Vec::new(),
            corrupt_images: CorruptImages::Error,
        }
    }
}

impl DataConfig {
    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure([0, 1, 3].contains(&self.channels), "data.channels", || {
            format!("{} must be 0 (keep), 1 or 3", self.channels)
        })?;
        ensure(self.image_size >= 4, "data.image_size", || {
            format!("{} must be at least 4", self.image_size)
        })?;
        ensure((0.0..1.0).contains(&self.holdout), "data.holdout", || {
            format!("{} must be in [0, 1)", self.holdout)
        })?;
        ensure(self.mean.len() == self.std.len(), "data.std", || {
            format!(
                "{} values for {} means: give both or neither",
                self.std.len(),
                self.mean.len()
            )
        })?;
        ensure(
            self.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "data.std",
            || "every value must be > 0".into(),
        )
    }

    /// Fills `mean` and `std` from `train` when they are not set for its channel count.
    pub fn resolve_normalization(&mut self, train: &ImageSet) {
        if self.mean.len() != train.channels {
            let (m, s) = train.channel_stats();
            self.mean = m;
            self.std = s;
        }
    }

    /// Loads the splits, converting channels and truncating as configured. `seed` picks the
    /// held-out images of a labelled folder.
    pub fn load(&self, seed_value: u64) -> Result<Splits> {
        self.validate()?;
        let mut s = match &self.spec {
            DataSpec::Sample => sample::load()?,
            DataSpec::FashionMnist(p) => idx::load_dir(p, &FASHION_CLASSES)?,
            DataSpec::Mnist(p) => {
                idx::load_dir(p, &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])?
            }
            DataSpec::Cifar10(p) => cifar::load_dir(p, Cifar::Ten)?,
            DataSpec::Cifar100(p) => cifar::load_dir(p, Cifar::Hundred)?,
            DataSpec::Folder(_) | DataSpec::Manifest(_) => {
                let ch = if self.channels == 0 { 3 } else { self.channels };
                let policy = self.corrupt_images;
                let (all, split, skipped) = match &self.spec {
                    DataSpec::Folder(p) => {
                        let (all, skipped) = folder::load(p, self.image_size, ch, policy)?;
                        let labelled = all.labels.is_some();
                        (all, labelled, skipped)
                    }
                    // Image-text pairs hold out images for retrieval.
                    DataSpec::Manifest(p) => {
                        let (all, skipped) = manifest::load(p, self.image_size, ch, policy)?;
                        (all, true, skipped)
                    }
                    _ => unreachable!("matched above"),
                };
                if split && self.holdout > 0.0 && all.len() >= 2 {
                    use rand::seq::SliceRandom;
                    let mut idx: Vec<usize> = (0..all.len()).collect();
                    idx.shuffle(&mut seed::rng(
                        seed_value,
                        seed::STREAM_SHUFFLE,
                        u64::MAX,
                        0,
                    ));
                    let n_test = ((all.len() as f64 * self.holdout).round() as usize)
                        .clamp(1, all.len() - 1);
                    let (test, train) = idx.split_at(n_test);
                    Splits {
                        train: all.subset(train),
                        test: Some(all.subset(test)),
                        skipped,
                    }
                } else {
                    Splits {
                        train: all,
                        test: None,
                        skipped,
                    }
                }
            }
        };
        if self.channels != 0 {
            s.train = s.train.with_channels(self.channels)?;
            s.test = s.test.map(|t| t.with_channels(self.channels)).transpose()?;
        }
        if self.max_train > 0 {
            s.train = s.train.take(self.max_train);
        }
        if self.max_test > 0 {
            s.test = s.test.map(|t| t.take(self.max_test));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("sample".parse::<DataSpec>().unwrap(), DataSpec::Sample);
        assert_eq!(
            "cifar10:/d/c".parse::<DataSpec>().unwrap(),
            DataSpec::Cifar10(PathBuf::from("/d/c"))
        );
        assert_eq!(
            "folder:x".parse::<DataSpec>().unwrap().to_string(),
            "folder:x"
        );
        assert!(
            "imagenet:/x"
                .parse::<DataSpec>()
                .unwrap_err()
                .to_string()
                .contains("imagenet")
        );
        assert!("mnist:".parse::<DataSpec>().is_err());
        assert!("nothing".parse::<DataSpec>().is_err());
    }

    #[test]
    fn channel_conversion_and_limits() {
        let cfg = DataConfig {
            channels: 3,
            max_train: 10,
            max_test: 5,
            ..Default::default()
        };
        let s = cfg.load(0).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.channels, 3);
        assert_eq!(s.test.unwrap().len(), 5);
        let bad = DataConfig {
            channels: 2,
            ..Default::default()
        };
        assert!(
            bad.load(0)
                .unwrap_err()
                .to_string()
                .contains("data.channels")
        );
    }
}
