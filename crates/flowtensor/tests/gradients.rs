//! Central-difference gradient checks (f64) of every differentiable op,
//! including broadcast operands and non-contiguous (permuted, narrowed,
//! flipped) inputs.

use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{DType, Device, PadMode, Result, Tensor};

mod common;
use common::{positive, randn};

/// Values at least 0.2 away from zero (for ops with a kink there).
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let v: Vec<f64> = randn(shape, seed)
        .to_vec()
        .unwrap()
        .into_iter()
        .map(|x: f64| x + 0.2 * x.signum())
        .collect();
    Tensor::from_vec(v, shape, Device::Cpu).unwrap()
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    check_gradients(f, inputs, GradCheck::default()).unwrap();
}

/// Views a (2, 3, 4) input as a non-contiguous (4, 2, 3) tensor.
fn strided(x: &Tensor) -> Result<Tensor> {
    x.permute(&[2, 0, 1])
}

macro_rules! unary_checks {
    ($($name:ident: $input:expr => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            let x: Tensor = $input;
            let op = $op;
            check(|xs| op(&xs[0]), std::slice::from_ref(&x));
            // the same op on a permuted, then a flipped and narrowed, view
            check(|xs| op(&strided(&xs[0])?), std::slice::from_ref(&x));
            check(|xs| op(&xs[0].flip(&[1])?.narrow(2, 1, 2)?), &[x]);
        }
    )*};
}

unary_checks! {
    neg: randn(&[2, 3, 4], 1) => |x: &Tensor| x.neg();
    exp: randn(&[2, 3, 4], 2) => |x: &Tensor| x.exp();
    log: positive(&[2, 3, 4], 3) => |x: &Tensor| x.log();
    log1p: positive(&[2, 3, 4], 4) => |x: &Tensor| x.sub_scalar(0.5)?.log1p();
    sqrt: positive(&[2, 3, 4], 5) => |x: &Tensor| x.sqrt();
    abs: away_from_zero(&[2, 3, 4], 6) => |x: &Tensor| x.abs();
    square: randn(&[2, 3, 4], 7) => |x: &Tensor| x.square();
    tanh: randn(&[2, 3, 4], 8) => |x: &Tensor| x.tanh();
    sigmoid: randn(&[2, 3, 4], 9) => |x: &Tensor| x.mul_scalar(3.0)?.sigmoid();
    log_sigmoid: randn(&[2, 3, 4], 10) => |x: &Tensor| x.mul_scalar(3.0)?.log_sigmoid();
    softplus: randn(&[2, 3, 4], 11) => |x: &Tensor| x.mul_scalar(3.0)?.softplus();
    relu: away_from_zero(&[2, 3, 4], 12) => |x: &Tensor| x.relu();
    silu: randn(&[2, 3, 4], 13) => |x: &Tensor| x.mul_scalar(2.0)?.silu();
    powf: positive(&[2, 3, 4], 14) => |x: &Tensor| x.powf(2.7);
    affine: randn(&[2, 3, 4], 15) => |x: &Tensor| x.affine(-1.5, 0.25);
    clamp: away_from_zero(&[2, 3, 4], 16) => |x: &Tensor| x.mul_scalar(2.0)?.clamp(-1.1, 0.9);
    scalar_ops: randn(&[2, 3, 4], 17) => |x: &Tensor| x.add_scalar(1.5)?.mul_scalar(2.0)?.sub_scalar(0.5)?.div_scalar(4.0);
}

macro_rules! binary_checks {
    ($($name:ident => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            let op = $op;
            // same shapes
            check(|xs| op(&xs[0], &xs[1]), &[randn(&[3, 4], 20), positive(&[3, 4], 21)]);
            // broadcast operands on both sides: (3, 1, 4) with (2, 4), and a scalar
            check(|xs| op(&xs[0], &xs[1]), &[randn(&[3, 1, 4], 22), positive(&[2, 4], 23)]);
            check(|xs| op(&xs[0], &xs[1]), &[randn(&[2, 3], 24), positive(&[], 25)]);
            check(|xs| op(&xs[1], &xs[0]), &[positive(&[2, 3], 26), positive(&[1], 27)]);
            // non-contiguous operands: permuted lhs, flipped and narrowed rhs
            check(
                |xs| op(&strided(&xs[0])?, &xs[1].flip(&[0])?.narrow(1, 1, 3)?),
                &[randn(&[2, 3, 4], 28), positive(&[2, 5], 29)],
            );
        }
    )*};
}

binary_checks! {
    add => |a: &Tensor, b: &Tensor| a.add(b);
    sub => |a: &Tensor, b: &Tensor| a.sub(b);
    mul => |a: &Tensor, b: &Tensor| a.mul(b);
    div => |a: &Tensor, b: &Tensor| a.div(b);
}

