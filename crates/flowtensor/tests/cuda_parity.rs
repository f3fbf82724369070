//! The CUDA backend against the CPU backend on the same inputs: every
//! storage operation of the backend trait (the last test checks that each
//! has its test here), gradients through them, the convolution exponential,
//! the Philox stream and the determinism of reductions.
//!
//! It runs on `Device::Cuda(0)`: a real GPU where there is one, the CPU
//! emulation of the CUDA execution model with the `cuda-emu` feature
//! (`cargo test -p flowtensor --features cuda-emu --test cuda_parity`), and
//! otherwise every test prints why it is skipped.
//!
//! Tolerances, relative to `max(1, |x|)`: f64 within `1e-12` for every op;
//! f32 within `1e-5` for elementwise ops, and `1e-5 sqrt(n)` for results
//! that sum `n` terms (reductions, products, convolutions): the backends add
//! in different orders, and the rounding error of a sum of `n` terms grows
//! like `sqrt(n)` units of f32's 6e-8.

use flowtensor::conv_exp::{conv_exp, Terms};
use flowtensor::fft::{irfft2, rfft2};
use flowtensor::{
    Conv2dParams, ConvTranspose2dParams, DType, Device, Generator, Indices, PadMode, Tensor,
    BACKEND_OPS,
};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The CUDA device of the tests, or `None` (with the reason printed).
fn cuda() -> Option<Device> {
    match flowtensor::cuda::probe(0) {
        Ok(_) => Some(Device::Cuda(0)),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// The storage operations the tests of this file have exercised.
static COVERED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn covers(ops: &[&'static str]) {
    COVERED.lock().unwrap().extend(ops.iter().copied());
}

/// Asserts that `got` (on any device) equals `want` (CPU) within the tolerance
/// for its dtype; `terms` is the length of the sums behind each value.
#[track_caller]
fn assert_close(got: &Tensor, want: &Tensor, terms: usize, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes");
    let tol = match got.dtype() {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5 * (terms as f64).sqrt().max(1.0),
    };
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let same_nan = a.is_nan() && b.is_nan();
        let err = (a - b).abs() / b.abs().max(1.0);
        assert!(
            same_nan || a == b || err <= tol,
            "{what} [{:?}]: element {i} is {a} on the device, {b} on the CPU (relative error {err:e} > {tol:e})",
            got.dtype()
        );
    }
}

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, dtype, Device::Cpu)
        .unwrap()
}

/// Runs `f` on CPU copies and device copies of `inputs` and compares.
#[track_caller]
fn parity(
    d: Device,
    inputs: Vec<Tensor>,
    terms: usize,
    what: &str,
    f: impl Fn(&[Tensor]) -> flowtensor::Result<Tensor>,
) {
    let on_device: Vec<Tensor> = inputs.iter().map(|t| t.to_device(d).unwrap()).collect();
    let want = f(&inputs).unwrap();
    let got = f(&on_device).unwrap();
    assert_eq!(got.device(), d, "{what}: the result left the device");
    assert_close(&got.to_device(Device::Cpu).unwrap(), &want, terms, what);
}

/// Gradients of `sum(f(x) * w)` for every input, on both devices.
#[track_caller]
fn gradient_parity(
    d: Device,
    inputs: Vec<Tensor>,
    terms: usize,
    what: &str,
    f: impl Fn(&[Tensor]) -> flowtensor::Result<Tensor>,
) {
    let run = |device: Device| -> Vec<Tensor> {
        let vars: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.to_device(device).unwrap().detach().as_variable())
            .collect();
        let out = f(&vars).unwrap();
        let weights = Generator::new(99)
            .randn(out.shape(), out.dtype(), Device::Cpu)
            .unwrap()
            .to_device(device)
            .unwrap();
        let grads = out
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward_grads()
            .unwrap();
        vars.iter()
            .map(|v| match grads.get(v) {
                Some(g) => g.to_device(Device::Cpu).unwrap(),
                None => v.zeros_like().unwrap().to_device(Device::Cpu).unwrap(),
            })
            .collect()
    };
    let (want, got) = (run(Device::Cpu), run(d));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(g, w, terms, &format!("{what}: gradient of input {i}"));
    }
}

const DTYPES: [DType; 2] = [DType::F64, DType::F32];

