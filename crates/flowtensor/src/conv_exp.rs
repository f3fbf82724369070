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

use crate::conv::{conv_weight_grad, ConvGeom};
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

/// `M u`: the same-padded stride-1 convolution.
fn apply_m(u: &Tensor, kernel: &Tensor, k: usize) -> Result<Tensor> {
    u.conv2d(kernel, None, &Conv2dParams::same(k))
}

/// `max |u|` over all entries.
fn max_abs(u: &Tensor) -> Result<f64> {
    let dims: Vec<usize> = (0..u.rank()).collect();
    u.abs()?.max(&dims, false)?.to_scalar()
}

/// Sums the series `sum_{i=0}^{n} u_i` (`u_0 = x`, `u_i = M u_{i-1} / i`) with
/// `n` from `terms`; returns the sum and `n`. Keeps two images alive.
fn series(x: &Tensor, kernel: &Tensor, k: usize, terms: Terms) -> Result<(Tensor, usize)> {
    let (max, tol) = match terms {
        Terms::Fixed(n) => (n, None),
        Terms::Adaptive { tol, max } => (max, Some(tol)),
    };
    let mut sum = x.clone();
    let mut u = x.clone();
    for i in 1..=max {
        u = apply_m(&u, kernel, k)?.div_scalar(i as f64)?;
        sum = sum.add(&u)?;
        if let Some(tol) = tol {
            if max_abs(&u)? < tol {
                return Ok((sum, i));
            }
        }
    }
    Ok((sum, max))
}

fn check_terms(op: &'static str, terms: Terms) -> Result<()> {
    match terms {
        Terms::Adaptive { tol, .. } if tol.is_nan() || tol < 0.0 => Err(Error::invalid(
            op,
            format!("the adaptive tolerance must be non-negative, got {tol}"),
        )),
        _ => Ok(()),
    }
}

/// The convolution exponential `exp(M) x = x + M x / 1! + M (M x) / 2! + ...`.
///
/// `x` is `(N, C, H, W)`, `kernel` is `(C, C, k, k)` with `k` odd, and `M` is
/// `conv2d` with stride 1 and zero padding `k / 2` (so `M` maps `(C, H, W)`
/// images to themselves). Returns the truncated sum `sum_{i=0}^{n} M^i x / i!`
/// and the number `n` of terms used after the identity: `n` for
/// [`Terms::Fixed`]`(n)`, and for [`Terms::Adaptive`] the first `i` with
/// `max |M^i x / i!| < tol`, at most `max`.
///
/// Differentiable in `x` and `kernel` as one graph node ([`ConvExp`]) whose
/// backward stores only the two inputs and recomputes the series.
///
/// Errors name `conv_exp` and the shapes for inputs that are not 4-D, a
/// kernel that is not `(C, C, k, k)` with the input's `C`, an even `k`,
/// mismatched dtypes or devices, and a negative or NaN adaptive tolerance.
pub fn conv_exp(x: &Tensor, kernel: &Tensor, terms: Terms) -> Result<(Tensor, usize)> {
    conv_exp_named("conv_exp", x, kernel, terms)
}

fn conv_exp_named(
    op: &'static str,
    x: &Tensor,
    kernel: &Tensor,
    terms: Terms,
) -> Result<(Tensor, usize)> {
    check_shapes(op, x, kernel)?;
    check_terms(op, terms)?;
    let node = Arc::new(ConvExp {
        terms,
        used: OnceLock::new(),
    });
    let y = Tensor::apply_custom(node.clone(), &[x.clone(), kernel.clone()])?;
    let n = node.used.get().copied().ok_or_else(|| {
        Error::invalid(op, "the series forward did not record its number of terms")
    })?;
    Ok((y, n))
}