#[test]
fn where_positive() {
    // the gate away from 0, so finite differences do not cross it (its
    // gradient is 0); broadcast both ways
    check(
        |xs| xs[0].where_positive(&xs[1]),
        &[randn(&[2, 4], 35), away_from_zero(&[3, 1, 4], 36)],
    );
    let a = Tensor::from_vec(vec![1.0, f64::NAN, f64::INFINITY, 4.0], &[4], Device::Cpu).unwrap();
    let gate = Tensor::from_vec(vec![0.5, -1.0, 0.0, 2.0], &[4], Device::Cpu).unwrap();
    let out = a.where_positive(&gate).unwrap().to_vec_f64().unwrap();
    assert_eq!(out, [1.0, 0.0, 0.0, 4.0]);
}

#[test]
fn where_cond() {
    let mask = randn(&[3, 1, 4], 30).gt_scalar(0.0).unwrap();
    check(
        |xs| mask.where_cond(&xs[0], &xs[1]),
        &[randn(&[2, 4], 31), randn(&[3, 2, 4], 32)],
    );
    check(
        |xs| mask.where_cond(&xs[0].transpose(0, 1)?, &xs[1].flip(&[0])?),
        &[randn(&[4, 3], 33), randn(&[3, 1, 1], 34)],
    );
}

macro_rules! reduce_checks {
    ($($name:ident => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            let op = $op;
            let x = randn(&[2, 3, 4], 40);
            for dims in [&[0usize][..], &[1], &[2], &[0, 2], &[0, 1, 2], &[]] {
                for keepdim in [false, true] {
                    check(|xs| op(&xs[0], dims, keepdim), std::slice::from_ref(&x));
                    check(|xs| op(&strided(&xs[0])?, dims, keepdim), std::slice::from_ref(&x));
                }
            }
            check(|xs| op(&xs[0].flip(&[0, 2])?.narrow(1, 1, 2)?, &[1, 2], false), &[x]);
        }
    )*};
}

reduce_checks! {
    sum => |x: &Tensor, d: &[usize], k: bool| x.sum(d, k);
    mean => |x: &Tensor, d: &[usize], k: bool| x.mean(d, k);
    max => |x: &Tensor, d: &[usize], k: bool| x.max(d, k);
    min => |x: &Tensor, d: &[usize], k: bool| x.min(d, k);
    logsumexp => |x: &Tensor, d: &[usize], k: bool| x.mul_scalar(3.0)?.logsumexp(d, k);
    norm => |x: &Tensor, d: &[usize], k: bool| x.add_scalar(0.1)?.norm(d, k);
}

#[test]
fn full_reductions() {
    check(|xs| xs[0].sum_all(), &[randn(&[3, 4], 41)]);
    check(|xs| strided(&xs[0])?.mean_all(), &[randn(&[2, 3, 4], 42)]);
}

#[test]
fn matmul() {
    let mm = |xs: &[Tensor]| xs[0].matmul(&xs[1]);
    check(mm, &[randn(&[3, 4], 50), randn(&[4, 5], 51)]);
    // batched with batch broadcasting on both sides
    check(mm, &[randn(&[2, 1, 3, 4], 52), randn(&[3, 4, 2], 53)]);
    // transposed and flipped (negative-stride) operands
    check(
        |xs| {
            xs[0]
                .transpose(0, 1)?
                .matmul(&xs[1].flip(&[1])?.transpose(0, 1)?)
        },
        &[randn(&[4, 3], 54), randn(&[5, 4], 55)],
    );
    // a broadcast (zero-stride) operand
    check(
        |xs| xs[0].broadcast_as(&[3, 4])?.matmul(&xs[1]),
        &[randn(&[4], 56), randn(&[4, 2], 57)],
    );
}

#[test]
fn matmul_bias() {
    let mmb = |xs: &[Tensor]| xs[0].matmul_bias(&xs[1], &xs[2]);
    check(
        mmb,
        &[randn(&[3, 4], 58), randn(&[4, 5], 59), randn(&[5], 60)],
    );
    // batched, a transposed weight and a strided bias
    check(
        |xs| xs[0].matmul_bias(&xs[1].transpose(1, 2)?, &xs[2].narrow(0, 1, 3)?),
        &[
            randn(&[2, 3, 4], 61),
            randn(&[2, 3, 4], 62),
            randn(&[5], 63),
        ],
    );
    // the same numbers as a product and an addition; the bias's shape is checked
    let (x, w, b) = (randn(&[6, 4], 64), randn(&[4, 3], 65), randn(&[3], 66));
    let fused = x.matmul_bias(&w, &b).unwrap().to_vec::<f64>().unwrap();
    let plain = x
        .matmul(&w)
        .unwrap()
        .add(&b)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for (f, p) in fused.iter().zip(&plain) {
        assert!((f - p).abs() < 1e-12, "{f} vs {p}");
    }
    let e = x.matmul_bias(&w, &randn(&[4], 67)).unwrap_err().to_string();
    assert!(e.contains("matmul_bias") && e.contains("[4]"), "{e}");
    // no inner dimension: the bias alone
    let empty = Tensor::zeros(&[2, 0], DType::F64, Device::Cpu).unwrap();
    let rows = empty.matmul_bias(
        &Tensor::zeros(&[0, 3], DType::F64, Device::Cpu).unwrap(),
        &b,
    );
    let rows = rows.unwrap().to_vec::<f64>().unwrap();
    assert_eq!(rows[3..], b.to_vec::<f64>().unwrap()[..]);
}

