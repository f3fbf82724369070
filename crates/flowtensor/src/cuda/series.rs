//! The convolution exponential on CUDA storage, composed of the convolution
//! kernels and the masked steps of `kernels/series.cu`, batch-wide: images
//! with fewer terms (adaptive stopping) are masked out of the later terms,
//! so all images share every launch.
//!
//! - forward: `u_i = M u_{i-1} / i`, `y += u_i` for the images still
//!   summing; with a tolerance, the largest `|u_i|` of every image (one
//!   device reduction per term, read back as one value per image) decides
//!   who stops.
//! - backward, memory-saving: images go in chunks small enough that the
//!   chunk's recomputed terms `u_0, ..., u_{n-1}` and scaled adjoints fit in
//!   [`CHUNK_BYTES`]; per chunk, the adjoint recursion
//!   `a_{i-1} = g + M^T a_i / i` runs for the images with at least `i`
//!   terms, and one weight-gradient launch over the stacked pairs adds
//!   `sum_i W(u_{i-1}, a_i / i)` to the kernel gradient (chunks in order,
//!   so the sum is deterministic).

use super::launch::{grid_1d, Arg, Launch};
use super::{suffix, CudaStorage};
use crate::backend::{BackendStorage, ConvEpilogue, ConvPass};
use crate::conv_exp::{SeriesGeom, Stop};
use crate::cpu::CpuStorage;
use crate::layout::Layout;
use crate::ops::kinds::{ReduceOp, UnaryOp};
use crate::{DType, Result};

/// The most bytes a backward chunk's stored terms may take.
const CHUNK_BYTES: usize = 64 << 20;

/// A per-image mask (1 for the images in `active`) on the device.
fn mask(like: &CudaStorage, active: &[bool]) -> Result<CudaStorage> {
    let values: Vec<f64> = active.iter().map(|&a| f64::from(u8::from(a))).collect();
    let host = match like.dtype {
        DType::F32 => CpuStorage::F32(values.into_iter().map(|v| v as f32).collect()),
        DType::F64 => CpuStorage::F64(values),
    };
    CudaStorage::from_host(&host, like.device())
}

/// One launch of a `series.cu` kernel over `n` elements.
fn step(
    name: &str,
    dtype: DType,
    n: usize,
    args: Vec<Arg<'_>>,
    runner: &CudaStorage,
) -> Result<()> {
    let (grid, block) = grid_1d(n);
    runner.run(Launch {
        module: "series",
        name: format!("{name}_{}", suffix(dtype)),
        grid,
        block,
        args,
    })
}

/// `M u` (or `M^T u` when `adjoint`) for `images` images.
fn apply(
    u: &CudaStorage,
    k: &CudaStorage,
    sg: &SeriesGeom,
    images: usize,
    adjoint: bool,
) -> Result<CudaStorage> {
    let geom = sg.conv(images);
    let lu = Layout::contiguous(&[images, sg.c, sg.h, sg.w]);
    let lk = Layout::contiguous(&[sg.c, sg.c, sg.k, sg.k]);
    let pass = if adjoint {
        ConvPass::BackwardData
    } else {
        ConvPass::Forward
    };
    u.conv(&lu, k, &lk, &geom, pass, ConvEpilogue::NONE)
}

/// The largest `|u|` of every image, on the host (NaN when an entry is NaN).
fn largest_abs(u: &CudaStorage, sg: &SeriesGeom, images: usize) -> Result<Vec<f64>> {
    let l = Layout::contiguous(&[images, sg.image()]);
    let abs = u.unary(&l, UnaryOp::Abs)?;
    let max = abs.reduce(&l, &[1], ReduceOp::Max)?;
    let host = max.to_host(&Layout::contiguous(&[images]))?;
    Ok(match host {
        CpuStorage::F32(v) => v.into_iter().map(f64::from).collect(),
        CpuStorage::F64(v) => v,
    })
}

pub(crate) fn forward(
    x: &CudaStorage,
    k: &CudaStorage,
    sg: &SeriesGeom,
    stop: Stop,
) -> Result<(CudaStorage, Vec<usize>)> {
    let (n, img) = (sg.n, sg.image());
    let total = n * img;
    let flat = Layout::contiguous(&[total]);
    let mut y = x.copy_strided(&flat)?;
    let mut counts = vec![0usize; n];
    if total == 0 || stop.max == 0 {
        return Ok((y, counts));
    }
    let mut active = vec![true; n];
    let mut u = x.copy_strided(&flat)?;
    for i in 1..=stop.max {
        let mut next = apply(&u, k, sg, n, false)?;
        step(
            "series_scale",
            x.dtype,
            total,
            vec![
                Arg::Out(&mut next),
                Arg::I64(total as i64),
                Arg::F64(1.0 / i as f64),
            ],
            x,
        )?;
        let m = mask(x, &active)?;
        step(
            "series_add_masked",
            x.dtype,
            total,
            vec![
                Arg::Out(&mut y),
                Arg::In(&next),
                Arg::In(&m),
                Arg::I64(img as i64),
                Arg::I64(total as i64),
            ],
            x,
        )?;
        for (b, a) in active.iter().enumerate() {
            if *a {
                counts[b] = i;
            }
        }
        if let Some(tol) = stop.tol {
            let largest = largest_abs(&next, sg, n)?;
            for (a, m) in active.iter_mut().zip(&largest) {
                // NaN never stops a series early
                if *m < tol {
                    *a = false;
                }
            }
            if !active.contains(&true) {
                break;
            }
        }
        u = next;
    }
    Ok((y, counts))
}

