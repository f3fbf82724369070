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

/// Fresh contiguous f64 leaf variables holding the values of `inputs`.
fn f64_variables(inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .map(|t| {
            Ok(t.to_dtype(crate::DType::F64)?
                .detach()
                .contiguous()?
                .detach()
                .as_variable())
        })
        .collect()
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
    let vars = f64_variables(inputs)?;
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

/// Compares Hessian-vector products taken by differentiating autodiff's own
/// gradient ([`crate::grad`] with `create_graph`) with central differences
/// of the gradient along the same direction (f64).
///
/// With `L = sum(f(inputs) * w)` for a fixed random `w` and a random
/// direction `v` (one tensor per input), the product `H v = grad_x <grad_x
/// L, v>` is checked against `(grad L(x + eps v) - grad L(x - eps v)) / (2
/// eps)`, element by element of every input. This covers every backward
/// rule on the way, as recorded ops with their own backward. Returns the
/// largest absolute error, or an error naming the worst element.
pub fn check_second_derivatives(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradCheck,
) -> Result<f64> {
    let vars = f64_variables(inputs)?;
    let out = f(&vars)?;
    let weights = Generator::new(0x5eed).randn(out.shape(), out.dtype(), Device::Cpu)?;
    let mut gen = Generator::new(0xd1ec);
    let directions: Vec<Tensor> = vars
        .iter()
        .map(|v| gen.randn(v.shape(), v.dtype(), Device::Cpu))
        .collect::<Result<_>>()?;
    let gradient = |xs: &[Tensor], create_graph: bool| -> Result<Vec<Tensor>> {
        let loss = f(xs)?.mul(&weights)?.sum_all()?;
        let grads = crate::grad(&[loss], xs, &[], create_graph)?;
        grads
            .into_iter()
            .zip(xs)
            .map(|(g, x)| g.map_or_else(|| x.zeros_like(), Ok))
            .collect()
    };

    let first = gradient(&vars, true)?;
    let mut along = first[0].mul(&directions[0])?.sum_all()?;
    for (g, v) in first.iter().zip(&directions).skip(1) {
        along = along.add(&g.mul(v)?.sum_all()?)?;
    }
    let hvp: Vec<Tensor> = if along.requires_grad() {
        crate::grad(&[along], &vars, &[], false)?
            .into_iter()
            .zip(&vars)
            .map(|(h, x)| h.map_or_else(|| x.zeros_like(), Ok))
            .collect::<Result<_>>()?
    } else {
        // no input reaches the gradient: every second derivative is zero
        vars.iter().map(|x| x.zeros_like()).collect::<Result<_>>()?
    };

    let shifted = |sign: f64| -> Result<Vec<Vec<f64>>> {
        let xs: Vec<Tensor> = vars
            .iter()
            .zip(&directions)
            .map(|(x, v)| {
                Ok(x.add(&v.mul_scalar(sign * opts.eps)?)?
                    .detach()
                    .as_variable())
            })
            .collect::<Result<_>>()?;
        gradient(&xs, false)?
            .iter()
            .map(|g| g.to_vec_f64())
            .collect()
    };
    let (plus, minus) = (shifted(1.0)?, shifted(-1.0)?);
    let mut worst = 0.0f64;
    for (i, h) in hvp.iter().enumerate() {
        let analytic = h.to_vec_f64()?;
        for j in 0..analytic.len() {
            let numeric = (plus[i][j] - minus[i][j]) / (2.0 * opts.eps);
            let err = (analytic[j] - numeric).abs();
            if err > opts.atol + opts.rtol * numeric.abs() {
                return Err(Error::Autograd(format!(
                    "second-derivative check failed for input {i} (shape {:?}) element {j}: \
                     Hessian-vector product {} vs finite difference {numeric}",
                    vars[i].shape(),
                    analytic[j]
                )));
            }
            worst = worst.max(err);
        }
    }
    Ok(worst)
}
