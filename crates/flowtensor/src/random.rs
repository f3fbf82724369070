//! Seeded random tensors from a documented, counter-based generator.
//!
//! The generator is **Philox4x32-10** (Salmon, Moraes, Dror and Shaw, "Parallel
//! random numbers: as easy as 1, 2, 3", SC 2011), the generator of cuRAND and
//! of PyTorch's CUDA backend. Its state is a 64-bit key (the seed) and a
//! 64-bit block counter; block `c` is the 10-round Philox bijection of the
//! 128-bit counter `(c, 0)` under the key and yields four 32-bit words. Because
//! each block depends only on (seed, counter), a tensor's values do not depend
//! on the number of threads that fill it, and the same stream can be produced
//! on a GPU.
//!
//! Draws, in row-major order, each consuming one block per two values:
//! - uniform: `u = (w1 * 2^21 + (w0 >> 11)) * 2^-53` in [0, 1), from two words
//!   (53 random bits), scaled to [lo, hi); the second value uses words 2 and 3;
//! - normal: Box-Muller on the block's two uniforms, `r = sqrt(-2 ln(1 - u1))`,
//!   values `r cos(2 pi u2)` and `r sin(2 pi u2)`, then `mean + std * z`.
//!
//! f32 tensors get the same draws as f64 ones, rounded.

use crate::backend::Draw;
use crate::cpu::PAR_THRESHOLD;
use crate::storage::Storage;
use crate::{DType, Device, Result, Tensor};
use rayon::prelude::*;

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// The Philox4x32-10 bijection of counter `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        let p0 = PHILOX_M0 as u64 * c[0] as u64;
        let p1 = PHILOX_M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// The state of a [`Generator`], for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorState {
    pub seed: u64,
    /// Blocks consumed so far.
    pub counter: u64,
}

/// A seeded Philox4x32-10 stream (see the module docs for the exact draws).
#[derive(Clone, Debug)]
pub struct Generator {
    state: GeneratorState,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            state: GeneratorState { seed, counter: 0 },
        }
    }

    /// Continues a stream from a saved state.
    pub fn from_state(state: GeneratorState) -> Self {
        Generator { state }
    }

    pub fn state(&self) -> GeneratorState {
        self.state
    }

    /// `n` values, two per block from `value(block)`, advancing the counter.
    fn draw(&mut self, n: usize, value: impl Fn([u32; 4]) -> [f64; 2] + Sync) -> Vec<f64> {
        let start = self.advance(n);
        values_at(self.state.seed, start, n, value)
    }

    /// Moves the counter past the blocks of `n` values; returns where they start.
    fn advance(&mut self, n: usize) -> u64 {
        let start = self.state.counter;
        // the 64-bit block counter wraps around (after 2^64 blocks), never overflows
        self.state.counter = start.wrapping_add(n.div_ceil(2) as u64);
        start
    }

    /// A tensor of a draw, made on `device` by its backend (the same values on every device).
    fn tensor(
        &mut self,
        shape: &[usize],
        draw: Draw,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let n = shape.iter().product();
        let counter = self.advance(n);
        let storage = Storage::random(n, dtype, device, self.state.seed, counter, draw)?;
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Uniform values in [lo, hi).
    pub fn uniform(
        &mut self,
        shape: &[usize],
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        self.tensor(shape, Draw::Uniform { lo, hi }, dtype, device)
    }

    /// Normal values with the given mean and standard deviation.
    pub fn normal(
        &mut self,
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        self.tensor(shape, Draw::Normal { mean, std }, dtype, device)
    }

    /// Standard normal values.
    pub fn randn(&mut self, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        self.normal(shape, 0.0, 1.0, dtype, device)
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates on the stream).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let u = self.draw(n, |w| [unit(w[0], w[1]), unit(w[2], w[3])]);
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = ((u[i] * (i + 1) as f64) as usize).min(i);
            perm.swap(i, j);
        }
        perm
    }
}

/// `n` values from the blocks starting at `start` of the stream keyed by `seed`.
fn values_at(
    seed: u64,
    start: u64,
    n: usize,
    value: impl Fn([u32; 4]) -> [f64; 2] + Sync,
) -> Vec<f64> {
    let key = [seed as u32, (seed >> 32) as u32];
    let blocks = n.div_ceil(2);
    let pair = |b: usize| {
        let index = start.wrapping_add(b as u64);
        value(philox4x32_10(
            [index as u32, (index >> 32) as u32, 0, 0],
            key,
        ))
    };
    let mut out: Vec<f64> = if n >= PAR_THRESHOLD {
        (0..blocks).into_par_iter().flat_map_iter(&pair).collect()
    } else {
        (0..blocks).flat_map(pair).collect()
    };
    out.truncate(n);
    out
}

/// The `n` values of `draw` from block `counter` of the stream keyed by
/// `seed`, in f64 (the CPU backend's draw; the CUDA kernels reproduce it).
pub(crate) fn draw_values(seed: u64, counter: u64, n: usize, draw: Draw) -> Vec<f64> {
    match draw {
        Draw::Uniform { lo, hi } => values_at(seed, counter, n, |w| {
            [
                lo + (hi - lo) * unit(w[0], w[1]),
                lo + (hi - lo) * unit(w[2], w[3]),
            ]
        }),
        Draw::Normal { mean, std } => values_at(seed, counter, n, |w| {
            let (u1, u2) = (unit(w[0], w[1]), unit(w[2], w[3]));
            let r = (-2.0 * (1.0 - u1).ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            [mean + std * r * c, mean + std * r * s]
        }),
    }
}

/// 53 random bits from two words, as a float in [0, 1).
fn unit(lo: u32, hi: u32) -> f64 {
    let bits = ((hi as u64) << 21) | ((lo as u64) >> 11);
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}
