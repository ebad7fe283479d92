//! TensorBoard scalars: `RUN/tb/events.out.tfevents.*` beside `metrics.jsonl`, which
//! `tensorboard --logdir RUN/tb` (and `wandb sync --sync-tensorboard`) read.
//!
//! The format is TensorFlow's: a file of TFRecords (length, masked CRC-32C of the length,
//! the bytes, masked CRC-32C of the bytes), each an `Event` protocol buffer: first one with
//! `file_version = "brain.Event:2"`, then one per metrics record with a `Summary` of
//! `simple_value`s. Written by hand (four message fields; the crates that write it pull in a
//! protobuf code generator or all of TensorFlow's protos), with the `crc32c` crate for the
//! checksums.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs is
/// not trivially related to them.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with `wall_time`, `step` and either `file_version` or a summary of scalars.
fn event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    varint(1 << 3 | 1, &mut e); // wall_time: double
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut e); // step: int64
    varint(step as u64, &mut e);
    if let Some(v) = file_version {
        bytes_field(3, v.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(1, tag.as_bytes(), &mut v); // tag
            varint(2 << 3 | 5, &mut v); // simple_value: float
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(1, &v, &mut summary); // Summary.value
        }
        bytes_field(5, &summary, &mut e); // Event.summary
    }
    e
}

/// One TFRecord around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// Appends scalar events to a new event file in a folder.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// A new event file in `dir` (created), named as TensorFlow names them
    /// (`events.out.tfevents.SECONDS.HOST.PID`), opened with its version event. A resumed
    /// run writes a new file; TensorBoard reads the folder's files in order and drops the
    /// points a resumed run writes again.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = wall_time();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
            .unwrap_or_else(|| "selfsup".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now as u64,
            std::process::id()
        ));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = Self { path, file };
        w.append(&event(now, 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `scalars` (tag, value) at `step`, stamped with the current time.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f32)]) -> Result<()> {
        if scalars.is_empty() {
            return Ok(());
        }
        self.append(&event(wall_time(), step as i64, None, scalars))
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        // One write per record: a killed process leaves at most a torn last record, which
        // TensorBoard stops at (its length or checksum does not match).
        self.file
            .write_all(&record(data))
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A scalar read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The step.
    pub step: i64,
    /// Its tag (`loss`, `lr`, ...).
    pub tag: String,
    /// Its value.
    pub value: f32,
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A protocol buffer field: (field number, wire type, the varint, the bytes).
type Field<'a> = (u64, u64, u64, &'a [u8]);

/// The fields of a protocol buffer message.
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let key = read_varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, wire, read_varint(b, &mut i)?, &b[0..0])),
            1 => {
                out.push((field, wire, 0, b.get(i..i + 8)?));
                i += 8;
            }
            2 => {
                let n = read_varint(b, &mut i)? as usize;
                out.push((field, wire, 0, b.get(i..i + n)?));
                i += n;
            }
            5 => {
                out.push((field, wire, 0, b.get(i..i + 4)?));
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Every scalar of the event file `path`, checking each record's length and checksums (what
/// TensorBoard checks): an error names the file and the byte offset of a damaged record.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |at: usize, what: &str| {
        Error::Invalid(format!("{}: record at byte {at}: {what}", path.display()))
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut first = true;
    while at < b.len() {
        let head = b
            .get(at..at + 12)
            .ok_or_else(|| bad(at, "truncated header"))?;
        let len_bytes = &head[..8];
        if masked_crc(len_bytes).to_le_bytes() != head[8..12] {
            return Err(bad(at, "length checksum"));
        }
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let data = b
            .get(at + 12..at + 12 + n)
            .ok_or_else(|| bad(at, "truncated data"))?;
        let crc = b
            .get(at + 12 + n..at + 16 + n)
            .ok_or_else(|| bad(at, "truncated data checksum"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(bad(at, "data checksum"));
        }
        let ev = fields(data).ok_or_else(|| bad(at, "not an Event"))?;
        if first {
            let version = ev.iter().find(|f| f.0 == 3).map(|f| f.3);
            if version != Some(b"brain.Event:2".as_slice()) {
                return Err(bad(at, "the first event is not file_version brain.Event:2"));
            }
            first = false;
        }
        let step = ev.iter().find(|f| f.0 == 2).map_or(0, |f| f.2 as i64);
        for summary in ev.iter().filter(|f| f.0 == 5) {
            for value in fields(summary.3).ok_or_else(|| bad(at, "summary"))? {
                let v = fields(value.3).ok_or_else(|| bad(at, "summary value"))?;
                let tag = v.iter().find(|f| f.0 == 1).map(|f| f.3).unwrap_or_default();
                if let Some(x) = v.iter().find(|f| f.0 == 2 && f.1 == 5) {
                    out.push(Scalar {
                        step,
                        tag: String::from_utf8_lossy(tag).into_owned(),
                        value: f32::from_le_bytes(x.3.try_into().unwrap()),
                    });
                }
            }
        }
        at += 16 + n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(&dir.path().join("tb")).unwrap();
        w.scalars(3, &[("loss", 1.5), ("lr", 0.25)]).unwrap();
        w.scalars(300, &[("loss", -2.0)]).unwrap();
        let path = w.path().to_path_buf();
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("events.out.tfevents.")
        );
        let s = read_scalars(&path).unwrap();
        let want = [(3, "loss", 1.5), (3, "lr", 0.25), (300, "loss", -2.0)];
        assert_eq!(s.len(), 3);
        for (got, (step, tag, value)) in s.iter().zip(want) {
            assert_eq!((got.step, got.tag.as_str(), got.value), (step, tag, value));
        }
        // The CRC-32C test vector: "123456789" -> 0xe3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);

        let mut b = std::fs::read(&path).unwrap();
        let n = b.len();
        b[n - 6] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(
            err.contains("checksum") && err.contains("events.out"),
            "{err}"
        );
    }
}
