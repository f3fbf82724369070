//! Minimal SIMD vectors for the hand-written CPU kernels: unaligned (and
//! masked) load, store, splat and fused multiply-add, over AVX-512 and AVX2
//! registers, with a one-lane scalar fallback. Kernels are written once,
//! generic over [`Vector`], and compiled per instruction set inside
//! `#[target_feature]` functions chosen at run time ([`isa`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A register of `LANES` elements of `T`.
///
/// # Safety
/// The methods are `unsafe` because they use CPU instructions the caller must
/// have checked for, and raw pointers that must cover `LANES` elements.
pub(crate) trait Vector<T>: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: T) -> Self;
    unsafe fn load(p: *const T) -> Self;
    /// The first `count` (`1..=LANES`) elements at `p`, zeros after them;
    /// nothing past them is read.
    unsafe fn load_first(p: *const T, count: usize) -> Self;
    unsafe fn store(self, p: *mut T);
    /// `self + a * b`.
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    /// The lanewise maximum; where `self` is NaN, `b`.
    unsafe fn max(self, b: Self) -> Self;
}

/// One element, with a separate multiply and add (no FMA needed).
#[derive(Clone, Copy)]
pub(crate) struct Scalar<T>(T);

impl<T: crate::Element> Vector<T> for Scalar<T> {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Scalar(T::zero())
    }
    #[inline(always)]
    unsafe fn splat(x: T) -> Self {
        Scalar(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        Scalar(*p)
    }
    #[inline(always)]
    unsafe fn load_first(p: *const T, _count: usize) -> Self {
        Scalar(*p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        *p = self.0
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Scalar(self.0 + a.0 * b.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Scalar(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Scalar(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        Scalar(if self.0 > b.0 { self.0 } else { b.0 })
    }
}

macro_rules! x86_vector {
    ($name:ident, $t:ty, $reg:ty, $lanes:expr, $zero:ident, $splat:ident, $load:ident, $load_first:expr, $store:ident, $fma:ident, $add:ident, $sub:ident, $max:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[derive(Clone, Copy)]
        pub(crate) struct $name($reg);

        #[cfg(target_arch = "x86_64")]
        impl Vector<$t> for $name {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn zero() -> Self {
                $name($zero())
            }
            #[inline(always)]
            unsafe fn splat(x: $t) -> Self {
                $name($splat(x))
            }
            #[inline(always)]
            unsafe fn load(p: *const $t) -> Self {
                $name($load(p))
            }
            #[inline(always)]
            unsafe fn load_first(p: *const $t, count: usize) -> Self {
                $name($load_first(p, count))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $t) {
                $store(p, self.0)
            }
            #[inline(always)]
            unsafe fn mul_add(self, a: Self, b: Self) -> Self {
                $name($fma(a.0, b.0, self.0))
            }
            #[inline(always)]
            unsafe fn add(self, b: Self) -> Self {
                $name($add(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn sub(self, b: Self) -> Self {
                $name($sub(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn max(self, b: Self) -> Self {
                $name($max(self.0, b.0))
            }
        }
    };
}

x86_vector!(
    F32x16,
    f32,
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    |p, n: usize| _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p),
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_max_ps
);
x86_vector!(
    F64x8,
    f64,
    __m512d,
    8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    |p, n: usize| _mm512_maskz_loadu_pd(((1u32 << n) - 1) as __mmask8, p),
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_sub_pd,
    _mm512_max_pd
);
x86_vector!(
    F32x8,
    f32,
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    |p, n: usize| _mm256_maskload_ps(
        p,
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
        )
    ),
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_max_ps
);
x86_vector!(
    F64x4,
    f64,
    __m256d,
    4,
    _mm256_setzero_pd,
    _mm256_set1_pd,
    _mm256_loadu_pd,
    |p, n: usize| _mm256_maskload_pd(
        p,
        _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), _mm256_setr_epi64x(0, 1, 2, 3))
    ),
    _mm256_storeu_pd,
    _mm256_fmadd_pd,
    _mm256_add_pd,
    _mm256_sub_pd,
    _mm256_max_pd
);

/// A register with loads under a lane mask: lanes whose bit is clear are
/// zero and their memory is not read (AVX-512 masked loads; AVX2's
/// `vmaskmov`, which also suppresses faults of masked lanes).
///
/// # Safety
/// As [`Vector`]; the set lanes at `p` must be readable.
pub(crate) trait MaskedLoad<T>: Vector<T> {
    unsafe fn load_masked(p: *const T, mask: u32) -> Self;
}

impl<T: crate::Element> MaskedLoad<T> for Scalar<T> {
    #[inline(always)]
    unsafe fn load_masked(p: *const T, mask: u32) -> Self {
        Scalar(if mask & 1 != 0 { *p } else { T::zero() })
    }
}

#[cfg(target_arch = "x86_64")]
impl MaskedLoad<f32> for F32x8 {
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: u32) -> Self {
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let set = _mm256_and_si256(_mm256_set1_epi32(mask as i32), bits);
        F32x8(_mm256_maskload_ps(p, _mm256_cmpeq_epi32(set, bits)))
    }
}

#[cfg(target_arch = "x86_64")]
impl MaskedLoad<f64> for F64x4 {
    #[inline(always)]
    unsafe fn load_masked(p: *const f64, mask: u32) -> Self {
        let bits = _mm256_setr_epi64x(1, 2, 4, 8);
        let set = _mm256_and_si256(_mm256_set1_epi64x(i64::from(mask)), bits);
        F64x4(_mm256_maskload_pd(p, _mm256_cmpeq_epi64(set, bits)))
    }
}

#[cfg(target_arch = "x86_64")]
impl MaskedLoad<f32> for F32x16 {
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: u32) -> Self {
        F32x16(_mm512_maskz_loadu_ps(mask as __mmask16, p))
    }
}

#[cfg(target_arch = "x86_64")]
impl MaskedLoad<f64> for F64x8 {
    #[inline(always)]
    unsafe fn load_masked(p: *const f64, mask: u32) -> Self {
        F64x8(_mm512_maskz_loadu_pd(mask as __mmask8, p))
    }
}

/// The widths, in vectors, of the register tiles that cover `vectors`
/// consecutive vectors with tiles of at most `nt`: whole tiles of `nt`, the
/// rest in one tile, except that a rest of one vector after whole tiles
/// goes with the last of them into two tiles of about half (a one-vector
/// tile loads a weight per multiply-add).
pub(crate) fn tile_widths(vectors: usize, nt: usize) -> impl Iterator<Item = usize> + Clone {
    let nt = nt.max(1);
    let (whole, rest) = (vectors / nt, vectors % nt);
    let (whole, tail) = if rest == 1 && whole >= 1 && nt >= 3 {
        (whole - 1, [nt / 2 + 1, nt.div_ceil(2)])
    } else {
        (whole, [rest, 0])
    };
    std::iter::repeat_n(nt, whole).chain(tail.into_iter().filter(|&w| w > 0))
}

/// The instruction sets the kernels are compiled for.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// The best instruction set this CPU supports, or a lesser one named by
/// `FLOWTENSOR_ISA` (`avx2` or `baseline`; read once), so that every
/// kernel variant can be tested on one machine.
#[cfg(target_arch = "x86_64")]
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        match std::env::var("FLOWTENSOR_ISA").as_deref() {
            Ok("baseline") => Isa::Baseline,
            Ok("avx2") if avx2 => Isa::Avx2,
            _ if avx512 => Isa::Avx512,
            _ if avx2 => Isa::Avx2,
            _ => Isa::Baseline,
        }
    })
}

/// The instruction set the hand-written kernels run with on this CPU:
/// `"avx512f+fma"`, `"avx2+fma"` or `"baseline"` (scalar loops; also on
/// other architectures).
pub fn isa_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        Isa::Avx512 => "avx512f+fma",
        Isa::Avx2 => "avx2+fma",
        Isa::Baseline => "baseline",
    }
    #[cfg(not(target_arch = "x86_64"))]
    "baseline"
}

/// The sum of the first `lanes` elements of `v`.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn horizontal_sum<T: crate::Element, V: Vector<T>>(v: V) -> T {
    let mut lanes = [T::zero(); 64];
    v.store(lanes.as_mut_ptr());
    lanes[..V::LANES].iter().fold(T::zero(), |s, &x| s + x)
}

#[cfg(test)]
mod tests {
    use super::tile_widths;

    #[test]
    fn tile_widths_cover_the_vectors_without_single_vector_tiles() {
        for nt in 1..=4 {
            for vectors in 0..40 {
                let widths: Vec<usize> = tile_widths(vectors, nt).collect();
                assert_eq!(widths.iter().sum::<usize>(), vectors, "{nt} {vectors}");
                assert!(widths.iter().all(|&w| (1..=nt).contains(&w)), "{widths:?}");
                if nt >= 3 && vectors >= 2 {
                    assert!(!widths.contains(&1), "{nt} {vectors}: {widths:?}");
                }
            }
        }
        assert_eq!(tile_widths(13, 4).collect::<Vec<_>>(), [4, 4, 3, 2]);
        assert_eq!(tile_widths(4, 3).collect::<Vec<_>>(), [2, 2]);
    }
}
