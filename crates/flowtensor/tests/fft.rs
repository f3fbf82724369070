//! FFTs against a naive O(n^2) DFT, round trips, real transforms, Parseval,
//! f32 vs f64, complex arithmetic, gradient checks and errors.

use flowtensor::fft::{self, ComplexTensor};
use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor, PAR_THRESHOLD};
use std::f64::consts::PI;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

/// A random complex tensor of complex shape `shape`.
fn crandn(shape: &[usize], seed: u64) -> ComplexTensor {
    let real_shape = [shape, &[2]].concat();
    ComplexTensor::new(randn(&real_shape, seed)).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * scale,
            "element {i}: {a} vs {e} (tolerance {tol} x {scale})"
        );
    }
}

/// The naive DFT of interleaved (re, im) data of complex shape `shape` along
/// each of `dims` in turn: `y[k] = scale * sum_n x[n] exp(sign 2 pi i k n / N)`.
fn naive_dft(data: &[f64], shape: &[usize], dims: &[usize], sign: f64, scale: f64) -> Vec<f64> {
    let mut cur = data.to_vec();
    for &d in dims {
        let n = shape[d];
        let inner: usize = shape[d + 1..].iter().product();
        let outer: usize = shape[..d].iter().product();
        let mut next = vec![0.0; cur.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| 2 * (o * n * inner + k * inner + i);
                for k in 0..n {
                    let (mut re, mut im) = (0.0, 0.0);
                    for m in 0..n {
                        let angle = sign * 2.0 * PI * ((k * m) % n) as f64 / n as f64;
                        let (c, s) = (angle.cos(), angle.sin());
                        let (xr, xi) = (cur[at(m)], cur[at(m) + 1]);
                        re += xr * c - xi * s;
                        im += xr * s + xi * c;
                    }
                    next[at(k)] = re;
                    next[at(k) + 1] = im;
                }
            }
        }
        cur = next;
    }
    cur.iter().map(|v| v * scale).collect()
}

#[test]
fn fft_and_ifft_along_each_dim_match_the_naive_dft() -> Result<()> {
    for shape in [vec![3, 7, 4], vec![2, 5, 6], vec![1, 8, 1]] {
        let x = crandn(&shape, 1);
        let data = values(x.as_tensor());
        for d in 0..shape.len() {
            let y = fft::fft(&x, &[d])?;
            assert_eq!(y.shape(), &shape[..]);
            assert_close(
                &values(y.as_tensor()),
                &naive_dft(&data, &shape, &[d], -1.0, 1.0),
                1e-12,
            );
            let z = fft::ifft(&x, &[d])?;
            let n = shape[d] as f64;
            assert_close(
                &values(z.as_tensor()),
                &naive_dft(&data, &shape, &[d], 1.0, 1.0 / n),
                1e-12,
            );
        }
    }
    Ok(())
}

#[test]
fn fft_over_several_dims_matches_the_naive_dft() -> Result<()> {
    let shape = [3, 7, 4, 2];
    let x = crandn(&shape, 2);
    let data = values(x.as_tensor());
    for dims in [vec![0, 2], vec![2, 0], vec![0, 1, 2, 3], vec![1, 3]] {
        let count: usize = dims.iter().map(|&d| shape[d]).product();
        let y = fft::fft(&x, &dims)?;
        assert_close(
            &values(y.as_tensor()),
            &naive_dft(&data, &shape, &dims, -1.0, 1.0),
            1e-12,
        );
        let z = fft::ifft(&x, &dims)?;
        let expected = naive_dft(&data, &shape, &dims, 1.0, 1.0 / count as f64);
        assert_close(&values(z.as_tensor()), &expected, 1e-12);
    }
    // no dimensions: the identity
    assert_eq!(values(fft::fft(&x, &[])?.as_tensor()), data);
    Ok(())
}

#[test]
fn fft2_matches_the_naive_dft_for_non_square_prime_and_even_sizes() -> Result<()> {
    for shape in [vec![2, 5, 7], vec![3, 6, 4], vec![7, 7], vec![2, 1, 3, 8]] {
        let x = crandn(&shape, 3);
        let data = values(x.as_tensor());
        let r = shape.len();
        let (h, w) = (shape[r - 2], shape[r - 1]);
        let y = fft::fft2(&x)?;
        let expected = naive_dft(&data, &shape, &[r - 2, r - 1], -1.0, 1.0);
        assert_close(&values(y.as_tensor()), &expected, 1e-12);
        let z = fft::ifft2(&x)?;
        let expected = naive_dft(&data, &shape, &[r - 2, r - 1], 1.0, 1.0 / (h * w) as f64);
        assert_close(&values(z.as_tensor()), &expected, 1e-12);
    }
    Ok(())
}

