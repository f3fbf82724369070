//! Linear algebra: LU, solves, inverse, determinants, QR and the matrix
//! exponential — identities between them, closed forms, finite-difference
//! gradient checks, f32 against f64, and the errors of bad shapes.

use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, Device::Cpu).unwrap()
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

fn eye(n: usize) -> Tensor {
    Tensor::eye(n, DType::F64, Device::Cpu).unwrap()
}

/// Random `(..., n, n)` matrices plus `shift * I`, for a safe condition number.
fn shifted(shape: &[usize], shift: f64, seed: u64) -> Tensor {
    let n = shape[shape.len() - 1];
    randn(shape, seed)
        .add(&eye(n).mul_scalar(shift).unwrap())
        .unwrap()
}

/// The last two dimensions swapped.
fn mt(x: &Tensor) -> Tensor {
    x.transpose(x.rank() - 2, x.rank() - 1).unwrap()
}

/// The largest absolute difference (NaN when either holds one).
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

#[track_caller]
fn assert_close(a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_diff(a, b);
    assert!(
        d <= tol,
        "max difference {d:e} exceeds {tol:e}: {a:?} vs {b:?}"
    );
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    check_gradients(f, inputs, GradCheck::default()).unwrap();
}

/// The error's message, asserting that it names `op` and each of `shapes`.
#[track_caller]
fn assert_error_names(err: Error, op: &str, shapes: &[&[usize]]) {
    let msg = err.to_string();
    assert!(msg.contains(op), "{msg}");
    for s in shapes {
        assert!(msg.contains(&format!("{s:?}")), "{msg} does not name {s:?}");
    }
}

// ---------------------------------------------------------------- LU

/// P A = L U, L unit lower triangular with |l_ij| <= 1, U upper triangular,
/// and the sign is the permutation's parity.
fn check_lu(a: &Tensor) -> Result<()> {
    let lu = a.lu()?;
    let (l, u, p) = (lu.l()?, lu.u()?, lu.p()?);
    assert_close(&p.matmul(a)?, &l.matmul(&u)?, 1e-12);
    let n = a.shape()[a.rank() - 1];
    let (lv, uv) = (l.to_vec::<f64>()?, u.to_vec::<f64>()?);
    for (idx, (&lij, &uij)) in lv.iter().zip(&uv).enumerate() {
        let (i, j) = ((idx / n) % n, idx % n);
        if j > i {
            assert_eq!(lij, 0.0);
        }
        if j < i {
            assert_eq!(uij, 0.0);
            assert!(lij.abs() <= 1.0);
        }
        if i == j {
            assert_eq!(lij, 1.0);
        }
    }
    let signs = lu.sign().to_vec::<f64>()?;
    for (b, perm) in lu.permutations().chunks(n).enumerate() {
        let mut seen = perm.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "not a permutation");
        let inversions = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|&(i, j)| perm[i] > perm[j])
            .count();
        let parity = if inversions % 2 == 0 { 1.0 } else { -1.0 };
        assert_eq!(signs[b], parity);
    }
    Ok(())
}

#[test]
fn lu_reconstructs_random_batched_matrices() -> Result<()> {
    check_lu(&randn(&[5, 5], 1))?;
    check_lu(&randn(&[2, 3, 4, 4], 2))?;
    // non-contiguous input
    check_lu(&mt(&randn(&[3, 6, 6], 3)))
}

#[test]
fn lu_pivots_when_the_top_left_entry_is_zero() -> Result<()> {
    let a = t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0], &[3, 3]);
    check_lu(&a)?;
    let lu = a.lu()?;
    assert_eq!(
        lu.permutations()[0],
        2,
        "the largest entry of column 0 leads"
    );
    // a batch mixing a pivoting-requiring and a permuted identity matrix
    let b = Tensor::stack(
        &[
            &a,
            &t(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[3, 3]),
        ],
        0,
    )?;
    check_lu(&b)?;
    assert!(!a.as_variable().lu()?.factors().requires_grad());
    Ok(())
}

