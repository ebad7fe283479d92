//! [`ImageSet`]: images with optional labels and captions, either held in memory as bytes of
//! one size (IDX, CIFAR, STL-10's labelled splits) or streamed from their originals (folders,
//! manifests, tar shards).

use crate::stream::Stream;
use rayon::prelude::*;
use selfsup_core::{Error, Image, Result};

/// A set of images with optional labels: same-sized 8-bit channel-major pixels in memory, or
/// a [`Stream`] of originals of any size decoded when asked for.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Height of every image in memory; for a streamed set, the side its originals are
    /// cropped to by default (`data.image_size`).
    pub height: usize,
    /// Width of every image in memory; for a streamed set, as `height`.
    pub width: usize,
    /// `len() * channels * height * width` bytes (empty for a streamed set).
    pub pixels: Vec<u8>,
    /// The originals, when the set is streamed.
    pub stream: Option<Stream>,
    /// One class index per image, when known.
    pub labels: Option<Vec<usize>>,
    /// Class names, indexed by label (may be empty when unknown).
    pub class_names: Vec<String>,
    /// Captions of each image (one or more), when the data comes with text: an image-text
    /// manifest, or [`ImageSet::with_template_captions`] for a labelled set.
    pub captions: Option<Vec<Vec<String>>>,
}

impl ImageSet {
    /// A streamed set over `stream`, served at `side` pixels by default.
    pub fn streamed(stream: Stream, side: usize, labels: Option<Vec<usize>>) -> Self {
        Self {
            channels: stream.decode.channels,
            height: side,
            width: side,
            pixels: Vec::new(),
            stream: Some(stream),
            labels,
            class_names: Vec::new(),
            captions: None,
        }
    }