#[test]
fn fft_of_a_strided_view_matches_the_fft_of_its_copy() -> Result<()> {
    // a (5, 3, 4) complex tensor viewed as (4, 3, 5): permuted complex dims
    let base = randn(&[5, 3, 4, 2], 4);
    let view = ComplexTensor::new(base.permute(&[2, 1, 0, 3])?.flip(&[1])?)?;
    let copy = ComplexTensor::new(view.as_tensor().contiguous()?)?;
    let a = fft::fft(&view, &[0, 2])?;
    let b = fft::fft(&copy, &[0, 2])?;
    assert_close(&values(a.as_tensor()), &values(b.as_tensor()), 1e-14);
    Ok(())
}

#[test]
fn large_inputs_take_the_parallel_path_and_stay_exact() -> Result<()> {
    // 2 * 24 * 40 * 36 = 69120 reals, above the parallel threshold
    let shape = [24, 40, 36];
    assert!(2 * shape.iter().product::<usize>() >= PAR_THRESHOLD);
    let x = crandn(&shape, 5);
    let data = values(x.as_tensor());
    for d in 0..3 {
        let y = fft::fft(&x, &[d])?;
        assert_close(
            &values(y.as_tensor()),
            &naive_dft(&data, &shape, &[d], -1.0, 1.0),
            1e-12,
        );
    }
    let back = fft::ifft(&fft::fft(&x, &[0, 1, 2])?, &[0, 1, 2])?;
    assert_close(&values(back.as_tensor()), &data, 1e-13);
    Ok(())
}

#[test]
fn ifft_inverts_fft() -> Result<()> {
    let x = crandn(&[3, 7, 4, 5], 6);
    for dims in [vec![0], vec![3], vec![1, 2], vec![0, 1, 2, 3]] {
        let back = fft::ifft(&fft::fft(&x, &dims)?, &dims)?;
        assert_close(&values(back.as_tensor()), &values(x.as_tensor()), 1e-14);
    }
    let back = fft::ifft2(&fft::fft2(&x)?)?;
    assert_close(&values(back.as_tensor()), &values(x.as_tensor()), 1e-14);
    Ok(())
}

#[test]
fn parseval_holds() -> Result<()> {
    let x = crandn(&[2, 6, 7], 7);
    let energy = x.abs_squared()?.sum_all()?.to_scalar()?;
    let spectrum = fft::fft2(&x)?.abs_squared()?.sum_all()?.to_scalar()?;
    assert!((energy - spectrum / 42.0).abs() < 1e-12 * energy);
    let real = randn(&[3, 5, 8], 8);
    let full = fft::fft2(&ComplexTensor::from_real(&real)?)?;
    let full_energy = full.abs_squared()?.sum_all()?.to_scalar()?;
    let real_energy = real.square()?.sum_all()?.to_scalar()?;
    assert!((real_energy - full_energy / 40.0).abs() < 1e-12 * real_energy);
    Ok(())
}

#[test]
fn rfft2_is_the_first_half_of_fft2() -> Result<()> {
    for (h, w) in [(5, 6), (4, 7), (1, 1), (3, 2), (6, 1)] {
        let x = randn(&[2, h, w], 9);
        let half = fft::rfft2(&x)?;
        assert_eq!(half.shape(), &[2, h, w / 2 + 1]);
        let full = fft::fft2(&ComplexTensor::from_real(&x)?)?;
        let expected = full.as_tensor().narrow(2, 0, w / 2 + 1)?;
        assert_close(&values(half.as_tensor()), &values(&expected), 1e-14);
    }
    Ok(())
}

#[test]
fn irfft2_inverts_rfft2_for_odd_and_even_widths() -> Result<()> {
    for (h, w) in [
        (5, 6),
        (4, 7),
        (1, 1),
        (1, 2),
        (3, 2),
        (2, 3),
        (6, 1),
        (7, 9),
    ] {
        let x = randn(&[3, h, w], 10);
        let back = fft::irfft2(&fft::rfft2(&x)?, w)?;
        assert_eq!(back.shape(), &[3, h, w]);
        assert_close(&values(&back), &values(&x), 1e-14);
    }
    Ok(())
}

