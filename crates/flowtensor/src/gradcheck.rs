//! Finite-difference gradient checks, for the engine's own tests and for
//! anyone adding an op or a custom backward.

use crate::{no_grad, Device, Error, Generator, Result, Tensor};

/// Tolerances and step of [`check_gradients`].
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Central-difference step.
    pub eps: f64,
    /// Allowed absolute error.
    pub atol: f64,
    /// Allowed error relative to the numerical gradient.
    pub rtol: f64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-6,
            atol: 1e-7,
            rtol: 1e-5,
        }
    }
}

/// Compares autodiff with central differences for `f` at `inputs` (f64).
///
/// The scalar checked is `sum(f(inputs) * w)` with a fixed random `w`, so
/// every output element's gradient is covered. Each input is perturbed
/// element by element; `f` may view its inputs any way it likes (permute,
/// narrow, broadcast) to exercise strided code. Returns the largest absolute
/// error, or an error naming the worst element when a tolerance is exceeded.
pub fn check_gradients(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradCheck,
) -> Result<f64> {
    let vars: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            Ok(t.to_dtype(crate::DType::F64)?
                .detach()
                .contiguous()?
                .detach()
                .as_variable())
        })
        .collect::<Result<_>>()?;
    let out = f(&vars)?;
    let weights = Generator::new(0x5eed).randn(out.shape(), out.dtype(), Device::Cpu)?;
    let loss = |xs: &[Tensor]| -> Result<f64> { f(xs)?.mul(&weights)?.sum_all()?.to_scalar() };
    let grads = out.mul(&weights)?.sum_all()?.backward_grads()?;

    let mut worst = 0.0f64;
    no_grad(|| {
        for (i, var) in vars.iter().enumerate() {
            let analytic = match grads.get(var) {
                Some(g) => g.to_vec_f64()?,
                None => vec![0.0; var.elem_count()],
            };
            let base = var.to_vec_f64()?;
            for j in 0..base.len() {
                let eval_at = |delta: f64| -> Result<f64> {
                    let mut v = base.clone();
                    v[j] += delta;
                    let mut xs = vars.clone();
                    xs[i] = Tensor::from_vec(v, var.shape(), Device::Cpu)?;
                    loss(&xs)
                };
                let numeric = (eval_at(opts.eps)? - eval_at(-opts.eps)?) / (2.0 * opts.eps);
                let err = (analytic[j] - numeric).abs();
                let within = err <= opts.atol + opts.rtol * numeric.abs();
                if !within {
                    return Err(Error::Autograd(format!(
                        "gradient check failed for input {i} (shape {:?}) element {j}: autodiff {} vs finite difference {numeric}",
                        var.shape(),
                        analytic[j]
                    )));
                }
                worst = worst.max(err);
            }
        }
        Ok(worst)
    })
}
