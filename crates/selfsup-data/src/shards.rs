//! WebDataset-style tar shards (`shards:PATH`): each sample is the members of one tar file
//! that share a key (the member's path up to the first dot of its file name): an image
//! (`KEY.jpg`, `.jpeg`, `.png`, `.webp`, `.bmp`) and, optionally, a class (`KEY.cls`, an
//! integer), a caption (`KEY.txt`) or both in `KEY.json` (`{"label": 3, "caption": "..."}`).
//!
//! `PATH` names one shard, a brace range (`data/train-{000..099}.tar`) or a glob
//! (`data/*.tar`). Opening reads the tar headers (seeking past the images) and the small
//! label members; images are read from their offsets when a batch needs them.

use crate::dataset::ImageSet;
use crate::decode::Decode;
use crate::folder::CorruptImages;
use crate::stream::{Store, Stream};
use selfsup_core::{Error, Result};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Image member extensions.
const IMAGE_EXT: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// Largest label or caption member read (bigger is an error naming it).
const MAX_META_BYTES: u64 = 1 << 20;

/// One sample as indexed: where its image is, and what came with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Index of its shard in the shard list.
    pub shard: usize,
    /// The image member's name.
    pub member: String,
    /// Byte offset of the image member's data in the shard.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
    /// The class from `KEY.cls` or `KEY.json`.
    pub label: Option<usize>,
    /// The caption from `KEY.txt` or `KEY.json`.
    pub caption: Option<String>,
}

/// The shard files `spec` names: itself, its brace range expanded, or its glob's matches
/// (sorted). None found is an error naming the pattern.
pub fn expand(spec: &str) -> Result<Vec<PathBuf>> {
    let bad = |m: String| Error::config("data", format!("shards:{spec}: {m}"));
    let files = if let (Some(a), Some(b)) = (spec.find('{'), spec.find('}')) {
        if b < a {
            return Err(bad("`}` before `{`".into()));
        }
        let (lo, hi) = spec[a + 1..b]
            .split_once("..")
            .ok_or_else(|| bad("a brace range reads {000..099}".into()))?;
        let width = lo.len();
        let (l, h): (u64, u64) = (
            lo.parse()
                .map_err(|_| bad(format!("`{lo}` is not a number")))?,
            hi.parse()
                .map_err(|_| bad(format!("`{hi}` is not a number")))?,
        );
        if h < l || h - l > 1_000_000 {
            return Err(bad(format!("the range {l}..{h} is empty or too long")));
        }
        (l..=h)
            .map(|n| PathBuf::from(format!("{}{n:0width$}{}", &spec[..a], &spec[b + 1..])))
            .collect()
    } else if spec.contains(['*', '?', '[']) {
        let mut v: Vec<PathBuf> = glob::glob(spec)
            .map_err(|e| bad(format!("not a glob pattern: {e}")))?
            .filter_map(|p| p.ok())
            .collect();
        v.sort();
        v
    } else {
        vec![PathBuf::from(spec)]
    };
    if let Some(missing) = files.iter().find(|p| !p.is_file()) {
        return Err(Error::io(
            missing,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such shard file"),
        ));
    }
    if files.is_empty() {
        return Err(bad("no shard matches".into()));
    }
    Ok(files)
}

/// The key and extension of a member name: `dir/abc.seg.jpg` is key `dir/abc`, extension
/// `seg.jpg` (WebDataset's rule: the extension starts at the first dot of the file name).
fn split_key(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')? + base_start;
    Some((&name[..dot], &name[dot + 1..]))
}

