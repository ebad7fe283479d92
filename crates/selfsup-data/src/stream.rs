//! Streamed image sets: the originals stay where they are (files, tar shards, a binary file)
//! and are read and decoded when a batch needs them, every epoch. Memory does not grow with
//! the dataset, and nothing is decoded before the first step.
//!
//! A [`Store`] reads one image by index; [`Stream`] is the part of an
//! [`ImageSet`](crate::ImageSet) that holds a store, the indices of the set's images in it,
//! how to decode them and what to do with those that do not decode.

use crate::decode::{Decode, Original};
use crate::folder::{CorruptImages, Skipped};
use rayon::prelude::*;
use selfsup_core::ViewGenerator;
use selfsup_core::{Error, Image, Image8, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What an error about an image that does not decode says to do.
const SKIP_HINT: &str = "Set data.corrupt_images = \"skip\" to leave such files out (the run lists them in skipped-images.txt)";

/// Where a streamed set's images live: read one at a time, by index, from any thread.
pub trait Store: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there is none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file (or `shard.tar/member`) of image `i`, as errors and `skipped-images.txt`
    /// name it.
    fn name(&self, i: usize) -> PathBuf;

    /// The encoded bytes of image `i`.
    fn bytes(&self, i: usize) -> Result<Vec<u8>>;

    /// Image `i` read, not yet decoded (its header checked). Default: [`Store::bytes`].
    fn open(&self, i: usize, decode: &Decode) -> Result<Original> {
        Original::encoded(self.name(i), self.bytes(i)?, decode)
    }

    /// Image `i` decoded at its own size. Default: [`Store::open`], decoded.
    fn load(&self, i: usize, decode: &Decode) -> Result<Image> {
        self.open(i, decode)?.decode(1, decode)
    }
}

/// Image files on disk, read when needed.
pub struct FileStore {
    files: Vec<PathBuf>,
}

impl FileStore {
    /// A store of `files`, in that order.
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self { files }
    }
}

impl Store for FileStore {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn name(&self, i: usize) -> PathBuf {
        self.files[i].clone()
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        let p = &self.files[i];
        std::fs::read(p).map_err(|e| Error::io(p, e))
    }
}

/// Decoded images held in memory as 8-bit pixels (`data.cache = "memory"`), each at its own
/// size (or its shorter side brought down to `data.cache_size`, the aspect ratio kept).
pub struct MemoryStore {
    names: Vec<PathBuf>,
    images: Vec<Image8>,
}

impl Store for MemoryStore {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn name(&self, i: usize) -> PathBuf {
        self.names[i].clone()
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        Ok(self.images[i].data.clone())
    }

    fn open(&self, i: usize, _decode: &Decode) -> Result<Original> {
        Ok(Original::Decoded(self.images[i].clone()))
    }
}

/// The images of a streamed set that did not decode, by store index.
#[derive(Default)]
pub struct BadFiles {
    found: Mutex<BTreeMap<usize, Skipped>>,
}

impl BadFiles {
    /// Whether store image `i` is known not to decode.
    pub fn contains(&self, i: usize) -> bool {
        self.lock().contains_key(&i)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Skipped>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one; says so on stderr for the first ten.
    fn record(&self, i: usize, skipped: Skipped) {
        let mut found = self.lock();
        if found.contains_key(&i) {
            return;
        }
        if found.len() < 10 {
            eprintln!(
                "selfsup: skipping {}: {} (data.corrupt_images = \"skip\"; the run lists such files in skipped-images.txt)",
                skipped.path.display(),
                skipped.reason
            );
        }
        found.insert(i, skipped);
    }

    /// Those found so far, in store order.
    pub fn list(&self) -> Vec<Skipped> {
        self.lock().values().cloned().collect()
    }
}

/// The streamed part of an [`ImageSet`](crate::ImageSet).
#[derive(Clone)]
pub struct Stream {
    /// Where the images are.
    pub store: Arc<dyn Store>,
    /// The store indices of the set's images, in the set's order.
    pub ids: Vec<usize>,
    /// How they are decoded.
    pub decode: Decode,
    /// What a file that does not decode does.
    pub corrupt: CorruptImages,
    /// Those found not to decode (shared by every subset of the same store).
    pub bad: Arc<BadFiles>,
    /// The set's images replaced so far, by position: what replaced each (positions of this
    /// set, so a subset starts its own).
    replaced: Arc<Mutex<BTreeMap<usize, usize>>>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("images", &self.ids.len())
            .field("decode", &self.decode)
            .field("corrupt", &self.corrupt)
            .finish()
    }
}

impl Stream {
    /// All of `store`'s images.
    pub fn new(store: Arc<dyn Store>, decode: Decode, corrupt: CorruptImages) -> Self {
        let ids = (0..store.len()).collect();
        Self {
            store,
            ids,
            decode,
            corrupt,
            bad: Arc::default(),
            replaced: Arc::default(),
        }
    }

    /// The position of the image that stands in for the set's image `i`, when `i` did not
    /// decode and was replaced (`corrupt_images = "skip"`): what goes with an image (a
    /// caption) follows the replacement. `None` while `i` has not been found bad.
    pub fn replacement(&self, i: usize) -> Option<usize> {
        self.replaced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
            .copied()
    }

    /// The set's image `i` at its own size.
    ///
    /// One that does not decode stops with an error naming it (`corrupt_images = "error"`), or
    /// is recorded and replaced by the next image of the set that decodes and, when `labels`
    /// are given, has the same label (`"skip"`): batches stay full and labels stay true, and
    /// the replacement is the same in every run, so a resumed run sees the same batches.
    pub fn image(&self, i: usize, labels: Option<&[usize]>) -> Result<Image> {
        let d = self.decode;
        self.with_original(i, labels, &mut |o| o.decode(1, &d))
    }