#[test]
fn lu_of_a_singular_matrix_completes_with_a_zero_pivot() -> Result<()> {
    let a = t(&[1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 1.0, 0.0, 1.0], &[3, 3]);
    check_lu(&a)?;
    let u = a.lu()?.u()?.to_vec::<f64>()?;
    assert!([u[0], u[4], u[8]].contains(&0.0), "{u:?}");
    Ok(())
}

#[test]
fn large_batches_match_matrix_by_matrix_results() -> Result<()> {
    // 600 matrices: enough work for the parallel path
    let a = shifted(&[600, 4, 4], 3.0, 4);
    let b = randn(&[600, 4, 2], 5);
    let (x, inv, e) = (a.solve(&b)?, a.inverse()?, a.mul_scalar(0.3)?.matrix_exp()?);
    for i in [0, 17, 599] {
        let (ai, bi) = (a.narrow(0, i, 1)?, b.narrow(0, i, 1)?);
        assert_close(&x.narrow(0, i, 1)?, &ai.solve(&bi)?, 1e-14);
        assert_close(&inv.narrow(0, i, 1)?, &ai.inverse()?, 1e-14);
        assert_close(
            &e.narrow(0, i, 1)?,
            &ai.mul_scalar(0.3)?.matrix_exp()?,
            1e-14,
        );
    }
    check_lu(&a)
}

// ---------------------------------------------------------------- QR

fn check_qr(a: &Tensor) -> Result<()> {
    let (q, r) = a.qr()?;
    let (m, n) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
    assert_eq!(q.shape()[q.rank() - 2..], [m, n]);
    assert_eq!(r.shape()[r.rank() - 2..], [n, n]);
    assert_close(&q.matmul(&r)?, a, 1e-12);
    assert_close(&mt(&q).matmul(&q)?, &eye(n).broadcast_as(r.shape())?, 1e-12);
    let rv = r.to_vec::<f64>()?;
    for (idx, &x) in rv.iter().enumerate() {
        let (i, j) = ((idx / n) % n, idx % n);
        if j < i {
            assert_eq!(x, 0.0, "R is not upper triangular");
        }
        if i == j {
            assert!(x >= 0.0, "R's diagonal is made non-negative");
        }
    }
    Ok(())
}

#[test]
fn qr_reconstructs_square_tall_and_batched_matrices() -> Result<()> {
    check_qr(&randn(&[4, 4], 6))?;
    check_qr(&randn(&[5, 3], 7))?;
    check_qr(&randn(&[8, 1], 8))?;
    check_qr(&randn(&[2, 3, 7, 3], 9))?;
    check_qr(&mt(&randn(&[2, 3, 6], 10)))?;
    // a column that is already reduced, and a zero column (rank deficient)
    check_qr(&t(&[2.0, 1.0, 0.0, 0.0, 3.0, 0.0], &[3, 2]))?;
    check_qr(&t(&[1.0, 0.0, 2.0, 0.0, 3.0, 0.0], &[3, 2]))
}

// ---------------------------------------------------------------- solve, inverse, determinants

#[test]
fn inverse_and_solve_agree_with_products() -> Result<()> {
    let a = shifted(&[2, 4, 4], 2.0, 11);
    let b = randn(&[2, 4, 3], 12);
    let inv = a.inverse()?;
    let i4 = eye(4).broadcast_as(&[2, 4, 4])?;
    assert_close(&a.matmul(&inv)?, &i4, 1e-12);
    assert_close(&inv.matmul(&a)?, &i4, 1e-12);
    let x = a.solve(&b)?;
    assert_close(&a.matmul(&x)?, &b, 1e-12);
    assert_close(&x, &inv.matmul(&b)?, 1e-12);
    // needs pivoting: a zero top-left entry
    let p = t(&[0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 3.0, 0.0, 1.0], &[3, 3]);
    assert_close(&p.matmul(&p.inverse()?)?, &eye(3), 1e-14);
    Ok(())
}

