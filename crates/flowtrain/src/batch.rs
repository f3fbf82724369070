//! From stored bytes to training batches: the epoch order, bit reduction and flips.

use crate::data::ImageSet;
use flowtensor::{DType, Device, Generator, Result, Tensor};

/// The order of the training set in `epoch`: a permutation drawn from a
/// generator seeded by `(seed, epoch)`, so any step's batch is known
/// without replaying the run (the set is reshuffled every epoch).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let key = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Generator::new(key).permutation(n)
}

/// The training-set indices of step `step` (batches of `batch` images,
/// the last incomplete batch of an epoch dropped; none of an empty set).
pub fn step_indices(seed: u64, step: u64, batch: usize, n: usize) -> Vec<usize> {
    if n == 0 || batch == 0 {
        return Vec::new();
    }
    let per_epoch = (n / batch).max(1) as u64;
    let (epoch, pos) = (step / per_epoch, (step % per_epoch) as usize);
    let order = epoch_order(seed, epoch, n);
    (0..batch).map(|i| order[(pos * batch + i) % n]).collect()
}

/// The images `indices` of `set` as an `(N, C, H, W)` tensor of integer
/// values in `0..2^n_bits` (the top `n_bits` bits of each byte), each
/// mirrored left-right where `flips` says so.
pub fn images_tensor(
    set: &ImageSet,
    indices: &[usize],
    n_bits: u32,
    flips: Option<&[bool]>,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    let [c, h, w] = set.shape;
    let shift = 8 - n_bits;
    let mut values = Vec::with_capacity(indices.len() * c * h * w);
    for (k, &i) in indices.iter().enumerate() {
        let flip = flips.is_some_and(|f| f[k]);
        let image = set.image(i);
        for row in image.chunks_exact(w) {
            if flip {
                values.extend(row.iter().rev().map(|&v| f32::from(v >> shift)));
            } else {
                values.extend(row.iter().map(|&v| f32::from(v >> shift)));
            }
        }
    }
    Tensor::from_vec(values, &[indices.len(), c, h, w], Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}
