//! Gradients of gradients: `flowtensor::grad` with `create_graph`, checked
//! as Hessian-vector products against central differences of the gradient
//! (f64) for every primitive with a non-zero second derivative, for the
//! linear ops inside a square (so that their recorded backward rules are
//! differentiated too), and for a small network of convolutions, matmuls
//! and elementwise ops.

use flowtensor::gradcheck::{check_second_derivatives, GradCheck};
use flowtensor::{
    grad, Conv2dParams, ConvTranspose2dParams, DType, Device, Indices, PadMode, Result, Tensor,
};

mod common;
use common::{positive, randn};

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let opts = GradCheck {
        eps: 1e-5,
        atol: 1e-7,
        rtol: 1e-5,
    };
    check_second_derivatives(f, inputs, opts).unwrap();
}

macro_rules! unary_checks {
    ($($name:ident: $input:expr => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            let op = $op;
            check(|xs| op(&xs[0]), &[$input]);
            // on a permuted view, with the result squared (a chain of two)
            check(|xs| op(&xs[0].permute(&[2, 0, 1])?)?.square(), &[$input]);
        }
    )*};
}

unary_checks! {
    exp: randn(&[2, 3, 4], 1) => |x: &Tensor| x.exp();
    log: positive(&[2, 3, 4], 2) => |x: &Tensor| x.log();
    log1p: positive(&[2, 3, 4], 3) => |x: &Tensor| x.log1p();
    sqrt: positive(&[2, 3, 4], 4) => |x: &Tensor| x.sqrt();
    square: randn(&[2, 3, 4], 5) => |x: &Tensor| x.square();
    tanh: randn(&[2, 3, 4], 6) => |x: &Tensor| x.tanh();
    sigmoid: randn(&[2, 3, 4], 7) => |x: &Tensor| x.mul_scalar(2.0)?.sigmoid();
    log_sigmoid: randn(&[2, 3, 4], 8) => |x: &Tensor| x.mul_scalar(2.0)?.log_sigmoid();
    softplus: randn(&[2, 3, 4], 9) => |x: &Tensor| x.mul_scalar(2.0)?.softplus();
    silu: randn(&[2, 3, 4], 10) => |x: &Tensor| x.mul_scalar(2.0)?.silu();
    powf: positive(&[2, 3, 4], 11) => |x: &Tensor| x.powf(2.5);
    // piecewise linear: zero second derivative, first derivatives chained
    abs: randn(&[2, 3, 4], 12) => |x: &Tensor| x.abs()?.mul(x);
    relu: randn(&[2, 3, 4], 13) => |x: &Tensor| x.relu()?.mul(x);
    clamp: randn(&[2, 3, 4], 14) => |x: &Tensor| x.clamp(-0.5, 0.7)?.mul(x);
    affine: randn(&[2, 3, 4], 15) => |x: &Tensor| x.affine(-1.5, 0.25)?.exp();
}

#[test]
fn binary_ops_with_broadcasting() {
    check(
        |xs| xs[0].mul(&xs[1]),
        &[randn(&[3, 4], 20), randn(&[3, 4], 21)],
    );
    check(
        |xs| xs[0].div(&xs[1]),
        &[randn(&[3, 1, 4], 22), positive(&[2, 4], 23)],
    );
    check(
        |xs| xs[0].add(&xs[1])?.square()?.sub(&xs[1].mul(&xs[0])?),
        &[randn(&[2, 3], 24), randn(&[3], 25)],
    );
    check(
        |xs| xs[0].mul(&xs[1])?.where_positive(&xs[1]),
        &[randn(&[3, 4], 26), randn(&[3, 4], 27)],
    );
    let mask = randn(&[3, 4], 28).gt_scalar(0.0).unwrap();
    check(
        |xs| mask.where_cond(&xs[0].exp()?, &xs[1].square()?),
        &[randn(&[3, 4], 29), randn(&[3, 4], 30)],
    );
}

#[test]
fn reductions() {
    check(
        |xs| xs[0].sum(&[1], true)?.square(),
        &[randn(&[2, 3, 4], 31)],
    );
    check(
        |xs| xs[0].mean(&[0, 2], false)?.exp(),
        &[randn(&[2, 3, 4], 32)],
    );
    check(
        |xs| xs[0].max(&[2], false)?.square(),
        &[randn(&[2, 3, 4], 33)],
    );
    check(|xs| xs[0].logsumexp(&[1], false), &[randn(&[2, 3, 4], 34)]);
}