/// torch.fft.irfft2 of any half spectrum: an inverse DFT over H, then a
/// complex-to-real inverse over W that ignores the imaginary parts of the
/// columns 0 and W / 2 (W even).
fn naive_irfft2(y: &[f64], h: usize, w: usize) -> Vec<f64> {
    let k = w / 2 + 1;
    let z = naive_dft(y, &[h, k], &[0], 1.0, 1.0 / h as f64);
    let mut out = vec![0.0; h * w];
    for r in 0..h {
        for n in 0..w {
            let mut acc = z[2 * (r * k)];
            for j in 1..k {
                let angle = 2.0 * PI * ((j * n) % w) as f64 / w as f64;
                let (zr, zi) = (z[2 * (r * k + j)], z[2 * (r * k + j) + 1]);
                let term = zr * angle.cos() - zi * angle.sin();
                acc += if 2 * j == w { term } else { 2.0 * term };
            }
            out[r * w + n] = acc / w as f64;
        }
    }
    out
}

#[test]
fn irfft2_of_a_non_hermitian_spectrum_follows_torch() -> Result<()> {
    for (h, w) in [(4, 6), (5, 7), (3, 4), (2, 5), (1, 2)] {
        let y = crandn(&[h, w / 2 + 1], 11);
        let out = fft::irfft2(&y, w)?;
        let expected = naive_irfft2(&values(y.as_tensor()), h, w);
        assert_close(&values(&out), &expected, 1e-13);
    }
    Ok(())
}

#[test]
fn f32_agrees_with_f64() -> Result<()> {
    let x = crandn(&[3, 12, 10], 12);
    let x32 = ComplexTensor::new(x.as_tensor().to_dtype(DType::F32)?)?;
    let pairs = [
        (fft::fft(&x, &[0, 2])?, fft::fft(&x32, &[0, 2])?),
        (fft::ifft2(&x)?, fft::ifft2(&x32)?),
    ];
    for (a, b) in &pairs {
        assert_eq!(b.dtype(), DType::F32);
        assert_close(&values(b.as_tensor()), &values(a.as_tensor()), 1e-5);
    }
    let r = randn(&[2, 9, 7], 13);
    let r32 = r.to_dtype(DType::F32)?;
    let s = fft::rfft2(&r)?;
    let s32 = fft::rfft2(&r32)?;
    assert_close(&values(s32.as_tensor()), &values(s.as_tensor()), 1e-5);
    let back32 = fft::irfft2(&s32, 7)?;
    assert_eq!(back32.dtype(), DType::F32);
    assert_close(&values(&back32), &values(&r), 1e-5);
    Ok(())
}

#[test]
fn complex_arithmetic_matches_scalar_formulas() -> Result<()> {
    let a = crandn(&[2, 3], 14);
    let b = crandn(&[3], 15); // broadcasts against a
    let (av, bv) = (values(a.as_tensor()), values(b.as_tensor()));
    let prod = values(a.mul(&b)?.as_tensor());
    let sum = values(a.add(&b)?.as_tensor());
    let diff = values(a.sub(&b)?.as_tensor());
    for i in 0..6 {
        let j = i % 3;
        let (ar, ai, br, bi) = (av[2 * i], av[2 * i + 1], bv[2 * j], bv[2 * j + 1]);
        assert!((prod[2 * i] - (ar * br - ai * bi)).abs() < 1e-14);
        assert!((prod[2 * i + 1] - (ar * bi + ai * br)).abs() < 1e-14);
        assert!(
            (sum[2 * i] - (ar + br)).abs() < 1e-15 && (sum[2 * i + 1] - (ai + bi)).abs() < 1e-15
        );
        assert!(
            (diff[2 * i] - (ar - br)).abs() < 1e-15 && (diff[2 * i + 1] - (ai - bi)).abs() < 1e-15
        );
    }
    let conj = values(a.conj()?.as_tensor());
    let abs2 = values(&a.abs_squared()?);
    let scaled = values(a.scale(-2.5)?.as_tensor());
    let (re, im) = (values(&a.re()?), values(&a.im()?));
    assert_eq!(a.re()?.shape(), &[2, 3]);
    for i in 0..6 {
        assert_eq!((conj[2 * i], conj[2 * i + 1]), (av[2 * i], -av[2 * i + 1]));
        assert!((abs2[i] - (av[2 * i].powi(2) + av[2 * i + 1].powi(2))).abs() < 1e-14);
        assert_eq!(scaled[2 * i], -2.5 * av[2 * i]);
        assert_eq!((re[i], im[i]), (av[2 * i], av[2 * i + 1]));
    }
    let rebuilt = ComplexTensor::from_parts(&a.re()?, &a.im()?)?;
    assert_eq!(values(rebuilt.as_tensor()), av);
    let real = ComplexTensor::from_real(&a.re()?)?;
    assert_eq!(values(&real.im()?), vec![0.0; 6]);
    Ok(())
}

