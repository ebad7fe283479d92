//! Data specs as typed on the command line: `sample`, `fashion-mnist:PATH`, `mnist:PATH`,
//! `cifar10:PATH`, `cifar100:PATH`, `stl10:PATH`, `folder:PATH`, `manifest:PATH`,
//! `shards:PATTERN`; and [`DataConfig`], how they are loaded or streamed.

use crate::cifar::{self, Cifar};
use crate::dataset::{ImageSet, Splits};
use crate::decode::Decode;
use crate::folder::{CorruptImages, Skipped};
use crate::idx::{self, FASHION_CLASSES};
use crate::{folder, manifest, sample, shards, stl10};
use selfsup_core::config::ensure;
use selfsup_core::{Error, Result, seed};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
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
    /// STL-10's binary folder (see [`crate::stl10`]).
    Stl10(PathBuf),
    /// WebDataset-style tar shards: one file, a brace range or a glob (see [`crate::shards`]).
    Shards(String),
}

const KINDS: &str = "sample, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH, stl10:PATH, folder:PATH, manifest:PATH or shards:PATTERN";

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "sample" {
            return Ok(DataSpec::Sample);
        }
        let (kind, path) = s
            .split_once(':')
            .ok_or_else(|| Error::config("data", format!("`{s}`: expected {KINDS}")))?;
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
            "stl10" => DataSpec::Stl10(p),
            "shards" => DataSpec::Shards(path.to_string()),
            other => {
                return Err(Error::config(
                    "data",
                    format!("unknown data kind `{other}`; use {KINDS}"),
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
            DataSpec::Stl10(p) => write!(f, "stl10:{}", p.display()),
            DataSpec::Shards(p) => write!(f, "shards:{p}"),
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
    /// Side of the square crops of streamed images (folders, manifests, shards, STL-10's
    /// unlabelled images): training crops are cut from the originals and resized to it,
    /// evaluation resizes the shorter side and centre-crops to it. `augment.crop_size`
    /// overrides it for training.
    pub image_size: usize,
    /// Threads decoding and augmenting batches (0: one per core).
    pub workers: usize,
    /// Batches prepared ahead of the one training (a bounded queue: memory stays at this many
    /// batches whatever the dataset's size).
    pub prefetch: usize,
    /// `"none"` streams folders, manifests and shards from disk every epoch; `"memory"`
    /// decodes them once at load into memory, at their own size or `cache_size`.
    pub cache: Cache,
    /// With `cache = "memory"`: the shorter side images are brought down to (aspect ratio
    /// kept; 0 keeps the originals).
    pub cache_size: usize,
    /// Largest image decoded, in pixels (width x height): a guard against decompression
    /// bombs, PIL's default. A larger image is an error naming it.
    pub max_pixels: u64,
    /// Evaluation of streamed images: the fraction of the resized shorter side the centre
    /// crop keeps (0.875: torchvision's resize 256, crop 224).
    pub center_crop: f64,
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
    /// Images that do not decode: `"error"` stops naming the file, `"skip"` replaces each by
    /// the next image of its class that decodes and lists it in the run folder's
    /// `skipped-images.txt`.
    pub corrupt_images: CorruptImages,
}

/// Whether streamed images are decoded once into memory (`data.cache`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// Read and decode from disk every epoch.
    #[default]
    None,
    /// Decode once at load and keep the pixels in memory.
    Memory,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            spec: DataSpec::Sample,
            channels: 0,
            image_size: 32,
            workers: 0,
            prefetch: 2,
            cache: Cache::None,
            cache_size: 0,
            max_pixels: crate::decode::PIL_MAX_PIXELS,
            center_crop: 0.875,
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
        ensure(self.prefetch >= 1, "data.prefetch", || {
            "must be at least 1 (the batch being built)".into()
        })?;
        ensure(self.max_pixels >= 1, "data.max_pixels", || {
            "must be at least 1".into()
        })?;
        ensure(
            self.center_crop > 0.0 && self.center_crop <= 1.0,
            "data.center_crop",
            || format!("{} must be in (0, 1]", self.center_crop),
        )?;
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

    /// Fills `mean` and `std` from `train` when they are not set for its channel count (a
    /// streamed set is measured on a fixed sample of its images).
    pub fn resolve_normalization(&mut self, train: &ImageSet) -> Result<()> {
        if self.mean.len() != train.channels {
            let (m, s) = train.channel_stats()?;
            self.mean = m;
            self.std = s;
        }
        Ok(())
    }

    /// Worker threads for batches: `workers`, or one per core.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The evaluation centre crop for `set`: the configured ratio for streamed images of any
    /// size, none (the whole image) for sets decoded to one size.
    pub fn center_crop_for(&self, set: &ImageSet) -> Option<f32> {
        set.is_streamed().then_some(self.center_crop as f32)
    }

    fn decode(&self) -> Decode {
        Decode {
            channels: if self.channels == 0 { 3 } else { self.channels },
            max_pixels: self.max_pixels,
        }
    }

    /// A streamed set brought into memory when `cache = "memory"`, with its labels and
    /// captions kept in step with the images that decoded.
    fn cached(&self, set: ImageSet, skipped: &mut Vec<Skipped>) -> Result<ImageSet> {
        let (Cache::Memory, Some(stream)) = (self.cache, &set.stream) else {
            return Ok(set);
        };
        let (cached, kept, left_out) = stream.cache(self.cache_size)?;
        skipped.extend(left_out);
        let mut out = set.subset(&kept);
        out.stream = Some(cached);
        Ok(out)
    }

    /// `all` split into training and held-out images (`holdout`, drawn by the seed) when
    /// `split`, else all for training.
    fn holdout(&self, all: ImageSet, split: bool, seed_value: u64) -> Splits {
        if split && self.holdout > 0.0 && all.len() >= 2 {
            use rand::seq::SliceRandom;
            let mut idx: Vec<usize> = (0..all.len()).collect();
            idx.shuffle(&mut seed::rng(
                seed_value,
                seed::STREAM_SHUFFLE,
                u64::MAX,
                0,
            ));
            let n_test =
                ((all.len() as f64 * self.holdout).round() as usize).clamp(1, all.len() - 1);
            let (test, train) = idx.split_at(n_test);
            Splits {
                train: all.subset(train),
                test: Some(all.subset(test)),
                probe: None,
                skipped: Vec::new(),
            }
        } else {
            Splits {
                train: all,
                test: None,
                probe: None,
                skipped: Vec::new(),
            }
        }
    }

    /// A folder: `train/` and `val/` subfolders as the two splits, or one folder split by
    /// `holdout` when it has class subfolders.
    fn folder(&self, dir: &Path, seed_value: u64) -> Result<Splits> {
        let (side, d, policy) = (self.image_size, self.decode(), self.corrupt_images);
        if folder::has_splits(dir) {
            let train = folder::scan(&dir.join("train"))?;
            let mut val = folder::scan(&dir.join("val"))?;
            folder::align_classes(&mut val, &train.class_names, &dir.join("val"))?;
            // In a seeded order, as a held-out split is, so that `max_train` takes images of
            // every class rather than the first classes'.
            let train = folder::streamed(train, side, d, policy);
            let order = crate::loader::epoch_order(train.len(), seed_value, usize::MAX);
            return Ok(Splits {
                train: train.subset(&order),
                test: Some(folder::streamed(val, side, d, policy)),
                probe: None,
                skipped: Vec::new(),
            });
        }
        let scan = folder::scan(dir)?;
        let labelled = scan.labels.is_some();
        Ok(self.holdout(
            folder::streamed(scan, side, d, policy),
            labelled,
            seed_value,
        ))
    }

    /// Loads the splits, converting channels and truncating as configured. `seed` picks the
    /// held-out images of a labelled folder.
    pub fn load(&self, seed_value: u64) -> Result<Splits> {
        self.validate()?;
        let (side, d, policy) = (self.image_size, self.decode(), self.corrupt_images);
        let mut s = match &self.spec {
            DataSpec::Sample => sample::load()?,
            DataSpec::FashionMnist(p) => idx::load_dir(p, &FASHION_CLASSES)?,
            DataSpec::Mnist(p) => {
                idx::load_dir(p, &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])?
            }
            DataSpec::Cifar10(p) => cifar::load_dir(p, Cifar::Ten)?,
            DataSpec::Cifar100(p) => cifar::load_dir(p, Cifar::Hundred)?,
            DataSpec::Stl10(p) => stl10::load_dir(p, d.channels, policy)?,
            DataSpec::Folder(p) => self.folder(p, seed_value)?,
            // Image-text pairs hold out images for retrieval.
            DataSpec::Manifest(p) => {
                self.holdout(manifest::load(p, side, d, policy)?, true, seed_value)
            }
            DataSpec::Shards(p) => {
                let all = shards::load(p, side, d, policy)?;
                let labelled = all.labels.is_some() || all.captions.is_some();
                self.holdout(all, labelled, seed_value)
            }
        };
        if self.max_train > 0 {
            s.train = s.train.take(self.max_train);
        }
        if self.max_test > 0 {
            s.test = s.test.map(|t| t.take(self.max_test));
        }
        let mut skipped = std::mem::take(&mut s.skipped);
        s.train = self.cached(s.train, &mut skipped)?;
        s.test = s.test.map(|t| self.cached(t, &mut skipped)).transpose()?;
        s.skipped = skipped;
        if self.channels != 0 {
            s.train = s.train.with_channels(self.channels)?;
            s.test = s.test.map(|t| t.with_channels(self.channels)).transpose()?;
        }
        if self.channels != 0 {
            s.probe = s
                .probe
                .map(|t| t.with_channels(self.channels))
                .transpose()?;
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

    /// A folder with `train/` and `val/` is two splits; the val classes follow the training
    /// classes' order; both are streamed, the training images in a seeded order.
    #[test]
    fn train_and_val_folders_are_two_splits() {
        let dir = tempfile::tempdir().unwrap();
        for (split, classes) in [("train", &["cat", "dog"][..]), ("val", &["dog"][..])] {
            for c in classes {
                let d = dir.path().join(split).join(c);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..3 {
                    image::GrayImage::from_pixel(5, 4, image::Luma([i * 10]))
                        .save(d.join(format!("{i}.png")))
                        .unwrap();
                }
            }
        }
        let cfg = DataConfig {
            spec: format!("folder:{}", dir.path().display()).parse().unwrap(),
            ..Default::default()
        };
        let s = cfg.load(1).unwrap();
        assert!(s.train.is_streamed() && s.test.as_ref().unwrap().is_streamed());
        assert_eq!(s.train.len(), 6);
        let mut labels = s.train.labels.clone().unwrap();
        labels.sort();
        assert_eq!(labels, [0, 0, 0, 1, 1, 1]);
        let test = s.test.unwrap();
        assert_eq!(test.labels, Some(vec![1, 1, 1]));
        assert_eq!(test.class_names, ["cat", "dog"]);
        assert_eq!(
            s.train.image(0).unwrap().height,
            4,
            "the original, not a square"
        );
    }

    /// `data.cache = "memory"` decodes a folder once: originals at their own size, or the
    /// shorter side brought down to `cache_size` with the aspect ratio kept; a file that does
    /// not decode is left out with its label and listed.
    #[test]
    fn a_memory_cache_keeps_the_aspect_ratio() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
            for i in 0..4 {
                image::RgbImage::from_pixel(40, 20, image::Rgb([i * 30, 9, 9]))
                    .save(dir.path().join(c).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        std::fs::write(dir.path().join("b/9.png"), b"not a png").unwrap();
        let mut cfg = DataConfig {
            spec: format!("folder:{}", dir.path().display()).parse().unwrap(),
            holdout: 0.0,
            cache: Cache::Memory,
            corrupt_images: CorruptImages::Skip,
            ..Default::default()
        };
        let s = cfg.load(0).unwrap();
        assert_eq!(s.train.len(), 8);
        assert_eq!(s.skipped.len(), 1);
        assert!(s.skipped[0].path.ends_with("b/9.png"));
        assert_eq!(s.train.labels, Some(vec![0, 0, 0, 0, 1, 1, 1, 1]));
        let img = s.train.image(5).unwrap();
        assert_eq!((img.height, img.width), (20, 40));
        assert_eq!(img.get(0, 0, 0), 30.0 / 255.0);
        cfg.cache_size = 10;
        let img = cfg.load(0).unwrap().train.image(0).unwrap();
        assert_eq!((img.height, img.width), (10, 20));
    }
}