#[test]
fn creation_copies_and_views() {
    let Some(d) = cuda() else { return };
    covers(&[
        "zeros",
        "from_host",
        "to_host",
        "copy_strided",
        "write_range",
    ]);
    for dt in DTYPES {
        let z = Tensor::zeros(&[3, 5], dt, d).unwrap();
        assert_eq!(z.device(), d);
        assert!(z.to_vec_f64().unwrap().iter().all(|&v| v == 0.0));
        let empty = Tensor::zeros(&[0, 4], dt, d).unwrap();
        assert!(empty.to_vec_f64().unwrap().is_empty());
        let x = randn(&[4, 3, 5], dt, 1);
        // views read in place on the device: permuted, narrowed, flipped, broadcast
        parity(d, vec![x.clone()], 1, "views", |t| {
            t[0].permute(&[2, 0, 1])?
                .narrow(1, 1, 2)?
                .flip(&[0, 2])?
                .contiguous()
        });
        parity(d, vec![randn(&[3, 1], dt, 2)], 1, "broadcast", |t| {
            t[0].broadcast_as(&[2, 3, 4])?.contiguous()
        });
        // set_data from a strided source
        let target = Tensor::zeros(&[3, 4], dt, d).unwrap();
        let src = randn(&[4, 3], dt, 3);
        target
            .set_data(&src.to_device(d).unwrap().transpose(0, 1).unwrap())
            .unwrap();
        assert_close(
            &target.to_device(Device::Cpu).unwrap(),
            &src.transpose(0, 1).unwrap().contiguous().unwrap(),
            1,
            "set_data",
        );
        // values survive the round trip bit for bit
        assert_eq!(
            x.to_device(d).unwrap().to_vec_f64().unwrap(),
            x.to_vec_f64().unwrap()
        );
    }
}

#[test]
fn unary_ops() {
    let Some(d) = cuda() else { return };
    covers(&["unary"]);
    for dt in DTYPES {
        let x = randn(&[5, 7], dt, 4);
        let positive = x.abs().unwrap().add_scalar(0.1).unwrap();
        type F = fn(&Tensor) -> flowtensor::Result<Tensor>;
        let ops: [(&str, F, bool); 16] = [
            ("neg", |t| t.neg(), false),
            ("exp", |t| t.exp(), false),
            ("log", |t| t.log(), true),
            ("log1p", |t| t.log1p(), true),
            ("sqrt", |t| t.sqrt(), true),
            ("abs", |t| t.abs(), false),
            ("square", |t| t.square(), false),
            ("tanh", |t| t.tanh(), false),
            ("sigmoid", |t| t.sigmoid(), false),
            ("log_sigmoid", |t| t.log_sigmoid(), false),
            ("softplus", |t| t.softplus(), false),
            ("relu", |t| t.relu(), false),
            ("silu", |t| t.silu(), false),
            ("powf", |t| t.powf(1.7), true),
            ("affine", |t| t.affine(-2.5, 0.75), false),
            ("clamp", |t| t.clamp(-0.3, 0.4), false),
        ];
        for (name, op, needs_positive) in ops {
            let input = if needs_positive { &positive } else { &x };
            // through a transposed view, so the kernels read strides
            parity(d, vec![input.clone()], 1, name, |t| {
                op(&t[0].transpose(0, 1)?)
            });
            gradient_parity(d, vec![input.clone()], 1, name, |t| op(&t[0]));
        }
    }
}

