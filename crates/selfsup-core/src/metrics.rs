//! The per-run metrics log: one JSON object per line, appended, so a resumed run continues it;
//! every numeric value of a record with a `step` also goes to TensorBoard's event files in
//! `tb/` beside it ([`crate::tensorboard`]).

use crate::error::{Error, Result};
use crate::tensorboard::EventWriter;
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends records to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    tb: EventWriter,
}

impl MetricsLog {
    /// Opens (creating or appending to) the log at `path`, and a new TensorBoard event file
    /// in the folder `tb` beside it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let tb = EventWriter::create(&Self::tensorboard_dir(&path))?;
        Ok(Self { path, file, tb })
    }

    /// The TensorBoard folder of the log at `path`: `tb/` beside it.
    pub fn tensorboard_dir(path: &Path) -> PathBuf {
        path.parent().unwrap_or(Path::new(".")).join("tb")
    }

    /// Removes the log at `path` and its TensorBoard files: a run started afresh in the
    /// folder of an earlier one.
    pub fn remove(path: &Path) -> Result<()> {
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        let tb = Self::tensorboard_dir(path);
        if tb.exists() {
            std::fs::remove_dir_all(&tb).map_err(|e| Error::io(&tb, e))?;
        }
        Ok(())
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
            .map_err(|e| Error::io(&self.path, e))?;
        // TensorBoard: the record's numbers at its step, each under its own name.
        let step = fields
            .iter()
            .find(|(k, _)| *k == "step")
            .and_then(|(_, v)| v.as_u64());
        if let Some(step) = step {
            let scalars: Vec<(&str, f32)> = fields
                .iter()
                .filter(|(k, _)| *k != "step" && *k != "epoch")
                .filter_map(|(k, v)| v.as_f64().map(|x| (*k, x as f32)))
                .collect();
            self.tb.scalars(step, &scalars)?;
        }
        Ok(())
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
