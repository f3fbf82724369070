//! `shapes16`: the built-in image set, drawn procedurally so that training
//! needs no download.
//!
//! Each 16x16 grey-scale image holds one of five shapes (label 0..=4: disc,
//! ring, square, plus sign, diagonal bar) at a random centre, size and
//! brightness on a black background, anti-aliased by 4x4 supersampling. The
//! set is a fixed function of its seed: the same on every machine.

use super::{ImageSet, Splits};
use crate::error::Result;
use flowtensor::{DType, Device, Generator};

/// Image side.
pub const SIDE: usize = 16;
/// Images in the training and the test split of [`load`].
pub const SIZES: (usize, usize) = (4096, 512);

/// Coverage of one point `(px, py)` by shape `kind` centred at `(cx, cy)` with size `r`.
fn inside(kind: u8, px: f64, py: f64, cx: f64, cy: f64, r: f64) -> bool {
    let (dx, dy) = (px - cx, py - cy);
    let d = (dx * dx + dy * dy).sqrt();
    match kind {
        0 => d <= r,
        1 => d <= r && d >= 0.55 * r,
        2 => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
        3 => (dx.abs() <= 0.3 * r && dy.abs() <= r) || (dy.abs() <= 0.3 * r && dx.abs() <= r),
        _ => (dx - dy).abs() <= 0.45 * r && (dx + dy).abs() <= 1.6 * r,
    }
}

/// `n` images drawn from `gen`.
pub fn generate(n: usize, gen: &mut Generator) -> Result<ImageSet> {
    // five uniforms per image: kind, centre x, centre y, size, brightness
    let u = gen
        .uniform(&[n, 5], 0.0, 1.0, DType::F64, Device::Cpu)?
        .to_vec_f64()?;
    let mut pixels = vec![0u8; n * SIDE * SIDE];
    let mut labels = Vec::with_capacity(n);
    const SUB: usize = 4;
    for (i, draw) in u.chunks_exact(5).enumerate() {
        let kind = ((draw[0] * 5.0) as u8).min(4);
        let (cx, cy) = (5.0 + 6.0 * draw[1], 5.0 + 6.0 * draw[2]);
        let r = 3.0 + 3.0 * draw[3];
        let brightness = 140.0 + 115.0 * draw[4];
        labels.push(kind);
        let image = &mut pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
        for y in 0..SIDE {
            for x in 0..SIDE {
                let mut covered = 0;
                for sy in 0..SUB {
                    for sx in 0..SUB {
                        let px = x as f64 + (sx as f64 + 0.5) / SUB as f64;
                        let py = y as f64 + (sy as f64 + 0.5) / SUB as f64;
                        covered += usize::from(inside(kind, px, py, cx, cy, r));
                    }
                }
                let value = brightness * covered as f64 / (SUB * SUB) as f64;
                image[y * SIDE + x] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    ImageSet::new(pixels, [1, SIDE, SIDE], labels)
}

/// The built-in splits ([`SIZES`]), from fixed seeds.
pub fn load() -> Result<Splits> {
    Ok(Splits {
        train: generate(SIZES.0, &mut Generator::new(0x5eed_0001))?,
        test: generate(SIZES.1, &mut Generator::new(0x5eed_0002))?,
    })
}
