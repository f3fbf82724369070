//! MNIST in the IDX layout (LeCun's files, raw or gzipped).
//!
//! An IDX file is a big-endian header, magic `0x0000 08 NDIM` (`08`:
//! unsigned bytes), then `NDIM` u32 sizes, then the bytes. Images have
//! `NDIM = 3` (count, rows, columns), labels `NDIM = 1`.

use super::{find_file, ImageSet, Splits};
use crate::error::{Result, TrainError};
use crate::limits::{MemoryBudget, MAX_IMAGE_SIDE};
use std::io::Read;
use std::path::Path;

/// The IDX content of `path` (raw, or gzipped when it ends in `.gz`): its
/// sizes and its data bytes, checked against the expected number of
/// dimensions and the file's length.
///
/// Memory stays bounded by what the header implies: the sizes of an item
/// (every dimension after the first) are at most
/// [`crate::limits::MAX_IMAGE_SIDE`], the implied size is taken from
/// `budget` before anything is read, a raw file's length is checked before
/// its data is read, and a gzip stream is decompressed only up to the
/// header's size plus one byte (so a small archive that inflates to
/// gigabytes stops at once).
pub fn read_idx(
    path: &Path,
    ndim: usize,
    budget: &mut MemoryBudget,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
        parse_idx(decoder, ndim, None, path, budget)
    } else {
        let len = file.metadata().map_err(|e| TrainError::io(path, e))?.len();
        parse_idx(std::io::BufReader::new(file), ndim, Some(len), path, budget)
    }
}

/// The IDX content of the stream `input` (`length`: its size in bytes when
/// known); errors name `path`. The parser behind [`read_idx`], for any
/// source (files, fuzzers).
pub fn parse_idx(
    mut input: impl Read,
    ndim: usize,
    length: Option<u64>,
    path: &Path,
    budget: &mut MemoryBudget,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let header_len = 4 + 4 * ndim;
    let mut header = Vec::with_capacity(header_len);
    (&mut input)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(|e| read_error(path, e))?;
    if header.len() < header_len {
        return Err(TrainError::data(
            path,
            format!(
                "truncated IDX header: {} bytes, expected at least {header_len}",
                header.len()
            ),
        ));
    }
    let u32_at =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let magic = u32_at(0);
    let expected = 0x0800 | ndim as u32;
    if magic != expected {
        return Err(TrainError::data(
            path,
            format!("bad IDX magic number {magic:#010x}, expected {expected:#010x} (unsigned bytes, {ndim} dimensions)"),
        ));
    }
    let sizes: Vec<usize> = (0..ndim).map(|d| u32_at(4 + 4 * d) as usize).collect();
    if let Some(side) = sizes.iter().skip(1).find(|&&s| s > MAX_IMAGE_SIDE) {
        return Err(TrainError::data(
            path,
            format!("IDX sizes {sizes:?}: an item side of {side} is more than {MAX_IMAGE_SIDE}"),
        ));
    }
    let count = sizes
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| TrainError::data(path, format!("IDX sizes {sizes:?} overflow")))?;
    let mismatch = |have: u64| {
        let what = if have < count as u64 {
            "truncated"
        } else {
            "too long"
        };
        TrainError::data(
            path,
            format!(
                "{what}: the header's sizes {sizes:?} need {count} data bytes, the file has {have}"
            ),
        )
    };
    if let Some(len) = length {
        let have = len.saturating_sub(header_len as u64);
        if have != count as u64 {
            return Err(mismatch(have));
        }
    }
    budget
        .reserve(&format!("IDX sizes {sizes:?}"), count as u64)
        .map_err(|e| TrainError::data(path, e.to_string()))?;
    // grows with what the stream really holds (from a bounded start), never
    // past the implied size
    let mut data = Vec::with_capacity(count.min(1 << 20));
    (&mut input)
        .take(count as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, e))?;
    if data.len() != count {
        return Err(mismatch(data.len() as u64));
    }
    Ok((sizes, data))
}

fn read_error(path: &Path, e: std::io::Error) -> TrainError {
    if path.extension().is_some_and(|x| x == "gz") {
        TrainError::data(path, format!("not a valid gzip stream: {e}"))
    } else {
        TrainError::io(path, e)
    }
}

/// One split: an image file and a label file of the same length.
fn read_split(
    dir: &Path,
    images: &str,
    labels: &str,
    budget: &mut MemoryBudget,
) -> Result<ImageSet> {
    let image_path = find_file(dir, &[images])?;
    let label_path = find_file(dir, &[labels])?;
    let (sizes, pixels) = read_idx(&image_path, 3, budget)?;
    let (label_sizes, labels) = read_idx(&label_path, 1, budget)?;
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
    if sizes[0] == 0 {
        return Err(TrainError::data(&image_path, "holds no images"));
    }
    let shape = [1, sizes[1], sizes[2]];
    crate::limits::check_image_shape("image", shape)
        .map_err(|e| TrainError::data(&image_path, e.to_string()))?;
    ImageSet::new(pixels, shape, labels)
}

/// MNIST from `dir`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or `.gz`.
pub fn load(dir: &Path) -> Result<Splits> {
    let mut budget = MemoryBudget::new();
    let train = read_split(
        dir,
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        &mut budget,
    )?;
    let test = read_split(
        dir,
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        &mut budget,
    )?;
    Splits::new(train, test, dir)
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
