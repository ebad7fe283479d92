//! The embedded sample: 6,000 training and 1,000 test images of Fashion-MNIST (600 and 100 per
//! class), shipped in the crate so the first run needs no download. Zalando's MIT notice is in
//! `sample/NOTICE`; `sample/make_sample.py` rebuilds the files from Debian's package.

use crate::dataset::Splits;
use crate::idx::{self, FASHION_CLASSES};
use selfsup_core::Result;
use std::path::Path;

const TRAIN_IMAGES: &[u8] = include_bytes!("../sample/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../sample/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../sample/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../sample/t10k-labels-idx1-ubyte.gz");

fn split(images: &[u8], labels: &[u8], name: &str) -> Result<crate::ImageSet> {
    let ip = Path::new("<embedded sample>").join(format!("{name}-images"));
    let lp = Path::new("<embedded sample>").join(format!("{name}-labels"));
    let (n, h, w, px) = idx::parse_images(&ip, &idx::decode_maybe_gz(&ip, images.to_vec())?)?;
    let l = idx::parse_labels(&lp, &idx::decode_maybe_gz(&lp, labels.to_vec())?)?;
    idx::from_parts(&ip, &lp, n, h, w, px, l, &FASHION_CLASSES)
}

/// The embedded Fashion-MNIST sample.
pub fn load() -> Result<Splits> {
    Ok(Splits {
        train: split(TRAIN_IMAGES, TRAIN_LABELS, "train")?,
        test: Some(split(TEST_IMAGES, TEST_LABELS, "test")?),
        probe: None,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_is_balanced_fashion_mnist() {
        let s = super::load().unwrap();
        assert_eq!(s.train.len(), 6000);
        let test = s.test.unwrap();
        assert_eq!(test.len(), 1000);
        assert_eq!((test.height, test.width, test.channels), (28, 28, 1));
        let mut counts = [0; 10];
        for &l in test.labels.as_ref().unwrap() {
            counts[l] += 1;
        }
        assert_eq!(counts, [100; 10]);
    }
}
