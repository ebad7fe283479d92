//! CIFAR-10 and CIFAR-100 binary batches.

use crate::dataset::{ImageSet, Splits};
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};

/// Class names of CIFAR-10, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const IMAGE: usize = 3 * 32 * 32;

/// Which CIFAR variant a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar {
    /// One label byte per record.
    Ten,
    /// A coarse and a fine label byte per record; the fine label is used.
    Hundred,
}

impl Cifar {
    /// The folder name in the archive, the training files and the test file.
    pub fn files(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Cifar::Ten => (
                "cifar-10-batches-bin",
                &[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
                "test_batch.bin",
            ),
            Cifar::Hundred => ("cifar-100-binary", &["train.bin"], "test.bin"),
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        }
    }
    fn classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred => 100,
        }
    }
}

/// Parses the records of one binary batch file, appending pixels and labels.
pub fn parse_batch(
    path: &Path,
    bytes: &[u8],
    kind: Cifar,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<()> {
    let rec = kind.label_bytes() + IMAGE;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(Error::format(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte CIFAR-{} records: truncated or not a CIFAR binary batch",
                bytes.len(),
                kind.classes()
            ),
        ));
    }
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[kind.label_bytes() - 1] as usize;
        if label >= kind.classes() {
            return Err(Error::format(
                path,
                format!(
                    "record {i} has label {label}, beyond the {} classes of CIFAR-{}",
                    kind.classes(),
                    kind.classes()
                ),
            ));
        }
        labels.push(label);
        pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok(())
}

fn load_files(files: &[PathBuf], kind: Cifar) -> Result<ImageSet> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        parse_batch(f, &bytes, kind, &mut pixels, &mut labels)?;
    }
    Ok(ImageSet {
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        stream: None,
        labels: Some(labels),
        captions: None,
        class_names: match kind {
            Cifar::Ten => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            Cifar::Hundred => Vec::new(),
        },
    })
}

/// Loads CIFAR from the folder of binary batches (or its parent, as unpacked from the archive).
pub fn load_dir(dir: &Path, kind: Cifar) -> Result<Splits> {
    let (sub, train, test) = kind.files();
    let base = if dir.join(sub).is_dir() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    };
    if !base.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    let train: Vec<PathBuf> = train.iter().map(|f| base.join(f)).collect();
    Ok(Splits {
        train: load_files(&train, kind)?,
        test: Some(load_files(&[base.join(test)], kind)?),
        probe: None,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ten_and_hundred() {
        let mut rec = vec![3u8];
        rec.extend((0..IMAGE).map(|i| (i % 251) as u8));
        let mut px = Vec::new();
        let mut l = Vec::new();
        parse_batch(
            Path::new("a.bin"),
            &[rec.clone(), rec.clone()].concat(),
            Cifar::Ten,
            &mut px,
            &mut l,
        )
        .unwrap();
        assert_eq!(l, vec![3, 3]);
        assert_eq!(&px[..IMAGE], &rec[1..]);
        let mut rec100 = vec![1u8, 77];
        rec100.extend(vec![9u8; IMAGE]);
        let (mut px, mut l) = (Vec::new(), Vec::new());
        parse_batch(Path::new("b.bin"), &rec100, Cifar::Hundred, &mut px, &mut l).unwrap();
        assert_eq!(l, vec![77]);
    }

    #[test]
    fn truncated_and_bad_label_are_named() {
        let (mut px, mut l) = (Vec::new(), Vec::new());
        let err = parse_batch(
            Path::new("t.bin"),
            &vec![0u8; IMAGE],
            Cifar::Ten,
            &mut px,
            &mut l,
        )
        .unwrap_err();
        assert!(err.to_string().contains("t.bin") && err.to_string().contains("truncated"));
        let mut rec = vec![12u8];
        rec.extend(vec![0u8; IMAGE]);
        let err = parse_batch(Path::new("t.bin"), &rec, Cifar::Ten, &mut px, &mut l).unwrap_err();
        assert!(err.to_string().contains("label 12"), "{err}");
    }

    #[test]
    fn loads_a_folder_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        let mut rec = vec![5u8];
        rec.extend(vec![1u8; IMAGE]);
        for f in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            std::fs::write(sub.join(f), &rec).unwrap();
        }
        let s = load_dir(dir.path(), Cifar::Ten).unwrap();
        assert_eq!(s.train.len(), 5);
        assert_eq!(s.test.unwrap().len(), 1);
        std::fs::remove_file(sub.join("test_batch.bin")).unwrap();
        let err = load_dir(dir.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin"), "{err}");
    }
}