#[test]
fn binary_ops_compare_and_where() {
    let Some(d) = cuda() else { return };
    covers(&["binary", "cmp", "where_cond"]);
    for dt in DTYPES {
        let a = randn(&[4, 1, 6], dt, 5);
        let b = randn(&[3, 1], dt, 6).add_scalar(3.0).unwrap();
        type F = fn(&Tensor, &Tensor) -> flowtensor::Result<Tensor>;
        let ops: [(&str, F); 11] = [
            ("add", |a, b| a.add(b)),
            ("sub", |a, b| a.sub(b)),
            ("mul", |a, b| a.mul(b)),
            ("div", |a, b| a.div(b)),
            ("where_positive", |a, b| {
                a.where_positive(&b.add_scalar(-3.0)?)
            }),
            ("eq", |a, b| a.eq(b)),
            ("ne", |a, b| a.ne(b)),
            ("lt", |a, b| a.lt(b)),
            ("le", |a, b| a.le(b)),
            ("gt", |a, b| a.gt(b)),
            ("ge", |a, b| a.ge(b)),
        ];
        for (name, op) in ops {
            // broadcast (4, 1, 6) with (3, 1), the first operand flipped
            parity(d, vec![a.clone(), b.clone()], 1, name, |t| {
                op(&t[0].flip(&[2])?, &t[1])
            });
        }
        // comparisons with ties
        let ties = Tensor::from_vec(vec![1.0, 2.0, 2.0, -1.0], &[4], Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let two = Tensor::full(2.0, &[4], dt, Device::Cpu).unwrap();
        for (name, op) in ops.iter().skip(4) {
            parity(d, vec![ties.clone(), two.clone()], 1, name, |t| {
                op(&t[0], &t[1])
            });
        }
        for (name, op) in &ops[..4] {
            gradient_parity(d, vec![a.clone(), b.clone()], 6, name, |t| op(&t[0], &t[1]));
        }
        let mask = randn(&[4, 3, 6], dt, 7).gt_scalar(0.0).unwrap();
        parity(d, vec![mask, a.clone(), b.clone()], 1, "where", |t| {
            t[0].where_cond(
                &t[1].broadcast_as(&[4, 3, 6])?,
                &t[2].broadcast_as(&[4, 3, 6])?,
            )
        });
    }
}

#[test]
fn reductions_are_close_and_deterministic() {
    let Some(d) = cuda() else { return };
    covers(&["reduce"]);
    for dt in DTYPES {
        let x = randn(&[6, 50, 7], dt, 8);
        for dims in [vec![0], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
            let n: usize = dims.iter().map(|&i| x.shape()[i]).product();
            parity(d, vec![x.clone()], n, "sum", |t| t[0].sum(&dims, true));
            parity(d, vec![x.clone()], n, "max", |t| t[0].max(&dims, false));
            parity(d, vec![x.clone()], n, "min", |t| t[0].min(&dims, true));
            parity(d, vec![x.clone()], n, "mean", |t| t[0].mean(&dims, true));
            parity(d, vec![x.clone()], n, "logsumexp", |t| {
                t[0].logsumexp(&dims, false)
            });
            gradient_parity(d, vec![x.clone()], n, "sum", |t| t[0].sum(&dims, false));
            gradient_parity(d, vec![x.clone()], n, "max", |t| t[0].max(&dims, false));
        }
        // a long reduction (one block per output), twice: the same bits
        let long = randn(&[3, 5000], dt, 9).to_device(d).unwrap();
        let (r1, r2) = (
            long.sum(&[1], false).unwrap().to_vec_f64().unwrap(),
            long.sum(&[1], false).unwrap().to_vec_f64().unwrap(),
        );
        assert_eq!(r1, r2, "reductions must be deterministic");
        // NaN propagates through max and min
        let mut v = vec![1.0; 40];
        v[17] = f64::NAN;
        let nan = Tensor::from_vec(v, &[40], Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        parity(d, vec![nan], 40, "max with NaN", |t| t[0].max(&[0], false));
    }
}

#[test]
fn batched_matrix_products() {
    let Some(d) = cuda() else { return };
    covers(&["matmul"]);
    for dt in DTYPES {
        let a = randn(&[2, 1, 5, 37], dt, 10);
        let b = randn(&[3, 37, 19], dt, 11);
        parity(d, vec![a.clone(), b.clone()], 37, "matmul", |t| {
            t[0].matmul(&t[1])
        });
        // transposed operands, read in place
        let at = randn(&[37, 5], dt, 12);
        parity(
            d,
            vec![at.clone(), b.clone()],
            37,
            "matmul transposed",
            |t| {
                t[0].transpose(0, 1)?
                    .matmul(&t[1].narrow(0, 1, 1)?.squeeze(0)?)
            },
        );
        gradient_parity(d, vec![a, b], 37, "matmul", |t| t[0].matmul(&t[1]));
        // with a bias on every row (strided), batched and not
        let (x, w, bias) = (
            randn(&[2, 9, 37], dt, 13),
            randn(&[19, 37], dt, 14),
            randn(&[38], dt, 15),
        );
        let fused =
            |t: &[Tensor]| t[0].matmul_bias(&t[1].transpose(0, 1)?, &t[2].narrow(0, 0, 19)?);
        parity(
            d,
            vec![x.clone(), w.clone(), bias.clone()],
            37,
            "matmul_bias",
            fused,
        );
        gradient_parity(
            d,
            vec![x.narrow(0, 1, 1).unwrap().squeeze(0).unwrap(), w, bias],
            37,
            "matmul_bias",
            fused,
        );
    }
}

#[test]
fn convolutions_of_every_geometry() {
    let Some(d) = cuda() else { return };
    covers(&["conv"]);
    for dt in DTYPES {
        let cases: [(Vec<usize>, Vec<usize>, Conv2dParams); 5] = [
            (vec![2, 3, 9, 7], vec![4, 3, 3, 3], Conv2dParams::same(3)),
            (vec![2, 4, 8, 8], vec![6, 4, 1, 1], Conv2dParams::default()),
            (
                vec![1, 4, 9, 10],
                vec![4, 2, 3, 3],
                Conv2dParams {
                    stride: (2, 1),
                    padding: (1, 2),
                    dilation: (1, 2),
                    groups: 2,
                    ..Conv2dParams::default()
                },
            ),
            (
                vec![2, 2, 6, 6],
                vec![3, 2, 3, 3],
                Conv2dParams {
                    padding: (1, 1),
                    padding_mode: PadMode::Circular,
                    ..Conv2dParams::default()
                },
            ),
            (vec![3, 5, 20, 18], vec![5, 5, 3, 3], Conv2dParams::same(3)),
        ];
        for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
            let (x, w) = (randn(&xs, dt, 20 + i as u64), randn(&ws, dt, 30 + i as u64));
            let bias = randn(&[ws[0]], dt, 40);
            let terms = ws[1] * ws[2] * ws[3];
            parity(
                d,
                vec![x.clone(), w.clone(), bias.clone()],
                terms,
                "conv2d",
                |t| t[0].conv2d(&t[1], Some(&t[2]), &p),
            );
            // the fused epilogue (bias, ReLU) of the forward kernel
            parity(
                d,
                vec![x.clone(), w.clone(), bias.clone()],
                terms,
                "conv2d_relu",
                |t| t[0].conv2d_relu(&t[1], Some(&t[2]), &p),
            );
            parity(d, vec![x.clone(), w.clone()], terms, "conv2d_relu", |t| {
                t[0].conv2d_relu(&t[1], None, &p)
            });
            // the input and weight gradients: the transposed convolution and
            // the weight-gradient kernel; with the epilogue, the masked
            // gradient and the bias gradient
            let spatial = xs[0] * xs[2] * xs[3];
            gradient_parity(
                d,
                vec![x.clone(), w.clone()],
                spatial.max(terms),
                "conv2d",
                |t| t[0].conv2d(&t[1], None, &p),
            );
            gradient_parity(
                d,
                vec![x, w, bias],
                spatial.max(terms),
                "conv2d_relu",
                |t| t[0].conv2d_relu(&t[1], Some(&t[2]), &p),
            );
        }
        let y = randn(&[2, 4, 5, 6], dt, 50);
        let w = randn(&[4, 3, 3, 3], dt, 51);
        let p = ConvTranspose2dParams {
            stride: (2, 2),
            padding: (1, 1),
            output_padding: (1, 0),
            ..ConvTranspose2dParams::default()
        };
        parity(d, vec![y.clone(), w.clone()], 36, "conv_transpose2d", |t| {
            t[0].conv_transpose2d(&t[1], None, &p)
        });
        gradient_parity(d, vec![y, w], 60, "conv_transpose2d", |t| {
            t[0].conv_transpose2d(&t[1], None, &p)
        });
    }
}

#[test]
fn the_convolution_exponential_and_its_memory_saving_backward() {
    let Some(d) = cuda() else { return };
    covers(&["conv_exp_fwd", "conv_exp_bwd"]);
    for dt in DTYPES {
        let x = randn(&[3, 4, 6, 5], dt, 60);
        let k = randn(&[4, 4, 3, 3], dt, 61).mul_scalar(0.1).unwrap();
        for terms in [Terms::Fixed(6), Terms::Adaptive { tol: 1e-6, max: 30 }] {
            parity(d, vec![x.clone(), k.clone()], 40, "conv_exp", |t| {
                Ok(conv_exp(&t[0], &t[1], terms)?.0)
            });
            gradient_parity(d, vec![x.clone(), k.clone()], 200, "conv_exp", |t| {
                Ok(conv_exp(&t[0], &t[1], terms)?.0)
            });
            // per-image counts agree
            let (_, cpu) = conv_exp(&x, &k, terms).unwrap();
            let (_, dev) =
                conv_exp(&x.to_device(d).unwrap(), &k.to_device(d).unwrap(), terms).unwrap();
            assert_eq!(cpu, dev, "{terms:?}");
        }
        let k5 = randn(&[4, 4, 5, 5], dt, 62).mul_scalar(0.05).unwrap();
        gradient_parity(d, vec![x.clone(), k5], 300, "conv_exp 5x5", |t| {
            Ok(conv_exp(&t[0], &t[1], Terms::Fixed(4))?.0)
        });
    }
}

#[test]
fn concatenation_padding_gathers_and_casts() {
    let Some(d) = cuda() else { return };
    covers(&["cat", "index_select", "index_add", "to_dtype"]);
    for dt in DTYPES {
        let (a, b) = (randn(&[2, 3, 4], dt, 70), randn(&[2, 5, 4], dt, 71));
        parity(d, vec![a.clone(), b.clone()], 1, "cat", |t| {
            Tensor::cat(&[&t[0], &t[1]], 1)
        });
        gradient_parity(d, vec![a.clone(), b.clone()], 1, "cat", |t| {
            Tensor::cat(&[&t[0], &t[1].narrow(1, 0, 3)?], 2)
        });
        for mode in [PadMode::Zero, PadMode::Circular] {
            parity(d, vec![a.clone()], 1, "pad", |t| {
                t[0].pad(&[(1, 2), (0, 3)], mode)
            });
        }
        let idx = [2usize, 0, 2, 1, 2];
        parity(d, vec![a.clone()], 1, "index_select", |t| {
            t[0].index_select(1, &idx)
        });
        // its backward sums the repeated indices (index_add)
        gradient_parity(d, vec![a.clone()], 5, "index_select", |t| {
            t[0].index_select(1, &idx)
        });
        let other = match dt {
            DType::F32 => DType::F64,
            DType::F64 => DType::F32,
        };
        parity(d, vec![a.clone()], 1, "cast", |t| {
            t[0].transpose(0, 2)?.to_dtype(other)
        });
        gradient_parity(d, vec![a.clone()], 1, "cast", |t| t[0].to_dtype(other));
    }
}

#[test]
fn scans_gathers_and_sorted_searches() {
    let Some(d) = cuda() else { return };
    covers(&["cumsum", "gather", "scatter_add", "searchsorted"]);
    for dt in DTYPES {
        let x = randn(&[3, 5, 4], dt, 90);
        for dim in 0..3 {
            parity(d, vec![x.clone()], 5, "cumsum", |t| t[0].cumsum(dim));
            gradient_parity(d, vec![x.clone()], 5, "cumsum", |t| {
                t[0].transpose(0, 2)?.cumsum(dim)
            });
        }
        // positions along dim 1 (repeats, so the backward sums into a slot)
        let pos: Vec<usize> = (0..3 * 7 * 4).map(|i| (i * 7 + i / 5) % 5).collect();
        let take = |t: &[Tensor]| {
            let idx = Indices::new(&pos, &[3, 7, 4], t[0].dtype(), t[0].device())?;
            t[0].take_along_dim(&idx, 1)
        };
        parity(d, vec![x.clone()], 1, "take_along_dim", take);
        gradient_parity(d, vec![x.clone()], 7, "take_along_dim", take);
        // ascending rows with ties, values on, between and outside the knots, and NaN
        let knots = randn(&[6, 9], dt, 91)
            .abs()
            .unwrap()
            .clamp(0.0, 1.0)
            .unwrap()
            .cumsum(1)
            .unwrap();
        let mut values = randn(&[6, 11], dt, 92).mul_scalar(3.0).unwrap();
        let on_knots = knots.narrow(1, 2, 3).unwrap();
        let nan = Tensor::full(f64::NAN, &[6, 1], dt, Device::Cpu).unwrap();
        values = Tensor::cat(&[&values, &on_knots, &nan], 1).unwrap();
        for right in [false, true] {
            parity(
                d,
                vec![knots.clone(), values.clone()],
                1,
                "searchsorted",
                |t| Ok(t[0].searchsorted(&t[1], right)?.tensor().clone()),
            );
        }
    }
}

#[test]
fn fourier_transforms() {
    let Some(d) = cuda() else { return };
    covers(&["dft"]);
    for dt in DTYPES {
        let x = randn(&[2, 3, 6, 7], dt, 80);
        parity(d, vec![x.clone()], 42, "rfft2", |t| {
            Ok(rfft2(&t[0])?.as_tensor().clone())
        });
        parity(d, vec![x.clone()], 42, "irfft2(rfft2)", |t| {
            irfft2(&rfft2(&t[0])?, 7)
        });
        gradient_parity(d, vec![x], 42, "rfft2", |t| {
            Ok(rfft2(&t[0])?.as_tensor().clone())
        });
    }
}

#[test]
fn the_quadrant_solve() {
    let Some(d) = cuda() else { return };
    covers(&["quadrant_solve"]);
    let (c, h, w) = (3, 7, 9);
    let mut k = randn(&[c, c, 3, 3], DType::F64, 90)
        .mul_scalar(0.1)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    for o in 0..c {
        k[((o * c + o) * 3 + 1) * 3 + 1] = 1.0 + 0.1 * o as f64;
    }
    let k = Tensor::from_vec(k, &[c, c, 3, 3], Device::Cpu).unwrap();
    let y = randn(&[2, c, h, w], DType::F64, 91);
    parity(d, vec![y, k], 30, "quadrant_solve", |t| {
        t[0].quadrant_solve(&t[1])
    });
}

#[test]
fn the_philox_stream_is_the_cpus() {
    let Some(d) = cuda() else { return };
    covers(&["random"]);
    for dt in DTYPES {
        for n in [1, 2, 7, 1000] {
            let mut a = Generator::new(123);
            let mut b = Generator::new(123);
            // uniforms: bit for bit, and the counters advance alike
            let (u_cpu, u_dev) = (
                a.uniform(&[n], -2.0, 3.0, dt, Device::Cpu).unwrap(),
                b.uniform(&[n], -2.0, 3.0, dt, d).unwrap(),
            );
            assert_eq!(u_dev.device(), d);
            assert_eq!(u_cpu.to_vec_f64().unwrap(), u_dev.to_vec_f64().unwrap());
            assert_eq!(a.state(), b.state());
            // normals go through log, sqrt, sin and cos, whose last bits may
            // differ between math libraries
            let (z_cpu, z_dev) = (
                a.normal(&[n], 0.5, 2.0, dt, Device::Cpu).unwrap(),
                b.normal(&[n], 0.5, 2.0, dt, d).unwrap(),
            );
            assert_close(&z_dev.to_device(Device::Cpu).unwrap(), &z_cpu, 4, "normal");
        }
    }
}

#[test]
fn mixing_devices_is_an_error_naming_the_op() {
    let Some(d) = cuda() else { return };
    let (a, b) = (
        randn(&[3], DType::F32, 1),
        randn(&[3], DType::F32, 2).to_device(d).unwrap(),
    );
    let msg = a.add(&b).unwrap_err().to_string();
    assert!(msg.contains("add") || msg.contains("binary"), "{msg}");
    assert!(msg.contains("Cuda"), "{msg}");
}

#[test]
fn gradients_flow_across_device_transfers() {
    let Some(d) = cuda() else { return };
    // the gradient of sum(y^2) for the leaf x
    let grad_of_squares = |y: Tensor, x: &Tensor| {
        let grads = y
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward_grads()
            .unwrap();
        grads.get(x).expect("the leaf gets a gradient").clone()
    };
    // x lives on the CPU; the product runs on the device and comes back:
    // d/dx sum((x on d) * w, back on the CPU)^2 = 2 (x w) w, on the CPU
    let x = randn(&[4, 5], DType::F64, 1).as_variable();
    let w = randn(&[4, 5], DType::F64, 2);
    let y = x
        .to_device(d)
        .unwrap()
        .mul(&w.to_device(d).unwrap())
        .unwrap()
        .to_device(Device::Cpu)
        .unwrap();
    let g = grad_of_squares(y, &x);
    assert_eq!(g.device(), Device::Cpu);
    let want = x.mul(&w).unwrap().mul(&w).unwrap().mul_scalar(2.0).unwrap();
    assert_close(&g, &want, 2, "gradient through to_device and back");
    // and a device leaf, with the loss on the CPU
    let xd = randn(&[3, 2], DType::F32, 3)
        .to_device(d)
        .unwrap()
        .as_variable();
    let g = grad_of_squares(xd.to_device(Device::Cpu).unwrap(), &xd);
    assert_eq!(g.device(), d, "the gradient goes back to the leaf's device");
    let want = xd.to_device(Device::Cpu).unwrap().mul_scalar(2.0).unwrap();
    assert_close(&g.to_device(Device::Cpu).unwrap(), &want, 1, "device leaf");
}

#[test]
fn gradients_of_gradients_match_the_cpu() {
    let Some(d) = cuda() else { return };
    // a Hessian-vector product through conv2d (bias, ReLU), conv2d, LipSwish,
    // a gather and a matmul: grad with create_graph, then grad again
    let p = flowtensor::Conv2dParams::same(3);
    let idx = [2usize, 0, 1, 1];
    let hvp = |device: Device, dtype: DType| -> Vec<Tensor> {
        let on = |t: Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
        let vars: Vec<Tensor> = [
            randn(&[2, 2, 4, 4], DType::F64, 10),
            randn(&[3, 2, 3, 3], DType::F64, 11)
                .mul_scalar(0.3)
                .unwrap(),
            randn(&[3], DType::F64, 12),
            randn(&[2, 3, 3, 3], DType::F64, 13)
                .mul_scalar(0.3)
                .unwrap(),
            randn(&[16, 3], DType::F64, 14).mul_scalar(0.3).unwrap(),
        ]
        .into_iter()
        .map(|t| on(t).as_variable())
        .collect();
        let h = vars[0].conv2d_relu(&vars[1], Some(&vars[2]), &p).unwrap();
        let h = h.conv2d(&vars[3], None, &p).unwrap();
        let h = h
            .mul(&h.sigmoid().unwrap())
            .unwrap()
            .div_scalar(1.1)
            .unwrap();
        let h = h.reshape(&[4, 16]).unwrap().index_select(0, &idx).unwrap();
        let out = h
            .matmul(&vars[4])
            .unwrap()
            .tanh()
            .unwrap()
            .sum_all()
            .unwrap();
        let first = flowtensor::grad(&[out], &vars, &[], true).unwrap();
        let mut gen = Generator::new(15);
        let mut along: Option<Tensor> = None;
        for (g, v) in first.iter().zip(&vars) {
            let dir = on(gen.randn(v.shape(), DType::F64, Device::Cpu).unwrap());
            let term = g.as_ref().unwrap().mul(&dir).unwrap().sum_all().unwrap();
            along = Some(match along {
                Some(a) => a.add(&term).unwrap(),
                None => term,
            });
        }
        flowtensor::grad(&[along.unwrap()], &vars, &[], false)
            .unwrap()
            .into_iter()
            .map(|g| g.unwrap().to_device(Device::Cpu).unwrap())
            .collect()
    };
    for dtype in DTYPES {
        let (want, got) = (hvp(Device::Cpu, dtype), hvp(d, dtype));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(g, w, 64, &format!("Hessian-vector product, input {i}"));
        }
    }
}

