//! The convolution exponential against the dense matrix exponential, its
//! inverse and log-determinant, adaptive truncation, the memory-saving
//! backward against autodiff through the unrolled series, and errors.

use flowtensor::conv_exp::{
    conv_exp, conv_exp_dense_matrix, conv_exp_inverse, conv_exp_logdet, conv_exp_series_autodiff,
    Terms,
};
use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{Conv2dParams, DType, Device, Generator, Result, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &Tensor) -> f64 {
    a.to_vec_f64()
        .unwrap()
        .iter()
        .fold(0.0, |m, v| m.max(v.abs()))
}

/// `exp(M) x` for every image of `x (N, C, H, W)`, by the dense matrix exponential.
fn dense_conv_exp(x: &Tensor, kernel: &Tensor) -> Tensor {
    let [n, c, h, w]: [usize; 4] = x.shape().try_into().unwrap();
    let e = conv_exp_dense_matrix(kernel, h, w)
        .unwrap()
        .matrix_exp()
        .unwrap();
    x.reshape(&[n, c * h * w])
        .unwrap()
        .matmul(&e.transpose(0, 1).unwrap())
        .unwrap()
        .reshape(&[n, c, h, w])
        .unwrap()
}

#[test]
fn matches_the_dense_matrix_exponential() -> Result<()> {
    for (i, &(n, c, h, w, k, scale)) in [
        (2, 2, 3, 4, 3, 0.3),
        (1, 3, 4, 4, 5, 0.1),
        (3, 2, 2, 3, 1, 0.5),
        (1, 1, 5, 3, 3, 0.4),
    ]
    .iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let x = randn(&[n, c, h, w], seed);
        let kernel = randn(&[c, c, k, k], seed + 1).mul_scalar(scale)?;
        let (y, used) = conv_exp(&x, &kernel, Terms::Fixed(30))?;
        assert_eq!(used, vec![30; n]);
        let reference = dense_conv_exp(&x, &kernel);
        let err = max_abs_diff(&y, &reference);
        assert!(
            err < 1e-10 * (1.0 + max_abs(&reference)),
            "case {i}: error {err}"
        );
        // the unrolled reference agrees as well
        let unrolled = conv_exp_series_autodiff(&x, &kernel, 30)?;
        assert!(max_abs_diff(&y, &unrolled) < 1e-12 * (1.0 + max_abs(&reference)));
    }
    Ok(())
}

#[test]
fn the_dense_matrix_applies_the_convolution() -> Result<()> {
    for (i, &(c, h, w, k)) in [(2, 3, 4, 3), (3, 2, 5, 5), (1, 4, 4, 1)]
        .iter()
        .enumerate()
    {
        let kernel = randn(&[c, c, k, k], 50 + i as u64);
        let x = randn(&[3, c, h, w], 60 + i as u64);
        let d = c * h * w;
        let dense = conv_exp_dense_matrix(&kernel, h, w)?;
        assert_eq!(dense.shape(), [d, d]);
        let by_matrix = x
            .reshape(&[3, d])?
            .matmul(&dense.transpose(0, 1)?)?
            .reshape(&[3, c, h, w])?;
        let by_conv = x.conv2d(&kernel, None, &Conv2dParams::same(k))?;
        assert!(max_abs_diff(&by_matrix, &by_conv) < 1e-12, "case {i}");
    }
    Ok(())
}

#[test]
fn zero_terms_is_the_identity() -> Result<()> {
    let x = randn(&[2, 2, 3, 3], 1);
    let kernel = randn(&[2, 2, 3, 3], 2);
    let (y, used) = conv_exp(&x, &kernel, Terms::Fixed(0))?;
    assert_eq!(used, [0, 0]);
    assert_eq!(y.to_vec_f64()?, x.to_vec_f64()?);
    Ok(())
}

