//! Batches of views built in parallel (rayon) and handed to a device as tensors.

use crate::augment::Pipeline;
use crate::dataset::ImageSet;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use selfsup_core::seed::{self, STREAM_AUGMENT, STREAM_CAPTION, STREAM_SHUFFLE};
use selfsup_core::{Augmentation, BatchSource, Error, Image, Result, ViewGenerator};
use selfsup_text::Encoded;
use std::sync::{Arc, Mutex};

/// Stacks same-shaped images into a `[N, C, H, W]` tensor on `device`.
pub fn stack(images: &[Image], device: &Device) -> Tensor<4> {
    stack_rows(images, 0, images.len(), device)
}

/// `images` as rows `first..` of a `[rows, C, H, W]` batch whose other rows are zeros.
fn stack_rows(images: &[Image], first: usize, rows: usize, device: &Device) -> Tensor<4> {
    let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
    let mut data = vec![0.0; first * c * h * w];
    data.reserve(rows * c * h * w - data.len());
    for img in images {
        debug_assert_eq!((img.channels, img.height, img.width), (c, h, w));
        data.extend_from_slice(&img.data);
    }
    data.resize(rows * c * h * w, 0.0);
    Tensor::from_data(TensorData::new(data, [rows, c, h, w]), device)
}

/// The order of the training images in `epoch`: a fresh shuffle per epoch from the seed.
pub fn epoch_order(len: usize, seed_value: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut seed::rng(seed_value, STREAM_SHUFFLE, epoch as u64, 0));
    idx
}

/// Serves batches of augmented views: batch `i` of epoch `e` holds, for each view index, a
/// `[B, C, H, W]` tensor. Each image's views are drawn from a generator seeded by
/// `(seed, epoch, image)`, so batches do not depend on thread count and a resumed run sees
/// exactly the batches it would have seen. The last partial batch is dropped.
pub struct ViewLoader {
    data: Arc<ImageSet>,
    views: Arc<dyn ViewGenerator>,
    batch_size: usize,
    seed: u64,
    device: Device,
    /// The threads that read, decode and augment (`data.workers`); rayon's global pool when
    /// `None`.
    pool: Option<Arc<rayon::ThreadPool>>,
    /// The shuffle of the epoch last asked for, so each step does not reshuffle the dataset.
    order: Mutex<Option<(usize, Arc<Vec<usize>>)>>,
    /// `(rank, ranks)`: only that part of each batch is built (see [`ViewLoader::with_part`]).
    part: Option<(usize, usize)>,
}

impl ViewLoader {
    /// A loader over `data` producing `views` of each image on `device`.
    pub fn new(
        data: Arc<ImageSet>,
        views: Arc<dyn ViewGenerator>,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> Self {
        Self {
            data,
            views,
            batch_size,
            seed,
            device,
            pool: None,
            order: Mutex::new(None),
            part: None,
        }
    }

    /// Builds only part `rank` of `ranks` equal consecutive parts of each batch's rows and
    /// leaves the other rows zeros: a rank of a distributed run trains on its own rows only
    /// (`selfsup_core::distributed`), so it need not decode and augment the others'. Batch
    /// shapes, the image order and each image's views stay those of the whole batch.
    pub fn with_part(mut self, rank: usize, ranks: usize) -> Self {
        self.part = (ranks > 1).then_some((rank, ranks));
        self
    }

    /// Builds batches on a pool of its own of `workers` threads (`data.workers`) instead of
    /// rayon's global pool, which the backend's kernels may use.
    pub fn with_workers(mut self, workers: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("selfsup-data-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {workers} data workers: {e}")))?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// Runs `f` on the loader's pool.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Indices into the dataset of the images in batch `index` of `epoch`.
    pub fn batch_ids(&self, epoch: usize, index: usize) -> Vec<usize> {
        let order = self.order(epoch);
        order[index * self.batch_size..(index + 1) * self.batch_size].to_vec()
    }

    fn order(&self, epoch: usize) -> Arc<Vec<usize>> {
        let mut cached = self.order.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some((e, o)) if *e == epoch => o.clone(),
            _ => {
                let o = Arc::new(epoch_order(self.data.len(), self.seed, epoch));
                *cached = Some((epoch, o.clone()));
                o
            }
        }
    }

    /// The views of one image at `epoch`, exactly as the training batches draw them.
    /// A streamed image is decoded at the scale its crops need
    /// ([`ViewGenerator::views_of`]).
    pub fn image_views(&self, epoch: usize, image: usize) -> Result<Vec<Image>> {
        let rng = || seed::rng(self.seed, STREAM_AUGMENT, epoch as u64, image as u64);
        if let Some(stream) = &self.data.stream {
            return stream.views(image, self.data.labels.as_deref(), &*self.views, &rng);
        }
        Ok(self.views.views(&self.data.image(image)?, &mut rng()))
    }
}