/// A view (or view chain) applied to one tensor.
type ViewFn = dyn Fn(&Tensor) -> Result<Tensor>;

#[test]
fn views() {
    let x = randn(&[2, 3, 4], 60);
    let cases: Vec<Box<ViewFn>> = vec![
        Box::new(|x| x.reshape(&[6, 4])),
        Box::new(|x| strided(x)?.reshape(&[4, 6])),
        Box::new(|x| x.permute(&[1, 2, 0])),
        Box::new(|x| x.transpose(0, 2)),
        Box::new(|x| x.narrow(1, 1, 2)?.narrow(2, 0, 3)),
        Box::new(|x| x.narrow(0, 1, 1)?.broadcast_as(&[5, 2, 3, 4])),
        Box::new(|x| x.flip(&[0, 2])),
        Box::new(|x| strided(x)?.flip(&[1])?.unsqueeze(1)?.squeeze(1)),
        Box::new(|x| x.transpose(1, 2)?.contiguous()),
    ];
    for case in &cases {
        check(
            |xs| case(&xs[0])?.mul(&xs[0].sum_all()?),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn cat_stack_split_chunk() {
    check(
        |xs| Tensor::cat(&[&xs[0], &xs[1].permute(&[1, 0, 2])?.narrow(2, 1, 3)?], 2),
        &[randn(&[2, 4, 3], 70), randn(&[4, 2, 5], 71)],
    );
    check(
        |xs| Tensor::stack(&[&xs[0], &xs[1].flip(&[0])?], 1),
        &[randn(&[3, 2], 72), randn(&[3, 2], 73)],
    );
    check(
        |xs| {
            let parts = xs[0].split(&[1, 3, 1], 1)?;
            parts[0]
                .sum_all()?
                .mul(&parts[1].sum(&[1], true)?)?
                .add(&parts[2].square()?)
        },
        &[randn(&[3, 5], 74)],
    );
    check(
        |xs| {
            let parts = strided(&xs[0])?.chunk(3, 0)?;
            Tensor::cat(&[&parts[1], &parts[0].exp()?], 0)
        },
        &[randn(&[2, 3, 4], 75)],
    );
}

#[test]
fn pad() {
    for mode in [PadMode::Zero, PadMode::Circular] {
        check(
            |xs| xs[0].pad(&[(1, 2), (2, 1)], mode),
            &[randn(&[2, 3, 4], 80)],
        );
        check(
            |xs| strided(&xs[0])?.pad(&[(0, 1), (2, 2)], mode),
            &[randn(&[2, 3, 4], 81)],
        );
    }
}

#[test]
fn cumsum() {
    for dim in 0..3 {
        check(|xs| xs[0].cumsum(dim), &[randn(&[2, 3, 4], 60)]);
        check(|xs| strided(&xs[0])?.cumsum(dim), &[randn(&[2, 3, 4], 61)]);
    }
}

#[test]
fn take_along_dim() {
    use flowtensor::Indices;
    // repeated and skipped positions, along every dim, on a permuted view too
    for dim in 0..3 {
        let mut shape = vec![2, 3, 4];
        let len = shape[dim];
        shape[dim] = 5;
        let n: usize = shape.iter().product();
        let pos: Vec<usize> = (0..n).map(|i| (i * 3 + 1) % len).collect();
        let idx = Indices::new(&pos, &shape, DType::F64, Device::Cpu).unwrap();
        check(
            |xs| xs[0].take_along_dim(&idx, dim),
            &[randn(&[2, 3, 4], 62)],
        );
    }
    let idx = Indices::new(&[3, 0, 3, 1, 2, 2], &[1, 2, 3], DType::F64, Device::Cpu).unwrap();
    check(
        |xs| strided(&xs[0])?.take_along_dim(&idx, 0),
        &[randn(&[2, 3, 4], 63)],
    );
}

#[test]
fn index_select() {
    check(
        |xs| xs[0].index_select(1, &[2, 0, 0, 3]),
        &[randn(&[2, 4, 3], 90)],
    );
    check(
        |xs| strided(&xs[0])?.index_select(0, &[3, 1]),
        &[randn(&[2, 3, 4], 91)],
    );
}

#[test]
fn cast() {
    // Through f32 and back: the f32 rounding needs a larger step and tolerance.
    let opts = GradCheck {
        eps: 1e-2,
        atol: 1e-4,
        rtol: 1e-3,
    };
    check_gradients(
        |xs| xs[0].to_dtype(DType::F32)?.square()?.to_dtype(DType::F64),
        &[randn(&[2, 3], 95)],
        opts,
    )
    .unwrap();
}

#[test]
fn composite_expression_with_reuse() {
    // A node used several times (gradients accumulate inside one backward).
    check(
        |xs| {
            let h = xs[0].matmul(&xs[1])?.tanh()?;
            h.mul(&h)?
                .add(&h.sigmoid()?)?
                .sum(&[1], false)?
                .logsumexp(&[0], false)
        },
        &[randn(&[3, 4], 96), randn(&[4, 2], 97)],
    );
}
