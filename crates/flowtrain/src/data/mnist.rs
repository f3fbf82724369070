//! MNIST in the IDX layout (LeCun's files, raw or gzipped).
//!
//! An IDX file is a big-endian header, magic `0x0000 08 NDIM` (`08`:
//! unsigned bytes), then `NDIM` u32 sizes, then the bytes. Images have
//! `NDIM = 3` (count, rows, columns), labels `NDIM = 1`.

use super::{find_file, read_maybe_gz, ImageSet, Splits};
use crate::error::{Result, TrainError};
use std::path::Path;

/// The IDX content of `path`: its sizes and its data bytes, checked against
/// the expected number of dimensions and the file's length.
pub fn read_idx(path: &Path, ndim: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(TrainError::data(
            path,
            format!(
                "truncated IDX header: {} bytes, expected at least {header}",
                bytes.len()
            ),
        ));
    }
    let u32_at =
        |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let magic = u32_at(0);
    let expected = 0x0800 | ndim as u32;
    if magic != expected {
        return Err(TrainError::data(
            path,
            format!("bad IDX magic number {magic:#010x}, expected {expected:#010x} (unsigned bytes, {ndim} dimensions)"),
        ));
    }
    let sizes: Vec<usize> = (0..ndim).map(|d| u32_at(4 + 4 * d) as usize).collect();
    let count = sizes
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| TrainError::data(path, format!("IDX sizes {sizes:?} overflow")))?;
    let data = &bytes[header..];
    if data.len() != count {
        let what = if data.len() < count {
            "truncated"
        } else {
            "too long"
        };
        return Err(TrainError::data(
            path,
            format!(
                "{what}: the header's sizes {sizes:?} need {count} data bytes, the file has {}",
                data.len()
            ),
        ));
    }
    Ok((sizes, data.to_vec()))
}

/// One split: an image file and a label file of the same length.
fn read_split(dir: &Path, images: &str, labels: &str) -> Result<ImageSet> {
    let image_path = find_file(dir, &[images])?;
    let label_path = find_file(dir, &[labels])?;
    let (sizes, pixels) = read_idx(&image_path, 3)?;
    let (label_sizes, labels) = read_idx(&label_path, 1)?;
    if label_sizes[0] != sizes[0] {
        return Err(TrainError::data(
            &label_path,
            format!(
                "{} labels for {} images in {}",
                label_sizes[0],
                sizes[0],
                image_path.display()
            ),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(TrainError::data(
            &label_path,
            format!("label {bad} is not a digit"),
        ));
    }
    if sizes[1] == 0 || sizes[2] == 0 {
        return Err(TrainError::data(
            &image_path,
            format!("empty images {sizes:?}"),
        ));
    }
    ImageSet::new(pixels, [1, sizes[1], sizes[2]], labels)
}

/// MNIST from `dir`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or `.gz`.
pub fn load(dir: &Path) -> Result<Splits> {
    Ok(Splits {
        train: read_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        test: read_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    })
}

/// The IDX bytes of `sizes` and `data` (fixtures, and the writer of the
/// built-in set's export).
pub fn encode_idx(sizes: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, sizes.len() as u8];
    for &s in sizes {
        out.extend((s as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