impl BatchSource for ViewLoader {
    type Batch = Vec<Tensor<4>>;

    fn steps_per_epoch(&self) -> usize {
        self.data.len() / self.batch_size
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<Self::Batch> {
        let ids = self.batch_ids(epoch, index);
        let n = ids.len();
        let (first, end) = match self.part {
            Some((rank, ranks)) => (rank * n / ranks, (rank + 1) * n / ranks),
            None => (0, n),
        };
        let per_image: Vec<Vec<Image>> = self.install(|| {
            ids[first..end]
                .par_iter()
                .map(|&i| self.image_views(epoch, i))
                .collect::<Result<_>>()
        })?;
        let nv = self.views.num_views();
        Ok((0..nv)
            .map(|v| {
                let imgs: Vec<Image> = per_image.iter().map(|vs| vs[v].clone()).collect();
                stack_rows(&imgs, first, n, &self.device)
            })
            .collect())
    }
}

/// One augmented view of each image with its label, for supervised fine-tuning.
pub struct LabelledBatch {
    /// `[B, C, H, W]` images.
    pub images: Tensor<4>,
    /// `[B]` class indices.
    pub labels: Tensor<1, Int>,
}

/// Serves [`LabelledBatch`]es: a [`ViewLoader`] of one view, plus the images' labels.
pub struct LabelledLoader {
    inner: ViewLoader,
    labels: Vec<usize>,
    device: Device,
}

impl LabelledLoader {
    /// A loader over the labelled `data` with one `pipeline` view per image.
    pub fn new(
        data: Arc<ImageSet>,
        pipeline: Pipeline,
        batch_size: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let labels = data.labels.clone().ok_or_else(|| {
            selfsup_core::Error::Invalid("supervised training needs a labelled dataset".into())
        })?;
        let views = crate::augment::MultiView::default().with(pipeline, 1);
        Ok(Self {
            inner: ViewLoader::new(data, Arc::new(views), batch_size, seed, device.clone()),
            labels,
            device,
        })
    }
}

impl BatchSource for LabelledLoader {
    type Batch = LabelledBatch;

    fn steps_per_epoch(&self) -> usize {
        self.inner.steps_per_epoch()
    }

    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<LabelledBatch> {
        let ids = self.inner.batch_ids(epoch, index);
        let images = self.inner.batch(epoch, index)?.remove(0);
        let labels: Vec<i64> = ids.iter().map(|&i| self.labels[i] as i64).collect();
        let n = labels.len();
        Ok(LabelledBatch {
            images,
            labels: Tensor::from_data(TensorData::new(labels, [n]), &self.device),
        })
    }
}

/// One augmented view of each image with one of its captions, tokenized, for CLIP-style
/// training.
#[derive(Clone, Debug)]
pub struct ImageTextBatch {
    /// `[B, C, H, W]` images.
    pub images: Tensor<4>,
    /// `[B, context]` token ids of the captions (see [`selfsup_text::Encoded`]).
    pub tokens: Tensor<2, Int>,
    /// `[B]` position of each caption's end-of-text token.
    pub eot: Tensor<1, Int>,
}

/// Tokenized captions as a `[B, context]` id tensor and a `[B]` end-position tensor.
pub fn caption_tensors(captions: &[&Encoded], device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let n = captions.len();
    let context = captions.first().map_or(0, |c| c.ids.len());
    let ids: Vec<i64> = captions
        .iter()
        .flat_map(|c| c.ids.iter().map(|&t| t as i64))
        .collect();
    let eot: Vec<i64> = captions.iter().map(|c| c.eot as i64).collect();
    (
        Tensor::from_data(TensorData::new(ids, [n, context]), device),
        Tensor::from_data(TensorData::new(eot, [n]), device),
    )
}

/// Serves images with their captions: the images as [`ViewLoader`] draws them (one view),
/// and for each image one of its tokenized captions, picked by `(seed, epoch, image)` so that
/// batches are reproducible like the views.
pub struct CaptionLoader {
    inner: ViewLoader,
    captions: Arc<Vec<Vec<Encoded>>>,
    seed: u64,
    device: Device,
}

impl CaptionLoader {
    /// A loader over `inner`'s images (its generator must give one view) and `captions`, the
    /// tokenized captions of each image of its data (at least one each, all of one length).
    pub fn new(inner: ViewLoader, captions: Arc<Vec<Vec<Encoded>>>, seed: u64) -> Result<Self> {
        if inner.views.num_views() != 1 {
            return Err(Error::Invalid(format!(
                "image-text batches take one view of each image, not {}",
                inner.views.num_views()
            )));
        }
        if captions.len() != inner.data.len() {
            return Err(Error::Invalid(format!(
                "{} images but captions for {}",
                inner.data.len(),
                captions.len()
            )));
        }
        if let Some(i) = captions.iter().position(Vec::is_empty) {
            return Err(Error::Invalid(format!("image {i} has no caption")));
        }
        let device = inner.device.clone();
        Ok(Self {
            inner,
            captions,
            seed,
            device,
        })
    }

