//! One entry point per parser of outside input, for the fuzz targets in `fuzz/` and for the
//! test that replays their corpora under `cargo test`.
//!
//! Each takes arbitrary bytes and must return without panicking: bad input is an `Err` the
//! parser names the file in. Where a parser accepts the input, the entry point checks what the
//! result promises (sizes that agree, labels in range, a config that saves and loads back the
//! same) and panics if it does not, so a silent wrong result is a finding too.

use selfsup_data::cifar::{Cifar, parse_batch};
use selfsup_data::{folder, idx, manifest, shards};
use selfsup_pipeline::RunConfig;
use std::path::Path;

/// An entry point: bytes in, a panic only for a finding.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: the folders of `fuzz/corpus/` and the binaries of `fuzz/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("idx", idx_file),
    ("cifar", cifar_batch),
    ("manifest", manifest_text),
    ("config", config_text),
    ("image", image_file),
    ("shard", shard_file),
];

/// An IDX file, gzipped or not: the first byte picks images (even) or labels (odd), the rest is
/// the file.
pub fn idx_file(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz.idx");
    let Ok(bytes) = idx::decode_maybe_gz(path, file.to_vec()) else {
        return;
    };
    if pick % 2 == 0 {
        if let Ok((n, h, w, pixels)) = idx::parse_images(path, &bytes) {
            assert_eq!(pixels.len(), n * h * w, "{n} images of {h}x{w}");
        }
    } else if let Ok(labels) = idx::parse_labels(path, &bytes) {
        assert!(labels.len() <= bytes.len() && labels.iter().all(|&l| l < 256));
    }
}

/// A CIFAR binary batch: the first byte picks CIFAR-10 (even) or CIFAR-100 (odd).
pub fn cifar_batch(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let kind = if pick % 2 == 0 {
        Cifar::Ten
    } else {
        Cifar::Hundred
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    if parse_batch(Path::new("fuzz.bin"), file, kind, &mut pixels, &mut labels).is_ok() {
        assert_eq!(pixels.len(), labels.len() * 3 * 32 * 32);
        let classes = if pick % 2 == 0 { 10 } else { 100 };
        assert!(labels.iter().all(|&l| l < classes));
    }
}

/// An image-text manifest: the first byte picks JSON lines (even) or CSV (odd), the rest is
/// the text (lossily UTF-8).
pub fn manifest_text(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let path = if pick % 2 == 0 {
        Path::new("dir/fuzz.jsonl")
    } else {
        Path::new("dir/fuzz.csv")
    };
    let text = String::from_utf8_lossy(file);
    if let Ok(entries) = manifest::parse(path, &text) {
        assert!(!entries.is_empty());
        for e in &entries {
            // Relative paths resolve against the manifest's folder; absolute ones stay.
            assert!(
                e.image.is_absolute() || e.image.starts_with("dir"),
                "{}",
                e.image.display()
            );
            assert!(!e.captions.is_empty());
            assert!(e.captions.iter().all(|c| !c.trim().is_empty()));
        }
    }
}

/// A run config in TOML: one that parses and validates must save and load back the same.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let registry = selfsup_cli::registry();
    let Ok(cfg) = RunConfig::parse(text, "fuzz.toml", &registry) else {
        return;
    };
    let recipe = registry.get(&cfg.method).expect("parse checked the method");
    if recipe.validate(&cfg).is_err() {
        return;
    }
    let saved = cfg.to_toml().expect("a valid config serializes");
    let back = RunConfig::parse(&saved, "saved.toml", &registry)
        .unwrap_or_else(|e| panic!("a valid config does not load back: {e}\n{saved}"));
    assert_eq!(back, cfg, "{saved}");
    // As a run folder's config.toml, read without the registry.
    let back = RunConfig::parse_saved(&saved, "config.toml")
        .unwrap_or_else(|e| panic!("a saved config does not load back: {e}\n{saved}"));
    assert_eq!(back, cfg, "{saved}");
}

/// An image file as the folder dataset decodes it: to 8x8, gray (first byte even) or RGB.
pub fn image_file(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let channels = if pick % 2 == 0 { 1 } else { 3 };
    if let Ok(pixels) = folder::decode_bytes(Path::new("fuzz.img"), file, 8, channels) {
        assert_eq!(pixels.len(), channels * 64);
    }
}

/// A WebDataset tar shard as `shards:` indexes it. Where the index is accepted, every sample
/// must lie inside the shard, have an image member named by its key, and its bytes must decode
/// or fail with an error (never a panic); a 1-megapixel cap keeps a fuzzed header from asking
/// for gigabytes.
pub fn shard_file(data: &[u8]) {
    let name = Path::new("fuzz.tar");
    let Ok((samples, _)) = shards::index(name, 0, std::io::Cursor::new(data)) else {
        return;
    };
    let decode = selfsup_data::decode::Decode {
        channels: 3,
        max_pixels: 1 << 20,
    };
    for s in samples {
        let end = s
            .offset
            .checked_add(s.size)
            .expect("offset + size overflows");
        assert!(end <= data.len() as u64, "{s:?} runs past {}", data.len());
        assert!(!s.member.is_empty(), "{s:?} has no image member");
        let bytes = &data[s.offset as usize..end as usize];
        let _ = selfsup_data::decode::original(name, bytes, &decode);
    }
}
