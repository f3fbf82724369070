//! Dense kernels on one row-major matrix held in a slice, generic over the
//! element type: LU with partial pivoting, triangular solves, Householder QR
//! and the matrix exponential. The tensor-level ops in the sibling modules
//! copy each matrix of a batch to the host and call these.

use crate::Element;
use std::ops::Range;

/// The LU factorization with partial pivoting of one n x n matrix: `P A = L U`.
pub(crate) struct LuFactors<T> {
    /// `L` strictly below the diagonal (its unit diagonal implied) and `U` on
    /// and above it, n x n row-major.
    pub lu: Vec<T>,
    /// `perm[i]` is the row of `A` that is row `i` of `P A`.
    pub perm: Vec<usize>,
    /// `det(P)`: +1 or -1 by the parity of the row swaps.
    pub sign: T,
    n: usize,
}

impl<T: Element> LuFactors<T> {
    /// Factors the n x n matrix `a` (right-looking Doolittle, as LAPACK's
    /// getf2): step k swaps the row with the largest `|a_ik|`, `i >= k`, into
    /// place, so `|l_ik| <= 1`. When that column has no non-zero candidate,
    /// `u_kk = 0` and the step is skipped, so singular matrices factor too.
    pub fn new(a: &[T], n: usize) -> Self {
        debug_assert_eq!(a.len(), n * n);
        let mut lu = a.to_vec();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut sign = T::one();
        for k in 0..n {
            let mut p = k;
            for i in k + 1..n {
                if lu[i * n + k].abs() > lu[p * n + k].abs() {
                    p = i;
                }
            }
            if p != k {
                for j in 0..n {
                    lu.swap(k * n + j, p * n + j);
                }
                perm.swap(k, p);
                sign = -sign;
            }
            let pivot = lu[k * n + k];
            if pivot == T::zero() {
                continue;
            }
            let (head, tail) = lu.split_at_mut((k + 1) * n);
            let pivot_row = &head[k * n + k + 1..(k + 1) * n];
            for row in tail.chunks_exact_mut(n) {
                let l = row[k] / pivot;
                row[k] = l;
                subtract_scaled(&mut row[k + 1..], l, pivot_row);
            }
        }
        LuFactors { lu, perm, sign, n }
    }

    /// The first column `k` with `u_kk = 0`, when `A` is singular.
    pub fn zero_pivot(&self) -> Option<usize> {
        self.diagonal().position(|u| u == T::zero())
    }

    /// Overwrites the n x k matrix `b` with `A^{-1} b = U^{-1} L^{-1} P b`.
    /// `A` must be non-singular (see [`LuFactors::zero_pivot`]).
    pub fn solve_in_place(&self, b: &mut [T], k: usize) {
        let permuted: Vec<T> = self
            .perm
            .iter()
            .flat_map(|&r| b[r * k..(r + 1) * k].iter().copied())
            .collect();
        b.copy_from_slice(&permuted);
        triangular_solve_in_place(&self.lu, self.n, b, k, false, true);
        triangular_solve_in_place(&self.lu, self.n, b, k, true, false);
    }

    /// `det(A) = det(P) * prod_i u_ii`.
    pub fn det(&self) -> T {
        self.diagonal().fold(self.sign, |acc, u| acc * u)
    }

    /// `(sign, log|det A|)` with `det A = sign * exp(log|det A|)`; `(0, -inf)`
    /// for a singular matrix.
    pub fn sign_log_abs_det(&self) -> (T, T) {
        let mut sign = self.sign;
        let mut log = T::zero();
        for u in self.diagonal() {
            if u == T::zero() {
                return (T::zero(), T::neg_infinity());
            }
            if u < T::zero() {
                sign = -sign;
            }
            log = log + u.abs().ln();
        }
        (sign, log)
    }

    fn diagonal(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.n).map(|i| self.lu[i * (self.n + 1)])
    }
}

/// `row -= c * x`, skipped when `c` is zero.
fn subtract_scaled<T: Element>(row: &mut [T], c: T, x: &[T]) {
    if c != T::zero() {
        for (r, &v) in row.iter_mut().zip(x) {
            *r = *r - c * v;
        }
    }
}

