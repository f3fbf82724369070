//! Checks that any layer can run on itself: invertibility, the log-determinant
//! against the brute-force Jacobian, and gradients reaching every parameter.
//! For use in tests, in f64, on small inputs (the Jacobian is dense).

use crate::flow::Flow;
use flowtensor::{no_grad, DType, Device, Error, Generator, Result, Tensor};

/// Options of [`check_flow`].
#[derive(Clone, Copy, Debug)]
pub struct FlowCheck {
    /// Largest allowed `|inverse(forward(x)) - x|`.
    pub inverse_tol: f64,
    /// Largest allowed error of the log-det relative to `max(1, |log det J|)`.
    pub logdet_rtol: f64,
    /// Standard deviation of the noise added to every parameter after the first
    /// forward (so that zero-initialised layers are not checked at the identity).
    pub perturbation: f64,
    /// Seed of the input, the perturbation and nothing else.
    pub seed: u64,
}

impl Default for FlowCheck {
    fn default() -> Self {
        FlowCheck {
            inverse_tol: 1e-10,
            logdet_rtol: 1e-8,
            perturbation: 0.1,
            seed: 0,
        }
    }
}

/// What [`check_flow`] measured.
#[derive(Clone, Debug)]
pub struct FlowReport {
    pub max_inverse_error: f64,
    pub max_logdet_error: f64,
    pub parameters: usize,
}

fn fail(flow: &dyn Flow, detail: String) -> Error {
    Error::invalid("check_flow", format!("{}: {detail}", flow.name()))
}

/// Adds `N(0, scale^2)` noise to every parameter of `flow`, in place.
pub fn perturb_parameters(flow: &dyn Flow, scale: f64, gen: &mut Generator) -> Result<()> {
    no_grad(|| {
        for (_, p) in flow.parameters() {
            let noise = gen.normal(p.shape(), 0.0, scale, p.dtype(), p.device())?;
            p.set_data(&p.add(&noise)?)?;
        }
        Ok(())
    })
}

/// The operator 2-norm of the same-padded stride-1 convolution with
/// `kernel (out, in, k, k)` on `h x w` images: its dense matrix `M` is built
/// from the convolved one-hot images, and the largest eigenvalue of `M^T M`
/// found by 5000 power-iteration steps from a seeded random start (f64; for
/// the small sizes of tests).
pub fn conv_operator_norm(kernel: &Tensor, (h, w): (usize, usize)) -> Result<f64> {
    let &[_, i, k, _] = kernel.shape() else {
        return Err(Error::shape(
            "conv_operator_norm",
            &[kernel.shape()],
            "expected a (out, in, k, k) kernel",
        ));
    };
    let d_in = i * h * w;
    let kernel = kernel.to_dtype(DType::F64)?;
    let basis = Tensor::eye(d_in, DType::F64, Device::Cpu)?.reshape(&[d_in, i, h, w])?;
    // row j is M e_j: M transposed, (d_in, d_out)
    let mt = basis
        .conv2d(&kernel, None, &flowtensor::Conv2dParams::same(k))?
        .reshape(&[d_in, kernel.shape()[0] * h * w])?;
    matrix_norm(&mt)
}

/// The 2-norm (largest singular value) of a `(rows, cols)` matrix: the
/// largest eigenvalue of its Gram matrix by 5000 power-iteration steps from
/// a seeded random start (f64; for the small sizes of tests).
pub fn matrix_norm(m: &Tensor) -> Result<f64> {
    let m = m.to_dtype(DType::F64)?;
    let gram = m.matmul(&m.transpose(0, 1)?)?;
    let mut v = Generator::new(99).randn(&[gram.shape()[0], 1], DType::F64, Device::Cpu)?;
    let mut lambda = 0.0;
    for _ in 0..5000 {
        let next = gram.matmul(&v)?;
        lambda = next.square()?.sum_all()?.sqrt()?.to_scalar()?;
        if lambda == 0.0 {
            break;
        }
        v = next.div_scalar(lambda)?;
    }
    Ok(lambda.sqrt())
}

/// The Jacobian `d f(x)_n / d x_n` of every sample `n`, as `(batch, d, d)`
/// with `d` the per-sample size, by one backward pass per output coordinate.
/// Samples must not interact (true of every layer after initialisation).
pub fn jacobian(flow: &dyn Flow, x: &Tensor) -> Result<Tensor> {
    let n = x.shape()[0];
    let d = x.elem_count() / n.max(1);
    let xv = x.detach().as_variable();
    let (z, _) = flow.forward(&xv)?;
    let z = z.reshape(&[n, z.elem_count() / n.max(1)])?;
    if z.shape()[1] != d {
        return Err(fail(
            flow,
            format!(
                "output has {} values per sample for {d} inputs",
                z.shape()[1]
            ),
        ));
    }
    let mut rows = Vec::with_capacity(d);
    for k in 0..d {
        let grads = z.narrow(1, k, 1)?.sum_all()?.backward_grads()?;
        let row = match grads.get(&xv) {
            Some(g) => g.reshape(&[n, 1, d])?,
            None => Tensor::zeros(&[n, 1, d], x.dtype(), x.device())?,
        };
        rows.push(row);
    }
    Tensor::cat(&rows.iter().collect::<Vec<_>>(), 1)
}

