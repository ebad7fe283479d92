//! The per-run metrics log: one JSON object per line, appended, so a resumed run continues it.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends records to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creating or appending to) the log at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// Writes one record of named values.
    pub fn write(&mut self, fields: &[(&str, Value)]) -> Result<()> {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert((*k).to_string(), v.clone());
        }
        // One write per line: a killed process leaves at most a torn last line, which
        // `truncate_after` drops.
        let line = format!("{}\n", Value::Object(m));
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Drops records with `step` beyond `step` (records count completed steps, so those of a
    /// checkpoint at `step` stay): a run resumed from that checkpoint rewrites the later ones.
    pub fn truncate_after(path: impl AsRef<Path>, step: usize) -> Result<()> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                // A line a killed process left half written does not parse: dropped.
                serde_json::from_str::<Value>(l).is_ok_and(|v| {
                    v.get("step")
                        .and_then(Value::as_u64)
                        .is_none_or(|s| (s as usize) <= step)
                })
            })
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        crate::atomic::write(path, out)
    }
}

/// Peak resident memory of this process in MiB, from `/proc/self/status` (`VmHWM`);
/// `None` where that file does not exist (not Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
