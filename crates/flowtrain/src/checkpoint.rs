//! Checkpoints: named tensors and string metadata in one safetensors file,
//! written atomically ([`crate::files::write_atomic_verified`]: an unnamed
//! file in the same directory, synced, read back and parsed, then renamed
//! over the target), so a crash mid-write leaves the previous checkpoint
//! intact and a checkpoint that does not read back never replaces it.
//!
//! Reading checks what a damaged or hostile file could hold: the file's
//! size against the memory limit, the safetensors structure, supported
//! dtypes, and that every value is finite.

use crate::error::{Result, TrainError};
use crate::model::Model;
use flowtensor::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// The content of a checkpoint file.
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

fn bytes_of(t: &Tensor) -> Result<(Dtype, Vec<u8>)> {
    Ok(match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            t.to_vec::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            t.to_vec::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    })
}

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let fail = |detail: String| TrainError::checkpoint(path, detail);
    // the encoded tensors are dropped once serialised
    let bytes = {
        let encoded = tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.shape().to_vec(), bytes_of(t)?)))
            .collect::<Result<Vec<_>>>()?;
        let views = encoded
            .iter()
            .map(|(name, shape, (dtype, data))| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| fail(format!("tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::tensor::serialize(views, Some(metadata))
            .map_err(|e| fail(format!("cannot serialise: {e}")))?
    };
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length"));
    if header > MAX_HEADER {
        return Err(fail(format!(
            "the header would be {header} bytes, more than the {MAX_HEADER} a reader accepts; the previous checkpoint is kept"
        )));
    }
    crate::files::write_atomic_verified(path, &bytes, |written| {
        let back = parse(written, path)?;
        if back.tensors.len() != tensors.len() {
            return Err(fail(format!(
                "{} of {} tensors read back",
                back.tensors.len(),
                tensors.len()
            )));
        }
        Ok(())
    })
}

/// The largest safetensors header readers accept (the safetensors crate's limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// Reads a checkpoint; a truncated, malformed or non-finite file is an error naming it.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let len = std::fs::metadata(path)
        .map_err(|e| TrainError::io(path, e))?
        .len();
    // the file, and its tensors decoded beside it
    crate::limits::check_memory(
        &format!("checkpoint {}", path.display()),
        len.saturating_mul(2),
    )?;
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    parse(&bytes, path)
}

/// The checkpoint in `bytes`; errors name `path`. The parser behind
/// [`load`], for any source (files, fuzzers).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let fail = |detail: String| TrainError::checkpoint(path, detail);
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let shape = view.shape().to_vec();
        let non_finite = |i: usize| {
            fail(format!(
                "tensor {name} {shape:?} holds a NaN or infinite value (element {i}): the file is damaged"
            ))
        };
        let tensor = match view.dtype() {
            Dtype::F32 => {
                let values: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(non_finite(i));
                }
                Tensor::from_vec(values, &shape, Device::Cpu)?
            }
            Dtype::F64 => {
                let values: Vec<f64> = data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")))
                    .collect();
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(non_finite(i));
                }
                Tensor::from_vec(values, &shape, Device::Cpu)?
            }
            other => {
                return Err(fail(format!(
                    "tensor {name} has unsupported dtype {other:?}"
                )))
            }
        };
        tensors.insert(name, tensor);
    }
    Ok(Checkpoint { tensors, metadata })
}

/// The model's parameters (`param.*`) and buffers (`buffer.*`).
pub fn model_tensors(model: &Model) -> Vec<(String, Tensor)> {
    let mut all = flowlayers::prefixed("param", model.parameters());
    all.extend(flowlayers::prefixed("buffer", model.buffers()));
    all
}

impl Checkpoint {
    /// Copies the saved parameters and buffers into `model` (every one must
    /// be present with the model's shape and dtype).
    pub fn load_model(&self, model: &Model, path: &Path) -> Result<()> {
        for (name, t) in model_tensors(model) {
            t.set_data(&self.tensor_like(path, &name, &t)?)?;
        }
        Ok(())
    }

    /// The tensor `name`, checked against the shape and dtype of `like`
    /// (buffers, which hold flags and indices, may come in the other dtype:
    /// older versions kept some in the model's), on `like`'s device.
    pub fn tensor_like(&self, path: &Path, name: &str, like: &Tensor) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| TrainError::checkpoint(path, format!("missing tensor {name}")))?;
        let cast = name.starts_with("buffer.") && t.shape() == like.shape();
        let t = if cast { &t.to_dtype(like.dtype())? } else { t };
        if t.shape() != like.shape() || t.dtype() != like.dtype() {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "tensor {name} is {:?} {:?}, the model expects {:?} {:?}",
                    t.dtype(),
                    t.shape(),
                    like.dtype(),
                    like.shape()
                ),
            ));
        }
        Ok(t.to_device(like.device())?)
    }

    /// The metadata entry `key`, parsed.
    pub fn meta<T: std::str::FromStr>(&self, path: &Path, key: &str) -> Result<T> {
        self.metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                TrainError::checkpoint(path, format!("missing or invalid metadata {key:?}"))
            })
    }
}