/// Overwrites the n x k matrix `b` with `T^{-1} b`, where `T` is the upper
/// (`upper`) or lower triangle of the n x n matrix `a`, with ones on the
/// diagonal in place of `a`'s when `unit_diagonal`. Back substitution
/// (upper) or forward substitution (lower), row by row of `b`; entries of
/// `a` outside that triangle are never read.
pub(crate) fn triangular_solve_in_place<T: Element>(
    a: &[T],
    n: usize,
    b: &mut [T],
    k: usize,
    upper: bool,
    unit_diagonal: bool,
) {
    if k == 0 {
        return;
    }
    let finish = |row: &mut [T], i: usize| {
        if !unit_diagonal {
            let d = a[i * n + i];
            row.iter_mut().for_each(|x| *x = *x / d);
        }
    };
    if upper {
        for i in (0..n).rev() {
            let (head, solved) = b.split_at_mut((i + 1) * k);
            let row = &mut head[i * k..];
            for (j, x_j) in (i + 1..n).zip(solved.chunks_exact(k)) {
                subtract_scaled(row, a[i * n + j], x_j);
            }
            finish(row, i);
        }
    } else {
        for i in 0..n {
            let (solved, rest) = b.split_at_mut(i * k);
            let row = &mut rest[..k];
            for (j, x_j) in solved.chunks_exact(k).enumerate() {
                subtract_scaled(row, a[i * n + j], x_j);
            }
            finish(row, i);
        }
    }
}

/// Applies the reflection `H = I - 2 v v^T` (`|v| = 1`, or `v = 0` for
/// `H = I`) to rows `first..first + v.len()` and columns `cols` of the
/// row-major matrix `w` of `width` columns: `W <- W - 2 v (v^T W)`.
fn reflect<T: Element>(v: &[T], w: &mut [T], width: usize, first: usize, cols: Range<usize>) {
    let mut d = vec![T::zero(); cols.len()];
    for (i, &vi) in v.iter().enumerate() {
        let row = &w[(first + i) * width..][cols.clone()];
        for (dj, &x) in d.iter_mut().zip(row) {
            *dj = *dj + vi * x;
        }
    }
    let two = T::from_f64(2.0);
    for (i, &vi) in v.iter().enumerate() {
        let row = &mut w[(first + i) * width..][cols.clone()];
        subtract_scaled(row, two * vi, &d);
    }
}

/// Reduced QR of the m x n matrix `a` (`m >= n`) by Householder reflections:
/// `A = Q R` with `Q` m x n (`Q^T Q = I`) and `R` n x n upper triangular,
/// returned as `(Q, R)` row-major.
///
/// Step k reflects column k's part `x` (rows k..m) onto `alpha e_1` with
/// `alpha = -sign(x_0) |x|` (no cancellation in `v = x - alpha e_1`);
/// `Q = H_0 ... H_{n-1} [I_n; 0]` is accumulated backwards. Finally each
/// row k of `R` with `r_kk < 0` and column k of `Q` are negated, so `R` has a
/// non-negative diagonal: the factorization is then unique for full column
/// rank and smooth in `A`.
pub(crate) fn householder_qr<T: Element>(a: &[T], m: usize, n: usize) -> (Vec<T>, Vec<T>) {
    debug_assert!(m >= n && a.len() == m * n);
    let norm = |v: &[T]| v.iter().fold(T::zero(), |s, &x| s + x * x).sqrt();
    let mut w = a.to_vec();
    let mut reflectors = Vec::with_capacity(n);
    for k in 0..n {
        let mut v: Vec<T> = (k..m).map(|i| w[i * n + k]).collect();
        let alpha = if v[0] >= T::zero() {
            -norm(&v)
        } else {
            norm(&v)
        };
        v[0] = v[0] - alpha;
        // |v| = 0 only for a zero column: no reflection (r_kk = 0).
        let v_norm = norm(&v);
        if v_norm > T::zero() {
            v.iter_mut().for_each(|x| *x = *x / v_norm);
            reflect(&v, &mut w, n, k, k..n);
        }
        reflectors.push(v);
    }
    let mut q = vec![T::zero(); m * n];
    for i in 0..n {
        q[i * n + i] = T::one();
    }
    for (k, v) in reflectors.iter().enumerate().rev() {
        reflect(v, &mut q, n, k, k..n);
    }
    let mut r = vec![T::zero(); n * n];
    for i in 0..n {
        r[i * n + i..(i + 1) * n].copy_from_slice(&w[i * n + i..(i + 1) * n]);
        if r[i * n + i] < T::zero() {
            r[i * n + i..(i + 1) * n].iter_mut().for_each(|x| *x = -*x);
            q.iter_mut().skip(i).step_by(n).for_each(|x| *x = -*x);
        }
    }
    (q, r)
}

/// `a b` for n x n row-major matrices (matrixmultiply's gemm).
fn square_matmul<T: Element>(a: &[T], b: &[T], n: usize) -> Vec<T> {
    assert!(a.len() == n * n && b.len() == n * n);
    let mut c = vec![T::zero(); n * n];
    if n > 0 {
        // SAFETY: a, b and c hold n x n row-major matrices (checked above), and
        // c is a fresh buffer aliasing neither input.
        unsafe {
            T::gemm(
                n,
                n,
                n,
                a.as_ptr(),
                n as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                c.as_mut_ptr(),
                n as isize,
                1,
                false,
            );
        }
    }
    c
}

