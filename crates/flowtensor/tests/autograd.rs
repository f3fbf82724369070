//! Autodiff mechanics: leaf gradients, accumulation, no-grad, detach, custom ops.

use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{no_grad, CustomOp, DType, Device, Error, Generator, NoGradGuard, Result, Tensor};
use std::sync::Arc;

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, Device::Cpu).unwrap()
}

#[test]
fn backward_fills_leaf_grads_and_accumulates() -> Result<()> {
    let x = t(&[1.0, 2.0, 3.0], &[3]).as_variable();
    let w = t(&[0.5], &[1]).as_variable();
    let loss = x.square()?.mul(&w)?.sum_all()?; // w * sum(x^2)
    loss.backward()?;
    assert_eq!(x.grad().unwrap().to_vec::<f64>()?, vec![1.0, 2.0, 3.0]);
    assert_eq!(w.grad().unwrap().to_vec::<f64>()?, vec![14.0]);
    // a second backward (of a new graph) adds to the stored gradients
    x.square()?.mul(&w)?.sum_all()?.backward()?;
    assert_eq!(x.grad().unwrap().to_vec::<f64>()?, vec![2.0, 4.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    Ok(())
}

#[test]
fn backward_grads_leaves_slots_untouched() -> Result<()> {
    let x = t(&[1.0, -2.0], &[2]).as_variable();
    let grads = x.exp()?.sum_all()?.backward_grads()?;
    let g = grads.get(&x).unwrap().to_vec::<f64>()?;
    assert!((g[0] - 1f64.exp()).abs() < 1e-15 && (g[1] - (-2f64).exp()).abs() < 1e-15);
    assert!(x.grad().is_none());
    Ok(())
}

#[test]
fn backward_needs_a_scalar() {
    let x = t(&[1.0, 2.0], &[2]).as_variable();
    let err = x.exp().unwrap().backward().unwrap_err();
    assert!(matches!(err, Error::Autograd(_)), "{err}");
    assert!(err.to_string().contains("[2]"), "{err}");
}

#[test]
fn no_grad_and_detach_stop_tracking() -> Result<()> {
    let x = t(&[1.0, 2.0], &[2]).as_variable();
    let y = no_grad(|| x.exp())?;
    assert!(!y.requires_grad());
    {
        let _guard = NoGradGuard::new();
        assert!(!flowtensor::is_grad_enabled());
        assert!(!x.mul(&x)?.requires_grad());
    }
    assert!(flowtensor::is_grad_enabled());
    // detach: the detached branch contributes no gradient
    let loss = x.mul(&x.detach())?.sum_all()?;
    loss.backward()?;
    assert_eq!(x.grad().unwrap().to_vec::<f64>()?, vec![1.0, 2.0]);
    Ok(())
}

#[test]
fn tensors_without_variables_record_nothing() -> Result<()> {
    let x = t(&[1.0, 2.0], &[2]);
    let y = x.exp()?.sum_all()?;
    assert!(!y.requires_grad() && y.is_leaf());
    assert!(y.backward_grads()?.get(&x).is_none());
    Ok(())
}

/// `y = x^3` with a hand-written backward `3 x^2 g`.
struct Cube;

impl CustomOp for Cube {
    fn name(&self) -> &'static str {
        "cube"
    }
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        assert!(
            !flowtensor::is_grad_enabled(),
            "custom forward runs without recording"
        );
        inputs[0].powf(3.0)
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&inputs[0].square()?.mul_scalar(3.0)?)?)])
    }
}

#[test]
fn custom_op_backward_is_used_and_correct() -> Result<()> {
    let x = Generator::new(1).randn(&[2, 3], DType::F64, Device::Cpu)?;
    check_gradients(
        |xs| Tensor::apply_custom(Arc::new(Cube), &[xs[0].transpose(0, 1)?])?.exp(),
        &[x],
        GradCheck::default(),
    )?;
    Ok(())
}

/// A custom op whose backward returns a gradient of the wrong shape.
struct BadShape;

impl CustomOp for BadShape {
    fn name(&self) -> &'static str {
        "bad_shape"
    }
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        inputs[0].exp()
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_all()?)])
    }
}

#[test]
fn custom_op_with_wrong_gradient_shape_is_an_error() {
    let x = t(&[1.0, 2.0], &[2]).as_variable();
    let y = Tensor::apply_custom(Arc::new(BadShape), &[x]).unwrap();
    let err = y.sum_all().unwrap().backward().unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn set_data_updates_in_place() -> Result<()> {
    let p = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).as_variable();
    let view = p.transpose(0, 1)?;
    p.set_data(&p.mul_scalar(10.0)?)?;
    assert_eq!(view.to_vec::<f64>()?, vec![10.0, 30.0, 20.0, 40.0]);
    let err = p.set_data(&t(&[1.0], &[1])).unwrap_err();
    assert!(err.to_string().contains("set_data"), "{err}");
    Ok(())
}
