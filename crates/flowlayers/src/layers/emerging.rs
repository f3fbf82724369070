//! Emerging convolutions (Hoogeboom, van den Berg and Welling, "Emerging
//! Convolutions for Generative Normalizing Flows", 2019): two
//! autoregressive 3x3 convolutions whose composition has the receptive field
//! of a full 3x3 convolution, with an exact log-determinant and an inverse
//! by back-substitution.

use crate::flow::{parameter, Flow};
use crate::layers::spectral_norm::{check_image, check_image_size};
use flowtensor::{Conv2dParams, DType, Device, Generator, Result, Tensor};
use rayon::prelude::*;

const NAME: &str = "EmergingConv";

/// The mask of the first convolution, `(C, C, 3, 3)`: the upper-left 2x2
/// quadrant of taps (offsets `(-1, -1), (-1, 0), (0, -1), (0, 0)`, all at
/// raster-earlier pixels or the centre), with the centre tap lower
/// triangular in the channels (`c' <= c`). The second convolution's mask is
/// this one rotated by 180 degrees in space with the channel order reversed:
/// the lower-right quadrant and an upper triangular centre.
pub fn quadrant_mask(channels: usize, dtype: DType, device: Device) -> Result<Tensor> {
    let c = channels;
    let mut m = vec![0.0f64; c * c * 9];
    for o in 0..c {
        for i in 0..c {
            for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                if (a, b) != (1, 1) || i <= o {
                    m[((o * c + i) * 3 + a) * 3 + b] = 1.0;
                }
            }
        }
    }
    Tensor::from_vec(m, &[c, c, 3, 3], Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// `K'[c, c', a, b] = K[C-1-c, C-1-c', 2-a, 2-b]`: the kernel that acts on
/// images rotated by 180 degrees with reversed channels as `K` acts on the
/// originals (it maps the lower-right mask to the upper-left one).
fn rotated(kernel: &[f64], c: usize) -> Vec<f64> {
    let mut out = vec![0.0; kernel.len()];
    for o in 0..c {
        for i in 0..c {
            for t in 0..9 {
                out[(((c - 1 - o) * c + (c - 1 - i)) * 9) + 8 - t] = kernel[(o * c + i) * 9 + t];
            }
        }
    }
    out
}

/// An image `(c, h, w)` rotated by 180 degrees with reversed channels (its
/// own inverse).
fn rotate_image(x: &[f64]) -> Vec<f64> {
    x.iter().rev().copied().collect()
}

/// Solves `y = conv(x, K)` for `x`, for one `(c, h, w)` image and an
/// upper-left-quadrant kernel `K (c, c, 3, 3)` with a lower-triangular
/// centre, by plain back-substitution in raster order on the NCHW data: the
/// reference the fast solver is checked and timed against.
pub fn solve_quadrant_reference(
    y: &[f64],
    kernel: &[f64],
    (c, h, w): (usize, usize, usize),
) -> Vec<f64> {
    let mut x = vec![0.0; y.len()];
    let at = |ch: usize, i: usize, j: usize| (ch * h + i) * w + j;
    for i in 0..h {
        for j in 0..w {
            for o in 0..c {
                let mut r = y[at(o, i, j)];
                for ci in 0..c {
                    for (a, b) in [(0usize, 0usize), (0, 1), (1, 0), (1, 1)] {
                        if (a, b) == (1, 1) && ci >= o {
                            continue;
                        }
                        let (Some(si), Some(sj)) = ((i + a).checked_sub(1), (j + b).checked_sub(1))
                        else {
                            continue;
                        };
                        r -= kernel[((o * c + ci) * 3 + a) * 3 + b] * x[at(ci, si, sj)];
                    }
                }
                x[at(o, i, j)] = r / kernel[((o * c + o) * 3 + 1) * 3 + 1];
            }
        }
    }
    x
}

/// The per-pixel operators of an upper-left-quadrant kernel, channels last:
/// the three neighbour taps `(-1, -1), (-1, 0), (0, -1)` as `C x C` blocks
/// and the lower-triangular centre.
struct QuadrantKernel {
    c: usize,
    /// `[tap][o][i]`.
    taps: Vec<f64>,
    /// `[o][i]`, lower triangular.
    centre: Vec<f64>,
}

impl QuadrantKernel {
    fn new(kernel: &[f64], c: usize) -> Self {
        let mut taps = vec![0.0; 3 * c * c];
        let mut centre = vec![0.0; c * c];
        for o in 0..c {
            for i in 0..c {
                let k = |a: usize, b: usize| kernel[((o * c + i) * 3 + a) * 3 + b];
                for (t, (a, b)) in [(0, 0), (0, 1), (1, 0)].into_iter().enumerate() {
                    taps[(t * c + o) * c + i] = k(a, b);
                }
                if i <= o {
                    centre[o * c + i] = k(1, 1);
                }
            }
        }
        QuadrantKernel { c, taps, centre }
    }

    /// `x` at pixel `(i, j)` from `y` there and the solved neighbours in
    /// `x` (channels last, `w` pixels per row), into `out`.
    fn pixel(&self, y: &[f64], x: &[f64], (i, j, w): (usize, usize, usize), out: &mut [f64]) {
        let c = self.c;
        out.copy_from_slice(y);
        let neighbours = [
            (i.checked_sub(1), j.checked_sub(1)),
            (i.checked_sub(1), Some(j)),
            (Some(i), j.checked_sub(1)),
        ];
        for (t, pos) in neighbours.into_iter().enumerate() {
            let (Some(si), Some(sj)) = pos else { continue };
            let xn = &x[(si * w + sj) * c..][..c];
            for (o, r) in out.iter_mut().enumerate() {
                let row = &self.taps[(t * c + o) * c..][..c];
                *r -= row.iter().zip(xn).map(|(k, v)| k * v).sum::<f64>();
            }
        }
        for o in 0..c {
            let row = &self.centre[o * c..][..c];
            let known: f64 = row[..o].iter().zip(&out[..o]).map(|(k, v)| k * v).sum();
            out[o] = (out[o] - known) / row[o];
        }
    }

    /// Solves one `(c, h, w)` image: channels last, pixel by pixel in
    /// raster order, or along anti-diagonals `i + j = d` (whose pixels
    /// depend only on earlier diagonals) with each diagonal's pixels in
    /// parallel when `wavefronts`.
    fn solve(&self, y: &[f64], (h, w): (usize, usize), wavefronts: bool) -> Vec<f64> {
        let c = self.c;
        let mut yl = vec![0.0; y.len()];
        for (ch, plane) in y.chunks(h * w).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                yl[p * c + ch] = v;
            }
        }
        let mut xl = vec![0.0; y.len()];
        if wavefronts {
            for d in 0..h + w - 1 {
                let rows = d.saturating_sub(w - 1)..d.min(h - 1) + 1;
                let solved: Vec<(usize, Vec<f64>)> = rows
                    .into_par_iter()
                    .map(|i| {
                        let (j, mut out) = (d - i, vec![0.0; c]);
                        self.pixel(&yl[(i * w + j) * c..][..c], &xl, (i, j, w), &mut out);
                        (i * w + j, out)
                    })
                    .collect();
                for (p, v) in solved {
                    xl[p * c..][..c].copy_from_slice(&v);
                }
            }
        } else {
            let mut out = vec![0.0; c];
            for p in 0..h * w {
                self.pixel(&yl[p * c..][..c], &xl, (p / w, p % w, w), &mut out);
                xl[p * c..][..c].copy_from_slice(&out);
            }
        }
        let mut x = vec![0.0; y.len()];
        for (ch, plane) in x.chunks_mut(h * w).enumerate() {
            for (p, v) in plane.iter_mut().enumerate() {
                *v = xl[p * c + ch];
            }
        }
        x
    }
}

