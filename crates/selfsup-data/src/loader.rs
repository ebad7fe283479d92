//! Batches of views built in parallel (rayon) and handed to a device as tensors.

use crate::augment::Pipeline;
use crate::dataset::ImageSet;
use burn::tensor::{Device, Tensor, TensorData};
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
        let order = {
            let mut cached = self.order.lock().unwrap_or_else(|e| e.into_inner());
            match cached.as_ref() {
                Some((e, o)) if *e == epoch => o.clone(),
                _ => {
                    let o = Arc::new(epoch_order(self.data.len(), self.seed, epoch));
                    *cached = Some((epoch, o.clone()));
                    o
                }
            }
        };
        let ids = &order[index * self.batch_size..(index + 1) * self.batch_size];
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
    fn epochs_cover_every_image_once() {
        let mut o = epoch_order(100, 3, 1);
        assert_ne!(o, epoch_order(100, 3, 2));
        o.sort();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }
}