/// Indexes one shard read from `reader` (`name` names it in errors): its samples in member
/// order, and how many samples had no image. A truncated or malformed archive, or a label
/// member that does not parse, is an error naming the shard and member.
pub fn index<R: Read + Seek>(name: &Path, shard: usize, reader: R) -> Result<(Vec<Sample>, usize)> {
    let mut reader = reader;
    let len = reader
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io(name, e))?;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(name, e))?;
    let mut archive = tar::Archive::new(reader);
    let bad = |m: String| Error::format(name, m);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    // Samples by key, in the order their first member appears.
    let mut order: Vec<String> = Vec::new();
    let mut by_key: BTreeMap<String, Sample> = BTreeMap::new();
    // Where the last member's data ends, padded to tar's 512-byte blocks.
    let mut data_end = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("truncated or malformed tar: {e}")))?;
        data_end = entry
            .raw_file_position()
            .saturating_add(entry.size().div_ceil(512).saturating_mul(512));
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some((key, ext)) = split_key(&member) else {
            continue;
        };
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(bad(format!(
                "{member}: {size} bytes at offset {offset} run past the end of the shard ({len} bytes): truncated"
            )));
        }
        let sample = by_key.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Sample {
                shard,
                ..Sample::default()
            }
        });
        let meta = |entry: &mut tar::Entry<'_, _>| -> Result<String> {
            if size > MAX_META_BYTES {
                return Err(bad(format!(
                    "{member}: a {size}-byte label or caption member (at most {MAX_META_BYTES})"
                )));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("{member}: cannot read it as text: {e}")))?;
            Ok(text)
        };
        // `seg.png` is an image as well: the type is the last suffix.
        let kind = ext.rsplit('.').next().unwrap_or_default();
        match kind {
            e if IMAGE_EXT.contains(&e) => {
                if !sample.member.is_empty() {
                    return Err(bad(format!(
                        "{member}: sample {key} has two images ({} and this)",
                        sample.member
                    )));
                }
                sample.member = member.clone();
                sample.offset = offset;
                sample.size = size;
            }
            "cls" if ext == "cls" => {
                let t = meta(&mut entry)?;
                sample.label = Some(t.trim().parse().map_err(|_| {
                    bad(format!(
                        "{member}: `{}` is not a class number",
                        t.trim().chars().take(40).collect::<String>()
                    ))
                })?);
            }
            "txt" if ext == "txt" => sample.caption = Some(meta(&mut entry)?.trim().to_string()),
            "json" if ext == "json" => {
                let t = meta(&mut entry)?;
                let v: serde_json::Value = serde_json::from_str(&t)
                    .map_err(|e| bad(format!("{member}: not JSON: {e}")))?;
                if let Some(l) = v.get("label").or_else(|| v.get("cls")) {
                    sample.label =
                        Some(l.as_u64().ok_or_else(|| {
                            bad(format!("{member}: \"label\" is not a class number"))
                        })? as usize);
                }
                if let Some(c) = v.get("caption").or_else(|| v.get("text")) {
                    sample.caption = Some(
                        c.as_str()
                            .ok_or_else(|| bad(format!("{member}: \"caption\" is not a string")))?
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    // A finished archive ends with two zero blocks; a shard cut at a block boundary reads as
    // a shorter archive, and only their absence tells.
    if len < data_end.saturating_add(1024) {
        return Err(bad(format!(
            "truncated: no end-of-archive blocks after the last member (the shard is {len} bytes)"
        )));
    }
    let total = order.len();
    let samples: Vec<Sample> = order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .filter(|s| !s.member.is_empty())
        .collect();
    let without = total - samples.len();
    Ok((samples, without))
}

/// Images in tar shards, read from their offsets.
pub struct ShardStore {
    shards: Vec<PathBuf>,
    samples: Vec<Sample>,
}

impl Store for ShardStore {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn name(&self, i: usize) -> PathBuf {
        let s = &self.samples[i];
        // `shard.tar/KEY.jpg`: the shard and the member, as errors and skip lists name it.
        self.shards[s.shard].join(&s.member)
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        let s = &self.samples[i];
        let path = &self.shards[s.shard];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(s.offset))
            .map_err(|e| Error::io(path, e))?;
        let mut buf = vec![0u8; s.size as usize];
        f.read_exact(&mut buf).map_err(|e| {
            Error::format(
                self.name(i),
                format!("cannot read {} bytes at offset {}: {e}", s.size, s.offset),
            )
        })?;
        Ok(buf)
    }
}

/// Opens the shards `spec` names as a streamed set: labelled when every sample has a class,
/// captioned when every sample has a caption.
pub fn load(spec: &str, side: usize, decode: Decode, policy: CorruptImages) -> Result<ImageSet> {
    let shards = expand(spec)?;
    let mut samples = Vec::new();
    let mut without = 0;
    for (k, path) in shards.iter().enumerate() {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let (s, w) = index(path, k, std::io::BufReader::new(f))?;
        samples.extend(s);
        without += w;
    }
    if samples.is_empty() {
        return Err(Error::Invalid(format!(
            "shards:{spec}: no sample with an image member ({} in {} shards)",
            IMAGE_EXT.join(", "),
            shards.len()
        )));
    }
    if without > 0 {
        eprintln!("selfsup: shards:{spec}: {without} samples have no image member; left out");
    }
    let labels: Option<Vec<usize>> = samples.iter().map(|s| s.label).collect();
    let captions: Option<Vec<Vec<String>>> = samples
        .iter()
        .map(|s| s.caption.clone().map(|c| vec![c]))
        .collect();
    let classes = labels
        .as_ref()
        .and_then(|l| l.iter().max())
        .map_or(0, |m| m + 1);
    let store: Arc<dyn Store> = Arc::new(ShardStore { shards, samples });
    let mut set = ImageSet::streamed(Stream::new(store, decode, policy), side, labels);
    set.class_names = (0..classes).map(|c| c.to_string()).collect();
    set.captions = captions;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_pixel(6, 4, image::Rgb([v, v, v]))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn shard(path: &Path, members: &[(&str, Vec<u8>)]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn samples_group_by_key_across_brace_ranges_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..2u8 {
            shard(
                &dir.path().join(format!("s-{k:03}.tar")),
                &[
                    (&format!("a{k}.png"), png(10 * k)),
                    (&format!("a{k}.cls"), b"1\n".to_vec()),
                    (&format!("a{k}.txt"), b"a grey square".to_vec()),
                    (&format!("dir/b{k}.seg.png"), png(100)),
                    (
                        &format!("dir/b{k}.json"),
                        br#"{"label": 0, "caption": "b"}"#.to_vec(),
                    ),
                    (&format!("dir/b{k}.cls"), b"0".to_vec()),
                ],
            );
        }
        let spec = format!("{}/s-{{000..001}}.tar", dir.path().display());
        let set = load(&spec, 8, Decode::default(), CorruptImages::Error).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.labels, Some(vec![1, 0, 1, 0]));
        assert_eq!(set.class_names, ["0", "1"]);
        assert_eq!(set.captions.as_ref().unwrap()[0], ["a grey square"]);
        let img = set.image(2).unwrap();
        assert_eq!((img.height, img.width), (4, 6));
        assert_eq!(img.get(0, 0, 0), 10.0 / 255.0);
        let glob = format!("{}/s-*.tar", dir.path().display());
        assert_eq!(expand(&glob).unwrap(), expand(&spec).unwrap());
        let err = expand(&format!("{}/s-{{000..002}}.tar", dir.path().display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s-002.tar"), "{err}");
    }

    #[test]
    fn truncated_and_bad_shards_name_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.tar");
        shard(&p, &[("a.png", png(1)), ("a.cls", b"x".to_vec())]);
        let err = load(
            p.to_str().unwrap(),
            8,
            Decode::default(),
            CorruptImages::Error,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("s.tar") && err.contains("a.cls"), "{err}");
        shard(&p, &[("a.png", png(1)), ("b.png", png(2))]);
        let full = std::fs::read(&p).unwrap();
        for cut in [1540, 1536, 1024, 700] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let err = load(
                p.to_str().unwrap(),
                8,
                Decode::default(),
                CorruptImages::Error,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("s.tar") && err.contains("truncated"),
                "{cut}: {err}"
            );
        }
        std::fs::write(
            &p,
            b"definitely not a tar file, but long enough to have a header? no",
        )
        .unwrap();
        assert!(
            load(
                p.to_str().unwrap(),
                8,
                Decode::default(),
                CorruptImages::Error
            )
            .is_err()
        );
    }
}