/// Runs the layer checks on an f64 input of `input_shape` (batch first):
/// 1. after one forward (data-dependent initialisation) every parameter is perturbed;
/// 2. `inverse(forward(x)) = x` to `inverse_tol`;
/// 3. the forward log-det equals `log |det J|` of the brute-force Jacobian
///    per sample to `logdet_rtol`, and `inverse_with_logdet` gives its negative;
/// 4. one backward of `sum(z^2) / 2 - sum(logdet)` gives every parameter a
///    non-zero gradient;
/// 5. a layer with parameters rejects an input of the other dtype (f32) in
///    `forward`, `inverse` and `inverse_with_logdet` (dtypes never mix
///    implicitly, whichever direction is run).
pub fn check_flow(flow: &dyn Flow, input_shape: &[usize], opts: &FlowCheck) -> Result<FlowReport> {
    let mut gen = Generator::new(opts.seed);
    let x = gen.randn(input_shape, DType::F64, Device::Cpu)?;
    flow.forward(&x)?;
    perturb_parameters(flow, opts.perturbation, &mut gen)?;

    let (z, logdet) = flow.forward(&x)?;
    if logdet.shape() != [input_shape[0]] {
        return Err(fail(
            flow,
            format!(
                "log-det has shape {:?}, expected [{}]",
                logdet.shape(),
                input_shape[0]
            ),
        ));
    }
    let max_abs = |t: &Tensor| -> Result<f64> {
        Ok(t.to_vec_f64()?.iter().fold(0.0f64, |m, v| m.max(v.abs())))
    };
    let back = flow.inverse(&z)?;
    let max_inverse_error = max_abs(&back.sub(&x)?)?;
    if max_inverse_error.is_nan() || max_inverse_error > opts.inverse_tol {
        return Err(fail(
            flow,
            format!("inverse(forward(x)) differs from x by {max_inverse_error:e}"),
        ));
    }

    let (_, brute) = jacobian(flow, &x)?.slogdet()?;
    let (brute, ld) = (brute.to_vec_f64()?, logdet.to_vec_f64()?);
    let mut max_logdet_error = 0.0f64;
    for (got, want) in ld.iter().zip(&brute) {
        let err = (got - want).abs() / want.abs().max(1.0);
        max_logdet_error = max_logdet_error.max(err);
        if err.is_nan() || err > opts.logdet_rtol {
            return Err(fail(
                flow,
                format!("log-det {got} but the brute-force Jacobian gives {want}"),
            ));
        }
    }
    let (_, inverse_logdet) = flow.inverse_with_logdet(&z)?;
    let inv_err =
        max_abs(&inverse_logdet.add(&logdet)?)? / brute.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    if inv_err.is_nan() || inv_err > opts.logdet_rtol {
        return Err(fail(
            flow,
            format!("inverse log-det is not minus the forward one (relative error {inv_err:e})"),
        ));
    }

    let (z, logdet) = flow.forward(&x)?;
    let loss = z
        .square()?
        .sum_all()?
        .mul_scalar(0.5)?
        .sub(&logdet.sum_all()?)?;
    let grads = loss.backward_grads()?;
    let parameters = flow.parameters();
    for (name, p) in &parameters {
        let norm = match grads.get(p) {
            Some(g) => max_abs(g)?,
            None => 0.0,
        };
        if norm == 0.0 {
            return Err(fail(flow, format!("no gradient reaches parameter {name}")));
        }
    }
    if !parameters.is_empty() {
        let (x32, z32) = (x.to_dtype(DType::F32)?, z.detach().to_dtype(DType::F32)?);
        let accepted = [
            ("forward", flow.forward(&x32).is_ok()),
            ("inverse", flow.inverse(&z32).is_ok()),
            (
                "inverse_with_logdet",
                flow.inverse_with_logdet(&z32).is_ok(),
            ),
        ];
        if let Some((direction, _)) = accepted.iter().find(|(_, ok)| *ok) {
            return Err(fail(
                flow,
                format!("{direction} accepted an f32 input for f64 parameters"),
            ));
        }
    }
    Ok(FlowReport {
        max_inverse_error,
        max_logdet_error,
        parameters: parameters.len(),
    })
}
