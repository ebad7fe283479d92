//! Image-text manifests: which image goes with which caption, for CLIP-style training.
//!
//! Two formats, told apart by the file's extension:
//! - JSON lines (`.jsonl`, `.json`): one object per line, `{"image": "cats/1.png", "caption":
//!   "a cat on a mat"}`, or `"captions": [..]` for several at once;
//! - CSV (`.csv`): a header naming the columns `image` and `caption`, one pair per row.
//!
//! Image paths are relative to the manifest's folder unless absolute. An image named on several
//! lines collects all their captions, in file order; images keep the order of their first line.

use crate::dataset::ImageSet;
use crate::decode::Decode;
use crate::folder::CorruptImages;
use crate::stream::{FileStore, Store, Stream};
use selfsup_core::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One image and its captions, as read from the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The image file, resolved against the manifest's folder.
    pub image: PathBuf,
    /// Its captions (at least one, none empty).
    pub captions: Vec<String>,
}

/// Reads a manifest's entries without opening the images, naming the file and line (or row) of
/// anything wrong: an unknown extension, a missing field, an empty caption.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(path, &text)
}

/// [`read`] on a manifest's text: `path` gives the format (its extension), the folder image
/// paths are resolved against, and the name errors report.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let pairs = match ext.as_deref() {
        Some("jsonl" | "json") => json_lines(path, text)?,
        Some("csv") => csv_rows(path, text)?,
        _ => {
            return Err(Error::format(
                path,
                "an image-text manifest ends in .jsonl (JSON lines) or .csv",
            ));
        }
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut at: HashMap<PathBuf, usize> = HashMap::new();
    for (where_, image, caption) in pairs {
        if caption.trim().is_empty() {
            return Err(Error::format(
                path,
                format!("{where_}: the caption of {image} is empty"),
            ));
        }
        if image.trim().is_empty() {
            return Err(Error::format(
                path,
                format!("{where_}: the image path is empty"),
            ));
        }
        let image = base.join(image);
        match at.get(&image) {
            Some(&i) => entries[i].captions.push(caption),
            None => {
                at.insert(image.clone(), entries.len());
                entries.push(Entry {
                    image,
                    captions: vec![caption],
                });
            }
        }
    }
    if entries.is_empty() {
        return Err(Error::format(
            path,
            "no image-caption pairs in the manifest",
        ));
    }
    Ok(entries)
}

/// `(where, image, caption)` for every caption of a JSON-lines manifest.
fn json_lines(path: &Path, text: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("line {}", i + 1);
        let bad = |msg: String| Error::format(path, format!("{where_}: {msg}"));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let image = v
            .get("image")
            .and_then(|x| x.as_str())
            .ok_or_else(|| bad("no \"image\" string".into()))?;
        let captions: Vec<String> = match (v.get("caption"), v.get("captions")) {
            (Some(c), None) => vec![
                c.as_str()
                    .ok_or_else(|| bad("\"caption\" is not a string".into()))?
                    .to_string(),
            ],
            (None, Some(cs)) => cs
                .as_array()
                .ok_or_else(|| bad("\"captions\" is not a list".into()))?
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("\"captions\" holds something not a string".into()))
                })
                .collect::<Result<_>>()?,
            (Some(_), Some(_)) => return Err(bad("both \"caption\" and \"captions\"".into())),
            (None, None) => return Err(bad("no \"caption\" or \"captions\"".into())),
        };
        if captions.is_empty() {
            return Err(bad(format!("the captions of {image} are an empty list")));
        }
        out.extend(
            captions
                .into_iter()
                .map(|c| (where_.clone(), image.to_string(), c)),
        );
    }
    Ok(out)
}

/// `(where, image, caption)` for every row of a CSV manifest with `image` and `caption` columns.
fn csv_rows(path: &Path, text: &str) -> Result<Vec<(String, String, String)>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| Error::format(path, format!("header: {e}")))?
        .clone();
    let column = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "the header has no `{name}` column (it reads {:?})",
                    header.iter().collect::<Vec<_>>()
                ),
            )
        })
    };
    let (image, caption) = (column("image")?, column("caption")?);
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        // Row 1 is the header.
        let where_ = format!("row {}", i + 2);
        let row = row.map_err(|e| Error::format(path, format!("{where_}: {e}")))?;
        out.push((where_, row[image].to_string(), row[caption].to_string()));
    }
    Ok(out)
}

