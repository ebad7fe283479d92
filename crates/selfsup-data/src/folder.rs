//! Image folders: class subfolders (labelled) or a flat folder of images (unlabelled), at any
//! depth, listed without opening an image and streamed from there.

use crate::dataset::ImageSet;
use crate::decode::Decode;
use crate::stream::{FileStore, Store, Stream};
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// File extensions read as images (any case).
pub const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The entries of `dir`, sorted; an unreadable folder is an error naming it and saying why.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            ": this user may not read it (check its permissions)"
        } else {
            ""
        };
        Error::Invalid(format!("cannot list {}: {e}{hint}", dir.display()))
    })?;
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// What a folder holds: its image files (found recursively, sorted), their labels when the
/// folder has class subfolders, and how many other files were passed over.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every image file, class by class, each class's files in path order.
    pub files: Vec<PathBuf>,
    /// The class of each file (its top-level subfolder), when there are subfolders.
    pub labels: Option<Vec<usize>>,
    /// The subfolder names, by label.
    pub class_names: Vec<String>,
    /// Files that are not images (by extension), left out.
    pub ignored: usize,
}

/// Collects the image files under `dir` recursively into `out`, following symbolic links to
/// folders once each (`seen` holds the folders visited, so a link loop ends).
fn walk(
    dir: &Path,
    seen: &mut std::collections::HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    ignored: &mut usize,
) -> Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    for p in read_dir_sorted(dir)? {
        // `is_dir` follows links; a dangling link is neither and counts as ignored.
        if p.is_dir() {
            walk(&p, seen, out, ignored)?;
        } else if is_image(&p) {
            out.push(p);
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

/// Lists a folder without opening any image: with subfolders, each top-level subfolder is a
/// class (sorted by name) holding images at any depth; without, the images are unlabelled.
/// Image files beside class subfolders are left out (counted in `ignored`). A missing or
/// unreadable folder, or one without images, is an error naming it.
pub fn scan(dir: &Path) -> Result<Scan> {
    if !dir.exists() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a file, not a folder: folder:PATH takes a folder of images (class subfolders or flat)",
            dir.display()
        )));
    }
    let entries = read_dir_sorted(dir)?;
    let classes: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut scan = Scan::default();
    let mut seen = std::collections::HashSet::new();
    if classes.is_empty() {
        walk(dir, &mut seen, &mut scan.files, &mut scan.ignored)?;
    } else {
        seen.insert(std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?);
        scan.ignored += entries.iter().filter(|p| !p.is_dir()).count();
        let mut labels = Vec::new();
        for (label, c) in classes.iter().enumerate() {
            let before = scan.files.len();
            walk(c, &mut seen, &mut scan.files, &mut scan.ignored)?;
            labels.extend(std::iter::repeat_n(label, scan.files.len() - before));
        }
        scan.labels = Some(labels);
        scan.class_names = classes
            .iter()
            .map(|c| {
                c.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    }
    if scan.files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no images found (looked for {} files, directly or in class subfolders{})",
            dir.display(),
            EXTENSIONS.join(", "),
            if scan.ignored > 0 {
                format!("; {} other files passed over", scan.ignored)
            } else {
                String::new()
            }
        )));
    }
    Ok(scan)
}

/// Whether `dir` is split ImageNet-style: a `train` and a `val` subfolder.
pub fn has_splits(dir: &Path) -> bool {
    dir.join("train").is_dir() && dir.join("val").is_dir()
}

/// The streamed set of a scanned folder: nothing decoded yet.
pub fn streamed(scan: Scan, side: usize, decode: Decode, policy: CorruptImages) -> ImageSet {
    let store: Arc<dyn Store> = Arc::new(FileStore::new(scan.files));
    let mut set = ImageSet::streamed(Stream::new(store, decode, policy), side, scan.labels);
    set.class_names = scan.class_names;
    set
}

/// A scanned `val` folder's labels in the class order of `train` (the class names of the
/// training folder): a class `train` lacks is an error naming it.
pub fn align_classes(val: &mut Scan, train_classes: &[String], dir: &Path) -> Result<()> {
    let Some(labels) = &mut val.labels else {
        return Ok(());
    };
    let map: Vec<usize> = val
        .class_names
        .iter()
        .map(|n| {
            train_classes.iter().position(|t| t == n).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: class {n} is not among the training classes ({})",
                    dir.display(),
                    train_classes.join(", ")
                ))
            })
        })
        .collect::<Result<_>>()?;
    for l in labels.iter_mut() {
        *l = map[*l];
    }
    val.class_names = train_classes.to_vec();
    Ok(())
}

