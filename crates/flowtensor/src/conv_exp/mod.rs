//! The convolution exponential (Hoogeboom, Garcia Satorras, Tomczak and
//! Welling, 2020): an invertible linear layer `y = exp(M) x`, where `M` is a
//! same-padded, stride-1 convolution with a `(C, C, k, k)` kernel (`k` odd).
//!
//! `exp(M)` is never formed; it is applied as the power series
//!
//! ```text
//! exp(M) x = sum_{i >= 0} M^i x / i! = u_0 + u_1 + u_2 + ...,
//! u_0 = x,   u_i = M u_{i-1} / i,
//! ```
//!
//! truncated after a fixed number of terms or once the latest term is small
//! ([`Terms`]). Its inverse is `exp(-M)` (the same series with the negated
//! kernel), and `log|det exp(M)| = trace(M) = H W sum_c K[c, c, k/2, k/2]`:
//! with zero padding the centre tap of a kernel is the only one that maps a
//! pixel onto itself.
//!
//! [`conv_exp`] is one [`CustomOp`] node whose backward keeps nothing but its
//! two inputs; see [`ConvExp`]'s documentation for the rule and its memory.
//! [`conv_exp_series_autodiff`] is the plain unrolled series, recorded op by
//! op, as a reference.

pub(crate) mod cpu;

use crate::conv::ConvGeom;
use crate::ops::binary::check_compatible;
use crate::{Conv2dParams, CustomOp, Error, Result, Tensor};
use std::sync::{Arc, OnceLock};

/// How many terms of `exp(M) x = sum_i M^i x / i!` to sum after the identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Terms {
    /// Exactly `n` terms: `sum_{i=0}^{n} M^i x / i!`.
    Fixed(usize),
    /// Terms `u_i = M u_{i-1} / i` until `max |u_i| < tol` (that term is the
    /// last one added), or `max` terms, whichever comes first. `tol` must be
    /// non-negative (`0` always runs to `max`).
    Adaptive {
        /// Stop once the largest entry of the latest term is below this.
        tol: f64,
        /// The most terms ever summed.
        max: usize,
    },
}

/// Checks `x (N, C, H, W)` against `kernel (C, C, k, k)` with `k` odd; returns `k`.
fn check_shapes(op: &'static str, x: &Tensor, kernel: &Tensor) -> Result<usize> {
    let (xs, ks) = (x.shape(), kernel.shape());
    if xs.len() != 4 || ks.len() != 4 {
        return Err(Error::shape(
            op,
            &[xs, ks],
            "input must be 4-D (N, C, H, W) and kernel 4-D (C, C, k, k)",
        ));
    }
    check_kernel(op, kernel, &[xs])?;
    if ks[1] != xs[1] {
        return Err(Error::shape(
            op,
            &[xs, ks],
            format!(
                "the kernel's channels ({}) must match the input's ({})",
                ks[1], xs[1]
            ),
        ));
    }
    check_compatible(op, x, kernel)?;
    Ok(ks[2])
}

/// Checks that `kernel` is `(C, C, k, k)` with `k` odd; `context` are shapes
/// reported alongside it.
fn check_kernel(op: &'static str, kernel: &Tensor, context: &[&[usize]]) -> Result<usize> {
    let ks = kernel.shape();
    let shapes: Vec<&[usize]> = context.iter().copied().chain([ks]).collect();
    if ks.len() != 4 {
        return Err(Error::shape(op, &shapes, "kernel must be 4-D (C, C, k, k)"));
    }
    if ks[0] != ks[1] || ks[2] != ks[3] {
        return Err(Error::shape(
            op,
            &shapes,
            "kernel must be (C, C, k, k): square in channels and in space",
        ));
    }
    if ks[2].is_multiple_of(2) {
        return Err(Error::shape(
            op,
            &shapes,
            format!("the kernel size k = {} must be odd", ks[2]),
        ));
    }
    Ok(ks[2])
}

/// The unrolled series `sum_{i=0}^{n} u_i` (`u_0 = x`, `u_i = M u_{i-1} / i`)
/// in recorded tensor ops.
fn unrolled(x: &Tensor, kernel: &Tensor, k: usize, n: usize) -> Result<Tensor> {
    let mut sum = x.clone();
    let mut u = x.clone();
    for i in 1..=n {
        u = u
            .conv2d(kernel, None, &Conv2dParams::same(k))?
            .div_scalar(i as f64)?;
        sum = sum.add(&u)?;
    }
    Ok(sum)
}