/// The inverse of [`conv_exp`]: `exp(M)^{-1} y = exp(-M) y`, the same series
/// with the negated kernel, `y - M y / 1! + M (M y) / 2! - ...`. Same
/// arguments, returns, errors (naming `conv_exp_inverse`) and gradients
/// (through the negation) as [`conv_exp`]. With enough terms,
/// `conv_exp_inverse(conv_exp(x, K).0, K).0 == x` up to the truncation error.
pub fn conv_exp_inverse(y: &Tensor, kernel: &Tensor, terms: Terms) -> Result<(Tensor, usize)> {
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
/// every term `u_i` alive until backward (`O(n)` images). A reference for
/// [`conv_exp`] with [`Terms::Fixed`]`(n)`; errors as [`conv_exp`], naming
/// `conv_exp_series_autodiff`.
pub fn conv_exp_series_autodiff(x: &Tensor, kernel: &Tensor, n: usize) -> Result<Tensor> {
    let k = check_shapes("conv_exp_series_autodiff", x, kernel)?;
    Ok(series(x, kernel, k, Terms::Fixed(n))?.0)
}

/// The [`conv_exp`] graph node: inputs `[x (N, C, H, W), kernel (C, C, k, k)]`,
/// output `y = sum_{i=0}^{n} u_i` with `u_0 = x`, `u_i = M u_{i-1} / i`. The
/// number of terms `n` is decided by the forward (fixed, or adaptive) and
/// kept for the backward; nothing else is stored besides the inputs.
///
/// Backward, for the output gradient `g`: with `a_i = dL/du_i`,
///
/// ```text
/// a_n = g,   a_{i-1} = g + M^T a_i / i   (i = n, ..., 1),
/// dL/dx      = a_0 = sum_{j=0}^{n} (M^T)^j g / j!      (= exp(M^T) g, truncated alike),
/// dL/dkernel = sum_{i=1}^{n} W(u_{i-1}, a_i) / i,
/// ```
///
/// where `M^T` is the same-padded convolution with the adjoint kernel
/// `K.permute(1, 0, 2, 3).flip(2, 3)` (in/out channels swapped, spatially
/// flipped) and `W(u, a)[o, c, p, q] = sum_{n, r, s} a[n, o, r, s] u[n, c, r + p - k/2, s + q - k/2]`
/// is the weight gradient of that convolution. The input gradient `a_0` is
/// the adjoint series `exp(M^T) g` (the conv exponential of the adjoint kernel,
/// same `n`) in Horner form.
///
/// Memory: the backward walks `i = n, ..., 1` and needs `u_{i-1}` at step
/// `i`; rather than keeping all `n` terms it recomputes `u_{i-1}` from `x`
/// (`i - 1` convolutions). Besides the inputs and `g`, at most a constant
/// number of images is alive at once (`a_i`, the `u` being rebuilt and one
/// convolution result) plus a kernel-sized accumulator, independent of `n`,
/// at a cost of `n (n - 1) / 2` extra convolutions on top of the `n` adjoint
/// convolutions and `n` weight gradients. When `kernel` does not require
/// grad only the `a_i` recursion runs (`n` convolutions).
pub struct ConvExp {
    terms: Terms,
    used: OnceLock<usize>,
}

impl ConvExp {
    /// The number of terms the forward used (after it ran).
    pub fn terms_used(&self) -> Option<usize> {
        self.used.get().copied()
    }
}

impl CustomOp for ConvExp {
    fn name(&self) -> &'static str {
        "conv_exp"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let (x, kernel) = (&inputs[0], &inputs[1]);
        let k = check_shapes("conv_exp", x, kernel)?;
        let (y, n) = series(x, kernel, k, self.terms)?;
        // A node is applied once; a repeated forward recomputes the same n.
        let _ = self.used.set(n);
        Ok(y)
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _output: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (x, kernel) = (&inputs[0], &inputs[1]);
        let k = kernel.shape()[2];
        let n = self
            .used
            .get()
            .copied()
            .ok_or_else(|| Error::Autograd("conv_exp: backward before forward".to_string()))?;
        let adjoint = kernel.permute(&[1, 0, 2, 3])?.flip(&[2, 3])?.contiguous()?;
        let want_kernel = kernel.requires_grad();
        let geom = weight_geom(x.shape(), k);
        let mut a = g.clone();
        let mut gk: Option<Tensor> = None;
        for i in (1..=n).rev() {
            if want_kernel {
                // u_{i-1} = M^{i-1} x / (i-1)!, rebuilt from x.
                let mut u = x.clone();
                for j in 1..i {
                    u = apply_m(&u, kernel, k)?.div_scalar(j as f64)?;
                }
                let term = conv_weight_grad(&u, &a, &geom)?.div_scalar(i as f64)?;
                gk = Some(match gk {
                    Some(acc) => acc.add(&term)?,
                    None => term,
                });
            }
            a = g.add(&apply_m(&a, &adjoint, k)?.div_scalar(i as f64)?)?;
        }
        let gk = match gk {
            Some(gk) => gk,
            None => kernel.zeros_like()?,
        };
        Ok(vec![Some(a), want_kernel.then_some(gk)])
    }
}

/// The geometry of `M` for an input of shape `xs` and a `k x k` kernel.
fn weight_geom(xs: &[usize], k: usize) -> ConvGeom {
    ConvGeom {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        o: xs[1],
        ho: xs[2],
        wo: xs[3],
        kh: k,
        kw: k,
        stride: (1, 1),
        padding: (k / 2, k / 2),
        dilation: (1, 1),
        groups: 1,
    }
}
