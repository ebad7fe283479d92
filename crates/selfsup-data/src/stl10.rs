//! STL-10's binary files (`stl10:PATH`, the folder of `stl10_binary.tar.gz` unpacked): 96x96
//! RGB, 5,000 labelled training images, 8,000 test images, 100,000 unlabelled ones. The
//! standard self-supervised protocol pretrains on the unlabelled and training images together
//! and fits the probes on the 5,000 labelled ones.
//!
//! Each `*_X.bin` holds images of 3 x 96 x 96 bytes, each channel stored column by column;
//! each `*_y.bin` one byte per image, the class from 1 to 10. The labelled splits are read
//! into memory (360 MB); the pretraining images are streamed from the files by offset.

use crate::dataset::{ImageSet, Splits};
use crate::decode::{Decode, Original};
use crate::folder::CorruptImages;
use crate::stream::{Store, Stream};
use selfsup_core::{Error, Image8, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Side of every image.
pub const SIDE: usize = 96;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// The class names, by label.
pub const CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

/// One image's bytes, column-major per channel, as channel-major rows.
fn transpose(record: &[u8], out: &mut [u8]) {
    for c in 0..3 {
        let plane = &record[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        let dst = &mut out[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        for x in 0..SIDE {
            for y in 0..SIDE {
                dst[y * SIDE + x] = plane[x * SIDE + y];
            }
        }
    }
}

fn image_count(path: &Path) -> Result<usize> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len() as usize;
    if len == 0 || !len.is_multiple_of(IMAGE_BYTES) {
        return Err(Error::format(
            path,
            format!(
                "{len} bytes is not a whole number of 96x96 RGB images ({IMAGE_BYTES} bytes each): truncated or not an STL-10 file"
            ),
        ));
    }
    Ok(len / IMAGE_BYTES)
}

/// A labelled split in memory.
fn labelled(dir: &Path, name: &str) -> Result<ImageSet> {
    let xp = dir.join(format!("{name}_X.bin"));
    let yp = dir.join(format!("{name}_y.bin"));
    let n = image_count(&xp)?;
    let raw = std::fs::read(&xp).map_err(|e| Error::io(&xp, e))?;
    let y = std::fs::read(&yp).map_err(|e| Error::io(&yp, e))?;
    if y.len() != n {
        return Err(Error::format(
            &yp,
            format!("{} labels for the {n} images of {}", y.len(), xp.display()),
        ));
    }
    let labels = y
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if (1..=10).contains(&l) {
                Ok(l as usize - 1)
            } else {
                Err(Error::format(
                    &yp,
                    format!("label {l} of image {i} is not a class from 1 to 10"),
                ))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut pixels = vec![0u8; raw.len()];
    for (src, dst) in raw
        .chunks_exact(IMAGE_BYTES)
        .zip(pixels.chunks_exact_mut(IMAGE_BYTES))
    {
        transpose(src, dst);
    }
    Ok(ImageSet {
        channels: 3,
        height: SIDE,
        width: SIDE,
        pixels,
        stream: None,
        labels: Some(labels),
        class_names: CLASSES.iter().map(|c| c.to_string()).collect(),
        captions: None,
    })
}

/// Images in STL-10 `*_X.bin` files, one after the other, read by offset.
pub struct BinStore {
    files: Vec<(PathBuf, usize)>,
}

impl BinStore {
    fn locate(&self, mut i: usize) -> (&Path, usize) {
        for (p, n) in &self.files {
            if i < *n {
                return (p, i);
            }
            i -= n;
        }
        panic!("image index past the end of the STL-10 files")
    }
}

impl Store for BinStore {
    fn len(&self) -> usize {
        self.files.iter().map(|(_, n)| n).sum()
    }

    fn name(&self, i: usize) -> PathBuf {
        let (p, k) = self.locate(i);
        p.join(format!("#{k}"))
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        let (p, k) = self.locate(i);
        let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        f.seek(SeekFrom::Start((k * IMAGE_BYTES) as u64))
            .map_err(|e| Error::io(p, e))?;
        let mut record = vec![0u8; IMAGE_BYTES];
        f.read_exact(&mut record).map_err(|e| Error::io(p, e))?;
        let mut out = vec![0u8; IMAGE_BYTES];
        transpose(&record, &mut out);
        Ok(out)
    }

    fn open(&self, i: usize, decode: &Decode) -> Result<Original> {
        let px = self.bytes(i)?;
        let hw = SIDE * SIDE;
        let rgb = (0..hw).map(|p| [px[p], px[hw + p], px[2 * hw + p]]);
        let img = if decode.channels == 1 {
            Image8::new(1, SIDE, SIDE, rgb.map(crate::decode::luma).collect())
        } else {
            Image8::new(3, SIDE, SIDE, rgb.flatten().collect())
        };
        Ok(Original::Decoded(img))
    }
}

/// The STL-10 splits: pretraining on the training and unlabelled images (streamed from the
/// files), the probes on the 5,000 labelled training images, the test on the 8,000 test
/// images. A folder without `unlabeled_X.bin` pretrains on the training images alone.
pub fn load_dir(dir: &Path, channels: usize, policy: CorruptImages) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such folder (stl10:PATH is the unpacked stl10_binary folder, with train_X.bin)",
            ),
        ));
    }
    let train = labelled(dir, "train")?;
    let test = labelled(dir, "test")?;
    let mut files = vec![(dir.join("train_X.bin"), train.len())];
    let unlabeled = dir.join("unlabeled_X.bin");
    if unlabeled.is_file() {
        files.push((unlabeled.clone(), image_count(&unlabeled)?));
    } else {
        eprintln!(
            "selfsup: {} has no unlabeled_X.bin: pretraining on the 5,000 labelled training images only",
            dir.display()
        );
    }
    let decode = Decode {
        channels,
        ..Decode::default()
    };
    let store: Arc<dyn Store> = Arc::new(BinStore { files });
    let pretrain = ImageSet::streamed(Stream::new(store, decode, policy), SIDE, None);
    Ok(Splits {
        train: pretrain,
        test: Some(test),
        probe: Some(train),
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a tiny STL-10 folder: image i has value i in channel 0 at column-major (x=1, y=0).
    fn write(dir: &Path, name: &str, n: usize, labels: bool) {
        let mut x = vec![0u8; n * IMAGE_BYTES];
        for i in 0..n {
            // Column 1, row 0 of channel 0: index x * 96 + y.
            x[i * IMAGE_BYTES + SIDE] = i as u8 + 1;
        }
        std::fs::write(dir.join(format!("{name}_X.bin")), x).unwrap();
        if labels {
            let y: Vec<u8> = (0..n).map(|i| (i % 10) as u8 + 1).collect();
            std::fs::write(dir.join(format!("{name}_y.bin")), y).unwrap();
        }
    }

    #[test]
    fn splits_labels_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train", 3, true);
        write(dir.path(), "test", 2, true);
        write(dir.path(), "unlabeled", 4, false);
        let s = load_dir(dir.path(), 3, CorruptImages::Error).unwrap();
        assert_eq!(s.train.len(), 7);
        assert!(s.train.labels.is_none());
        let probe = s.probe.as_ref().unwrap();
        assert_eq!(probe.labels, Some(vec![0, 1, 2]));
        assert_eq!(s.test.as_ref().unwrap().len(), 2);
        // Row 0, column 1 after the transpose.
        assert_eq!(probe.bytes(2)[1], 3);
        let u = s.train.image(5).unwrap();
        assert_eq!(u.get(0, 0, 1), 3.0 / 255.0, "unlabelled image 2");
        assert_eq!((u.height, u.width), (96, 96));
        std::fs::write(dir.path().join("test_y.bin"), [1u8, 11]).unwrap();
        let e = load_dir(dir.path(), 3, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test_y.bin") && e.contains("11"), "{e}");
        std::fs::write(dir.path().join("test_X.bin"), [0u8; 100]).unwrap();
        let e = load_dir(dir.path(), 3, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test_X.bin") && e.contains("truncated"), "{e}");
    }
}