#[test]
fn matmul_and_matmul_bias() {
    check(
        |xs| xs[0].matmul(&xs[1]),
        &[randn(&[3, 4], 40), randn(&[4, 2], 41)],
    );
    check(
        |xs| xs[0].matmul(&xs[1].transpose(1, 2)?)?.tanh(),
        &[randn(&[2, 3, 4], 42), randn(&[2, 5, 4], 43)],
    );
    check(
        |xs| xs[0].matmul_bias(&xs[1], &xs[2])?.square(),
        &[randn(&[3, 4], 44), randn(&[4, 5], 45), randn(&[5], 46)],
    );
}

#[test]
fn conv2d_with_bias_relu_stride_padding_and_groups() {
    let cases = [
        (Conv2dParams::default(), 4, 3),
        (
            Conv2dParams {
                stride: (2, 1),
                padding: (1, 1),
                ..Default::default()
            },
            4,
            3,
        ),
        (
            Conv2dParams {
                padding: (1, 1),
                padding_mode: PadMode::Circular,
                groups: 2,
                ..Default::default()
            },
            2,
            3,
        ),
        (Conv2dParams::default(), 4, 1),
    ];
    for (p, cg, k) in cases {
        let inputs = [
            randn(&[2, 4, 5, 5], 50),
            randn(&[6, cg, k, k], 51).mul_scalar(0.3).unwrap(),
            randn(&[6], 52),
        ];
        check(|xs| xs[0].conv2d(&xs[1], Some(&xs[2]), &p), &inputs);
        check(|xs| xs[0].conv2d(&xs[1], None, &p)?.tanh(), &inputs[..2]);
        // the fused ReLU: piecewise linear, chained through a square
        check(
            |xs| xs[0].conv2d_relu(&xs[1], Some(&xs[2]), &p)?.square(),
            &inputs,
        );
    }
}

#[test]
fn conv_transpose2d() {
    let p = ConvTranspose2dParams {
        stride: (2, 2),
        padding: (1, 0),
        output_padding: (1, 0),
        ..Default::default()
    };
    check(
        |xs| xs[0].conv_transpose2d(&xs[1], Some(&xs[2]), &p)?.square(),
        &[
            randn(&[2, 3, 4, 3], 53),
            randn(&[3, 2, 3, 2], 54),
            randn(&[2], 55),
        ],
    );
}

/// A linear op applied to one tensor.
type LinearOp = dyn Fn(&Tensor) -> Result<Tensor>;

#[test]
fn linear_ops_inside_a_square() {
    let idx = Indices::new(&[2, 0, 2, 1, 1, 0], &[2, 3, 1], DType::F64, Device::Cpu).unwrap();
    let cases: Vec<Box<LinearOp>> = vec![
        Box::new(|x| x.permute(&[2, 0, 1])?.reshape(&[4, 6])),
        Box::new(|x| x.narrow(1, 1, 2)?.flip(&[2])),
        Box::new(|x| x.narrow(0, 1, 1)?.broadcast_as(&[3, 1, 3, 4])),
        Box::new(|x| Tensor::cat(&[x, &x.exp()?], 1)),
        Box::new(|x| x.index_select(1, &[2, 0, 0])),
        Box::new(|x| x.cumsum(2)),
        Box::new(move |x| x.take_along_dim(&idx, 2)),
        Box::new(|x| x.pad(&[(1, 0), (0, 2)], PadMode::Circular)),
    ];
    for case in &cases {
        check(|xs| case(&xs[0])?.square(), &[randn(&[2, 3, 4], 60)]);
    }
}

#[test]
fn linear_algebra() {
    let well_conditioned = |seed| {
        randn(&[2, 3, 3], seed)
            .mul_scalar(0.3)
            .unwrap()
            .add(&Tensor::eye(3, DType::F64, Device::Cpu).unwrap())
            .unwrap()
    };
    check(|xs| xs[0].inverse(), &[well_conditioned(70)]);
    check(|xs| Ok(xs[0].slogdet()?.1), &[well_conditioned(71)]);
    check(|xs| xs[0].det(), &[well_conditioned(72)]);
    check(
        |xs| xs[0].solve(&xs[1]),
        &[well_conditioned(73), randn(&[2, 3, 2], 74)],
    );
    for upper in [false, true] {
        check(
            |xs| xs[0].triangular_solve(&xs[1], upper, false),
            &[well_conditioned(75), randn(&[2, 3, 2], 76)],
        );
    }
}