#[test]
fn inverse_undoes_the_forward() -> Result<()> {
    for (i, &(c, k)) in [(2, 3), (3, 5), (2, 1)].iter().enumerate() {
        let x = randn(&[2, c, 5, 4], 100 + i as u64);
        let kernel = randn(&[c, c, k, k], 200 + i as u64).mul_scalar(0.1)?;
        let (y, _) = conv_exp(&x, &kernel, Terms::Fixed(30))?;
        let (back, used) = conv_exp_inverse(&y, &kernel, Terms::Fixed(30))?;
        assert_eq!(used, [30, 30]);
        let err = max_abs_diff(&back, &x);
        assert!(err < 1e-10, "case {i}: error {err}");
        // and the other way round
        let (z, _) = conv_exp_inverse(&x, &kernel, Terms::Fixed(30))?;
        let (again, _) = conv_exp(&z, &kernel, Terms::Fixed(30))?;
        assert!(max_abs_diff(&again, &x) < 1e-10);
    }
    Ok(())
}

#[test]
fn logdet_is_the_trace_and_the_dense_slogdet() -> Result<()> {
    for (i, &(c, h, w, k, scale)) in [(2, 3, 4, 3, 0.3), (3, 3, 3, 5, 0.1), (2, 4, 2, 1, 0.5)]
        .iter()
        .enumerate()
    {
        let kernel = randn(&[c, c, k, k], 300 + i as u64).mul_scalar(scale)?;
        let logdet = conv_exp_logdet(&kernel, h, w)?;
        assert_eq!(logdet.shape(), &[] as &[usize]);
        let logdet = logdet.to_scalar()?;
        let m = conv_exp_dense_matrix(&kernel, h, w)?;
        // trace(M)
        let d = c * h * w;
        let mv = m.to_vec_f64()?;
        let trace: f64 = (0..d).map(|j| mv[j * d + j]).sum();
        assert!(
            (logdet - trace).abs() < 1e-12 * (1.0 + trace.abs()),
            "case {i}: {logdet} vs trace {trace}"
        );
        // slogdet of the dense exp(M)
        let (sign, lad) = m.matrix_exp()?.slogdet()?;
        assert_eq!(sign.to_scalar()?, 1.0);
        let lad = lad.to_scalar()?;
        assert!(
            (logdet - lad).abs() <= 1e-8 * lad.abs().max(1.0),
            "case {i}: {logdet} vs slogdet {lad}"
        );
    }
    Ok(())
}

#[test]
fn logdet_gradient_is_hw_on_the_centre_diagonal() -> Result<()> {
    let kernel = randn(&[2, 2, 3, 3], 7).as_variable();
    let grads = conv_exp_logdet(&kernel, 4, 5)?.backward_grads()?;
    let g = grads.get(&kernel).unwrap().to_vec_f64()?;
    for (idx, v) in g.iter().enumerate() {
        let (o, c, p, q) = (idx / 18, (idx / 9) % 2, (idx / 3) % 3, idx % 3);
        let expected = if o == c && p == 1 && q == 1 {
            20.0
        } else {
            0.0
        };
        assert_eq!(*v, expected, "entry {idx}");
    }
    Ok(())
}

/// The unrolled series of every sample `b` of `x` with `counts[b]` terms.
fn unrolled_per_sample(x: &Tensor, kernel: &Tensor, counts: &[usize]) -> Result<Tensor> {
    let parts = counts
        .iter()
        .enumerate()
        .map(|(b, &n)| conv_exp_series_autodiff(&x.narrow(0, b, 1)?, kernel, n))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)
}

#[test]
fn adaptive_uses_fewer_terms_for_smaller_kernels() -> Result<()> {
    let x = randn(&[2, 2, 4, 4], 400);
    let base = randn(&[2, 2, 3, 3], 401);
    let tol = 1e-10;
    let mut previous = usize::MAX;
    for scale in [0.5, 0.1, 0.01] {
        let kernel = base.mul_scalar(scale)?;
        let (y, used) = conv_exp(&x, &kernel, Terms::Adaptive { tol, max: 60 })?;
        let most = *used.iter().max().unwrap();
        assert!(most < 60, "scale {scale}: {used:?} terms");
        assert!(
            most < previous,
            "scale {scale}: {used:?} terms, not fewer than {previous}"
        );
        previous = most;
        // the result is each sample's fixed series with its number of terms ...
        assert!(max_abs_diff(&y, &unrolled_per_sample(&x, &kernel, &used)?) < 1e-14);
        // ... whose last term is below tol and the one before is not
        for (b, &n) in used.iter().enumerate() {
            let xb = x.narrow(0, b, 1)?;
            let term = |i: usize| -> Result<f64> {
                let upto = conv_exp_series_autodiff(&xb, &kernel, i)?;
                Ok(max_abs(&upto.sub(&conv_exp_series_autodiff(
                    &xb,
                    &kernel,
                    i - 1,
                )?)?))
            };
            assert!(term(n)? < tol * (1.0 + 1e-6), "sample {b}");
            if n > 1 {
                assert!(term(n - 1)? >= tol * (1.0 - 1e-6), "sample {b}");
            }
        }
        // and close to the converged exponential
        let (converged, _) = conv_exp(&x, &kernel, Terms::Fixed(40))?;
        assert!(max_abs_diff(&y, &converged) < 1e-9);
    }
    // the cap wins when the tolerance cannot be met
    let (_, used) = conv_exp(&x, &base, Terms::Adaptive { tol: 0.0, max: 7 })?;
    assert_eq!(used, [7, 7]);
    Ok(())
}

