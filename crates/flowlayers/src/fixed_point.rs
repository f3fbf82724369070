//! The fixed-point iteration that inverts the layers of the form
//! `z = x + g(x)` with `g` contractive (the Sylvester flows' autoregressive
//! map, residual blocks).

use flowtensor::{Error, Result, Tensor};

/// When a fixed-point iteration stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPoint {
    /// The iteration stops once `max |y_{k+1} - y_k| < tol` (non-negative).
    pub tol: f64,
    /// The most iterations before it fails (at least 1).
    pub max_iterations: usize,
}

impl FixedPoint {
    /// Checks the options for `layer`.
    pub fn check(&self, layer: &'static str) -> Result<()> {
        if self.tol.is_nan() || self.tol < 0.0 {
            return Err(Error::invalid(
                layer,
                format!(
                    "the fixed-point tolerance must be non-negative, got {}",
                    self.tol
                ),
            ));
        }
        if self.max_iterations == 0 {
            return Err(Error::invalid(
                layer,
                "the fixed-point iteration needs max_iterations >= 1",
            ));
        }
        Ok(())
    }
}

/// Iterates `y_{k+1} = map(y_k)` from `y_0 = start` (recorded for autodiff
/// as `map` records it; wrap the call in `no_grad` for a plain solve) until
/// `max |y_{k+1} - y_k| < opts.tol`, and returns the last iterate and the
/// number of iterations. Fails, naming `layer`, the tolerance, the cap and
/// the last change, when `opts.max_iterations` pass without convergence or
/// the change is not finite.
pub fn iterate(
    layer: &'static str,
    start: &Tensor,
    opts: FixedPoint,
    mut map: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, usize)> {
    let all: Vec<usize> = (0..start.rank()).collect();
    let mut y = start.clone();
    let mut change = f64::NAN;
    for k in 1..=opts.max_iterations {
        let next = map(&y)?;
        // max |change| as a device reduction, read back as one value
        change = next.sub(&y)?.abs()?.max(&all, false)?.to_scalar()?;
        y = next;
        if change.is_nan() {
            break;
        }
        if change < opts.tol {
            return Ok((y, k));
        }
    }
    Err(Error::invalid(
        layer,
        format!(
            "the fixed-point inverse did not converge to {:e} in {} iterations on {:?} \
             (last change {change:e})",
            opts.tol,
            opts.max_iterations,
            start.shape()
        ),
    ))
}