/// Solves `y = conv(x, K)` for every image of `y (n, c, h, w)` (f64,
/// contiguous) with an upper-left-quadrant kernel: images in parallel, and
/// each image along anti-diagonal wavefronts when there are fewer images
/// than threads.
pub fn solve_quadrant(
    y: &[f64],
    kernel: &[f64],
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<f64> {
    let op = QuadrantKernel::new(kernel, c);
    let img = c * h * w;
    if img == 0 {
        return vec![0.0; y.len()];
    }
    let wavefronts = n < rayon::current_num_threads();
    let solved: Vec<Vec<f64>> = y
        .par_chunks(img)
        .map(|yi| op.solve(yi, (h, w), wavefronts))
        .collect();
    solved.concat()
}

/// The emerging convolution: two masked 3x3 same convolutions,
/// `z = K2 * (K1 * x)`.
///
/// - `K1 = W1 .* m`, `m` the upper-left quadrant mask of [`quadrant_mask`]
///   (lower-triangular centre), and `K2 = W2 .* m'`, `m'` its 180-degree
///   rotation with reversed channels (lower-right quadrant, upper-triangular
///   centre); parameters `w1`, `w2` `(C, C, 3, 3)`, buffers `mask1`, `mask2`.
///   The two quadrants compose to a full 3x3 receptive field.
/// - Each convolution's Jacobian is triangular (in raster order for `K1`,
///   the reverse for `K2`) with the centre diagonal `K[c, c, 1, 1]` at every
///   pixel, so
///
///   ```text
///   log |det dz/dx| = H W sum_c (log |K1[c, c, 1, 1]| + log |K2[c, c, 1, 1]|).
///   ```
///
/// - Inverse: `y = K2^{-1} z` by back-substitution in reverse raster order
///   (the rotated problem of `K1`'s kind), then `x = K1^{-1} y` in raster
///   order, pixel by pixel and channel by channel, in f64 ([`solve_quadrant`]:
///   images in parallel, anti-diagonal wavefronts inside an image when the
///   batch is smaller than the thread pool). Not differentiable.
///
/// Initialised near the identity: `W = I (centre) + 0.01 randn`.
pub struct EmergingConv {
    channels: usize,
    height: usize,
    width: usize,
    w1: Tensor,
    w2: Tensor,
    mask1: Tensor,
    mask2: Tensor,
}

impl EmergingConv {
    /// A layer over `channels` channels of `(height, width)` images; `w1`
    /// then `w2` drawn from `gen`.
    pub fn new(
        channels: usize,
        (height, width): (usize, usize),
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        let identity = Tensor::eye(channels, DType::F64, Device::Cpu)?
            .reshape(&[channels, channels, 1, 1])?
            .pad(&[(1, 1), (1, 1)], flowtensor::PadMode::Zero)?;
        let mut draw = || -> Result<Tensor> {
            let w = gen
                .randn(&[channels, channels, 3, 3], DType::F64, Device::Cpu)?
                .mul_scalar(0.01)?
                .add(&identity)?;
            parameter(w.to_dtype(dtype)?.to_device(device)?)
        };
        let (w1, w2) = (draw()?, draw()?);
        let mask1 = quadrant_mask(channels, dtype, device)?;
        let mask2 = mask1.flip(&[0, 1, 2, 3])?.contiguous()?;
        Ok(EmergingConv {
            channels,
            height,
            width,
            w1,
            w2,
            mask1,
            mask2,
        })
    }

    /// The masked kernels `(K1, K2)`.
    pub fn kernels(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.w1.mul(&self.mask1)?, self.w2.mul(&self.mask2)?))
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(
            NAME,
            x,
            self.channels,
            (self.height, self.width),
            self.w1.dtype(),
        )
    }

    /// `H W sum_c log |K[c, c, 1, 1]|` of one masked kernel, a scalar.
    fn centre_logdet(&self, kernel: &Tensor) -> Result<Tensor> {
        let c = self.channels;
        let eye = Tensor::eye(c, kernel.dtype(), kernel.device())?;
        kernel
            .narrow(2, 1, 1)?
            .narrow(3, 1, 1)?
            .reshape(&[c, c])?
            .mul(&eye)?
            .sum(&[1], false)?
            .abs()?
            .log()?
            .sum_all()?
            .mul_scalar((self.height * self.width) as f64)
    }
}

