//! Elementary functions of the CPU's elementwise kernels.
//!
//! f64 keeps the C library's functions. f32 is evaluated in f64 by
//! branch-free polynomials and rounded once to f32, so that a loop over a
//! slice vectorizes (the C library's `expf`, `tanhf` and `log1pf` are scalar
//! calls) while every result stays within one f32 ulp of the exact value:
//! the f64 evaluation is accurate to about 1e-14, far below f32's half ulp
//! (3e-8). Special values follow IEEE: NaN in gives NaN out, `exp` overflows
//! to `inf` and underflows to 0 (through subnormals), `ln(0) = -inf`,
//! `ln(x < 0) = NaN`. No fused multiply-add is used, so the results are the
//! same bits whatever instructions the CPU has.

use super::kernels::{vectorized, Loop};
use std::f64::consts::{LN_2, LOG2_E, SQRT_2};
use std::mem::MaybeUninit;

/// The elementwise functions that [`apply`] runs vectorized.
#[derive(Clone, Copy)]
pub(crate) enum Func {
    Exp,
    Ln,
    Ln1p,
    Tanh,
    Sigmoid,
    Softplus,
    LogSigmoid,
    /// `x sigmoid(x)`.
    Silu,
}

/// `out[i] = func(x[i])`, vectorized.
pub(crate) fn apply<T: Elementary + std::ops::Mul<Output = T>>(
    func: Func,
    out: &mut [MaybeUninit<T>],
    x: &[T],
) {
    vectorized(FuncLoop { func, out, x })
}

/// The loop of [`apply`]: each function's loop is written out, so that the
/// function is inlined into it and the loop vectorizes.
struct FuncLoop<'a, T> {
    func: Func,
    out: &'a mut [MaybeUninit<T>],
    x: &'a [T],
}

impl<T: Elementary + std::ops::Mul<Output = T>> Loop for FuncLoop<'_, T> {
    #[inline(always)]
    fn run(self) {
        let (out, x) = (self.out, self.x);
        macro_rules! each {
            (|$v:ident| $body:expr) => {
                for (o, &$v) in out.iter_mut().zip(x) {
                    o.write($body);
                }
            };
        }
        match self.func {
            Func::Exp => each!(|v| v.exp_()),
            Func::Ln => each!(|v| v.ln_()),
            Func::Ln1p => each!(|v| v.ln_1p_()),
            Func::Tanh => each!(|v| v.tanh_()),
            Func::Sigmoid => each!(|v| v.sigmoid_()),
            Func::Softplus => each!(|v| v.softplus_()),
            Func::LogSigmoid => each!(|v| v.log_sigmoid_()),
            Func::Silu => each!(|v| v * v.sigmoid_()),
        }
    }
}

/// The elementary functions of the unary kernels, per element type.
pub(crate) trait Elementary: Copy {
    fn exp_(self) -> Self;
    fn ln_(self) -> Self;
    fn ln_1p_(self) -> Self;
    fn tanh_(self) -> Self;
    /// `1 / (1 + e^-x)`.
    fn sigmoid_(self) -> Self;
    /// `ln(1 + e^x)`.
    fn softplus_(self) -> Self;
    /// `ln(sigmoid(x)) = -softplus(-x)`.
    fn log_sigmoid_(self) -> Self;
}

impl Elementary for f64 {
    #[inline(always)]
    fn exp_(self) -> f64 {
        self.exp()
    }
    #[inline(always)]
    fn ln_(self) -> f64 {
        self.ln()
    }
    #[inline(always)]
    fn ln_1p_(self) -> f64 {
        self.ln_1p()
    }
    #[inline(always)]
    fn tanh_(self) -> f64 {
        self.tanh()
    }
    #[inline(always)]
    fn sigmoid_(self) -> f64 {
        if self >= 0.0 {
            1.0 / (1.0 + (-self).exp())
        } else {
            let e = self.exp();
            e / (1.0 + e)
        }
    }
    #[inline(always)]
    fn softplus_(self) -> f64 {
        self.max(0.0) + (-self.abs()).exp().ln_1p()
    }
    #[inline(always)]
    fn log_sigmoid_(self) -> f64 {
        self.min(0.0) - (-self.abs()).exp().ln_1p()
    }
}