    /// A set of no images.
    pub fn empty() -> Self {
        Self {
            channels: 1,
            height: 1,
            width: 1,
            pixels: Vec::new(),
            stream: None,
            labels: None,
            class_names: Vec::new(),
            captions: None,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        if let Some(s) = &self.stream {
            return s.ids.len();
        }
        let n = self.channels * self.height * self.width;
        self.pixels.len().checked_div(n).unwrap_or(0)
    }

    /// Whether the images are streamed from their originals (sizes vary) rather than held in
    /// memory at one size.
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// The streamed images found not to decode so far (`data.corrupt_images = "skip"`).
    pub fn skipped(&self) -> Vec<crate::folder::Skipped> {
        self.stream
            .as_ref()
            .map(|s| s.bad.list())
            .unwrap_or_default()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The raw bytes of image `i` of a set in memory (empty for a streamed set).
    pub fn bytes(&self, i: usize) -> &[u8] {
        if self.stream.is_some() {
            return &[];
        }
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image `i` as `[0, 1]` floats: from memory, or read and decoded from its original (an
    /// error naming the file when it does not decode and `data.corrupt_images = "error"`;
    /// see [`Stream::image`]).
    pub fn image(&self, i: usize) -> Result<Image> {
        match &self.stream {
            Some(s) => s.image(i, self.labels.as_deref()),
            None => Ok(Image::from_u8(
                self.channels,
                self.height,
                self.width,
                self.bytes(i),
            )),
        }
    }

    /// Number of classes (`max label + 1`, or the number of class names).
    pub fn num_classes(&self) -> usize {
        let from_labels = self
            .labels
            .as_ref()
            .and_then(|l| l.iter().max().map(|m| m + 1))
            .unwrap_or(0);
        from_labels.max(self.class_names.len())
    }

    /// The same images with `channels` channels: gray is repeated to RGB, RGB is reduced to
    /// luminance (ITU-R 601).
    pub fn with_channels(mut self, channels: usize) -> Result<Self> {
        if channels == self.channels {
            return Ok(self);
        }
        if let Some(s) = &mut self.stream {
            if ![1, 3].contains(&channels) {
                return Err(Error::config(
                    "data.channels",
                    format!("cannot decode images to {channels} channels; use 1 or 3"),
                ));
            }
            s.decode.channels = channels;
            self.channels = channels;
            return Ok(self);
        }
        let hw = self.height * self.width;
        let n = self.len();
        let mut out = Vec::with_capacity(n * channels * hw);
        match (self.channels, channels) {
            (1, 3) => {
                for i in 0..n {
                    let img = &self.pixels[i * hw..(i + 1) * hw];
                    for _ in 0..3 {
                        out.extend_from_slice(img);
                    }
                }
            }
            (3, 1) => {
                for i in 0..n {
                    let img = &self.pixels[i * 3 * hw..(i + 1) * 3 * hw];
                    for p in 0..hw {
                        let y = 0.299 * img[p] as f32
                            + 0.587 * img[hw + p] as f32
                            + 0.114 * img[2 * hw + p] as f32;
                        out.push(y.round().clamp(0.0, 255.0) as u8);
                    }
                }
            }
            (from, to) => {
                return Err(Error::config(
                    "data.channels",
                    format!("cannot convert {from}-channel images to {to} channels; use 1 or 3"),
                ));
            }
        }
        self.pixels = out;
        self.channels = channels;
        Ok(self)
    }

    /// The subset at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        if self.stream.is_none() {
            for &i in indices {
                pixels.extend_from_slice(self.bytes(i));
            }
        }
        Self {
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            stream: self.stream.as_ref().map(|s| s.subset(indices)),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
            captions: self
                .captions
                .as_ref()
                .map(|c| indices.iter().map(|&i| c[i].clone()).collect()),
        }
    }

    /// The same images, each captioned by every one of `templates` with its class name in
    /// place of `{}` (`"a photo of a {}."`): a labelled set made into image-text pairs. An
    /// error when the set has no labels or no class names, or a template has no `{}`.
    pub fn with_template_captions(mut self, templates: &[String]) -> Result<Self> {
        let labels = self.labels.as_ref().ok_or_else(|| {
            Error::Invalid(
                "captions from templates need labelled images (a labelled dataset or class subfolders)"
                    .into(),
            )
        })?;
        if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
            return Err(Error::Invalid(format!(
                "caption template {t:?} has no {{}} where the class name goes"
            )));
        }
        if templates.is_empty() {
            return Err(Error::Invalid("no caption templates".into()));
        }
        let names = &self.class_names;
        let per_class: Vec<Vec<String>> = names
            .iter()
            .map(|name| templates.iter().map(|t| t.replace("{}", name)).collect())
            .collect();
        let captions = labels
            .iter()
            .map(|&l| {
                per_class.get(l).cloned().ok_or_else(|| {
                    Error::Invalid(format!(
                        "label {l} has no class name ({} names) to put in the captions",
                        names.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.captions = Some(captions);
        Ok(self)
    }

    /// The first `n` images (all if fewer).
    pub fn take(&self, n: usize) -> Self {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// A class-balanced fraction of the labelled images, as in the semi-supervised protocol of
    /// SimCLR: from each class, `round(fraction * count)` images (at least one), drawn by
    /// `seed`, in their original order.
    pub fn label_fraction(&self, fraction: f64, seed_value: u64) -> Result<Self> {
        use rand::seq::SliceRandom;
        let labels = self
            .labels
            .as_ref()
            .ok_or_else(|| Error::Invalid("a label fraction needs a labelled dataset".into()))?;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::config(
                "finetune.fraction",
                format!("{fraction} must be in (0, 1]"),
            ));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l].push(i);
        }
        let mut keep = Vec::new();
        for (c, mut members) in by_class.into_iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            let n = ((members.len() as f64 * fraction).round() as usize).clamp(1, members.len());
            members.shuffle(&mut selfsup_core::seed::rng(
                seed_value,
                selfsup_core::seed::STREAM_SHUFFLE,
                u64::MAX - 1,
                c as u64,
            ));
            keep.extend_from_slice(&members[..n]);
        }
        keep.sort_unstable();
        Ok(self.subset(&keep))
    }

    /// Per-channel mean and standard deviation of the pixel values in `[0, 1]`. A streamed
    /// set measures [`STATS_SAMPLE`] images spread evenly over it (every pixel of each
    /// original), so the time it takes does not grow with the dataset.
    pub fn channel_stats(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.stream.is_some() {
            let n = self.len();
            let picks: Vec<usize> = (0..STATS_SAMPLE.min(n))
                .map(|k| k * n / STATS_SAMPLE.min(n))
                .collect();
            let sums: Vec<(Vec<f64>, Vec<f64>, usize)> = picks
                .par_iter()
                .map(|&i| {
                    let img = self.image(i)?;
                    let hw = img.height * img.width;
                    let (mut s, mut q) = (vec![0f64; img.channels], vec![0f64; img.channels]);
                    for c in 0..img.channels {
                        for &v in img.plane(c) {
                            s[c] += v as f64;
                            q[c] += (v as f64) * (v as f64);
                        }
                    }
                    Ok((s, q, hw))
                })
                .collect::<Result<_>>()?;
            let mut sum = vec![0f64; self.channels];
            let mut sq = vec![0f64; self.channels];
            let mut count = 0usize;
            for (s, q, hw) in sums {
                for c in 0..self.channels.min(s.len()) {
                    sum[c] += s[c];
                    sq[c] += q[c];
                }
                count += hw;
            }
            return Ok(mean_std(&sum, &sq, count.max(1) as f64));
        }
        let hw = self.height * self.width;
        let mut sum = vec![0f64; self.channels];
        let mut sq = vec![0f64; self.channels];
        for i in 0..self.len() {
            let img = self.bytes(i);
            for c in 0..self.channels {
                for &b in &img[c * hw..(c + 1) * hw] {
                    let v = b as f64 / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let count = (self.len() * hw).max(1) as f64;
        Ok(mean_std(&sum, &sq, count))
    }
}

/// Images a streamed set's normalization is measured on.
pub const STATS_SAMPLE: usize = 256;

fn mean_std(sum: &[f64], sq: &[f64], count: f64) -> (Vec<f32>, Vec<f32>) {
    let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, &m)| ((q / count - (m as f64).powi(2)).max(1e-12).sqrt() as f32).max(1e-3))
        .collect();
    (mean, std)
}

impl Splits {
    /// The images the probes fit on: [`Splits::probe`] when set, else the training images.
    pub fn probe(&self) -> &ImageSet {
        self.probe.as_ref().unwrap_or(&self.train)
    }
}

/// A training split and, when the source has one, a labelled test split.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Images to pretrain on.
    pub train: ImageSet,
    /// Held-out images for evaluation.
    pub test: Option<ImageSet>,
    /// The labelled images the probes (kNN, linear, the monitor) fit on, when they are not
    /// the pretraining images (STL-10 pretrains on unlabelled images as well).
    pub probe: Option<ImageSet>,
    /// Image files left out because they did not decode (`data.corrupt_images = "skip"`).
    pub skipped: Vec<crate::folder::Skipped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: Vec<usize>) -> ImageSet {
        ImageSet {
            channels: 1,
            height: 1,
            width: 1,
            pixels: (0..labels.len()).map(|i| i as u8).collect(),
            stream: None,
            labels: Some(labels),
            captions: None,
            class_names: Vec::new(),
        }
    }

    #[test]
    fn label_fraction_is_balanced_and_seeded() {
        // 100 of class 0, 30 of class 1, 2 of class 2.
        let mut l = vec![0; 100];
        l.extend(vec![1; 30]);
        l.extend(vec![2; 2]);
        let set = labelled(l);
        let a = set.label_fraction(0.1, 3).unwrap();
        let counts = |s: &ImageSet| {
            let mut c = [0; 3];
            for &x in s.labels.as_ref().unwrap() {
                c[x] += 1;
            }
            c
        };
        assert_eq!(counts(&a), [10, 3, 1]);
        assert_eq!(a.pixels, set.label_fraction(0.1, 3).unwrap().pixels);
        assert_ne!(a.pixels, set.label_fraction(0.1, 4).unwrap().pixels);
        // Each kept image keeps its own label (pixel i was image i).
        for (p, l) in a.pixels.iter().zip(a.labels.as_ref().unwrap()) {
            assert_eq!(set.labels.as_ref().unwrap()[*p as usize], *l);
        }
        assert_eq!(set.label_fraction(1.0, 0).unwrap().len(), 132);
        let e = set.label_fraction(0.0, 0).unwrap_err().to_string();
        assert!(e.contains("finetune.fraction"), "{e}");
    }

    #[test]
    fn template_captions_name_each_images_class() {
        let mut set = labelled(vec![1, 0, 1]);
        set.class_names = vec!["coat".into(), "bag".into()];
        let t = vec!["a photo of a {}.".to_string(), "a {}, worn.".to_string()];
        let c = set
            .clone()
            .with_template_captions(&t)
            .unwrap()
            .captions
            .unwrap();
        assert_eq!(c[0], ["a photo of a bag.", "a bag, worn."]);
        assert_eq!(c[1], ["a photo of a coat.", "a coat, worn."]);
        assert_eq!(c.len(), 3);
        let err = set
            .clone()
            .with_template_captions(&["no slot".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no slot"), "{err}");
        set.labels = None;
        assert!(set.with_template_captions(&t).is_err());
    }
}