#[test]
fn adaptive_terms_are_counted_per_sample() -> Result<()> {
    // sample 1 is sample 0 scaled by 1e-6: its terms fall below tol sooner
    let x0 = randn(&[1, 3, 5, 5], 450);
    let x = Tensor::cat(&[&x0, &x0.mul_scalar(1e-6)?], 0)?;
    let kernel = randn(&[3, 3, 3, 3], 451).mul_scalar(0.2)?;
    let terms = Terms::Adaptive { tol: 1e-9, max: 50 };
    let (y, used) = conv_exp(&x, &kernel, terms)?;
    assert!(used[1] < used[0], "{used:?}");
    // each sample as if alone
    for (b, &terms_b) in used.iter().enumerate() {
        let (alone, n) = conv_exp(&x.narrow(0, b, 1)?, &kernel, terms)?;
        assert_eq!(n, [terms_b]);
        assert!(max_abs_diff(&y.narrow(0, b, 1)?, &alone) < 1e-15);
    }
    Ok(())
}

/// Gradients of `sum(f(x, kernel) * weights)` for x and the kernel.
fn grads_of(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    kernel: &Tensor,
    weights: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (xv, kv) = (x.detach().as_variable(), kernel.detach().as_variable());
    let mut grads = f(&xv, &kv)?.mul(weights)?.sum_all()?.backward_grads()?;
    // with zero terms the unrolled series does not touch the kernel at all
    let gk = match grads.remove(&kv) {
        Some(g) => g,
        None => kv.zeros_like()?,
    };
    Ok((grads.remove(&xv).unwrap(), gk))
}

/// Gradients of `sum(weights * conv_exp(x, kernel))` from the custom
/// backward equal autodiff through the unrolled series to 1e-10 (relative to
/// the largest entry); returns the reference gradients `(dx, dkernel)`.
fn assert_grads_match_unrolled(
    x: &Tensor,
    kernel: &Tensor,
    weights: &Tensor,
    terms: usize,
    case: &str,
) -> Result<(Tensor, Tensor)> {
    let (gx, gk) = grads_of(
        |x, k| Ok(conv_exp(x, k, Terms::Fixed(terms))?.0),
        x,
        kernel,
        weights,
    )?;
    let (rx, rk) = grads_of(
        |x, k| conv_exp_series_autodiff(x, k, terms),
        x,
        kernel,
        weights,
    )?;
    let (ex, ek) = (max_abs_diff(&gx, &rx), max_abs_diff(&gk, &rk));
    assert!(ex < 1e-10 * (1.0 + max_abs(&rx)), "{case}: x error {ex}");
    assert!(
        ek < 1e-10 * (1.0 + max_abs(&rk)),
        "{case}: kernel error {ek}"
    );
    Ok((rx, rk))
}

#[test]
fn custom_backward_matches_unrolled_autodiff() -> Result<()> {
    let cases = [
        (2, 2, 4, 5, 3, 6),
        (1, 3, 3, 3, 5, 8),
        (3, 2, 4, 2, 1, 5),
        (1, 1, 6, 4, 3, 12),
        (2, 4, 5, 5, 3, 1),
        (1, 2, 3, 4, 5, 0),
    ];
    for (i, &(n, c, h, w, k, terms)) in cases.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let x = randn(&[n, c, h, w], seed);
        let kernel = randn(&[c, c, k, k], seed + 1).mul_scalar(0.3)?;
        let weights = randn(&[n, c, h, w], seed + 2);
        let (_, rk) =
            assert_grads_match_unrolled(&x, &kernel, &weights, terms, &format!("case {i}"))?;
        if terms > 0 {
            assert!(max_abs(&rk) > 1e-2, "case {i}: a trivial kernel gradient");
        }
    }
    Ok(())
}