#[test]
fn solve_broadcasts_batch_dimensions() -> Result<()> {
    let a = shifted(&[2, 1, 3, 3], 2.0, 13);
    let b = randn(&[4, 3, 2], 14);
    let x = a.solve(&b)?;
    assert_eq!(x.shape(), [2, 4, 3, 2]);
    assert_close(&a.matmul(&x)?, &b.broadcast_as(&[2, 4, 3, 2])?, 1e-12);
    let single = a.narrow(0, 1, 1)?.reshape(&[3, 3])?;
    assert_eq!(single.solve(&b)?.shape(), [4, 3, 2]);
    assert_close(
        &single.solve(&b)?,
        &x.narrow(0, 1, 1)?.reshape(&[4, 3, 2])?,
        0.0,
    );
    Ok(())
}

#[test]
fn triangular_solve_uses_only_the_chosen_triangle() -> Result<()> {
    let a = shifted(&[2, 4, 4], 3.0, 15);
    let b = randn(&[2, 4, 3], 16);
    let i4 = eye(4);
    for upper in [true, false] {
        for unit in [true, false] {
            let x = a.triangular_solve(&b, upper, unit)?;
            // the triangle as a full matrix, solved generally
            let keep: Vec<f64> = (0..16)
                .map(|idx| {
                    let (i, j) = (idx / 4, idx % 4);
                    let side = if upper { j > i } else { j < i };
                    if side || (!unit && i == j) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut tri = a.mul(&t(&keep, &[4, 4]))?;
            if unit {
                tri = tri.add(&i4)?;
            }
            assert_close(&tri.matmul(&x)?, &b, 1e-12);
            assert_close(&x, &tri.solve(&b)?, 1e-12);
        }
    }
    Ok(())
}

#[test]
fn slogdet_matches_lu_and_det() -> Result<()> {
    let a = randn(&[3, 5, 5], 17);
    let (sign, logdet) = a.slogdet()?;
    assert_eq!(sign.shape(), [3]);
    assert!(!sign.requires_grad());
    let lu = a.lu()?;
    let u = lu.u()?.to_vec::<f64>()?;
    let lu_sign = lu.sign().to_vec::<f64>()?;
    let (sv, lv) = (sign.to_vec::<f64>()?, logdet.to_vec::<f64>()?);
    for b in 0..3 {
        let diag: Vec<f64> = (0..5).map(|i| u[b * 25 + i * 6]).collect();
        let prod: f64 = diag.iter().product();
        assert!((lv[b] - prod.abs().ln()).abs() < 1e-12);
        assert_eq!(sv[b], lu_sign[b] * prod.signum());
    }
    assert_close(&a.det()?, &sign.mul(&logdet.exp()?)?, 1e-12);
    // a 2 x 2 determinant in closed form
    let m = t(&[3.0, 1.0, 4.0, -2.0], &[2, 2]);
    assert!((m.det()?.to_scalar()? - (-10.0)).abs() < 1e-14);
    let (s, l) = m.slogdet()?;
    assert_eq!(s.to_scalar()?, -1.0);
    assert!((l.to_scalar()? - 10f64.ln()).abs() < 1e-15);
    Ok(())
}

#[test]
fn slogdet_of_a_product_is_the_sum() -> Result<()> {
    let a = randn(&[2, 4, 4], 18);
    let b = randn(&[2, 4, 4], 19);
    let (sa, la) = a.slogdet()?;
    let (sb, lb) = b.slogdet()?;
    let (sab, lab) = a.matmul(&b)?.slogdet()?;
    assert_close(&lab, &la.add(&lb)?, 1e-12);
    assert_close(&sab, &sa.mul(&sb)?, 0.0);
    assert_close(&a.matmul(&b)?.det()?, &a.det()?.mul(&b.det()?)?, 1e-12);
    Ok(())
}

#[test]
fn singular_matrices_have_zero_determinant() -> Result<()> {
    let a = t(&[1.0, 2.0, 2.0, 4.0, 0.0, 1.0, 0.0, 3.0], &[2, 2, 2]);
    let (sign, logdet) = a.slogdet()?;
    assert_eq!(sign.to_vec::<f64>()?[0], 0.0);
    assert_eq!(logdet.to_vec::<f64>()?[0], f64::NEG_INFINITY);
    assert_eq!(sign.to_vec::<f64>()?[1], 0.0);
    assert_eq!(a.det()?.to_vec::<f64>()?, vec![0.0, 0.0]);
    Ok(())
}

// ---------------------------------------------------------------- matrix exponential

#[test]
fn matrix_exp_of_a_diagonal_matrix() -> Result<()> {
    let d = [1.0, -2.0, 0.5, 20.0, -20.0];
    let mut v = vec![0.0; 25];
    let mut expected = vec![0.0; 25];
    for (i, &x) in d.iter().enumerate() {
        v[i * 6] = x;
        expected[i * 6] = f64::exp(x);
    }
    let got = t(&v, &[5, 5]).matrix_exp()?.to_vec::<f64>()?;
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() <= 1e-14 * e.abs(), "{g} vs {e}");
    }
    Ok(())
}