#[test]
fn complex_matmul_matches_the_naive_product_with_batch_broadcasting() -> Result<()> {
    let (m, k, n) = (2, 3, 4);
    let a = crandn(&[m, k], 16);
    let b = crandn(&[5, k, n], 17);
    let c = a.matmul(&b)?;
    assert_eq!(c.shape(), &[5, m, n]);
    let (av, bv, cv) = (
        values(a.as_tensor()),
        values(b.as_tensor()),
        values(c.as_tensor()),
    );
    for batch in 0..5 {
        for i in 0..m {
            for j in 0..n {
                let (mut re, mut im) = (0.0, 0.0);
                for l in 0..k {
                    let (ar, ai) = (av[2 * (i * k + l)], av[2 * (i * k + l) + 1]);
                    let at = 2 * ((batch * k + l) * n + j);
                    let (br, bi) = (bv[at], bv[at + 1]);
                    re += ar * br - ai * bi;
                    im += ar * bi + ai * br;
                }
                let at = 2 * ((batch * m + i) * n + j);
                assert!((cv[at] - re).abs() < 1e-13 && (cv[at + 1] - im).abs() < 1e-13);
            }
        }
    }
    // the broadcast batch on the left operand gives the same product
    let a5 = ComplexTensor::new(a.as_tensor().unsqueeze(0)?.broadcast_as(&[5, m, k, 2])?)?;
    assert_close(&values(a5.matmul(&b)?.as_tensor()), &cv, 1e-15);
    Ok(())
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    check_gradients(f, inputs, GradCheck::default()).unwrap();
}

/// The complex tensor over a real `(..., 2)` input.
fn c(x: &Tensor) -> Result<ComplexTensor> {
    ComplexTensor::new(x.clone())
}