impl Elementary for f32 {
    #[inline(always)]
    fn exp_(self) -> f32 {
        exp(self as f64) as f32
    }
    #[inline(always)]
    fn ln_(self) -> f32 {
        ln(self as f64) as f32
    }
    #[inline(always)]
    fn ln_1p_(self) -> f32 {
        ln_1p(self as f64) as f32
    }
    #[inline(always)]
    fn tanh_(self) -> f32 {
        tanh(self as f64) as f32
    }
    #[inline(always)]
    fn sigmoid_(self) -> f32 {
        (1.0 / (1.0 + exp(-(self as f64)))) as f32
    }
    #[inline(always)]
    fn softplus_(self) -> f32 {
        let x = self as f64;
        (select(x > 0.0, x, 0.0) + ln_1p(exp(-x.abs()))) as f32
    }
    #[inline(always)]
    fn log_sigmoid_(self) -> f32 {
        let x = self as f64;
        (select(x < 0.0, x, 0.0) - ln_1p(exp(-x.abs()))) as f32
    }
}

/// `if c { a } else { b }`, written so that it compiles to a blend.
#[inline(always)]
fn select(c: bool, a: f64, b: f64) -> f64 {
    if c {
        a
    } else {
        b
    }
}

/// `c[0] + c[1] x + c[2] x^2 + ...` by Horner's rule, unrolled.
#[inline(always)]
fn polynomial<const N: usize>(x: f64, c: &[f64; N]) -> f64 {
    c.iter().rev().fold(0.0, |p, &c| p * x + c)
}

/// `1 / k!` for `k = 0..=11`: `e^r` to `r^11`.
const EXP_TAYLOR: [f64; 12] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
];

/// `1 / (2k + 1)` for `k = 0..=7`: `atanh(s) / s` in powers of `s^2`.
const ATANH_SERIES: [f64; 8] = [
    1.0,
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
    1.0 / 15.0,
];

/// Adding this rounds an f64 below 2^51 in magnitude to an integer, which
/// then sits in the low bits of the sum's mantissa.
const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52

/// `e^x` for f32-range work: inputs are clamped to `[-200, 200]` (beyond
/// which any f32 result is 0 or inf), NaN passes through. `x = n ln2 + r`
/// with `|r| <= ln2 / 2`, `e^r` by its Taylor polynomial to `r^11`
/// (truncation below 6e-15), scaled by `2^n` built in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    let x = select(x < -200.0, -200.0, select(x > 200.0, 200.0, x));
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN_2;
    let p = polynomial(r, &EXP_TAYLOR);
    let scale = ((t.to_bits() as i64 - ROUND.to_bits() as i64 + 1023) << 52) as u64;
    p * f64::from_bits(scale)
}

/// `ln(x)` for `x` a positive normal f64 (every f32 is one), with IEEE
/// special values. `x = m 2^e`, `m` in `[sqrt(1/2), sqrt(2))`,
/// `ln m = 2 atanh(s)` with `s = (m - 1) / (m + 1)`, `|s| <= 0.172`, by its
/// series to `s^15` (truncation below 3e-14 relative).
#[inline(always)]
pub(crate) fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // the biased exponent as an f64, without an integer conversion
    let biased = f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - 4_503_599_627_370_496.0;
    let big = m > SQRT_2;
    let m = select(big, m * 0.5, m);
    let e = select(big, biased - 1022.0, biased - 1023.0);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = polynomial(s2, &ATANH_SERIES);
    let y = e * LN_2 + 2.0 * s * p;
    // NaN and inf in, NaN and inf out; 0 -> -inf; negative -> NaN
    let y = select(x == f64::INFINITY, f64::INFINITY, y);
    let y = select(x == 0.0, f64::NEG_INFINITY, y);
    select(x < 0.0 || x.is_nan(), f64::NAN, y)
}

