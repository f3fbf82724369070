//! Points for the toy runs: the user's own `N x D` sets from CSV or NPY
//! files, checked value by value, and the split into training and test
//! points.
//!
//! - CSV: one point per line, values separated by commas (spaces around
//!   them are ignored), an optional header line (a first line that is not
//!   all numbers), blank lines skipped, every line with the same number of
//!   values, every value a finite number;
//! - NPY (format versions 1 to 3): a little-endian `<f4` or `<f8` array in
//!   C order of shape `(N, D)` (or `(N,)`, read as `(N, 1)`), every value
//!   finite.

use crate::error::{Result, TrainError};
use flowtensor::{DType, Device, Generator, Tensor};
use std::path::Path;

/// The most features a point may have.
pub const MAX_FEATURES: usize = 4096;

/// `N` points of `D` features, row-major f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Points {
    values: Vec<f64>,
    dim: usize,
}

impl Points {
    /// Points from row-major `values` of `dim` features each.
    pub fn new(values: Vec<f64>, dim: usize) -> Result<Points> {
        if dim == 0 || !values.len().is_multiple_of(dim) {
            return Err(TrainError::Config(format!(
                "{} values do not make points of {dim} features",
                values.len()
            )));
        }
        Ok(Points { values, dim })
    }

    /// The points of an `(N, D)` tensor.
    pub fn from_tensor(t: &Tensor) -> Result<Points> {
        if t.rank() != 2 {
            return Err(TrainError::Config(format!(
                "points must be (N, D), got shape {:?}",
                t.shape()
            )));
        }
        Points::new(t.to_vec_f64()?, t.shape()[1])
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Features per point `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Point `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The points at `indices`.
    pub fn select(&self, indices: &[usize]) -> Points {
        let mut values = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            values.extend_from_slice(self.row(i));
        }
        Points {
            values,
            dim: self.dim,
        }
    }

    /// The first `n` points (all if there are fewer).
    pub fn take(&self, n: usize) -> Points {
        let n = n.min(self.len());
        Points {
            values: self.values[..n * self.dim].to_vec(),
            dim: self.dim,
        }
    }

    /// The points as an `(N, D)` tensor of `dtype` on `device`.
    pub fn tensor(&self, dtype: DType, device: Device) -> Result<Tensor> {
        let t = Tensor::from_vec(self.values.clone(), &[self.len(), self.dim], Device::Cpu)?;
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

/// Loads a `.csv` or `.npy` file of points (by its extension).
pub fn load_points(path: &Path) -> Result<Points> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let points = match ext.as_str() {
        "csv" => {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            parse_csv(&text).map_err(|detail| TrainError::data(path, detail))?
        }
        "npy" => {
            let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
            parse_npy(&bytes).map_err(|detail| TrainError::data(path, detail))?
        }
        _ => {
            return Err(TrainError::data(
                path,
                "expected a .csv or .npy file of points",
            ))
        }
    };
    if points.dim() > MAX_FEATURES {
        return Err(TrainError::data(
            path,
            format!(
                "{} features per point; at most {MAX_FEATURES} are supported",
                points.dim()
            ),
        ));
    }
    Ok(points)
}

/// Parses CSV text (see the module docs); the error names the line.
pub fn parse_csv(text: &str) -> std::result::Result<Points, String> {
    let mut values = Vec::new();
    let mut dim: Option<(usize, usize)> = None;
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Vec<std::result::Result<f64, _>> =
            fields.iter().map(|f| f.parse::<f64>()).collect();
        if first {
            first = false;
            if parsed.iter().any(|p| p.is_err()) {
                // a header: its names are not checked, only the count of columns
                dim = Some((fields.len(), number));
                continue;
            }
        }
        match dim {
            Some((d, from)) if d != fields.len() => {
                return Err(format!(
                    "line {number}: {} values, but line {from} has {d}",
                    fields.len()
                ))
            }
            None => dim = Some((fields.len(), number)),
            _ => {}
        }
        for (column, (field, value)) in fields.iter().zip(parsed).enumerate() {
            match value {
                Ok(v) if v.is_finite() => values.push(v),
                Ok(v) => {
                    return Err(format!(
                        "line {number}, column {}: {v} is not a finite number",
                        column + 1
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "line {number}, column {}: {field:?} is not a number",
                        column + 1
                    ))
                }
            }
        }
    }
    match dim {
        Some((d, _)) if !values.is_empty() => {
            Points::new(values, d).map_err(|e| format!("line 1: {e}"))
        }
        _ => Err("no points: the file holds no data lines".into()),
    }
}