#[test]
fn matrix_exp_of_a_nilpotent_matrix_is_a_finite_series() -> Result<()> {
    // N strictly upper triangular: N^4 = 0, so e^N = I + N + N^2/2 + N^3/6
    let n = t(
        &[
            0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 4.0, 5.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0,
        ],
        &[4, 4],
    );
    let n2 = n.matmul(&n)?;
    let n3 = n2.matmul(&n)?;
    let series = eye(4)
        .add(&n)?
        .add(&n2.mul_scalar(0.5)?)?
        .add(&n3.mul_scalar(1.0 / 6.0)?)?;
    assert_close(&n.matrix_exp()?, &series, 1e-13);
    Ok(())
}

#[test]
fn matrix_exp_of_a_rotation_generator_is_a_rotation() -> Result<()> {
    for theta in [0.3, 2.5, 10.0, 20.0] {
        let (s, c) = f64::sin_cos(theta);
        let generator = t(&[0.0, -theta, theta, 0.0], &[2, 2]);
        let rotation = t(&[c, -s, s, c], &[2, 2]);
        assert_close(&generator.matrix_exp()?, &rotation, 1e-14 * theta.max(1.0));
    }
    Ok(())
}

#[test]
fn matrix_exp_of_a_non_normal_triangular_matrix() -> Result<()> {
    // exp([[a, b], [0, c]]) = [[e^a, b (e^a - e^c) / (a - c)], [0, e^c]]
    for (a, b, c) in [(1.0, 10.0, -1.0), (3.0, -7.0, 2.5), (-4.0, 15.0, 0.5)] {
        let (ea, ec) = (f64::exp(a), f64::exp(c));
        let expected = t(&[ea, b * (ea - ec) / (a - c), 0.0, ec], &[2, 2]);
        let got = t(&[a, b, 0.0, c], &[2, 2]).matrix_exp()?;
        let size = expected.abs()?.max(&[0, 1], false)?.to_scalar()?;
        assert_close(&got, &expected, 1e-14 * size);
    }
    Ok(())
}

#[test]
fn matrix_exp_of_minus_a_is_the_inverse() -> Result<()> {
    let a = randn(&[3, 4, 4], 20).mul_scalar(1.5)?;
    let product = a.matrix_exp()?.matmul(&a.neg()?.matrix_exp()?)?;
    assert_close(&product, &eye(4).broadcast_as(&[3, 4, 4])?, 1e-12);
    Ok(())
}

// ---------------------------------------------------------------- gradients

#[test]
fn solve_gradients_with_batch_broadcasting() {
    let shift = eye(3).mul_scalar(3.0).unwrap();
    // A unbatched, B batched; then A batched, B unbatched
    check(
        |xs| xs[0].add(&shift)?.solve(&xs[1]),
        &[randn(&[3, 3], 21), randn(&[2, 3, 2], 22)],
    );
    check(
        |xs| xs[0].add(&shift)?.solve(&xs[1]),
        &[randn(&[2, 1, 3, 3], 23), randn(&[3, 3, 2], 24)],
    );
    // a transposed (non-contiguous) matrix and right-hand side
    check(
        |xs| mt(&xs[0]).add(&shift)?.solve(&mt(&xs[1])),
        &[randn(&[2, 3, 3], 25), randn(&[2, 4, 3], 26)],
    );
}