/// Numerator coefficients `b_0..b_13` of the degree-13 Padé approximant of
/// `e^x`, `p13(x) = sum_j b_j x^j` (the denominator is `q13(x) = p13(-x)`).
const PADE_13: [f64; 14] = [
    64764752532480000.0,
    32382376266240000.0,
    7771770303897600.0,
    1187353796428800.0,
    129060195264000.0,
    10559470521600.0,
    670442572800.0,
    33522128640.0,
    1323241920.0,
    40840800.0,
    960960.0,
    16380.0,
    182.0,
    1.0,
];

/// The largest 1-norm for which the degree-13 Padé approximant's backward
/// error stays below the f64 unit roundoff 2^-53 (Higham 2005, Table 2.3).
const THETA_13: f64 = 5.371920351148152;

/// The 1-norm that [`expm`] scales its argument down to: `θ13 / 4`, not
/// `θ13`. Evaluating `q13(X) = p13(-X)` cancels, with rounding errors that
/// grow like `u e^{|X|}`; two more squarings (each only doubling the relative
/// error) bring the error of e.g. `exp(diag(20))` from 1.8e-14 to 2e-15
/// (measured against 50-digit references for `|A|_1 <= 20`: worst 8e-15).
const SCALED_NORM: f64 = THETA_13 / 4.0;

/// `e^A` of the n x n matrix `a` by scaling and squaring (Higham 2005, "The
/// scaling and squaring method for the matrix exponential revisited"): with
/// `s = max(0, ceil(log2(|A|_1 / (θ13 / 4))))` (see [`SCALED_NORM`]),
/// `e^A = r13(A / 2^s)^(2^s)`,
/// where `r13 = q13^{-1} p13` is evaluated as
/// `U = A (A6 (b13 A6 + b11 A4 + b9 A2) + b7 A6 + b5 A4 + b3 A2 + b1 I)`,
/// `V = A6 (b12 A6 + b10 A4 + b8 A2) + b6 A6 + b4 A4 + b2 A2 + b0 I`,
/// `r13 = (V - U)^{-1} (V + U)`. A matrix with a non-finite entry gives NaNs.
pub(crate) fn expm<T: Element>(a: &[T], n: usize) -> Vec<T> {
    let one_norm = (0..n)
        .map(|j| (0..n).map(|i| a[i * n + j].to_f64().abs()).sum::<f64>())
        .fold(0.0, f64::max);
    if !one_norm.is_finite() || a.iter().any(|x| x.is_nan()) {
        return vec![T::nan(); n * n];
    }
    // A finite norm bounds s by about 1030 (f64) or 130 (f32).
    let s = if one_norm > SCALED_NORM {
        (one_norm / SCALED_NORM).log2().ceil() as i32
    } else {
        0
    };
    let scale = 0.5f64.powi(s);
    let a: Vec<T> = a.iter().map(|&x| T::from_f64(x.to_f64() * scale)).collect();
    let b = PADE_13.map(T::from_f64);
    let a2 = square_matmul(&a, &a, n);
    let a4 = square_matmul(&a2, &a2, n);
    let a6 = square_matmul(&a4, &a2, n);
    // c0 I + c2 A2 + c4 A4 + c6 A6
    let even = |c0: T, c2: T, c4: T, c6: T| -> Vec<T> {
        (0..n * n)
            .map(|idx| {
                let diag = if idx % (n + 1) == 0 { c0 } else { T::zero() };
                diag + c2 * a2[idx] + c4 * a4[idx] + c6 * a6[idx]
            })
            .collect()
    };
    let plus = |x: Vec<T>, y: &[T]| -> Vec<T> { x.iter().zip(y).map(|(&p, &q)| p + q).collect() };
    let zero = T::zero();
    let u_inner = plus(
        square_matmul(&a6, &even(zero, b[9], b[11], b[13]), n),
        &even(b[1], b[3], b[5], b[7]),
    );
    let u = square_matmul(&a, &u_inner, n);
    let v = plus(
        square_matmul(&a6, &even(zero, b[8], b[10], b[12]), n),
        &even(b[0], b[2], b[4], b[6]),
    );
    let mut x: Vec<T> = v.iter().zip(&u).map(|(&v, &u)| v + u).collect();
    let denominator: Vec<T> = v.iter().zip(&u).map(|(&v, &u)| v - u).collect();
    // |A / 2^s|_1 <= θ13 keeps q13 well conditioned (Higham 2005, section 2).
    LuFactors::new(&denominator, n).solve_in_place(&mut x, n);
    for _ in 0..s {
        x = square_matmul(&x, &x, n);
    }
    x
}
