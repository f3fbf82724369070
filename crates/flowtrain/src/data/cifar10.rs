//! CIFAR-10 in its binary version: each record is one label byte and then
//! 3072 pixel bytes (the 1024 red, then green, then blue values of a 32x32
//! image, row-major), 10000 records per batch file.

use super::{ImageSet, Splits};
use crate::error::{Result, TrainError};
use crate::limits::MemoryBudget;
use std::path::{Path, PathBuf};

const RECORD: usize = 1 + 3 * 32 * 32;

/// The records of one batch file (the file and its records taken from
/// `budget` before it is read).
pub fn read_batch(path: &Path, budget: &mut MemoryBudget) -> Result<ImageSet> {
    let len = std::fs::metadata(path)
        .map_err(|e| TrainError::io(path, e))?
        .len();
    budget
        .reserve("the batch and its records", len.saturating_mul(2))
        .map_err(|e| TrainError::data(path, e.to_string()))?;
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    parse_batch(&bytes, path)
}

/// The records of the batch `bytes`; errors name `path`. The parser behind
/// [`read_batch`], for any source (files, fuzzers).
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(TrainError::data(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte records (truncated or not a CIFAR-10 binary batch)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(TrainError::data(
                path,
                format!("record {i} has label {}, expected 0..=9", record[0]),
            ));
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    ImageSet::new(pixels, [3, 32, 32], labels)
}

/// The directory holding the batches: `dir` or its `cifar-10-batches-bin`.
pub(crate) fn batch_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-10-batches-bin");
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`): `data_batch_1.bin`
/// .. `data_batch_5.bin` for training, `test_batch.bin` for testing.
pub fn load(dir: &Path) -> Result<Splits> {
    let dir = batch_dir(dir);
    let mut budget = MemoryBudget::new();
    let mut train: Option<ImageSet> = None;
    for i in 1..=5 {
        let batch = read_batch(&dir.join(format!("data_batch_{i}.bin")), &mut budget)?;
        match &mut train {
            None => train = Some(batch),
            Some(t) => {
                t.pixels.extend(batch.pixels);
                t.labels.extend(batch.labels);
            }
        }
    }
    let train = train.ok_or_else(|| TrainError::data(&dir, "no training batches"))?;
    let test = read_batch(&dir.join("test_batch.bin"), &mut budget)?;
    Splits::new(train, test, &dir)
}