#[test]
fn adaptive_backward_uses_the_forward_terms() -> Result<()> {
    let small = randn(&[1, 2, 4, 4], 603).mul_scalar(1e-3)?;
    let x = Tensor::cat(&[&randn(&[1, 2, 4, 4], 600), &small], 0)?;
    let kernel = randn(&[2, 2, 3, 3], 601).mul_scalar(0.2)?;
    let weights = randn(&[2, 2, 4, 4], 602);
    let (_, used) = conv_exp(&x, &kernel, Terms::Adaptive { tol: 1e-6, max: 40 })?;
    assert_ne!(
        used[0], used[1],
        "the samples should stop at different terms"
    );
    let (gx, gk) = grads_of(
        |x, k| Ok(conv_exp(x, k, Terms::Adaptive { tol: 1e-6, max: 40 })?.0),
        &x,
        &kernel,
        &weights,
    )?;
    let (rx, rk) = grads_of(
        |x, k| unrolled_per_sample(x, k, &used),
        &x,
        &kernel,
        &weights,
    )?;
    assert!(max_abs_diff(&gx, &rx) < 1e-10 * (1.0 + max_abs(&rx)));
    assert!(max_abs_diff(&gk, &rk) < 1e-10 * (1.0 + max_abs(&rk)));
    Ok(())
}

#[test]
fn input_gradient_alone_when_the_kernel_is_fixed() -> Result<()> {
    let x = randn(&[2, 3, 4, 4], 700).as_variable();
    let kernel = randn(&[3, 3, 3, 3], 701).mul_scalar(0.2)?;
    let weights = randn(&[2, 3, 4, 4], 702);
    let grads = conv_exp(&x, &kernel, Terms::Fixed(7))?
        .0
        .mul(&weights)?
        .sum_all()?
        .backward_grads()?;
    let gx = grads.get(&x).unwrap();
    // d/dx sum(w * exp(M) x) = exp(M^T) w: the conv exponential of the adjoint kernel
    let adjoint = kernel.permute(&[1, 0, 2, 3])?.flip(&[2, 3])?;
    let (expected, _) = conv_exp(&weights, &adjoint, Terms::Fixed(7))?;
    assert!(max_abs_diff(gx, &expected) < 1e-12 * (1.0 + max_abs(&expected)));
    Ok(())
}

#[test]
fn central_differences_agree_with_the_custom_backward() -> Result<()> {
    for (i, &(c, k, terms)) in [(2, 3, 5), (2, 1, 4), (1, 5, 6)].iter().enumerate() {
        let x = randn(&[2, c, 3, 4], 800 + i as u64);
        let kernel = randn(&[c, c, k, k], 810 + i as u64).mul_scalar(0.3)?;
        let opts = GradCheck {
            eps: 1e-6,
            atol: 1e-8,
            rtol: 1e-6,
        };
        check_gradients(
            |xs| Ok(conv_exp(&xs[0], &xs[1], Terms::Fixed(terms))?.0),
            &[x.clone(), kernel.clone()],
            opts,
        )?;
        // the inverse (through the negated kernel), on a strided view of x
        check_gradients(
            |xs| {
                let xt = xs[0].transpose(2, 3)?;
                Ok(conv_exp_inverse(&xt, &xs[1], Terms::Fixed(terms))?.0)
            },
            &[x, kernel],
            opts,
        )?;
    }
    Ok(())
}

