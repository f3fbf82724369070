//! The engine used as a researcher would: parameters, a loss, backward and
//! in-place updates, through the umbrella crate.

use flows::flowtensor::{no_grad, DType, Device, Generator, Result, Tensor};

/// Gradient descent on a least-squares problem recovers the true weights.
#[test]
fn gradient_descent_fits_a_linear_model() -> Result<()> {
    let mut gen = Generator::new(42);
    let x = gen.randn(&[256, 3], DType::F64, Device::Cpu)?;
    let w_true = Tensor::from_slice(&[1.5, -2.0, 0.5], &[3, 1], Device::Cpu)?;
    let y = x.matmul(&w_true)?.add_scalar(0.3)?;

    let w = Tensor::zeros(&[3, 1], DType::F64, Device::Cpu)?.as_variable();
    let b = Tensor::zeros(&[1], DType::F64, Device::Cpu)?.as_variable();
    for _ in 0..200 {
        let loss = x.matmul(&w)?.add(&b)?.sub(&y)?.square()?.mean_all()?;
        loss.backward()?;
        no_grad(|| -> Result<()> {
            for p in [&w, &b] {
                let g = p.grad().expect("parameter has a gradient");
                p.set_data(&p.sub(&g.mul_scalar(0.1)?)?)?;
                p.zero_grad();
            }
            Ok(())
        })?;
    }
    let w_fit = w.to_vec::<f64>()?;
    for (fit, want) in w_fit.iter().zip([1.5, -2.0, 0.5]) {
        assert!((fit - want).abs() < 1e-6, "fitted {w_fit:?}");
    }
    assert!((b.to_scalar()? - 0.3).abs() < 1e-6);
    Ok(())
}