/// The value of `key` in an NPY header dictionary (the text up to the next
/// top-level comma or closing brace).
fn header_value<'a>(header: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let start = quoted
        .iter()
        .find_map(|k| header.find(k.as_str()).map(|p| p + k.len()))
        .ok_or_else(|| format!("the NPY header has no {key:?} key: {header}"))?;
    let rest = header[start..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("the NPY header's {key:?} has no value: {header}"))?
        .trim_start();
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                if depth == 0 {
                    return Ok(rest[..i].trim());
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(rest[..=i].trim());
                }
            }
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Err(format!(
        "the NPY header's {key:?} is not terminated: {header}"
    ))
}

/// Parses NPY bytes (see the module docs); the error names the header problem.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Points, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an NPY file: it does not start with \\x93NUMPY".into());
    }
    let (header_len, offset): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("NPY format version {v} is not supported (1 to 3)")),
    };
    let end = offset
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "the NPY header claims {header_len} bytes but the file holds {}",
                bytes.len().saturating_sub(offset)
            )
        })?;
    let header = std::str::from_utf8(&bytes[offset..end])
        .map_err(|_| "the NPY header is not text".to_string())?;
    let descr = header_value(header, "descr")?.trim_matches(|c| c == '\'' || c == '"');
    let size = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
            "the NPY dtype is {other:?}; only little-endian floats '<f4' and '<f8' are supported"
        ))
        }
    };
    match header_value(header, "fortran_order")? {
        "False" => {}
        "True" => {
            return Err("the NPY array is in Fortran order; only C order is supported".into())
        }
        other => return Err(format!("the NPY header's fortran_order is {other:?}")),
    }
    let shape_text = header_value(header, "shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("the NPY shape {shape_text} is not a tuple"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("the NPY shape {shape_text} is not a tuple of sizes"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let (n, d) = match shape.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => {
            return Err(format!(
                "the NPY array has shape {shape_text}; expected (N, D) points"
            ))
        }
    };
    if n == 0 || d == 0 {
        return Err(format!("no points: the NPY array has shape {shape_text}"));
    }
    let count = n
        .checked_mul(d)
        .filter(|c| c.checked_mul(size).is_some())
        .ok_or_else(|| format!("the NPY shape {shape_text} is too large"))?;
    let data = &bytes[end..];
    if data.len() != count * size {
        return Err(format!(
            "the NPY shape {shape_text} of {descr} needs {} data bytes, the file holds {}",
            count * size,
            data.len()
        ));
    }
    let values: Vec<f64> = if size == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "point {} (row {} of the array), feature {}: {} is not a finite number",
            i / d + 1,
            i / d,
            i % d + 1,
            values[i]
        ));
    }
    Points::new(values, d).map_err(|e| e.to_string())
}

/// The NPY bytes of `points` as `<f8` (for tests and for exporting points).
pub fn npy_bytes(points: &Points) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}",
        points.len(),
        points.dim()
    );
    // magic (6) + version (2) + length (2) + header + newline, padded to 64
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in points.values() {
        out.extend(v.to_le_bytes());
    }
    out
}

/// The training and test points of a file run: `test` when given (it must
/// have the same features), otherwise a 90/10 split of `all` shuffled by
/// `seed` (at least one point on each side).
pub fn split(
    all: Points,
    test: Option<Points>,
    seed: u64,
    source: &Path,
) -> Result<(Points, Points)> {
    if let Some(test) = test {
        if test.dim() != all.dim() {
            return Err(TrainError::data(
                source,
                format!(
                    "the training points have {} features but the test points have {}",
                    all.dim(),
                    test.dim()
                ),
            ));
        }
        return Ok((all, test));
    }
    let n = all.len();
    if n < 2 {
        return Err(TrainError::data(
            source,
            format!("{n} point(s): a 90/10 split needs at least 2 (or give --test)"),
        ));
    }
    let order = Generator::new(seed ^ 0x5 << 56).permutation(n);
    let n_test = (n / 10).max(1);
    Ok((all.select(&order[n_test..]), all.select(&order[..n_test])))
}
