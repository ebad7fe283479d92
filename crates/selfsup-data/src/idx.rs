//! MNIST / Fashion-MNIST IDX files, gzipped or raw.

use crate::dataset::{ImageSet, Splits};
use selfsup_core::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Class names of Fashion-MNIST, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Bytes of a file, un-gzipped when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_maybe_gz(path, raw)
}

/// Un-gzips `raw` when it starts with the gzip magic.
pub fn decode_maybe_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX image file (magic 2051): `(count, height, width, pixels)`.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        return Err(Error::format(
            path,
            format!("truncated IDX header ({} bytes, need 16)", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2051 {
        return Err(Error::format(
            path,
            format!(
                "wrong magic number {magic} for an IDX image file (expected 2051); is this a label file?"
            ),
        ));
    }
    let (n, h, w) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    let need = n
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .ok_or_else(|| Error::format(path, "image dimensions overflow"))?;
    if bytes.len() - 16 < need {
        return Err(Error::format(
            path,
            format!(
                "truncated: header promises {n} images of {h}x{w} ({need} bytes) but {} follow",
                bytes.len() - 16
            ),
        ));
    }
    Ok((n, h, w, bytes[16..16 + need].to_vec()))
}

/// Parses an IDX label file (magic 2049).
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<usize>> {
    if bytes.len() < 8 {
        return Err(Error::format(
            path,
            format!("truncated IDX header ({} bytes, need 8)", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2049 {
        return Err(Error::format(
            path,
            format!("wrong magic number {magic} for an IDX label file (expected 2049)"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() - 8 < n {
        return Err(Error::format(
            path,
            format!(
                "truncated: header promises {n} labels but {} follow",
                bytes.len() - 8
            ),
        ));
    }
    Ok(bytes[8..8 + n].iter().map(|&b| b as usize).collect())
}

/// One split from an image file and a label file.
pub fn load_split(images: &Path, labels: &Path, class_names: &[&str]) -> Result<ImageSet> {
    let (n, h, w, pixels) = parse_images(images, &read_maybe_gz(images)?)?;
    let l = parse_labels(labels, &read_maybe_gz(labels)?)?;
    from_parts(images, labels, n, h, w, pixels, l, class_names)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn from_parts(
    images: &Path,
    labels: &Path,
    n: usize,
    h: usize,
    w: usize,
    pixels: Vec<u8>,
    l: Vec<usize>,
    class_names: &[&str],
) -> Result<ImageSet> {
    if l.len() != n {
        return Err(Error::format(
            labels,
            format!(
                "{} labels for {} images in {}",
                l.len(),
                n,
                images.display()
            ),
        ));
    }
    Ok(ImageSet {
        channels: 1,
        height: h,
        width: w,
        pixels,
        stream: None,
        labels: Some(l),
        captions: None,
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    // Some copies use dots: train-images.idx3-ubyte.
    let dotted = stem.replacen("-idx", ".idx", 1);
    for name in [format!("{dotted}.gz"), dotted] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::io(
        dir.join(format!("{stem}[.gz]")),
        std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
    ))
}

/// MNIST or Fashion-MNIST from a folder holding the four standard files (`.gz` or raw).
pub fn load_dir(dir: &Path, class_names: &[&str]) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    let train = load_split(
        &find(dir, "train-images-idx3-ubyte")?,
        &find(dir, "train-labels-idx1-ubyte")?,
        class_names,
    )?;
    let test = load_split(
        &find(dir, "t10k-images-idx3-ubyte")?,
        &find(dir, "t10k-labels-idx1-ubyte")?,
        class_names,
    )?;
    Ok(Splits {
        train,
        test: Some(test),
        probe: None,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, h: u32, w: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [2051u32, n, h, w] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&2049u32.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn parses_raw_and_gz_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..2 * 3 * 2).map(|x| x as u8).collect();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            gz(&idx_images(2, 3, 2, &px)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_labels(&[4, 7]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_images(1, 3, 2, &px[..6]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte.gz"),
            gz(&idx_labels(&[1])),
        )
        .unwrap();
        let s = load_dir(dir.path(), &[]).unwrap();
        assert_eq!(s.train.len(), 2);
        assert_eq!((s.train.height, s.train.width, s.train.channels), (3, 2, 1));
        assert_eq!(s.train.bytes(1), &px[6..12]);
        assert_eq!(s.train.labels, Some(vec![4, 7]));
        assert_eq!(s.test.unwrap().labels, Some(vec![1]));
    }

    #[test]
    fn truncated_and_wrong_magic_are_named() {
        let p = Path::new("x.idx");
        let err = parse_images(p, &idx_images(5, 28, 28, &[0; 100]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.idx") && err.contains("truncated"), "{err}");
        let err = parse_images(p, &idx_labels(&[1; 12]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
        let err = parse_labels(p, &[0, 0, 8]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_labels(p, &idx_labels(&[1, 2])[..9])
            .unwrap_err()
            .to_string();
        assert!(err.contains("promises 2"), "{err}");
    }

    #[test]
    fn missing_folder_and_file_are_named() {
        let err = load_dir(Path::new("/nonexistent/fm"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/fm"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = load_dir(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let err = decode_maybe_gz(Path::new("f.gz"), vec![0x1f, 0x8b, 1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("gzip"));
    }
}
