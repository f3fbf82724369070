//! Triangular solves of convolutions: `y = conv(x, K)` for `x` when `K` is
//! an upper-left-quadrant 3x3 kernel (taps at `(-1, -1), (-1, 0), (0, -1)`
//! and a lower-triangular centre), whose Jacobian is triangular in raster
//! order: the inverse of the emerging convolution's factors (the second
//! factor is the same problem on images rotated by 180 degrees).
//!
//! [`Tensor::quadrant_solve`] is the op (CPU and CUDA backends, in f64, not
//! differentiable); [`solve_quadrant`] and [`solve_quadrant_reference`] are
//! the CPU kernels on slices.

use crate::backend::SolveGeom;
use crate::{DType, Error, Result, Tensor};
use rayon::prelude::*;

impl Tensor {
    /// `x` with `conv2d(x, kernel, same 3x3) = self` for `self (N, C, H, W)`
    /// and an upper-left-quadrant `kernel (C, C, 3, 3)` (taps at offsets
    /// `(-1, -1), (-1, 0), (0, -1)` and a centre lower triangular in the
    /// channels; other taps are ignored), solved by forward substitution in
    /// raster order, in f64 (both operands must be f64). Not recorded for
    /// autodiff. Errors name `quadrant_solve` and the shapes.
    pub fn quadrant_solve(&self, kernel: &Tensor) -> Result<Tensor> {
        const OP: &str = "quadrant_solve";
        let (ys, ks) = (self.shape(), kernel.shape());
        if ys.len() != 4 || ks != [ys[1], ys[1], 3, 3] {
            return Err(Error::shape(
                OP,
                &[ys, ks],
                "expected y (N, C, H, W) and a (C, C, 3, 3) kernel",
            ));
        }
        if self.dtype() != DType::F64 || kernel.dtype() != DType::F64 {
            return Err(Error::invalid(
                OP,
                format!(
                    "solves in f64, got {:?} and {:?} (cast with to_dtype)",
                    self.dtype(),
                    kernel.dtype()
                ),
            ));
        }
        crate::storage::same_device(OP, self.device(), kernel.device())?;
        let (y, k) = (self.detach().contiguous()?, kernel.detach().contiguous()?);
        let geom = SolveGeom {
            n: ys[0],
            c: ys[1],
            h: ys[2],
            w: ys[3],
        };
        let storage = y
            .storage()
            .quadrant_solve(y.layout(), &k.storage(), k.layout(), geom)?;
        Ok(Tensor::from_storage(storage, ys))
    }
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

/// [`solve_quadrant`] on a geometry.
pub(crate) fn solve_geom(y: &[f64], kernel: &[f64], g: SolveGeom) -> Vec<f64> {
    solve_quadrant(y, kernel, (g.n, g.c, g.h, g.w))
}