/// `ln(1 + x)`, exact to f64 rounding near 0: with `u = fl(1 + x)`,
/// `ln(1 + x) = ln(u) x / (u - 1)` (and `x` where `u = 1`).
#[inline(always)]
pub(crate) fn ln_1p(x: f64) -> f64 {
    let u = 1.0 + x;
    let y = select(u == 1.0, x, ln(u) * (x / (u - 1.0)));
    select(x == f64::INFINITY, f64::INFINITY, y)
}

/// `tanh(x) = sign(x) (e - 1) / (e + 1)` with `e = e^(2|x|)` (`|x|` capped
/// at 20, where tanh is 1 to f64 precision), and its Taylor polynomial
/// `x - x^3/3 + 2x^5/15 - 17x^7/315` for `|x| < 0.01`, where `e - 1` would
/// cancel.
#[inline(always)]
pub(crate) fn tanh(x: f64) -> f64 {
    let a = x.abs();
    let e = exp(2.0 * select(a > 20.0, 20.0, a));
    let big = (e - 1.0) / (e + 1.0);
    let a2 = a * a;
    let small = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))));
    select(a < 0.01, small, big).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::Elementary;

    /// Distance in units in the last place between two f32s of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        assert_eq!(a.is_sign_negative(), b.is_sign_negative(), "{a} vs {b}");
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// f32 inputs spread over the whole range, both signs, plus the edges.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) % 0x7f80_0000))
            .flat_map(|x| [x, -x])
            .collect();
        v.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            88.72,
            88.73,
            -87.33,
            -103.9,
            -104.0,
            1.0,
            -1.0,
            0.01,
            -0.01,
        ]);
        v
    }

    /// Each f32 function against the f64 C library's value rounded to f32.
    fn check(name: &str, f: fn(f32) -> f32, exact: fn(f64) -> f64, max_ulps: u32) {
        let mut worst = (0, 0.0f32);
        for x in inputs() {
            let want = exact(x as f64) as f32;
            let got = f(x);
            assert_eq!(
                want.is_nan(),
                got.is_nan(),
                "{name}({x:e}) = {got:e}, want {want:e}"
            );
            let d = ulps(got, want);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(
            worst.0 <= max_ulps,
            "{name}: {} ulps at x = {:e}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn f32_functions_are_within_one_ulp() {
        check("exp", f32::exp_, f64::exp, 1);
        check("tanh", f32::tanh_, f64::tanh, 1);
        check("ln_1p", f32::ln_1p_, f64::ln_1p, 1);
        check("sigmoid", f32::sigmoid_, |x| 1.0 / (1.0 + (-x).exp()), 1);
        check("softplus", f32::softplus_, f64::softplus_, 1);
        check("log_sigmoid", f32::log_sigmoid_, f64::log_sigmoid_, 1);
    }

    #[test]
    fn f32_ln_is_within_one_ulp_with_ieee_special_values() {
        check("ln", f32::ln_, f64::ln, 1);
        assert_eq!(0.0f32.ln_(), f32::NEG_INFINITY);
        assert_eq!((-0.0f32).ln_(), f32::NEG_INFINITY);
        assert!((-1.0f32).ln_().is_nan());
        assert_eq!(f32::INFINITY.ln_(), f32::INFINITY);
        assert_eq!((-1.0f32).ln_1p_(), f32::NEG_INFINITY);
        assert!((-2.0f32).ln_1p_().is_nan());
    }

    #[test]
    fn f32_exp_overflows_and_underflows_like_ieee() {
        assert_eq!(f32::INFINITY.exp_(), f32::INFINITY);
        assert_eq!(f32::NEG_INFINITY.exp_(), 0.0);
        assert_eq!(89.0f32.exp_(), f32::INFINITY);
        assert!(f32::NAN.exp_().is_nan());
        assert!(f32::NAN.tanh_().is_nan());
        assert_eq!(f32::INFINITY.tanh_(), 1.0);
        assert_eq!(f32::NEG_INFINITY.tanh_(), -1.0);
        assert_eq!(f32::INFINITY.sigmoid_(), 1.0);
        assert_eq!(f32::NEG_INFINITY.sigmoid_(), 0.0);
        assert_eq!((-0.0f32).tanh_().to_bits(), (-0.0f32).to_bits());
    }
}