impl Flow for EmergingConv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let (k1, k2) = self.kernels()?;
        let same = Conv2dParams::same(3);
        let z = x.conv2d(&k1, None, &same)?.conv2d(&k2, None, &same)?;
        let logdet = self.centre_logdet(&k1)?.add(&self.centre_logdet(&k2)?)?;
        Ok((z, logdet.broadcast_as(&[x.shape()[0]])?.contiguous()?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let (k1, k2) = self.kernels()?;
        let (c, h, w) = (self.channels, self.height, self.width);
        let n = z.shape()[0];
        let img = c * h * w;
        let zv = z.to_vec_f64()?;
        // K2 is K1's kind on images rotated by 180 degrees with reversed channels
        let k2_rotated = rotated(&k2.to_vec_f64()?, c);
        let rotated_z: Vec<f64> = zv.chunks(img).flat_map(rotate_image).collect();
        let y_rotated = solve_quadrant(&rotated_z, &k2_rotated, (n, c, h, w));
        let y: Vec<f64> = y_rotated.chunks(img).flat_map(rotate_image).collect();
        let x = solve_quadrant(&y, &k1.to_vec_f64()?, (n, c, h, w));
        Tensor::from_vec(x, z.shape(), Device::Cpu)?
            .to_dtype(z.dtype())?
            .to_device(z.device())
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("w1".into(), self.w1.clone()),
            ("w2".into(), self.w2.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("mask1".into(), self.mask1.clone()),
            ("mask2".into(), self.mask2.clone()),
        ]
    }
}