    /// The views of the set's image `i` by `views` ([`ViewGenerator::views_of`]: a JPEG is
    /// decoded at the scale its crops need), drawn from `rng()`; a file that does not decode
    /// is handled as [`Stream::image`] says, its replacement's views drawn from a fresh
    /// `rng()`.
    pub fn views(
        &self,
        i: usize,
        labels: Option<&[usize]>,
        views: &dyn ViewGenerator,
        rng: &dyn Fn() -> rand_chacha::ChaCha8Rng,
    ) -> Result<Vec<Image>> {
        let d = self.decode;
        self.with_original(i, labels, &mut |o| {
            let mut r = rng();
            views.views_of(o.dims(), &mut |k| o.decode8(k, &d), &mut r)
        })
    }

    /// `f` on image `i` as read; on failure, the policy of [`Stream::image`].
    fn with_original<T>(
        &self,
        i: usize,
        labels: Option<&[usize]>,
        f: &mut dyn FnMut(&Original) -> Result<T>,
    ) -> Result<T> {
        let first = match self.attempt(self.ids[i], f) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if self.corrupt == CorruptImages::Error {
            return Err(Error::Invalid(format!("{first}. {SKIP_HINT}")));
        }
        let n = self.ids.len();
        let want = labels.map(|l| l[i]);
        for step in 1..n {
            let j = (i + step) % n;
            if want.is_some_and(|w| labels.map(|l| l[j]) != Some(w)) {
                continue;
            }
            if self.bad.contains(self.ids[j]) {
                continue;
            }
            if let Ok(v) = self.attempt(self.ids[j], f) {
                self.replaced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i, j);
                return Ok(v);
            }
        }
        Err(Error::Invalid(format!(
            "{first}; and no other image{} of the set decodes",
            if want.is_some() { " of its class" } else { "" }
        )))
    }

    fn attempt<T>(&self, id: usize, f: &mut dyn FnMut(&Original) -> Result<T>) -> Result<T> {
        if self.bad.contains(id) {
            return Err(Error::Invalid(format!(
                "{} does not decode",
                self.store.name(id).display()
            )));
        }
        self.store
            .open(id, &self.decode)
            .and_then(|o| f(&o))
            .inspect_err(|e| {
                if self.corrupt == CorruptImages::Skip {
                    self.bad.record(
                        id,
                        Skipped {
                            path: self.store.name(id),
                            reason: e.to_string(),
                        },
                    );
                }
            })
    }

    /// The images at `indices` of this set.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            ids: indices.iter().map(|&i| self.ids[i]).collect(),
            replaced: Arc::default(),
            ..self.clone()
        }
    }

    /// Decodes every image into memory (`data.cache = "memory"`), in parallel: 8-bit pixels at
    /// their own size, or with the shorter side brought down to `side` (0: keep) with the
    /// aspect ratio kept. Files that do not decode stop or are left out as the policy says;
    /// returns the kept positions of the set and those left out.
    pub fn cache(&self, side: usize) -> Result<(Self, Vec<usize>, Vec<Skipped>)> {
        let decoded: Vec<Result<Image>> = self
            .ids
            .par_iter()
            .map(|&id| {
                let img = self.store.load(id, &self.decode)?;
                Ok(shrink_shorter_side(img, side))
            })
            .collect();
        let (mut names, mut images, mut kept, mut skipped) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (pos, (r, &id)) in decoded.into_iter().zip(&self.ids).enumerate() {
            match r {
                Ok(img) => {
                    kept.push(pos);
                    names.push(self.store.name(id));
                    let (c, hw) = (img.channels, img.height * img.width);
                    let px = (0..hw * c)
                        .map(|i| {
                            let v = img.data[(i % c) * hw + i / c];
                            (v * 255.0).round().clamp(0.0, 255.0) as u8
                        })
                        .collect();
                    images.push(Image8::new(c, img.height, img.width, px));
                }
                Err(e) => skipped.push(Skipped {
                    path: self.store.name(id),
                    reason: e.to_string(),
                }),
            }
        }
        if let Some(first) = skipped.first() {
            let many = format!(
                "{} of {} images cannot be decoded, the first: {}",
                skipped.len(),
                self.ids.len(),
                first.reason
            );
            if self.corrupt == CorruptImages::Error {
                return Err(Error::format(&first.path, format!("{many}. {SKIP_HINT}")));
            }
            if kept.is_empty() {
                return Err(Error::format(
                    &first.path,
                    format!("{many}: nothing left to train on"),
                ));
            }
        }
        let store: Arc<dyn Store> = Arc::new(MemoryStore { names, images });
        Ok((Stream::new(store, self.decode, self.corrupt), kept, skipped))
    }
}

/// `img` with its shorter side brought down to `side` (antialiased), or as it is when `side`
/// is 0 or the image is no larger.
pub fn shrink_shorter_side(img: Image, side: usize) -> Image {
    let short = img.height.min(img.width);
    if side == 0 || short <= side {
        return img;
    }
    let f = side as f64 / short as f64;
    let (h, w) = (
        ((img.height as f64 * f).round() as usize).max(1),
        ((img.width as f64 * f).round() as usize).max(1),
    );
    let (ih, iw) = (img.height as f32, img.width as f32);
    crate::augment::resize_region(&img, 0.0, 0.0, ih, iw, h, w)
}