#[test]
fn every_backend_op_has_a_parity_test() {
    // run after the others in this binary: the tests share one process, and
    // this one waits for them by running them first itself
    creation_copies_and_views();
    unary_ops();
    binary_ops_compare_and_where();
    reductions_are_close_and_deterministic();
    batched_matrix_products();
    convolutions_of_every_geometry();
    the_convolution_exponential_and_its_memory_saving_backward();
    concatenation_padding_gathers_and_casts();
    fourier_transforms();
    the_quadrant_solve();
    the_philox_stream_is_the_cpus();
    scans_gathers_and_sorted_searches();
    mixing_devices_is_an_error_naming_the_op();
    gradients_flow_across_device_transfers();
    gradients_of_gradients_match_the_cpu();
    // every other test of this file is called above
    let source = include_str!("cuda_parity.rs");
    let body = &source[source
        .find("fn every_backend_op_has_a_parity_test")
        .unwrap()..];
    for test in source.split("#[test]\nfn ").skip(1) {
        let name = test.split('(').next().unwrap_or_default();
        assert!(
            name == "every_backend_op_has_a_parity_test"
                || body.contains(&format!("    {name}();")),
            "every_backend_op_has_a_parity_test does not run {name}"
        );
    }
    if cuda().is_none() {
        return;
    }
    let covered = COVERED.lock().unwrap().clone();
    let missing: Vec<&&str> = BACKEND_OPS
        .iter()
        .filter(|op| !covered.contains(*op))
        .collect();
    assert!(
        missing.is_empty(),
        "backend operations without a CUDA parity test: {missing:?}"
    );
}
