//! Image folders: class subfolders (labelled) or a flat folder of images (unlabelled).

use crate::dataset::ImageSet;
use rayon::prelude::*;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What loading does with an image file that cannot be read or decoded (`data.corrupt_images`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CorruptImages {
    /// Stop with an error naming the first such file and how many there are.
    #[default]
    Error,
    /// Leave them out; the run lists them in `skipped-images.txt` and says how many.
    Skip,
}

/// An image file left out, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// What reading or decoding it said.
    pub reason: String,
}

/// Decodes `paths` in parallel, resized to `size` square with `channels` channels: the
/// indices of those that decoded with their pixels concatenated, and the files left out.
/// With [`CorruptImages::Error`], any undecodable file is an error naming the first and
/// counting them all; with `Skip`, only "none decodes" is.
pub fn decode_all(
    paths: &[&Path],
    size: usize,
    channels: usize,
    policy: CorruptImages,
) -> Result<(Vec<usize>, Vec<u8>, Vec<Skipped>)> {
    let results: Vec<Result<Vec<u8>>> = paths
        .par_iter()
        .map(|p| decode(p, size, channels))
        .collect();
    let (mut kept, mut pixels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (r, p)) in results.into_iter().zip(paths).enumerate() {
        match r {
            Ok(px) => {
                kept.push(i);
                pixels.extend_from_slice(&px);
            }
            Err(e) => skipped.push(Skipped {
                path: p.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }
    if let Some(first) = skipped.first() {
        let many = format!(
            "{} of {} images cannot be decoded, the first: {}",
            skipped.len(),
            paths.len(),
            first.reason
        );
        if policy == CorruptImages::Error {
            return Err(Error::format(
                &first.path,
                format!(
                    "{many}. Set data.corrupt_images = \"skip\" to leave such files out (the run lists them in skipped-images.txt)"
                ),
            ));
        }
        if kept.is_empty() {
            return Err(Error::format(
                &first.path,
                format!("{many}: nothing left to train on"),
            ));
        }
    }
    Ok((kept, pixels, skipped))
}

const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Decodes one image file at its own size into an [`selfsup_core::Image`] in `[0, 1]` with `channels`
/// channels (1 or 3): what an on-the-fly pipeline (random resized crop first) starts from.
pub fn decode_full(path: &Path, channels: usize) -> Result<selfsup_core::Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hw = w * h;
    let data: Vec<f32> = if channels == 1 {
        img.to_luma8()
            .into_raw()
            .into_iter()
            .map(|b| b as f32 / 255.0)
            .collect()
    } else {
        let rgb = img.to_rgb8().into_raw();
        let mut out = vec![0f32; 3 * hw];
        for (p, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * hw + p] = px[c] as f32 / 255.0;
            }
        }
        out
    };
    let ch = if channels == 1 { 1 } else { 3 };
    Ok(selfsup_core::Image::new(ch, h, w, data))
}

/// Decodes one image file, resized to `size`x`size` with `channels` channels (1 or 3).
pub fn decode(path: &Path, size: usize, channels: usize) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, &bytes, size, channels)
}

/// [`decode`] on a file's bytes (`path` names it in errors): the format is guessed from the
/// bytes, not the name.
pub fn decode_bytes(path: &Path, bytes: &[u8], size: usize, channels: usize) -> Result<Vec<u8>> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let img = img.resize_exact(
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    let hw = size * size;
    Ok(if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        let rgb = img.to_rgb8().into_raw();
        let mut out = vec![0u8; 3 * hw];
        for p in 0..hw {
            for c in 0..3 {
                out[c * hw + p] = rgb[p * 3 + c];
            }
        }
        out
    })
}