#[test]
fn fft_and_ifft_gradients_are_exact() {
    let x = randn(&[3, 4, 5, 2], 20);
    for dims in [vec![0], vec![1], vec![2], vec![0, 2]] {
        check(
            |xs| Ok(fft::fft(&c(&xs[0])?, &dims)?.into_tensor()),
            std::slice::from_ref(&x),
        );
        check(
            |xs| Ok(fft::ifft(&c(&xs[0])?, &dims)?.into_tensor()),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn fft2_gradients_along_non_last_dims_and_on_strided_inputs() {
    // fft2 of a (5, 4, 3) complex view whose transformed dims are not the
    // last ones of the storage: the input (3, 4, 5, 2) permuted
    let x = randn(&[3, 4, 5, 2], 21);
    check(
        |xs| {
            let view = c(&xs[0].permute(&[2, 1, 0, 3])?)?;
            Ok(fft::fft2(&view)?.into_tensor())
        },
        std::slice::from_ref(&x),
    );
    check(
        |xs| Ok(fft::ifft2(&c(&xs[0].flip(&[1])?.narrow(2, 1, 3)?)?)?.into_tensor()),
        std::slice::from_ref(&x),
    );
    check(|xs| Ok(fft::fft(&c(&xs[0])?, &[0, 1])?.into_tensor()), &[x]);
}

#[test]
fn rfft2_and_irfft2_gradients_for_odd_and_even_widths() {
    for (h, w) in [(3, 4), (4, 5), (1, 2), (2, 1)] {
        let x = randn(&[2, h, w], 22);
        check(
            |xs| Ok(fft::rfft2(&xs[0])?.into_tensor()),
            std::slice::from_ref(&x),
        );
        // on a transposed view
        check(
            |xs| Ok(fft::rfft2(&xs[0].transpose(1, 2)?)?.into_tensor()),
            std::slice::from_ref(&x),
        );
        let y = randn(&[2, h, w / 2 + 1, 2], 23);
        check(|xs| fft::irfft2(&c(&xs[0])?, w), std::slice::from_ref(&y));
        // a round trip through both, then a nonlinearity
        check(|xs| fft::irfft2(&fft::rfft2(&xs[0])?, w)?.square(), &[x]);
    }
}

#[test]
fn complex_mul_and_matmul_gradients() {
    let a = randn(&[2, 3, 2], 24);
    let b = randn(&[3, 2], 25);
    check(
        |xs| Ok(c(&xs[0])?.mul(&c(&xs[1])?)?.into_tensor()),
        &[a.clone(), b],
    );
    let m = randn(&[2, 3, 4, 2], 26);
    let n = randn(&[4, 2, 2], 27);
    check(
        |xs| Ok(c(&xs[0])?.matmul(&c(&xs[1])?)?.into_tensor()),
        &[m.clone(), n.clone()],
    );
    // a non-contiguous left operand (transposed matrices)
    check(
        |xs| {
            Ok(c(&xs[0].transpose(1, 2)?)?
                .matmul(&c(&xs[1].narrow(0, 0, 3)?)?)?
                .into_tensor())
        },
        &[m, n],
    );
    check(
        |xs| {
            let z = c(&xs[0])?;
            z.conj()?
                .mul(&z.scale(0.5)?)?
                .sub(&z)?
                .add(&z.conj()?)?
                .abs_squared()
        },
        &[a],
    );
}

#[test]
fn constructors_reject_a_last_dim_other_than_2() {
    let x = randn(&[3, 3], 30);
    let err = ComplexTensor::new(x.clone()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("ComplexTensor::new") && msg.contains("[3, 3]"),
        "{msg}"
    );
    let err = ComplexTensor::new(Tensor::scalar(1.0f64, Device::Cpu).unwrap()).unwrap_err();
    assert!(err.to_string().contains("ComplexTensor::new"), "{err}");
    let err = ComplexTensor::from_parts(&x, &randn(&[3, 2], 31)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("from_parts") && msg.contains("[3, 2]"),
        "{msg}"
    );
}

#[test]
fn transforms_reject_bad_arguments() {
    let x = crandn(&[3, 4], 32);
    let err = fft::fft(&x, &[2]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Dim {
                op: "fft",
                dim: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = fft::ifft(&x, &[1, 1]).unwrap_err();
    assert!(err.to_string().contains("ifft"), "{err}");
    let err = fft::fft2(&crandn(&[5], 33)).unwrap_err();
    assert!(
        err.to_string().contains("fft2") && err.to_string().contains("[5]"),
        "{err}"
    );
    let err = fft::rfft2(&randn(&[5], 34)).unwrap_err();
    assert!(err.to_string().contains("rfft2"), "{err}");
    let err = fft::irfft2(&x, 4).unwrap_err(); // 4 needs 3 columns, x has 4
    let msg = err.to_string();
    assert!(msg.contains("irfft2") && msg.contains("[3, 4]"), "{msg}");
    assert!(fft::irfft2(&x, 6).is_ok() && fft::irfft2(&x, 7).is_ok());
    let err = crandn(&[3], 35).matmul(&x).unwrap_err();
    assert!(err.to_string().contains("matmul"), "{err}");
}

/// Random complex matrices of complex shape `(batch..., c, c)` with `2 I`
/// added, comfortably invertible.
fn well_conditioned(batch: &[usize], c: usize, seed: u64) -> Tensor {
    let shape = [batch, &[c, c, 2]].concat();
    let mut v = values(&randn(&shape, seed).mul_scalar(0.5).unwrap());
    // entry i of the flattened batch is at row (i / c) % c, column i % c
    for (i, x) in v.chunks_exact_mut(2).enumerate() {
        if (i / c) % c == i % c {
            x[0] += 2.0;
        }
    }
    Tensor::from_vec(v, &shape, Device::Cpu).unwrap()
}

type C64 = (f64, f64);

fn cmul(a: C64, b: C64) -> C64 {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

fn csub(a: C64, b: C64) -> C64 {
    (a.0 - b.0, a.1 - b.1)
}

/// The determinant of a complex 2 x 2 or 3 x 3 matrix (row-major pairs).
fn naive_det(m: &[C64]) -> C64 {
    match m.len() {
        4 => csub(cmul(m[0], m[3]), cmul(m[1], m[2])),
        9 => {
            let minor =
                |a: usize, b: usize, c: usize, d: usize| csub(cmul(m[a], m[d]), cmul(m[b], m[c]));
            let t0 = cmul(m[0], minor(4, 5, 7, 8));
            let t1 = cmul(m[1], minor(3, 5, 6, 8));
            let t2 = cmul(m[2], minor(3, 4, 6, 7));
            (t0.0 - t1.0 + t2.0, t0.1 - t1.1 + t2.1)
        }
        n => panic!("no closed form for {n} entries"),
    }
}

fn pairs(v: &[f64]) -> Vec<C64> {
    v.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

#[test]
fn log_abs_det_matches_closed_forms() -> Result<()> {
    for c in [2, 3] {
        let a = ComplexTensor::new(well_conditioned(&[4], c, 40))?;
        let got = values(&a.log_abs_det()?);
        assert_eq!(got.len(), 4);
        let entries = pairs(&values(a.as_tensor()));
        for (b, m) in entries.chunks_exact(c * c).enumerate() {
            let (re, im) = naive_det(m);
            let expected = 0.5 * (re * re + im * im).ln();
            assert!(
                (got[b] - expected).abs() < 1e-12,
                "{} vs {expected}",
                got[b]
            );
        }
    }
    // a matrix with a large imaginary part: det [[i, 2], [3i, 1 + i]] = -1 - 5i
    let m = Tensor::from_vec(
        vec![0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 1.0, 1.0],
        &[2, 2, 2],
        Device::Cpu,
    )?;
    let lad = ComplexTensor::new(m)?.log_abs_det()?;
    assert_eq!(lad.shape(), &[] as &[usize]);
    assert!((lad.to_scalar()? - 0.5 * 26f64.ln()).abs() < 1e-14);
    Ok(())
}

#[test]
fn solve_and_inverse_invert_complex_matrices() -> Result<()> {
    let a = ComplexTensor::new(well_conditioned(&[4], 3, 41))?;
    let b = crandn(&[3, 2], 42); // broadcast over the batch of 4
    let x = a.solve(&b)?;
    assert_eq!(x.shape(), &[4, 3, 2]);
    let ax = values(a.matmul(&x)?.as_tensor());
    let b4 = values(&b.as_tensor().broadcast_as(&[4, 3, 2, 2])?);
    assert_close(&ax, &b4, 1e-13);
    let inv = a.inverse()?;
    assert_eq!(inv.shape(), &[4, 3, 3]);
    let eye = ComplexTensor::from_real(&Tensor::eye(3, DType::F64, Device::Cpu)?)?;
    let eye4 = values(&eye.as_tensor().broadcast_as(&[4, 3, 3, 2])?);
    assert_close(&values(a.matmul(&inv)?.as_tensor()), &eye4, 1e-13);
    assert_close(&values(inv.matmul(&a)?.as_tensor()), &eye4, 1e-13);
    // solve with the identity as right-hand side is the inverse
    assert_close(
        &values(a.solve(&eye)?.as_tensor()),
        &values(inv.as_tensor()),
        1e-13,
    );
    Ok(())
}

#[test]
fn per_frequency_linear_algebra_gradients() {
    let a = well_conditioned(&[2], 3, 43);
    let b = randn(&[3, 2, 2], 44);
    check(
        |xs| Ok(c(&xs[0])?.solve(&c(&xs[1])?)?.into_tensor()),
        &[a.clone(), b],
    );
    // a non-contiguous matrix (transposed) and right-hand side (a permuted
    // (2, 3, 2) tensor, complex (3, 2))
    check(
        |xs| {
            let a = c(&xs[0].transpose(1, 2)?)?;
            let b = c(&xs[1].permute(&[1, 0, 2])?)?;
            Ok(a.solve(&b)?.into_tensor())
        },
        &[a.clone(), randn(&[2, 3, 2], 49)],
    );
    check(
        |xs| Ok(c(&xs[0])?.inverse()?.into_tensor()),
        std::slice::from_ref(&a),
    );
    check(
        |xs| Ok(c(&xs[0].transpose(1, 2)?)?.inverse()?.into_tensor()),
        std::slice::from_ref(&a),
    );
    check(|xs| c(&xs[0])?.log_abs_det(), std::slice::from_ref(&a));
    check(|xs| c(&xs[0].flip(&[1])?)?.log_abs_det(), &[a]);
}

#[test]
fn per_frequency_linear_algebra_rejects_non_square_matrices() {
    let a = crandn(&[2, 3], 45);
    for err in [
        a.inverse().unwrap_err(),
        a.log_abs_det().unwrap_err(),
        a.solve(&crandn(&[2, 1], 46)).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(
            msg.contains("ComplexTensor::") && msg.contains("[2, 3]"),
            "{msg}"
        );
    }
    let sq = ComplexTensor::new(well_conditioned(&[], 3, 47)).unwrap();
    let err = sq.solve(&crandn(&[2, 1], 48)).unwrap_err();
    assert!(err.to_string().contains("ComplexTensor::solve"), "{err}");
}