#[test]
fn fft_inside_a_square() {
    use flowtensor::fft::{self, ComplexTensor};
    check(
        |xs| {
            let y = fft::fft(&ComplexTensor::new(xs[0].clone())?, &[0, 1])?;
            y.as_tensor().square()
        },
        &[randn(&[3, 4, 2], 80)],
    );
}

/// A small network: conv (bias, ReLU), conv, a matmul head, and a LipSwish-
/// like activation; double-backward through all of it, in the weights and
/// the input together.
#[test]
fn double_backward_through_a_network() {
    let p = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    check(
        |xs| {
            let h = xs[0].conv2d_relu(&xs[1], Some(&xs[2]), &p)?;
            let h = h.conv2d(&xs[3], None, &p)?.silu()?.div_scalar(1.1)?;
            let flat = h.reshape(&[2, 3 * 4 * 4])?;
            flat.matmul(&xs[4])?.tanh()
        },
        &[
            randn(&[2, 2, 4, 4], 90),
            randn(&[4, 2, 3, 3], 91).mul_scalar(0.4).unwrap(),
            randn(&[4], 92),
            randn(&[3, 4, 3, 3], 93).mul_scalar(0.3).unwrap(),
            randn(&[48, 2], 94).mul_scalar(0.2).unwrap(),
        ],
    );
}

#[test]
fn grad_takes_vector_jacobian_products_of_non_leaves() -> Result<()> {
    let x = randn(&[3], 100).as_variable();
    let h = x.exp()?; // not a leaf
    let y = h.mul(&x)?;
    let v = randn(&[3], 101);
    let grads = grad(
        std::slice::from_ref(&y),
        &[h.clone(), x.clone()],
        std::slice::from_ref(&v),
        false,
    )?;
    let (xv, hv, vv) = (x.to_vec_f64()?, h.to_vec_f64()?, v.to_vec_f64()?);
    let gh = grads[0].as_ref().unwrap().to_vec_f64()?;
    let gx = grads[1].as_ref().unwrap().to_vec_f64()?;
    for i in 0..3 {
        // dy/dh = x; dy/dx (total) = h + x h
        assert!((gh[i] - vv[i] * xv[i]).abs() < 1e-12);
        assert!((gx[i] - vv[i] * (hv[i] + xv[i] * hv[i])).abs() < 1e-12);
    }
    // without create_graph the result is a plain value; leaves' grad slots untouched
    assert!(!grads[1].as_ref().unwrap().requires_grad());
    assert!(x.grad().is_none());
    // an input the outputs do not depend on
    let z = randn(&[2], 102).as_variable();
    assert!(grad(&[y.sum_all()?], &[z], &[], false)?[0].is_none());
    Ok(())
}

#[test]
fn grad_reports_bad_arguments() {
    let x = randn(&[3], 110).as_variable();
    let y = x.exp().unwrap();
    let e = grad(
        std::slice::from_ref(&y),
        std::slice::from_ref(&x),
        &[randn(&[4], 111)],
        false,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("[4]") && e.to_string().contains("[3]"),
        "{e}"
    );
    let e = grad(std::slice::from_ref(&y), &[randn(&[3], 112)], &[], false).unwrap_err();
    assert!(e.to_string().contains("does not require grad"), "{e}");
    let e = grad(&[y], &[x], &[randn(&[3], 113), randn(&[3], 114)], false).unwrap_err();
    assert!(
        e.to_string().contains("2 grad_outputs for 1 outputs"),
        "{e}"
    );
}

#[test]
fn a_custom_op_without_a_recorded_backward_refuses_a_second_derivative() -> Result<()> {
    use flowtensor::conv_exp::{conv_exp, Terms};
    let x = randn(&[1, 2, 3, 3], 120).as_variable();
    let k = randn(&[2, 2, 3, 3], 121).mul_scalar(0.05)?.as_variable();
    let (y, _) = conv_exp(&x, &k, Terms::Fixed(6))?;
    // a first derivative is fine
    assert!(grad(
        &[y.square()?.sum_all()?],
        std::slice::from_ref(&x),
        &[],
        false
    )?[0]
        .is_some());
    let e = grad(&[y.square()?.sum_all()?], &[x], &[], true).unwrap_err();
    assert!(
        e.to_string().contains("conv_exp") && e.to_string().contains("create_graph"),
        "{e}"
    );
    Ok(())
}