#[test]
fn triangular_solve_gradients_for_every_triangle() {
    let shift = eye(4).mul_scalar(3.0).unwrap();
    for upper in [true, false] {
        for unit in [true, false] {
            check(
                |xs| xs[0].add(&shift)?.triangular_solve(&xs[1], upper, unit),
                &[randn(&[2, 4, 4], 27), randn(&[4, 3], 28)],
            );
        }
    }
    check(
        |xs| {
            mt(&xs[0])
                .add(&shift)?
                .triangular_solve(&xs[1], true, false)
        },
        &[randn(&[4, 4], 29), randn(&[4, 2], 30)],
    );
}

#[test]
fn triangular_solve_gradient_vanishes_off_the_triangle() -> Result<()> {
    let a = shifted(&[3, 3], 3.0, 31).as_variable();
    let b = randn(&[3, 2], 32);
    let g = a
        .triangular_solve(&b, false, true)?
        .sum_all()?
        .backward_grads()?;
    let ga = g.get(&a).unwrap().to_vec::<f64>()?;
    for (idx, x) in ga.iter().enumerate() {
        if idx / 3 <= idx % 3 {
            assert_eq!(*x, 0.0, "entry {idx} is outside the strict lower triangle");
        }
    }
    Ok(())
}

#[test]
fn inverse_and_determinant_gradients() {
    let shift = eye(3).mul_scalar(2.0).unwrap();
    check(|xs| xs[0].add(&shift)?.inverse(), &[randn(&[2, 3, 3], 33)]);
    check(|xs| mt(&xs[0]).det(), &[randn(&[2, 3, 3], 34)]);
    check(|xs| xs[0].det(), &[randn(&[4, 4], 35)]);
    // log|det| of matrices with positive and negative determinants
    check(|xs| Ok(xs[0].slogdet()?.1), &[randn(&[3, 4, 4], 36)]);
    check(|xs| Ok(mt(&xs[0]).slogdet()?.1), &[randn(&[3, 3], 37)]);
}

#[test]
fn qr_gradients_through_q_and_r() {
    let both = |xs: &[Tensor]| {
        let (q, r) = xs[0].qr()?;
        let rows = q.rank() - 2;
        Tensor::cat(&[&q, &r], rows)
    };
    check(both, &[randn(&[5, 3], 38)]);
    check(both, &[randn(&[2, 4, 4], 39)]);
    check(|xs| Ok(xs[0].qr()?.0), &[randn(&[5, 3], 40)]);
    check(|xs| Ok(xs[0].qr()?.1), &[randn(&[5, 3], 41)]);
    check(|xs| Ok(mt(&xs[0]).qr()?.0), &[randn(&[2, 3, 6], 42)]);
}

#[test]
fn matrix_exp_gradients() {
    check(|xs| xs[0].matrix_exp(), &[randn(&[3, 3], 43)]);
    check(|xs| mt(&xs[0]).matrix_exp(), &[randn(&[2, 3, 3], 44)]);
    // a larger norm, so more squarings are differentiated
    check(
        |xs| xs[0].mul_scalar(3.0)?.matrix_exp(),
        &[randn(&[3, 3], 45)],
    );
}

// ---------------------------------------------------------------- f32

#[test]
fn f32_agrees_with_f64() -> Result<()> {
    let a64 = shifted(&[2, 4, 4], 2.0, 46);
    let b64 = randn(&[2, 4, 3], 47);
    let tall64 = randn(&[2, 5, 3], 48);
    let (a32, b32, tall32) = (
        a64.to_dtype(DType::F32)?,
        b64.to_dtype(DType::F32)?,
        tall64.to_dtype(DType::F32)?,
    );
    let pairs = [
        (a64.solve(&b64)?, a32.solve(&b32)?),
        (
            a64.triangular_solve(&b64, true, false)?,
            a32.triangular_solve(&b32, true, false)?,
        ),
        (a64.inverse()?, a32.inverse()?),
        (a64.det()?, a32.det()?),
        (a64.slogdet()?.0, a32.slogdet()?.0),
        (a64.slogdet()?.1, a32.slogdet()?.1),
        (tall64.qr()?.0, tall32.qr()?.0),
        (tall64.qr()?.1, tall32.qr()?.1),
        (a64.lu()?.factors().clone(), a32.lu()?.factors().clone()),
        (
            a64.mul_scalar(0.5)?.matrix_exp()?,
            a32.mul_scalar(0.5)?.matrix_exp()?,
        ),
    ];
    for (x64, x32) in &pairs {
        assert_eq!(x32.dtype(), DType::F32);
        // relative to the largest entry (at least 1)
        let size = x64
            .to_vec_f64()?
            .iter()
            .fold(1.0, |m: f64, v| m.max(v.abs()));
        assert_close(x64, x32, 1e-4 * size);
    }
    // f32 gradients flow and agree too
    let a = a32.as_variable();
    let g32 = a.slogdet()?.1.sum_all()?.backward_grads()?;
    let g64 = a64.inverse()?;
    assert_close(&mt(&g64), g32.get(&a).unwrap(), 1e-4);
    Ok(())
}