pub(crate) fn backward(
    x: &CudaStorage,
    k: &CudaStorage,
    g: &CudaStorage,
    sg: &SeriesGeom,
    counts: &[usize],
    want_kernel: bool,
) -> Result<(CudaStorage, Option<CudaStorage>)> {
    let (n, img) = (sg.n, sg.image());
    let kernel_len = sg.c * sg.c * sg.k * sg.k;
    let mut dx = x.zeros_like_device(n * img, x.dtype)?;
    let mut dk = if want_kernel {
        Some(x.zeros_like_device(kernel_len, x.dtype)?)
    } else {
        None
    };
    if n * img == 0 {
        return Ok((dx, dk));
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let bytes = 2 * most * img * x.dtype.size_in_bytes();
    let chunk = (CHUNK_BYTES / bytes.max(1)).clamp(1, n);
    for first in (0..n).step_by(chunk) {
        let images = chunk.min(n - first);
        let size = images * img;
        let part = Layout::from_parts(vec![size], vec![1], first * img);
        let (xc, gc) = (x.copy_strided(&part)?, g.copy_strided(&part)?);
        let chunk_counts = &counts[first..first + images];
        let terms = chunk_counts.iter().copied().max().unwrap_or(0);
        let mut a = gc.copy_strided(&Layout::contiguous(&[size]))?;
        // u_0 .. u_{terms-1} and a_i / i for i = 1 .. terms, stacked per term
        let mut us: Vec<CudaStorage> = Vec::new();
        if want_kernel && terms > 0 {
            us.push(xc.copy_strided(&Layout::contiguous(&[size]))?);
            for i in 1..terms {
                let mut next = apply(&us[i - 1], k, sg, images, false)?;
                step(
                    "series_scale",
                    x.dtype,
                    size,
                    vec![
                        Arg::Out(&mut next),
                        Arg::I64(size as i64),
                        Arg::F64(1.0 / i as f64),
                    ],
                    x,
                )?;
                us.push(next);
            }
        }
        let mut scaled_terms: Vec<Option<CudaStorage>> = (0..terms).map(|_| None).collect();
        for i in (1..=terms).rev() {
            let active: Vec<bool> = chunk_counts.iter().map(|&c| c >= i).collect();
            let m = mask(x, &active)?;
            let inv = 1.0 / i as f64;
            if want_kernel {
                let mut s = x.zeros_like_device(size, x.dtype)?;
                step(
                    "series_scaled",
                    x.dtype,
                    size,
                    vec![
                        Arg::Out(&mut s),
                        Arg::In(&a),
                        Arg::In(&m),
                        Arg::I64(img as i64),
                        Arg::I64(size as i64),
                        Arg::F64(inv),
                    ],
                    x,
                )?;
                scaled_terms[i - 1] = Some(s);
            }
            let t = apply(&a, k, sg, images, true)?;
            step(
                "series_step",
                x.dtype,
                size,
                vec![
                    Arg::Out(&mut a),
                    Arg::In(&gc),
                    Arg::In(&t),
                    Arg::In(&m),
                    Arg::I64(img as i64),
                    Arg::I64(size as i64),
                    Arg::F64(inv),
                ],
                x,
            )?;
        }
        dx.write_range(
            first * img..first * img + size,
            &a,
            &Layout::contiguous(&[size]),
        )?;
        if let (Some(dk), true) = (dk.as_mut(), terms > 0) {
            let stacked_us = stack(&us)?;
            let stacked_scaled = stack(
                &scaled_terms
                    .into_iter()
                    .map(|s| {
                        s.ok_or_else(|| {
                            crate::Error::invalid("conv_exp backward", "a missing term")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            )?;
            let geom = sg.conv(terms * images);
            let l = Layout::contiguous(&[terms * images, sg.c, sg.h, sg.w]);
            let part = stacked_us.conv(
                &l,
                &stacked_scaled,
                &l,
                &geom,
                ConvPass::BackwardWeight,
                ConvEpilogue::NONE,
            )?;
            let lk = Layout::contiguous(&[kernel_len]);
            let sum = dk.binary(&lk, &part, &lk, crate::ops::kinds::BinaryOp::Add)?;
            *dk = sum;
        }
    }
    Ok((dx, dk))
}

/// The storages of `parts` (equal lengths) one after another.
fn stack(parts: &[CudaStorage]) -> Result<CudaStorage> {
    let len = parts[0].len;
    let l = Layout::contiguous(&[1, len]);
    let pairs: Vec<(&CudaStorage, &Layout)> = parts.iter().map(|p| (p, &l)).collect();
    CudaStorage::cat(&pairs, 0)
}