/// Loads a folder: with subfolders, each subfolder is a class (sorted by name); without, the
/// images are unlabelled. Images are resized to `size` pixels square; files that do not decode
/// are an error or left out (returned) as `policy` says.
pub fn load(
    dir: &Path,
    size: usize,
    channels: usize,
    policy: CorruptImages,
) -> Result<(ImageSet, Vec<Skipped>)> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    if size == 0 {
        return Err(Error::config("data.image_size", "must be at least 1"));
    }
    let entries = read_dir_sorted(dir)?;
    let classes: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut files: Vec<(PathBuf, Option<usize>)> = Vec::new();
    if classes.is_empty() {
        files.extend(
            entries
                .into_iter()
                .filter(|p| is_image(p))
                .map(|p| (p, None)),
        );
    } else {
        for (label, c) in classes.iter().enumerate() {
            for p in read_dir_sorted(c)? {
                if is_image(&p) {
                    files.push((p, Some(label)));
                }
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no images found (looked for {} files, directly or in class subfolders)",
            dir.display(),
            EXTENSIONS.join(", ")
        )));
    }
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    let (kept, pixels, skipped) = decode_all(&paths, size, channels, policy)?;
    let labelled = !classes.is_empty();
    let set = ImageSet {
        channels,
        height: size,
        width: size,
        pixels,
        labels: labelled.then(|| kept.iter().map(|&i| files[i].1.unwrap_or(0)).collect()),
        captions: None,
        class_names: classes
            .iter()
            .map(|c| {
                c.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
    };
    Ok((set, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(p: &Path, w: u32, h: u32, v: u8) {
        image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
            .save(p)
            .unwrap();
    }

    #[test]
    fn class_subfolders_give_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (c, v) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            write_png(&dir.path().join(c).join("a.png"), 8, 6, v);
            write_png(&dir.path().join(c).join("b.png"), 5, 5, v);
        }
        let (s, _) = load(dir.path(), 4, 3, CorruptImages::Error).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.labels, Some(vec![0, 0, 1, 1]));
        assert_eq!(s.class_names, vec!["cat", "dog"]);
        assert_eq!(s.bytes(3)[0], 200);
        assert_eq!(s.bytes(3)[2 * 16], 55);
    }

    #[test]
    fn flat_folder_is_unlabelled_and_grayscale_works() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("x.png"), 3, 3, 100);
        let (s, _) = load(dir.path(), 3, 1, CorruptImages::Error).unwrap();
        assert!(s.labels.is_none());
        assert_eq!(s.pixels.len(), 9);
    }

    #[test]
    fn corrupt_image_and_empty_folder_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), 4, 3, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no images"), "{err}");
        std::fs::write(
            dir.path().join("broken.png"),
            b"\x89PNG\r\n\x1a\nnot really",
        )
        .unwrap();
        let err = load(dir.path(), 4, 3, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.png"), "{err}");
        // Skipping leaves nothing here: still an error.
        let err = load(dir.path(), 4, 3, CorruptImages::Skip)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing left"), "{err}");
        let err = load(Path::new("/no/such/dir"), 4, 3, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
    }

    /// Two bad files among good ones in class folders: an error counting them, or left out
    /// (labels of the rest kept in step) and listed.
    #[test]
    fn corrupt_images_are_counted_or_skipped_with_their_labels_in_step() {
        let dir = tempfile::tempdir().unwrap();
        for (c, v) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            write_png(&dir.path().join(c).join("a.png"), 4, 4, v);
            write_png(&dir.path().join(c).join("c.png"), 4, 4, v);
        }
        std::fs::write(dir.path().join("cat/b.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        // A real PNG cut short.
        write_png(&dir.path().join("dog/b.png"), 16, 16, 7);
        let full = std::fs::read(dir.path().join("dog/b.png")).unwrap();
        std::fs::write(dir.path().join("dog/b.png"), &full[..full.len() / 2]).unwrap();
        let err = load(dir.path(), 4, 1, CorruptImages::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 of 6 images") && err.contains("cat/b.png"),
            "{err}"
        );
        assert!(err.contains("data.corrupt_images"), "{err}");
        let (s, skipped) = load(dir.path(), 4, 1, CorruptImages::Skip).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.labels, Some(vec![0, 0, 1, 1]));
        let names: Vec<String> = skipped
            .iter()
            .map(|k| {
                k.path
                    .strip_prefix(dir.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["cat/b.png", "dog/b.png"]);
        assert!(skipped.iter().all(|k| k.reason.contains("b.png")));
    }

    #[test]
    fn decode_full_keeps_size_and_channel_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let mut img = image::RgbImage::new(3, 2);
        img.put_pixel(2, 1, image::Rgb([255, 0, 51]));
        img.save(&p).unwrap();
        let x = decode_full(&p, 3).unwrap();
        assert_eq!((x.channels, x.height, x.width), (3, 2, 3));
        assert_eq!(x.get(0, 1, 2), 1.0);
        assert_eq!(x.get(1, 1, 2), 0.0);
        assert!((x.get(2, 1, 2) - 0.2).abs() < 1e-6);
        assert_eq!(decode_full(&p, 1).unwrap().channels, 1);
        std::fs::write(&p, b"garbage").unwrap();
        let e = decode_full(&p, 3).unwrap_err().to_string();
        assert!(e.contains("a.png"), "{e}");
    }
}
