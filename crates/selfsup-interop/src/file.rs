//! Weights files: safetensors (read and written) and PyTorch's `.pth` / `.pt` (read, through
//! burn-store's `pytorch-reader`): named tensors with their shapes, read as f32 whatever float type the
//! file holds, written as f32 (and i64 for BatchNorm's step counters, which torchvision's
//! `state_dict` carries and `load_state_dict(strict=True)` asks for).

use safetensors::tensor::{Dtype, TensorView};
use selfsup_core::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The values of a named tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// 32-bit floats (weights).
    F32(Vec<f32>),
    /// 64-bit integers (BatchNorm's `num_batches_tracked`).
    I64(Vec<i64>),
}

/// One tensor of a weights file.
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    /// Its key in the file.
    pub name: String,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Values,
}

impl Named {
    /// A float tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            shape,
            values: Values::F32(values),
        }
    }

    /// The float values (an integer tensor's converted).
    pub fn floats(&self) -> Vec<f32> {
        match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// Writes `tensors` to `path` as safetensors, with `metadata` in its header.
pub fn write(path: &Path, tensors: &[Named], metadata: HashMap<String, String>) -> Result<()> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let (dtype, data) = match &t.values {
                Values::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (t.name.clone(), dtype, t.shape.clone(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    selfsup_core::atomic::write(path, &data)
}

/// The tensors of the safetensors file `path` (floats of any width as f32) and its header's
/// metadata.
pub fn read(path: &Path) -> Result<(Vec<Named>, HashMap<String, String>)> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::Invalid(format!(
            "{}: not a readable safetensors file ({e})",
            path.display()
        ))
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&data).map_err(|e| bad(&e))?;
    let file = safetensors::SafeTensors::deserialize(&data).map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let values = match view.dtype() {
            Dtype::F32 => Values::F32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Dtype::F64 => Values::F32(
                raw.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
            ),
            Dtype::F16 => Values::F32(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => Values::F32(
                raw.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Dtype::I64 => Values::I64(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            other => {
                return Err(Error::Invalid(format!(
                    "{}: tensor `{name}` is {other:?}; weights must be floating point",
                    path.display()
                )));
            }
        };
        out.push(Named {
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// The tensors of a weights file, by its extension: `.safetensors`, or a PyTorch
/// `torch.save` file (`.pth`, `.pt`, `.bin`) holding a `state_dict`, plain or under a
/// top-level `state_dict` / `model` key, with DataParallel's `module.` prefix removed.
pub fn read_any(path: &Path) -> Result<Vec<Named>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(read(path)?.0),
        Some("pth" | "pt" | "bin") => read_pytorch(path),
        _ => Err(Error::Invalid(format!(
            "{}: give a .safetensors, .pth or .pt file",
            path.display()
        ))),
    }
}

/// The tensors of a PyTorch `torch.save` file (see [`read_any`]).
pub fn read_pytorch(path: &Path) -> Result<Vec<Named>> {
    use burn_store::pytorch_reader::{DType as P, PytorchReader};
    let reader = PytorchReader::new(path).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a readable PyTorch file ({e})",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for (key, t) in reader.into_tensors() {
        let mut name = key.as_str();
        for prefix in ["state_dict.", "model.", "module."] {
            name = name.strip_prefix(prefix).unwrap_or(name);
        }
        let raw = t.read().map_err(|e| Error::io(path, e))?;
        let values = match t.dtype() {
            P::F32 => Values::F32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            P::F64 => Values::F32(
                raw.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
            ),
            P::F16 => Values::F32(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            P::BF16 => Values::F32(
                raw.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            P::I64 => Values::I64(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            other => {
                return Err(Error::Invalid(format!(
                    "{}: tensor `{key}` is {other:?}; weights must be floating point",
                    path.display()
                )));
            }
        };
        out.push(Named {
            name: name.to_string(),
            shape: t.shape().to_vec(),
            values,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = vec![
            Named::f32(
                "a.weight",
                vec![2, 3],
                (0..6).map(|i| i as f32 * 0.5).collect(),
            ),
            Named {
                name: "a.num_batches_tracked".into(),
                shape: vec![],
                values: Values::I64(vec![7]),
            },
        ];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write(&p, &t, meta.clone()).unwrap();
        let (back, m) = read(&p).unwrap();
        assert_eq!(m, meta);
        assert_eq!(back.len(), 2);
        assert_eq!(back.iter().find(|x| x.name == "a.weight").unwrap(), &t[0]);
        assert_eq!(back.iter().find(|x| x.name != "a.weight").unwrap(), &t[1]);

        std::fs::write(&p, b"not safetensors").unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("safetensors"),
            "{err}"
        );

        let pth = dir.path().join("w.pth");
        std::fs::write(&pth, b"not a zip or a pickle").unwrap();
        let err = read_any(&pth).unwrap_err().to_string();
        assert!(err.contains("w.pth") && err.contains("PyTorch"), "{err}");
        let err = read_any(&dir.path().join("w.onnx"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".pth"), "{err}");
    }
}
