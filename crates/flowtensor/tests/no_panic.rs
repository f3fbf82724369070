//! Every op on any shapes and arguments, empty dimensions and out-of-range
//! arguments included, returns a value or an error: never a panic. Where an
//! op succeeds on inputs that require gradients, its backward runs too.

use flowtensor::conv_exp::{conv_exp, conv_exp_inverse, conv_exp_logdet, Terms};
use flowtensor::fft::{irfft2, rfft2};
use flowtensor::{
    Conv2dParams, ConvTranspose2dParams, DType, Device, Generator, PadMode, Result, Tensor,
};
use proptest::prelude::*;

/// Shapes of rank 0 to 4 with sides 0 to 4.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..5, 0..5)
}

fn tensor(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, dtype, Device::Cpu)
        .unwrap()
        .as_variable()
}

/// Runs `op`; on success with a non-empty result, also its backward.
fn exercise(op: impl FnOnce() -> Result<Tensor>) {
    if let Ok(t) = op() {
        if t.requires_grad() {
            if let Ok(s) = t.sum_all() {
                let _ = s.backward();
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Arg {
    Dims(Vec<usize>),
    Dim(usize),
    Range(usize, usize, usize),
    Pads(Vec<(usize, usize)>, bool),
    Indices(usize, Vec<usize>),
    Conv(usize, usize, usize, usize, usize, usize),
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        proptest::collection::vec(0usize..6, 0..6).prop_map(Arg::Dims),
        (0usize..6).prop_map(Arg::Dim),
        (0usize..6, 0usize..6, 0usize..6).prop_map(|(a, b, c)| Arg::Range(a, b, c)),
        (
            proptest::collection::vec((0usize..4, 0usize..4), 0..5),
            any::<bool>()
        )
            .prop_map(|(p, c)| Arg::Pads(p, c)),
        (0usize..6, proptest::collection::vec(0usize..6, 0..6))
            .prop_map(|(d, i)| Arg::Indices(d, i)),
        (
            0usize..4,
            0usize..4,
            0usize..3,
            0usize..3,
            0usize..3,
            0usize..2
        )
            .prop_map(|(a, b, c, d, e, f)| Arg::Conv(a, b, c, d, e, f)),
    ]
}

fn run_op(which: usize, a: &Tensor, b: &Tensor, arg: &Arg) {
    let dims = match arg {
        Arg::Dims(d) => d.clone(),
        Arg::Dim(d) => vec![*d],
        _ => vec![0],
    };
    let d0 = dims.first().copied().unwrap_or(0);
    match which {
        0 => exercise(|| a.add(b)),
        1 => exercise(|| a.mul(b)?.div(b)),
        2 => exercise(|| a.sub(b)?.exp()?.log()?.tanh()?.sigmoid()),
        3 => exercise(|| a.relu()?.sqrt()?.abs()?.square()?.log1p()?.powf(1.5)),
        4 => exercise(|| a.softplus()?.log_sigmoid()?.silu()?.clamp(-1.0, 1.0)),
        5 => exercise(|| a.gt(b)?.where_cond(a, b)),
        6 => exercise(|| a.sum(&dims, d0 % 2 == 0)),
        7 => exercise(|| a.mean(&dims, true)),
        8 => exercise(|| a.max(&dims, false)),
        9 => exercise(|| a.min(&dims, true)),
        10 => exercise(|| a.logsumexp(&dims, false)),
        11 => exercise(|| a.norm(&dims, true)),
        12 => exercise(|| a.matmul(b)),
        13 => exercise(|| a.reshape(&dims)),
        14 => exercise(|| a.permute(&dims)?.contiguous()),
        15 => exercise(|| {
            let (x, y) = (
                dims.first().copied().unwrap_or(0),
                dims.get(1).copied().unwrap_or(1),
            );
            a.transpose(x, y)
        }),
        16 => exercise(|| match arg {
            Arg::Range(d, s, l) => a.narrow(*d, *s, *l),
            _ => a.narrow(d0, 0, 1),
        }),
        17 => exercise(|| a.flip(&dims)?.contiguous()),
        18 => exercise(|| a.broadcast_as(&dims)?.contiguous()),
        19 => {
            let _ = a.chunk(d0, dims.get(1).copied().unwrap_or(0));
            let _ = a.split(&dims, d0);
        }
        20 => exercise(|| Tensor::cat(&[a, b], d0)),
        21 => exercise(|| Tensor::stack(&[a, b], d0)),
        22 => exercise(|| match arg {
            Arg::Pads(p, circular) => a.pad(
                p,
                if *circular {
                    PadMode::Circular
                } else {
                    PadMode::Zero
                },
            ),
            _ => a.pad(&[(1, 1)], PadMode::Zero),
        }),
        23 => exercise(|| match arg {
            Arg::Indices(d, i) => a.index_select(*d, i),
            _ => a.index_select(0, &[0]),
        }),
        24 => exercise(|| {
            let (stride, pad, dil, groups) = match arg {
                Arg::Conv(s, p, d, g, _, _) => (*s, *p, *d, *g),
                _ => (1, 1, 1, 1),
            };
            a.conv2d(
                b,
                None,
                &Conv2dParams {
                    stride: (stride, stride.max(1)),
                    padding: (pad, pad),
                    padding_mode: if pad % 2 == 0 {
                        PadMode::Zero
                    } else {
                        PadMode::Circular
                    },
                    dilation: (dil, dil.max(1)),
                    groups,
                },
            )
        }),
        25 => exercise(|| {
            let (stride, pad, dil, groups, op) = match arg {
                Arg::Conv(s, p, d, g, o, _) => (*s, *p, *d, *g, *o),
                _ => (1, 1, 1, 1, 0),
            };
            a.conv_transpose2d(
                b,
                None,
                &ConvTranspose2dParams {
                    stride: (stride, stride.max(1)),
                    padding: (pad, pad),
                    output_padding: (op, 0),
                    dilation: (dil.max(1), dil),
                    groups,
                },
            )
        }),
        26 => {
            let _ = a.lu().map(|lu| lu.factors().clone());
            let _ = a.qr();
            exercise(|| a.inverse());
            exercise(|| a.slogdet().map(|(_, l)| l));
            exercise(|| a.solve(b));
            exercise(|| a.triangular_solve(b, d0 % 2 == 0, d0 % 3 == 0));
            exercise(|| a.matrix_exp());
        }
        27 => {
            let _ = rfft2(a).and_then(|f| irfft2(&f, d0));
        }
        28 => {
            let terms = match arg {
                Arg::Conv(_, _, _, _, _, 1) => Terms::Adaptive { tol: 1e-6, max: 30 },
                _ => Terms::Fixed(d0),
            };
            exercise(|| conv_exp(a, b, terms).map(|(t, _)| t));
            exercise(|| conv_exp_inverse(a, b, terms).map(|(t, _)| t));
            exercise(|| conv_exp_logdet(b, d0, dims.get(1).copied().unwrap_or(0)));
        }
        29 => exercise(|| a.squeeze(d0)?.unsqueeze(dims.get(1).copied().unwrap_or(0))),
        30 => exercise(|| a.to_dtype(DType::F64)?.add(&b.to_dtype(DType::F64)?)),
        _ => exercise(|| a.copy()?.detach().contiguous()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_op_panics_on_any_shape_or_argument(
        which in 0usize..32,
        sa in shape(),
        sb in shape(),
        same in any::<bool>(),
        f64s in any::<bool>(),
        arg in arg(),
        seed in any::<u64>(),
    ) {
        let dtype = if f64s { DType::F64 } else { DType::F32 };
        let a = tensor(&sa, dtype, seed);
        let b = tensor(if same { &sa } else { &sb }, dtype, seed ^ 1);
        run_op(which, &a, &b, &arg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Convolutions and the convolution exponential on 4-D shapes near the
    /// valid ones (zero sizes, mismatched channels, kernels larger than the image).
    #[test]
    fn convolutions_never_panic_on_images_of_any_size(
        (n, c, h, w) in (0usize..3, 0usize..5, 0usize..7, 0usize..7),
        (o, ci, kh, kw) in (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        (stride, pad, dil, groups, out_pad) in (0usize..3, 0usize..3, 0usize..3, 0usize..3, 0usize..2),
        circular in any::<bool>(),
        f64s in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = if f64s { DType::F64 } else { DType::F32 };
        let x = tensor(&[n, c, h, w], dtype, seed);
        let k = tensor(&[o, ci, kh, kw], dtype, seed ^ 1);
        let bias = tensor(&[o], dtype, seed ^ 2);
        exercise(|| x.conv2d(&k, Some(&bias), &Conv2dParams {
            stride: (stride, stride),
            padding: (pad, pad),
            padding_mode: if circular { PadMode::Circular } else { PadMode::Zero },
            dilation: (dil, dil),
            groups,
        }));
        exercise(|| x.conv_transpose2d(&k, None, &ConvTranspose2dParams {
            stride: (stride, stride),
            padding: (pad, pad),
            output_padding: (out_pad, out_pad),
            dilation: (dil, dil),
            groups,
        }));
        let square = tensor(&[c, c, kh, kh], dtype, seed ^ 3).mul_scalar(0.1).unwrap();
        exercise(|| conv_exp(&x, &square, Terms::Fixed(kw)).map(|(t, _)| t));
        exercise(|| conv_exp_inverse(&x, &square, Terms::Adaptive { tol: 1e-8, max: 40 }).map(|(t, _)| t));
    }
}
