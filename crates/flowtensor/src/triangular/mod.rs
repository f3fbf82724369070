//! Triangular solves of convolutions: `y = conv(x, K)` for `x` when `K` is
//! an upper-left-quadrant 3x3 kernel (taps at `(-1, -1), (-1, 0), (0, -1)`
//! and a lower-triangular centre), whose Jacobian is triangular in raster
//! order: the inverse of the emerging convolution's factors (the second
//! factor is the same problem on images rotated by 180 degrees).
//!
//! [`Tensor::quadrant_solve`] is the op (CPU and CUDA backends, in f64, not
//! differentiable); [`solve_quadrant`] and [`solve_quadrant_reference`] are
//! the CPU kernels on slices.

mod diagonals;
mod images;
mod kernel;

use crate::backend::SolveGeom;
use crate::{DType, Error, Layout, Result, Tensor};

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
        let (y, k) = (self.detach(), kernel.detach().contiguous()?);
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

/// Solves `y = conv(x, K)` for every image of `y (n, c, h, w)` (f64,
/// contiguous) with an upper-left-quadrant kernel, vectorised over images
/// or, for small batches, over the pixels of an anti-diagonal.
pub fn solve_quadrant(
    y: &[f64],
    kernel: &[f64],
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<f64> {
    solve_strided(y, &Layout::contiguous(&[n, c, h, w]), kernel)
}

/// [`solve_quadrant`] of a strided `y` (its `layout` of shape `(n, c, h,
/// w)`) and a contiguous kernel: with one image per vector lane
/// ([`images`]) or one pixel of an anti-diagonal per lane ([`diagonals`]),
/// whichever sweeps fewer vectors per thread.
pub(crate) fn solve_strided(y: &[f64], layout: &Layout, kernel: &[f64]) -> Vec<f64> {
    let s = layout.shape();
    let (n, c, size) = (s[0], s[1], (s[2], s[3]));
    if n * c * s[2] * s[3] == 0 {
        return Vec::new();
    }
    let k = kernel::Prepared::new(kernel, c);
    let (lanes, kernel_fn) = kernel::pixel_kernel(k.ob);
    let threads = rayon::current_num_threads();
    let by_images = images::cost(n, size, lanes, threads);
    if diagonals::cost(n, size, lanes, threads) < by_images {
        diagonals::solve(y, layout, &k, (lanes, kernel_fn))
    } else {
        images::solve(y, layout, &k, (lanes, kernel_fn))
    }
}

#[cfg(test)]
mod tests {
    use super::{diagonals, images, kernel, solve_quadrant, solve_quadrant_reference};
    use crate::{DType, Device, Generator, Layout, Tensor};

    /// A random upper-left-quadrant kernel (other taps zero) with a centre
    /// diagonal away from zero.
    fn quadrant_kernel(c: usize, gen: &mut Generator) -> Vec<f64> {
        let mut k = gen
            .randn(&[c, c, 3, 3], DType::F64, Device::Cpu)
            .unwrap()
            .mul_scalar(0.3)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        for o in 0..c {
            for i in 0..c {
                for (a, b) in (0..3).flat_map(|a| (0..3).map(move |b| (a, b))) {
                    let outside = a == 2 || b == 2 || (a, b) == (1, 1) && i > o;
                    if outside {
                        k[((o * c + i) * 3 + a) * 3 + b] = 0.0;
                    }
                }
            }
            k[((o * c + o) * 3 + 1) * 3 + 1] += 1.5;
        }
        k
    }

    #[test]
    fn both_vector_solvers_match_plain_substitution() {
        let mut gen = Generator::new(7);
        // batches around the lane counts (1, 4, 8), channels around the
        // register blocks, non-square images and one with a single row
        for (n, c, h, w) in [
            (1, 1, 3, 4),
            (3, 2, 5, 3),
            (9, 3, 4, 4),
            (8, 5, 2, 6),
            (17, 12, 6, 5),
            (5, 13, 1, 7),
            (2, 48, 5, 5),
            (1, 12, 20, 9),
            (2, 3, 7, 30),
        ] {
            let k = quadrant_kernel(c, &mut gen);
            let y = gen
                .randn(&[n, c, h, w], DType::F64, Device::Cpu)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let layout = Layout::contiguous(&[n, c, h, w]);
            let prepared = kernel::Prepared::new(&k, c);
            let vector = kernel::pixel_kernel(prepared.ob);
            let solvers = [
                ("chosen", solve_quadrant(&y, &k, (n, c, h, w))),
                ("images", images::solve(&y, &layout, &prepared, vector)),
                (
                    "diagonals",
                    diagonals::solve(&y, &layout, &prepared, vector),
                ),
            ];
            let img = c * h * w;
            for (b, yi) in y.chunks(img).enumerate() {
                let reference = solve_quadrant_reference(yi, &k, (c, h, w));
                for (name, x) in &solvers {
                    for (p, (a, r)) in x[b * img..][..img].iter().zip(&reference).enumerate() {
                        assert!(
                            (a - r).abs() <= 1e-11 * (1.0 + r.abs()),
                            "{name} {n}x{c}x{h}x{w}: image {b}, element {p}: {a} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_op_solves_strided_right_hand_sides() {
        let mut gen = Generator::new(8);
        let (n, c, h, w) = (6, 4, 5, 7);
        let k = Tensor::from_vec(quadrant_kernel(c, &mut gen), &[c, c, 3, 3], Device::Cpu).unwrap();
        let y = gen.randn(&[n, c, h, w], DType::F64, Device::Cpu).unwrap();
        let flipped = y.flip(&[1, 2, 3]).unwrap();
        let copied = flipped.contiguous().unwrap();
        let a = flipped.quadrant_solve(&k).unwrap().to_vec_f64().unwrap();
        let b = copied.quadrant_solve(&k).unwrap().to_vec_f64().unwrap();
        assert_eq!(a, b);
        // and the solution convolves back to the right-hand side
        let x = Tensor::from_vec(a, &[n, c, h, w], Device::Cpu).unwrap();
        let back = x
            .conv2d(&k, None, &crate::Conv2dParams::same(3))
            .unwrap()
            .to_vec_f64()
            .unwrap();
        for (u, v) in back.iter().zip(copied.to_vec_f64().unwrap()) {
            assert!((u - v).abs() < 1e-10, "{u} vs {v}");
        }
    }
}