/// Decodes one image file's bytes, resized to `size`x`size` with `channels` channels (1 or 3):
/// the whole image squeezed to the square (only the fuzz target and tools use it; datasets
/// keep the originals).
pub fn decode_bytes(path: &Path, bytes: &[u8], size: usize, channels: usize) -> Result<Vec<u8>> {
    let img = crate::decode::original(
        path,
        bytes,
        &Decode {
            channels,
            ..Decode::default()
        },
    )?;
    let (h, w) = (img.height as f32, img.width as f32);
    let img = crate::augment::resize_region(&img, 0.0, 0.0, h, w, size, size);
    Ok(img
        .data
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(p: &Path, w: u32, h: u32, v: u8) {
        image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
            .save(p)
            .unwrap();
    }

    fn open(dir: &Path, channels: usize, policy: CorruptImages) -> Result<ImageSet> {
        let d = Decode {
            channels,
            ..Decode::default()
        };
        Ok(streamed(scan(dir)?, 4, d, policy))
    }

    #[test]
    fn class_subfolders_give_labels_and_originals_keep_their_size() {
        let dir = tempfile::tempdir().unwrap();
        for (c, v) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir_all(dir.path().join(c).join("deep")).unwrap();
            write_png(&dir.path().join(c).join("a.png"), 8, 6, v);
            write_png(&dir.path().join(c).join("deep").join("b.PNG"), 5, 5, v);
            std::fs::write(dir.path().join(c).join("notes.txt"), "x").unwrap();
        }
        let s = open(dir.path(), 3, CorruptImages::Error).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.labels, Some(vec![0, 0, 1, 1]));
        assert_eq!(s.class_names, vec!["cat", "dog"]);
        let img = s.image(2).unwrap();
        assert_eq!((img.channels, img.height, img.width), (3, 6, 8));
        assert_eq!(img.get(0, 0, 0), 200.0 / 255.0);
        assert_eq!(img.get(2, 0, 0), 55.0 / 255.0);
        assert_eq!(scan(dir.path()).unwrap().ignored, 2);
    }

    #[test]
    fn flat_folder_is_unlabelled_and_grayscale_works() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("x.png"), 3, 3, 100);
        let s = open(dir.path(), 1, CorruptImages::Error).unwrap();
        assert!(s.labels.is_none());
        assert_eq!(s.image(0).unwrap().data.len(), 9);
    }

    #[test]
    fn empty_missing_and_file_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1 other files"), "{err}");
        let err = scan(Path::new("/no/such/dir")).unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
        let err = scan(&dir.path().join("readme.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_end_and_unreadable_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        write_png(&a.join("x.png"), 3, 3, 1);
        std::os::unix::fs::symlink(dir.path(), a.join("loop")).unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!(s.files.len(), 1, "{:?}", s.files);
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("b");
        std::fs::create_dir(&locked).unwrap();
        write_png(&locked.join("y.png"), 3, 3, 1);
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; the message is only checked where the lock holds.
        if std::fs::read_dir(&locked).is_err() {
            let err = scan(dir.path()).unwrap_err().to_string();
            assert!(err.contains("permissions") && err.contains("/b"), "{err}");
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Bad files are found when read: an error naming the file, or replaced by the next image
    /// of the same class and listed.
    #[test]
    fn corrupt_images_stop_or_are_replaced_within_their_class() {
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
        let s = open(dir.path(), 1, CorruptImages::Error).unwrap();
        assert!(s.image(0).is_ok());
        let err = s.image(1).unwrap_err().to_string();
        assert!(
            err.contains("cat/b.png") && err.contains("data.corrupt_images"),
            "{err}"
        );
        let s = open(dir.path(), 1, CorruptImages::Skip).unwrap();
        let cat_c = s.image(2).unwrap();
        assert_eq!(s.image(1).unwrap(), cat_c, "replaced by the next cat");
        assert_eq!(s.image(4).unwrap(), s.image(5).unwrap());
        let names: Vec<String> = s
            .skipped()
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
    }

    #[test]
    fn val_classes_follow_the_training_order() {
        let mut val = Scan {
            files: vec![PathBuf::from("v/dog/1.png"), PathBuf::from("v/zebra/1.png")],
            labels: Some(vec![0, 1]),
            class_names: vec!["dog".into(), "zebra".into()],
            ignored: 0,
        };
        let train = ["cat".to_string(), "dog".to_string()];
        let err = align_classes(&mut val.clone(), &train, Path::new("v"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("zebra"), "{err}");
        val.class_names.pop();
        val.labels = Some(vec![0]);
        val.files.pop();
        align_classes(&mut val, &train, Path::new("v")).unwrap();
        assert_eq!(val.labels, Some(vec![1]));
    }
}
