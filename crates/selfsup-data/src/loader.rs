//! Batches of views built in parallel (rayon) and handed to a device as tensors.

use crate::augment::Pipeline;
use crate::dataset::ImageSet;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use selfsup_core::seed::{self, STREAM_AUGMENT, STREAM_SHUFFLE};
use selfsup_core::{Augmentation, BatchSource, Image, Result, ViewGenerator};
use std::sync::{Arc, Mutex};

/// Stacks same-shaped images into a `[N, C, H, W]` tensor on `device`.
pub fn stack(images: &[Image], device: &Device) -> Tensor<4> {
    let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
    let mut data = Vec::with_capacity(images.len() * c * h * w);
    for img in images {
        debug_assert_eq!((img.channels, img.height, img.width), (c, h, w));
        data.extend_from_slice(&img.data);
    }
    Tensor::from_data(TensorData::new(data, [images.len(), c, h, w]), device)
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
    /// The shuffle of the epoch last asked for, so each step does not reshuffle the dataset.
    order: Mutex<Option<(usize, Arc<Vec<usize>>)>>,
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
            order: Mutex::new(None),
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
    pub fn image_views(&self, epoch: usize, image: usize) -> Vec<Image> {
        let mut rng = seed::rng(self.seed, STREAM_AUGMENT, epoch as u64, image as u64);
        self.views.views(&self.data.image(image), &mut rng)
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
        let per_image: Vec<Vec<Image>> = ids
            .par_iter()
            .map(|&i| self.image_views(epoch, i))
            .collect();
        let nv = self.views.num_views();
        Ok((0..nv)
            .map(|v| {
                let imgs: Vec<Image> = per_image.iter().map(|vs| vs[v].clone()).collect();
                stack(&imgs, &self.device)
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

/// Images `range` of `data` through a fixed (evaluation) pipeline, as a tensor on `device`.
pub fn eval_batch(
    data: &ImageSet,
    range: std::ops::Range<usize>,
    pipeline: &Pipeline,
    device: &Device,
) -> Tensor<4> {
    let imgs: Vec<Image> = range
        .into_par_iter()
        .map(|i| {
            // The eval pipeline is deterministic; the generator is never drawn from.
            let mut rng = seed::rng(0, 0, 0, i as u64);
            pipeline.apply(data.image(i), &mut rng)
        })
        .collect();
    stack(&imgs, device)
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
    fn epochs_cover_every_image_once() {
        let mut o = epoch_order(100, 3, 1);
        assert_ne!(o, epoch_order(100, 3, 2));
        o.sort();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }
}