/// Opens a manifest as a streamed set of its images with their captions (no labels): the
/// manifest is read and checked now, each image when a batch needs it (a missing or
/// undecodable one stops or is replaced as `policy` says, see [`crate::stream::Stream::image`]).
pub fn load(path: &Path, side: usize, decode: Decode, policy: CorruptImages) -> Result<ImageSet> {
    if side == 0 {
        return Err(Error::config("data.image_size", "must be at least 1"));
    }
    let entries = read(path)?;
    let (files, captions): (Vec<PathBuf>, Vec<Vec<String>>) =
        entries.into_iter().map(|e| (e.image, e.captions)).unzip();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(files));
    let mut set = ImageSet::streamed(Stream::new(store, decode, policy), side, None);
    set.captions = Some(captions);
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(dir: &Path, name: &str, value: u8) {
        image::GrayImage::from_pixel(4, 4, image::Luma([value]))
            .save(dir.join(name))
            .unwrap();
    }

    #[test]
    fn json_lines_and_csv_give_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "a.png", 10);
        png(dir.path(), "b.png", 200);
        let jsonl = dir.path().join("m.jsonl");
        std::fs::write(
            &jsonl,
            "{\"image\": \"a.png\", \"caption\": \"a dark square\"}\n\n{\"image\": \"b.png\", \"captions\": [\"a light square\", \"white\"]}\n{\"image\": \"a.png\", \"caption\": \"black, nearly\"}\n",
        )
        .unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "caption,image\na dark square,a.png\na light square,b.png\nwhite,b.png\n\"black, nearly\",a.png\n",
        )
        .unwrap();
        let want = vec![
            Entry {
                image: dir.path().join("a.png"),
                captions: vec!["a dark square".into(), "black, nearly".into()],
            },
            Entry {
                image: dir.path().join("b.png"),
                captions: vec!["a light square".into(), "white".into()],
            },
        ];
        assert_eq!(read(&jsonl).unwrap(), want);
        assert_eq!(read(&csv).unwrap(), want);
        let gray = Decode {
            channels: 1,
            ..Decode::default()
        };
        let set = load(&jsonl, 2, gray, CorruptImages::Error).unwrap();
        assert_eq!((set.len(), set.height, set.channels), (2, 2, 1));
        assert_eq!(set.image(1).unwrap().data, [200.0 / 255.0; 16]);
        assert_eq!(set.captions.as_ref().unwrap()[1], want[1].captions);
        // Captions follow their images through subsets.
        let sub = set.subset(&[1]);
        assert_eq!(sub.captions.unwrap(), [want[1].captions.clone()]);
        // A missing image among them, skipped: its captions go with it.
        let gone = dir.path().join("gone.jsonl");
        std::fs::write(
            &gone,
            "{\"image\": \"a.png\", \"caption\": \"dark\"}\n{\"image\": \"nope.png\", \"caption\": \"absent\"}\n{\"image\": \"b.png\", \"caption\": \"light\"}\n",
        )
        .unwrap();
        let set = load(&gone, 2, gray, CorruptImages::Skip).unwrap();
        assert_eq!(set.len(), 3);
        let stream = set.stream.as_ref().unwrap();
        assert_eq!(stream.replacement(1), None, "not found bad yet");
        assert_eq!(set.image(1).unwrap(), set.image(2).unwrap());
        // What goes with the missing image (its caption) follows its replacement.
        assert_eq!(stream.replacement(1), Some(2));
        assert_eq!(stream.replacement(0), None);
        let skipped = set.skipped();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].path.ends_with("nope.png"));
        let set = load(&gone, 2, gray, CorruptImages::Error).unwrap();
        let err = set.image(1).unwrap_err().to_string();
        assert!(err.contains("nope.png"), "{err}");
    }

    #[test]
    fn bad_manifests_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "a.png", 10);
        let check = |name: &str, text: &str, want: &[&str]| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let err = load(&p, 2, Decode::default(), CorruptImages::Error)
                .and_then(|s| s.image(0))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            for w in want {
                assert!(err.contains(w), "{err} should say {w}");
            }
        };
        check(
            "e.jsonl",
            "{\"image\": \"a.png\", \"caption\": \"  \"}\n",
            &["line 1", "empty"],
        );
        check(
            "f.jsonl",
            "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"a.png\"}\n",
            &["line 2", "caption"],
        );
        check(
            "g.jsonl",
            "{\"image\": \"a.png\", \"captions\": []}\n",
            &["line 1", "empty list"],
        );
        check("h.jsonl", "not json\n", &["line 1", "not JSON"]);
        // A missing image is found when it is read, and named.
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"image\": \"gone.png\", \"caption\": \"x\"}\n").unwrap();
        let set = load(&p, 2, Decode::default(), CorruptImages::Error).unwrap();
        let err = set.image(0).unwrap_err().to_string();
        assert!(err.contains("gone.png"), "{err}");
        check("c.csv", "image,text\na.png,x\n", &["caption", "column"]);
        check("d.csv", "image,caption\na.png,x\nb.png\n", &["row 3"]);
        check("e.csv", "image,caption\na.png,\n", &["row 2", "empty"]);
        check("m.txt", "a.png x\n", &[".jsonl", ".csv"]);
        check("z.jsonl", "\n", &["no image-caption pairs"]);
        let err = load(
            &dir.path().join("absent.jsonl"),
            2,
            Decode::default(),
            CorruptImages::Error,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("absent.jsonl"), "{err}");
    }
}