    /// The caption of `image` at `epoch`.
    pub fn caption(&self, epoch: usize, image: usize) -> &Encoded {
        let all = &self.captions[image];
        let pick = if all.len() == 1 {
            0
        } else {
            seed::rng(self.seed, STREAM_CAPTION, epoch as u64, image as u64)
                .random_range(0..all.len())
        };
        &all[pick]
    }
}

impl BatchSource for CaptionLoader {
    type Batch = ImageTextBatch;

    fn steps_per_epoch(&self) -> usize {
        self.inner.steps_per_epoch()
    }

    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<ImageTextBatch> {
        let ids = self.inner.batch_ids(epoch, index);
        let images = self.inner.batch(epoch, index)?.remove(0);
        // A streamed image that did not decode was replaced: its caption goes with it.
        let stream = self.inner.data.stream.as_ref();
        let captions: Vec<&Encoded> = ids
            .iter()
            .map(|&i| {
                let shown = stream.and_then(|s| s.replacement(i)).unwrap_or(i);
                self.caption(epoch, shown)
            })
            .collect();
        let (tokens, eot) = caption_tensors(&captions, &self.device);
        Ok(ImageTextBatch {
            images,
            tokens,
            eot,
        })
    }
}

/// Images `range` of `data` through a fixed (evaluation) pipeline, as a tensor on `device`
/// (an error when a streamed image does not decode and `data.corrupt_images = "error"`).
pub fn eval_batch(
    data: &ImageSet,
    range: std::ops::Range<usize>,
    pipeline: &Pipeline,
    device: &Device,
) -> Result<Tensor<4>> {
    let imgs: Vec<Image> = range
        .into_par_iter()
        .map(|i| {
            // The eval pipeline is deterministic; the generator is never drawn from.
            let mut rng = seed::rng(0, 0, 0, i as u64);
            Ok(pipeline.apply(data.image(i)?, &mut rng))
        })
        .collect::<Result<_>>()?;
    Ok(stack(&imgs, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{AugmentConfig, MultiView};

    fn loader(seed: u64) -> ViewLoader {
        let data = crate::sample::load().unwrap().test.unwrap();
        let views = MultiView::default().with(
            AugmentConfig::simclr().pipeline(28, vec![0.3], vec![0.3]),
            2,
        );
        ViewLoader::new(Arc::new(data), Arc::new(views), 8, seed, Device::flex())
    }

    #[test]
    fn batches_are_seeded_and_shaped() {
        let (a, b) = (loader(1), loader(1));
        assert_eq!(a.steps_per_epoch(), 125);
        let x = a.batch(2, 3).unwrap();
        let y = b.batch(2, 3).unwrap();
        assert_eq!(x.len(), 2);
        assert_eq!(x[0].dims(), [8, 1, 28, 28]);
        assert_eq!(x[0].to_data(), y[0].to_data());
        let z = loader(2).batch(2, 3).unwrap();
        assert_ne!(x[0].to_data(), z[0].to_data());
    }

    /// A rank's part holds exactly its rows of the whole batch, zeros elsewhere.
    #[test]
    fn a_rank_builds_its_rows_of_the_whole_batch() {
        let whole = loader(1).batch(2, 3).unwrap();
        let rows = |t: &Tensor<4>, a: usize, b: usize| {
            t.clone()
                .narrow(0, a, b - a)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        for rank in 0..2 {
            let part = loader(1).with_part(rank, 2).batch(2, 3).unwrap();
            for (w, p) in whole.iter().zip(&part) {
                assert_eq!(p.dims(), w.dims());
                let (own, other) = if rank == 0 {
                    (0..4, 4..8)
                } else {
                    (4..8, 0..4)
                };
                assert_eq!(rows(p, own.start, own.end), rows(w, own.start, own.end));
                assert!(rows(p, other.start, other.end).iter().all(|&v| v == 0.0));
                assert!(rows(w, other.start, other.end).iter().any(|&v| v != 0.0));
            }
        }
    }

    #[test]
    fn labelled_batches_carry_the_right_labels() {
        let data = Arc::new(crate::sample::load().unwrap().test.unwrap());
        let pipe = AugmentConfig::simclr().pipeline(28, vec![0.3], vec![0.3]);
        let l = LabelledLoader::new(data.clone(), pipe, 16, 5, Device::flex()).unwrap();
        let b = l.batch(1, 2).unwrap();
        assert_eq!(b.images.dims(), [16, 1, 28, 28]);
        let got = b
            .labels
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let ids = l.inner.batch_ids(1, 2);
        let want: Vec<i64> = ids
            .iter()
            .map(|&i| data.labels.as_ref().unwrap()[i] as i64)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn caption_batches_pair_each_image_with_one_of_its_captions() {
        let templates: Vec<String> = ["a photo of a {}", "a {}, worn", "a plain {}"]
            .map(String::from)
            .to_vec();
        let data = crate::sample::load()
            .unwrap()
            .test
            .unwrap()
            .with_template_captions(&templates)
            .unwrap();
        let captions = data.captions.clone().unwrap();
        let tok =
            selfsup_text::Tokenizer::train(captions.iter().flatten().map(String::as_str), 600);
        let encoded: Vec<Vec<Encoded>> = captions
            .iter()
            .map(|cs| cs.iter().map(|c| tok.encode_padded(c, 12)).collect())
            .collect();
        let data = Arc::new(data);
        let one = || {
            MultiView::default().with(
                AugmentConfig::simclr().pipeline(28, vec![0.3], vec![0.3]),
                1,
            )
        };
        let make = |seed| {
            let views = ViewLoader::new(data.clone(), Arc::new(one()), 8, seed, Device::flex());
            CaptionLoader::new(views, Arc::new(encoded.clone()), seed).unwrap()
        };
        let l = make(4);
        let b = l.batch(0, 1).unwrap();
        assert_eq!(b.images.dims(), [8, 1, 28, 28]);
        assert_eq!(b.tokens.dims(), [8, 12]);
        let tokens = b
            .tokens
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let eot = b
            .eot
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let labels = data.labels.as_ref().unwrap();
        for (row, &i) in l.inner.batch_ids(0, 1).iter().enumerate() {
            let ids: Vec<u32> = tokens[row * 12..][..12].iter().map(|&t| t as u32).collect();
            assert_eq!(ids[eot[row] as usize], tok.end_id());
            // The decoded caption is one of this image's class's captions.
            let text = tok.decode(&ids);
            let class = &data.class_names[labels[i]].to_lowercase();
            assert!(text.contains(class.as_str()), "{text} for {class}");
        }
        // Seeded, and the pick varies over epochs.
        assert_eq!(make(4).caption(3, 7), l.caption(3, 7));
        let picks: std::collections::HashSet<Vec<u32>> =
            (0..20).map(|e| l.caption(e, 7).ids.clone()).collect();
        assert!(picks.len() > 1);
        // Two views per image or a caption count that is not the image count are refused.
        let two = MultiView::default().with(
            AugmentConfig::simclr().pipeline(28, vec![0.3], vec![0.3]),
            2,
        );
        let views = ViewLoader::new(data.clone(), Arc::new(two), 8, 1, Device::flex());
        assert!(CaptionLoader::new(views, Arc::new(encoded.clone()), 1).is_err());
        let views = ViewLoader::new(data.clone(), Arc::new(one()), 8, 1, Device::flex());
        assert!(CaptionLoader::new(views, Arc::new(encoded[..3].to_vec()), 1).is_err());
    }

    #[test]
    fn epochs_cover_every_image_once() {
        let mut o = epoch_order(100, 3, 1);
        assert_ne!(o, epoch_order(100, 3, 2));
        o.sort();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }
}