// ---------------------------------------------------------------- errors

#[test]
fn non_square_matrices_are_errors() {
    let a = randn(&[2, 3, 4], 49);
    assert_error_names(a.lu().unwrap_err(), "lu", &[&[2, 3, 4]]);
    assert_error_names(a.inverse().unwrap_err(), "inverse", &[&[2, 3, 4]]);
    assert_error_names(a.det().unwrap_err(), "det", &[&[2, 3, 4]]);
    assert_error_names(a.slogdet().unwrap_err(), "slogdet", &[&[2, 3, 4]]);
    assert_error_names(a.matrix_exp().unwrap_err(), "matrix_exp", &[&[2, 3, 4]]);
    let b = randn(&[3, 1], 50);
    assert_error_names(a.solve(&b).unwrap_err(), "solve", &[&[2, 3, 4], &[3, 1]]);
    let err = a.triangular_solve(&b, true, false).unwrap_err();
    assert_error_names(err, "triangular_solve", &[&[2, 3, 4], &[3, 1]]);
    assert_error_names(randn(&[3, 5], 51).qr().unwrap_err(), "qr", &[&[3, 5]]);
    assert_error_names(randn(&[4], 52).det().unwrap_err(), "det", &[&[4]]);
}

#[test]
fn mismatched_right_hand_sides_are_errors() {
    let a = randn(&[3, 3], 53);
    let b = randn(&[4, 2], 54);
    assert_error_names(a.solve(&b).unwrap_err(), "solve", &[&[3, 3], &[4, 2]]);
    let err = a.triangular_solve(&b, false, true).unwrap_err();
    assert_error_names(err, "triangular_solve", &[&[3, 3], &[4, 2]]);
    let vector = randn(&[3], 55);
    assert_error_names(a.solve(&vector).unwrap_err(), "solve", &[&[3, 3], &[3]]);
    let batched = randn(&[2, 3, 3], 56);
    let other = randn(&[4, 3, 1], 57);
    let err = batched.solve(&other).unwrap_err();
    assert_error_names(err, "solve", &[&[2, 3, 3], &[4, 3, 1]]);
    let f32_b = randn(&[3, 1], 58).to_dtype(DType::F32).unwrap();
    assert!(a.solve(&f32_b).unwrap_err().to_string().contains("solve"));
}

#[test]
fn singular_systems_are_errors() {
    let a = t(&[1.0, 2.0, 2.0, 4.0], &[2, 2]);
    let b = randn(&[2, 1], 59);
    assert_error_names(a.solve(&b).unwrap_err(), "solve", &[&[2, 2]]);
    assert_error_names(a.inverse().unwrap_err(), "inverse", &[&[2, 2]]);
    let zero_diagonal = t(&[1.0, 2.0, 0.0, 0.0], &[2, 2]);
    let err = zero_diagonal.triangular_solve(&b, true, false).unwrap_err();
    assert_error_names(err, "triangular_solve", &[&[2, 2]]);
    // with a unit diagonal the stored zero is not used
    assert!(zero_diagonal.triangular_solve(&b, true, true).is_ok());
    // log|det| is -inf there, and its gradient does not exist
    let v = a.as_variable();
    let err = v
        .slogdet()
        .unwrap()
        .1
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err();
    assert!(err.to_string().contains("slogdet"), "{err}");
}