/// The shape of a series: `n` images of `(c, h, w)` and a `(c, c, k, k)` kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeriesGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl SeriesGeom {
    /// Values of one image.
    pub(crate) fn image(&self) -> usize {
        self.c * self.h * self.w
    }

    /// `M` (same padding, stride 1) applied to `images` images at once.
    pub(crate) fn conv(&self, images: usize) -> ConvGeom {
        ConvGeom {
            n: images,
            c: self.c,
            h: self.h,
            w: self.w,
            o: self.c,
            ho: self.h,
            wo: self.w,
            kh: self.k,
            kw: self.k,
            stride: (1, 1),
            padding: (self.k / 2, self.k / 2),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// When to stop the series: after `max` terms, or earlier once the largest
/// entry of the latest term is below `tol`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stop {
    pub max: usize,
    pub tol: Option<f64>,
}

fn check_terms(op: &'static str, terms: Terms) -> Result<Stop> {
    match terms {
        Terms::Adaptive { tol, .. } if tol.is_nan() || tol < 0.0 => Err(Error::invalid(
            op,
            format!("the adaptive tolerance must be non-negative, got {tol}"),
        )),
        Terms::Adaptive { tol, max } => Ok(Stop {
            max,
            tol: Some(tol),
        }),
        Terms::Fixed(max) => Ok(Stop { max, tol: None }),
    }
}

/// The convolution exponential `exp(M) x = x + M x / 1! + M (M x) / 2! + ...`.
///
/// `x` is `(N, C, H, W)`, `kernel` is `(C, C, k, k)` with `k` odd, and `M` is
/// `conv2d` with stride 1 and zero padding `k / 2` (so `M` maps `(C, H, W)`
/// images to themselves). Returns, for each sample `b`, the truncated sum
/// `sum_{i=0}^{n_b} M^i x_b / i!`, and the numbers `n_b` of terms used after
/// the identity: `n` for [`Terms::Fixed`]`(n)`, and for [`Terms::Adaptive`]
/// the first `i` with `max |M^i x_b / i!| < tol` over that sample, at most
/// `max` (each sample stops on its own, so one large sample does not make
/// the others pay for its terms).
///
/// Differentiable in `x` and `kernel` as one graph node ([`ConvExp`]) whose
/// backward stores only the two inputs and recomputes the series.
///
/// Errors name `conv_exp` and the shapes for inputs that are not 4-D, a
/// kernel that is not `(C, C, k, k)` with the input's `C`, an even `k`,
/// mismatched dtypes or devices, and a negative or NaN adaptive tolerance.
pub fn conv_exp(x: &Tensor, kernel: &Tensor, terms: Terms) -> Result<(Tensor, Vec<usize>)> {
    conv_exp_named("conv_exp", x, kernel, terms)
}

fn conv_exp_named(
    op: &'static str,
    x: &Tensor,
    kernel: &Tensor,
    terms: Terms,
) -> Result<(Tensor, Vec<usize>)> {
    check_shapes(op, x, kernel)?;
    let stop = check_terms(op, terms)?;
    let node = Arc::new(ConvExp {
        stop,
        used: OnceLock::new(),
    });
    let y = Tensor::apply_custom(node.clone(), &[x.clone(), kernel.clone()])?;
    let used = node.used.get().cloned().ok_or_else(|| {
        Error::invalid(op, "the series forward did not record its number of terms")
    })?;
    Ok((y, used))
}

/// The inverse of [`conv_exp`]: `exp(M)^{-1} y = exp(-M) y`, the same series
/// with the negated kernel, `y - M y / 1! + M (M y) / 2! - ...`. Same
/// arguments, returns, errors (naming `conv_exp_inverse`) and gradients
/// (through the negation) as [`conv_exp`]. With enough terms,
/// `conv_exp_inverse(conv_exp(x, K).0, K).0 == x` up to the truncation error.
pub fn conv_exp_inverse(y: &Tensor, kernel: &Tensor, terms: Terms) -> Result<(Tensor, Vec<usize>)> {
    const OP: &str = "conv_exp_inverse";
    check_shapes(OP, y, kernel)?;
    conv_exp_named(OP, y, &kernel.neg()?, terms)
}

/// `log |det exp(M)| = trace(M) = H W sum_c K[c, c, k/2, k/2]` for the
/// convolution exponential of `kernel (C, C, k, k)` (`k` odd) on `H x W`
/// images: `det exp(M) = exp(trace M)` is positive, and with zero padding
/// only the centre tap of the diagonal kernels `K[c, c]` maps a pixel to
/// itself. Returns a scalar (shape `[]`) tensor, differentiable in `kernel`
/// (the gradient is `H W` on the centre taps of the diagonal, `0` elsewhere).
/// Errors name `conv_exp_logdet` and the kernel shape when it is not
/// `(C, C, k, k)` with `k` odd.
pub fn conv_exp_logdet(kernel: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    const OP: &str = "conv_exp_logdet";
    let k = check_kernel(OP, kernel, &[])?;
    let c = kernel.shape()[0];
    let centre = kernel
        .narrow(2, k / 2, 1)?
        .narrow(3, k / 2, 1)?
        .reshape(&[c, c])?;
    let eye = Tensor::eye(c, kernel.dtype(), kernel.device())?;
    centre.mul(&eye)?.sum_all()?.mul_scalar((h * w) as f64)
}

/// The truncated series `sum_{i=0}^{n} M^i x / i!` unrolled with ordinary
/// recorded ops (`conv2d`, `div_scalar`, `add`): autodiff through it keeps
/// every term alive until backward (`O(n)` batch-sized tensors). A
/// reference for [`conv_exp`] with [`Terms::Fixed`]`(n)`; errors as
/// [`conv_exp`], naming `conv_exp_series_autodiff`.
pub fn conv_exp_series_autodiff(x: &Tensor, kernel: &Tensor, n: usize) -> Result<Tensor> {
    let k = check_shapes("conv_exp_series_autodiff", x, kernel)?;
    unrolled(x, kernel, k, n)
}

/// The dense matrix of `M`, `(C H W, C H W)`, for a `(C, C, k, k)` kernel
/// (`k` odd) on `H x W` images, in the row-major `(c, i, j)` order of a
/// flattened image: `exp(M) x` is `matrix_exp(dense) x` on small cases.
/// Built column by column as `M e_j`. Errors name `conv_exp_dense_matrix`
/// and the kernel shape when it is not `(C, C, k, k)` with `k` odd.
pub fn conv_exp_dense_matrix(kernel: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let k = check_kernel("conv_exp_dense_matrix", kernel, &[])?;
    let c = kernel.shape()[0];
    let d = c * h * w;
    let basis = Tensor::eye(d, kernel.dtype(), kernel.device())?.reshape(&[d, c, h, w])?;
    let columns = basis.conv2d(kernel, None, &Conv2dParams::same(k))?;
    columns.reshape(&[d, d])?.transpose(0, 1)?.contiguous()
}

/// The shape of the series for `x (N, C, H, W)` and a `k x k` kernel.
fn series_geom(xs: &[usize], k: usize) -> SeriesGeom {
    SeriesGeom {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        k,
    }
}

/// The [`conv_exp`] graph node: inputs `[x (N, C, H, W), kernel (C, C, k, k)]`,
/// output `y_b = sum_{i=0}^{n_b} u_i` per sample `b` with `u_0 = x_b`,
/// `u_i = M u_{i-1} / i`. The numbers of terms `n_b` are decided by the
/// forward (fixed, or adaptive per sample) and kept for the backward;
/// nothing else is stored besides the inputs.
///
/// Backward, for the output gradient `g` (per sample, `n = n_b`): with
/// `a_i = dL/du_i`,
///
/// ```text
/// a_n = g,   a_{i-1} = g + M^T a_i / i   (i = n, ..., 1),
/// dL/dx      = a_0 = sum_{j=0}^{n} (M^T)^j g / j!      (= exp(M^T) g, truncated alike),
/// dL/dkernel = sum_{i=1}^{n} W(u_{i-1}, a_i) / i,
/// ```
///
/// where `M^T` is the same-padded convolution with the adjoint kernel
/// `K.permute(1, 0, 2, 3).flip(2, 3)` (in/out channels swapped, spatially
/// flipped) and `W(u, a)[o, c, p, q] = sum_{r, s} a[o, r, s] u[c, r + p - k/2, s + q - k/2]`
/// is the weight gradient of that convolution, summed over samples.
///
/// Memory: between forward and backward the node holds only `x` and the
/// kernel, where autodiff through the unrolled series holds every term.
/// The backward goes sample by sample: it recomputes that sample's terms
/// `u_0, ..., u_{n-1}` from `x_b` (`n - 1` convolutions), runs the adjoint
/// recursion (`n` convolutions) and takes one weight gradient over the `n`
/// pairs; each thread holds `2 n + 1` images of one sample, never `n`
/// batch-sized tensors. When `kernel` does not require grad only the
/// recursion runs.
pub struct ConvExp {
    stop: Stop,
    used: OnceLock<Vec<usize>>,
}

impl ConvExp {
    /// The number of terms each sample used in the forward (after it ran).
    pub fn terms_used(&self) -> Option<&[usize]> {
        self.used.get().map(Vec::as_slice)
    }
}

impl CustomOp for ConvExp {
    fn name(&self) -> &'static str {
        "conv_exp"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let k = check_shapes("conv_exp", &inputs[0], &inputs[1])?;
        let (x, kernel) = (inputs[0].contiguous()?, inputs[1].contiguous()?);
        let sg = series_geom(x.shape(), k);
        let (y, counts) = x.storage().conv_exp_fwd(
            x.layout(),
            &kernel.storage(),
            kernel.layout(),
            &sg,
            self.stop,
        )?;
        // A node is applied once; a repeated forward recomputes the same counts.
        let _ = self.used.set(counts);
        Ok(Tensor::from_storage(y, x.shape()))
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _output: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let counts = self
            .used
            .get()
            .ok_or_else(|| Error::Autograd("conv_exp: backward before forward".to_string()))?;
        let want_kernel = inputs[1].requires_grad();
        let (x, kernel, g) = (
            inputs[0].contiguous()?,
            inputs[1].contiguous()?,
            g.contiguous()?,
        );
        let sg = series_geom(x.shape(), kernel.shape()[2]);
        let (dx, dk) = x.storage().conv_exp_bwd(
            x.layout(),
            &kernel.storage(),
            kernel.layout(),
            &g.storage(),
            g.layout(),
            &sg,
            counts,
            want_kernel,
        )?;
        Ok(vec![
            Some(Tensor::from_storage(dx, x.shape())),
            dk.map(|dk| Tensor::from_storage(dk, kernel.shape())),
        ])
    }
}