/// Forward and gradients of the batched kernels against the unrolled
/// series, in a pool of `threads` threads.
fn matches_unrolled_in_pool(threads: usize, shape: [usize; 4], k: usize, terms: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| -> Result<()> {
        let [_, c, _, _] = shape;
        let x = randn(&shape, 1000 + k as u64);
        let kernel = randn(&[c, c, k, k], 1001).div_scalar((c * k * k) as f64)?;
        let weights = randn(&shape, 1002);
        let (y, _) = conv_exp(&x, &kernel, Terms::Fixed(terms))?;
        let reference = conv_exp_series_autodiff(&x, &kernel, terms)?;
        assert!(max_abs_diff(&y, &reference) < 1e-12 * (1.0 + max_abs(&reference)));
        assert_grads_match_unrolled(&x, &kernel, &weights, terms, &format!("{threads} threads"))?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn parallel_over_images_and_inside_one_image() {
    // more images than threads: one image per task
    matches_unrolled_in_pool(2, [5, 4, 16, 12], 3, 6);
    matches_unrolled_in_pool(2, [3, 3, 12, 12], 5, 4);
    // one image: the convolution is split over threads
    matches_unrolled_in_pool(2, [1, 8, 24, 20], 3, 5);
    matches_unrolled_in_pool(3, [2, 6, 20, 20], 5, 3);
}

#[test]
fn errors_name_the_op_and_the_shapes() {
    let x = randn(&[2, 3, 4, 4], 1);
    let k3 = randn(&[3, 3, 3, 3], 2);
    let check = |err: flowtensor::Error, op: &str, shapes: &[&str]| {
        let msg = err.to_string();
        assert!(msg.contains(op), "{msg}");
        for s in shapes {
            assert!(msg.contains(s), "{msg} lacks {s}");
        }
    };
    // 3-D input
    let x3 = randn(&[3, 4, 4], 3);
    check(
        conv_exp(&x3, &k3, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[3, 4, 4]", "[3, 3, 3, 3]"],
    );
    // kernel not 4-D
    let k2 = randn(&[3, 3], 4);
    check(
        conv_exp(&x, &k2, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[2, 3, 4, 4]", "[3, 3]"],
    );
    // kernel not square in channels
    let k_rect = randn(&[2, 3, 3, 3], 5);
    check(
        conv_exp(&x, &k_rect, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[2, 3, 4, 4]", "[2, 3, 3, 3]"],
    );
    // channels not matching the input
    let k_c2 = randn(&[2, 2, 3, 3], 6);
    check(
        conv_exp(&x, &k_c2, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[2, 3, 4, 4]", "[2, 2, 3, 3]", "channels"],
    );
    // even and non-square spatial kernels
    let k_even = randn(&[3, 3, 2, 2], 7);
    check(
        conv_exp(&x, &k_even, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[3, 3, 2, 2]", "odd"],
    );
    let k_wide = randn(&[3, 3, 3, 5], 8);
    check(
        conv_exp(&x, &k_wide, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["[3, 3, 3, 5]"],
    );
    // the inverse, the log-det and the reference name themselves
    check(
        conv_exp_inverse(&x, &k_even, Terms::Fixed(3)).unwrap_err(),
        "conv_exp_inverse",
        &["[3, 3, 2, 2]"],
    );
    check(
        conv_exp_logdet(&k_rect, 4, 4).unwrap_err(),
        "conv_exp_logdet",
        &["[2, 3, 3, 3]"],
    );
    check(
        conv_exp_logdet(&k_even, 4, 4).unwrap_err(),
        "conv_exp_logdet",
        &["[3, 3, 2, 2]", "odd"],
    );
    check(
        conv_exp_series_autodiff(&x3, &k3, 2).unwrap_err(),
        "conv_exp_series_autodiff",
        &["[3, 4, 4]"],
    );
    // a bad tolerance and mismatched dtypes
    check(
        conv_exp(&x, &k3, Terms::Adaptive { tol: -1.0, max: 5 }).unwrap_err(),
        "conv_exp",
        &["tolerance"],
    );
    let k32 = k3.to_dtype(DType::F32).unwrap();
    check(
        conv_exp(&x, &k32, Terms::Fixed(3)).unwrap_err(),
        "conv_exp",
        &["F64", "F32"],
    );
}

#[test]
fn works_in_f32() -> Result<()> {
    let x = randn(&[1, 2, 4, 4], 900);
    let kernel = randn(&[2, 2, 3, 3], 901).mul_scalar(0.2)?;
    let (y64, _) = conv_exp(&x, &kernel, Terms::Fixed(10))?;
    let (y32, _) = conv_exp(
        &x.to_dtype(DType::F32)?,
        &kernel.to_dtype(DType::F32)?,
        Terms::Fixed(10),
    )?;
    assert_eq!(y32.dtype(), DType::F32);
    assert!(max_abs_diff(&y32.to_dtype(DType::F64)?, &y64) < 1e-5);
    Ok(())
}
