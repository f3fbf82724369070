//! Flows on vectors: inputs of shape `(N, D)`, `N` samples of `D` features.
//!
//! | layer | map | log-det | inverse |
//! |---|---|---|---|
//! | [`Planar`] | `x + u_hat tanh(w.x + b)` | `log(1 + w.u_hat tanh')` | 1-D root find along `w` |
//! | [`Radial`] | `x + beta (x - x0) / (alpha + r)` | closed form | closed form (a quadratic in `r`) |
//! | [`AffineCoupling`] | `x_T exp(s(x_I)) + t(x_I)` | `sum s` | one pass |
//! | [`AdditiveCoupling`] | `x_T + t(x_I)` | `0` | one pass |
//! | [`MaskedAutoregressive`] | `x exp(s(x_<i)) + t(x_<i)` (MAF) | `sum s` | `D` passes |
//! | [`ActNorm`] | `(x + b) exp(s)` | `sum s` | closed form |
//! | [`BatchNorm`] | `(x - mu) exp(g) / sigma + beta` | `sum(g - log sigma)` | closed form (evaluation mode) |
//! | [`InvertibleLinear`] | `W x`, `W = P L U` | `sum log|diag U|` | triangular solves |
//! | [`ReversePermutation`], [`RandomPermutation`] | `x[perm]` | `0` | `z[perm^-1]` |
//!
//! The inverse autoregressive flow (IAF) is [`crate::Inverse`] of a
//! [`MaskedAutoregressive`]: one pass to sample, `D` passes for the density.
//!
//! The conditioners are built from [`Linear`], [`MaskedLinear`], [`Made`]
//! (autoregressive, any number of parameters per feature) and [`Mlp`].
//! Layers with a conditioner can also take a context vector `c` `(N, C)`
//! and so model `p(x | c)` ([`ConditionalFlow`]); [`Conditioned`] fixes the
//! context to give a plain [`Flow`](crate::Flow), and [`ConditionalSequential`] composes
//! conditional and unconditional layers.
//!
//! Every layer rejects inputs that are not `(N, D)` (or hold another dtype
//! than its parameters) with an error naming the layer and the shape.

mod autoregressive;
mod conditional;
mod coupling;
mod linear;
mod nn;
mod normalization;
mod planar;
mod radial;
mod spline;

pub use autoregressive::MaskedAutoregressive;
pub use conditional::{ConditionalFlow, ConditionalSequential, Conditioned};
pub use coupling::{AdditiveCoupling, AffineCoupling, CouplingMask, NetConfig};
pub use linear::{InvertibleLinear, RandomPermutation, ReversePermutation};
pub use nn::{Activation, Linear, Made, MadeConfig, MadeOrder, MaskedLinear, Mlp, MlpConfig};
pub use normalization::{ActNorm, BatchNorm};
pub use planar::Planar;
pub use radial::Radial;
pub use spline::{rational_quadratic, SplineAutoregressive, SplineConfig, SplineCoupling};

use flowtensor::{DType, Device, Error, Result, Tensor};

/// Checks that `x` is `(N, features)` with at least one sample and holds `dtype`.
pub(crate) fn check_vector(
    layer: &'static str,
    features: usize,
    dtype: DType,
    x: &Tensor,
) -> Result<()> {
    if x.rank() != 2 || x.shape()[1] != features || x.shape()[0] == 0 {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("expected (batch, {features}) with batch >= 1"),
        ));
    }
    if x.dtype() != dtype {
        return Err(Error::DTypeMismatch {
            op: layer,
            lhs: x.dtype(),
            rhs: dtype,
        });
    }
    Ok(())
}

/// Checks an optional context against a layer built for `expected` context
/// features (0: the layer takes none) and a batch of `batch` samples.
pub(crate) fn check_context(
    layer: &'static str,
    expected: usize,
    batch: usize,
    dtype: DType,
    context: Option<&Tensor>,
) -> Result<()> {
    match (expected, context) {
        (0, None) => Ok(()),
        (0, Some(c)) => Err(Error::shape(
            layer,
            &[c.shape()],
            "got a context, but the layer was built with 0 context features",
        )),
        (e, None) => Err(Error::invalid(
            layer,
            format!("needs a context of shape (batch, {e}), none was given"),
        )),
        (e, Some(c)) => {
            if c.rank() != 2 || c.shape()[0] != batch || c.shape()[1] != e {
                return Err(Error::shape(
                    layer,
                    &[c.shape()],
                    format!("expected a context of shape ({batch}, {e})"),
                ));
            }
            if c.dtype() != dtype {
                return Err(Error::DTypeMismatch {
                    op: layer,
                    lhs: c.dtype(),
                    rhs: dtype,
                });
            }
            Ok(())
        }
    }
}

/// `t` (a constant, no graph) in `dtype` on `device`, contiguous.
pub(crate) fn placed(t: &Tensor, dtype: DType, device: Device) -> Result<Tensor> {
    Ok(t.to_dtype(dtype)?.to_device(device)?.contiguous()?.detach())
}

/// An f64 host vector as a constant of `shape` in `dtype` on `device`.
pub(crate) fn constant(
    values: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    placed(
        &Tensor::from_vec(values, shape, Device::Cpu)?,
        dtype,
        device,
    )
}

/// Zero log-determinants for the batch of `x`.
pub(crate) fn zero_logdet(x: &Tensor) -> Result<Tensor> {
    Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device())
}

/// [`ConditionalFlow`] for layers without a conditioner: 0 context features,
/// a context is an error, and the maps are the [`crate::Flow`] ones.
macro_rules! unconditional {
    ($($layer:ty),* $(,)?) => {$(
        impl $crate::vector::ConditionalFlow for $layer {
            fn context_features(&self) -> usize {
                0
            }
            fn forward_given(
                &self,
                x: &flowtensor::Tensor,
                context: Option<&flowtensor::Tensor>,
            ) -> flowtensor::Result<(flowtensor::Tensor, flowtensor::Tensor)> {
                $crate::vector::check_context(self.name(), 0, 0, x.dtype(), context)?;
                $crate::Flow::forward(self, x)
            }
            fn inverse_given(
                &self,
                z: &flowtensor::Tensor,
                context: Option<&flowtensor::Tensor>,
            ) -> flowtensor::Result<flowtensor::Tensor> {
                $crate::vector::check_context(self.name(), 0, 0, z.dtype(), context)?;
                $crate::Flow::inverse(self, z)
            }
            fn inverse_with_logdet_given(
                &self,
                z: &flowtensor::Tensor,
                context: Option<&flowtensor::Tensor>,
            ) -> flowtensor::Result<(flowtensor::Tensor, flowtensor::Tensor)> {
                $crate::vector::check_context(self.name(), 0, 0, z.dtype(), context)?;
                $crate::Flow::inverse_with_logdet(self, z)
            }
        }
    )*};
}
pub(crate) use unconditional;
