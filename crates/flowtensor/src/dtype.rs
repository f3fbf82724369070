//! Element types: f32 and f64, and the trait that lets kernels be generic over them.

use crate::cpu::CpuStorage;
use std::fmt::Debug;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

/// A floating-point element type that tensors can hold.
pub trait Element:
    num_traits::Float + num_traits::FloatConst + Send + Sync + Copy + Debug + Default + 'static
{
    const DTYPE: DType;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Wraps a vector of this type into CPU storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// The storage's data if it holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// `C = A B` (or `C += A B` when `accumulate`) with general strides,
    /// through matrixmultiply's sgemm or dgemm.
    ///
    /// # Safety
    /// The pointers and strides must describe valid m x k, k x n and m x n matrices,
    /// and C must not alias A or B.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
        accumulate: bool,
    );
}

macro_rules! impl_element {
    ($t:ty, $dtype:ident, $gemm:path) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$dtype(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$dtype(v) => Some(v),
                    _ => None,
                }
            }
            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                c: *mut Self,
                rsc: isize,
                csc: isize,
                accumulate: bool,
            ) {
                let beta = if accumulate { 1.0 } else { 0.0 };
                $gemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
            }
        }
    };
}

impl_element!(f32, F32, matrixmultiply::sgemm);
impl_element!(f64, F64, matrixmultiply::dgemm);
