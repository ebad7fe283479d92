//! `selfsup embed`: a run's features of a dataset, one row per image in dataset order, with
//! the labels beside them when the data has them, as `.npy`, `.safetensors` or `.csv`.

use crate::evaluate::{EvalArgs, eval_transform, open_run};
use crate::registry::Registry;
use selfsup_core::{Error, Result};
use selfsup_interop::{Named, Values, file};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which split's images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    #[default]
    Test,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(Error::config(
                "--split",
                format!("`{other}`: use train or test"),
            )),
        }
    }
}

/// What [`embed`] wrote.
#[derive(Clone, Debug)]
pub struct Embedded {
    /// Rows (images).
    pub rows: usize,
    /// Feature width.
    pub dim: usize,
    /// The features file.
    pub features: PathBuf,
    /// The labels file, when separate (`.npy`: `FILE.labels.npy`).
    pub labels: Option<PathBuf>,
}

/// The encoder of `args.checkpoint` applied to the first `max` images of `split` (all when
/// `None`) under the evaluation transform, written to `out`: `.npy` (float32 `[N, D]`, and
/// `OUT.labels.npy`, int64 `[N]`, when the data has labels), `.safetensors` (tensors
/// `features` and `labels`) or `.csv` (a header, then `label,f0,...` per image).
pub fn embed(
    args: &EvalArgs,
    registry: &Registry,
    split: Split,
    max: Option<usize>,
    out: &Path,
) -> Result<Embedded> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "npy" | "safetensors" | "csv") {
        return Err(Error::config(
            "--out",
            format!("{}: name a .npy, .safetensors or .csv file", out.display()),
        ));
    }
    let (cfg, encoder, train, test) = open_run(args, registry, false)?;
    let set = match split {
        Split::Train => train,
        Split::Test => test,
    };
    let set = match max {
        Some(n) if n < set.len() => set.take(n),
        _ => set,
    };
    let device = args.device.clone().unwrap_or_default().device()?;
    let tf = eval_transform(&cfg, &set);
    let features = selfsup_eval::extract(&encoder, &set, &tf, 256, &device)?;
    let [rows, dim] = features.dims();
    let values = features
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("features: {e:?}")))?;
    let labels: Option<Vec<i64>> = set
        .labels
        .as_ref()
        .map(|l| l.iter().take(rows).map(|&x| x as i64).collect());
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut labels_file = None;
    match ext {
        "npy" => {
            selfsup_core::atomic::write(out, npy(&[rows, dim], "<f4", &values))?;
            if let Some(l) = &labels {
                let p = out.with_extension("labels.npy");
                selfsup_core::atomic::write(&p, npy(&[rows], "<i8", l))?;
                labels_file = Some(p);
            }
        }
        "safetensors" => {
            let mut t = vec![Named::f32("features", vec![rows, dim], values)];
            if let Some(l) = labels {
                t.push(Named {
                    name: "labels".into(),
                    shape: vec![rows],
                    values: Values::I64(l),
                });
            }
            file::write(out, &t, Default::default())?;
        }
        _ => {
            let mut text = Vec::new();
            let head: Vec<String> = (0..dim).map(|j| format!("f{j}")).collect();
            let io = |e| Error::io(out, e);
            if labels.is_some() {
                write!(text, "label,").map_err(io)?;
            }
            writeln!(text, "{}", head.join(",")).map_err(io)?;
            for (i, row) in values.chunks(dim.max(1)).enumerate() {
                if let Some(l) = &labels {
                    write!(text, "{},", l[i]).map_err(io)?;
                }
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                writeln!(text, "{}", cells.join(",")).map_err(io)?;
            }
            selfsup_core::atomic::write(out, text)?;
        }
    }
    Ok(Embedded {
        rows,
        dim,
        features: out.to_path_buf(),
        labels: labels_file,
    })
}

/// Little-endian values that `to_le_bytes` writes.
trait Le: Copy {
    fn le(self) -> Vec<u8>;
}
impl Le for f32 {
    fn le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}
impl Le for i64 {
    fn le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

/// A NumPy `.npy` file (format 1.0): the magic, a Python-dict header padded with spaces to a
/// multiple of 64 bytes, then the values in C order. Written by hand: the format is eleven
/// lines of its specification, and no crate we use writes it.
fn npy<T: Le>(shape: &[usize], descr: &str, values: &[T]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend(v.le());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_says_the_shape() {
        let b = npy(&[2, 3], "<f4", &[0f32; 6]);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let n = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + n) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + n]).unwrap();
        assert!(h.contains("'shape': (2, 3)") && h.ends_with('\n'), "{h}");
        assert_eq!(b.len(), 10 + n + 24);
        let l = npy(&[4], "<i8", &[1i64, 2, 3, 4]);
        let n = u16::from_le_bytes([l[8], l[9]]) as usize;
        assert!(
            std::str::from_utf8(&l[10..10 + n])
                .unwrap()
                .contains("(4,)")
        );
    }
}
