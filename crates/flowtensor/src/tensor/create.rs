//! Creating tensors and reading their data back.

use super::Tensor;
use crate::cpu::CpuStorage;
use crate::storage::Storage;
use crate::{DType, Device, Element, Error, Result};

impl Tensor {
    /// A tensor of `shape` holding `data` in row-major order.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::shape(
                "from_vec",
                &[shape],
                format!("{} elements given for {n} places", data.len()),
            ));
        }
        let storage = Storage::from_host(T::into_storage(data), device)?;
        Ok(Tensor::from_storage(storage, shape))
    }

    /// A tensor of `shape` copied from `data`.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T, device: Device) -> Result<Tensor> {
        Tensor::from_vec(vec![value], &[], device)
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n = shape.iter().product();
        match dtype {
            DType::F32 => Tensor::from_vec(vec![value as f32; n], shape, device),
            DType::F64 => Tensor::from_vec(vec![value; n], shape, device),
        }
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let storage = Storage::zeros(shape.iter().product(), dtype, device)?;
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Zeros of `shape` as a broadcast view of one stored zero (all strides
    /// zero), for operands that are only read, such as the zero blocks
    /// concatenated around a gradient.
    pub(crate) fn zeros_view(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::zeros(&vec![1; shape.len()], dtype, device)?.broadcast_as(shape)
    }

    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    /// The n x n identity matrix.
    pub fn eye(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        let mut v = vec![0.0f64; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        match dtype {
            DType::F32 => {
                Tensor::from_vec(v.into_iter().map(|x| x as f32).collect(), &[n, n], device)
            }
            DType::F64 => Tensor::from_vec(v, &[n, n], device),
        }
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }

    /// A rank-0 tensor of `value` with this tensor's dtype and device.
    pub(crate) fn scalar_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, &[], self.dtype(), self.device())
    }

    /// The elements in row-major order, as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::WrongDType {
                op: "to_vec",
                actual: self.dtype(),
                requested: T::DTYPE,
            });
        }
        let cpu = self.storage().to_host(self.layout())?;
        Ok(T::slice(&cpu).map(<[T]>::to_vec).unwrap_or_default())
    }

    /// The elements in row-major order, converted to f64.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match self.storage().to_host(self.layout())? {
            CpuStorage::F64(v) => Ok(v),
            CpuStorage::F32(v) => Ok(v.into_iter().map(|x| x as f64).collect()),
        }
    }

    /// The single element of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                &[self.shape()],
                "the tensor does not hold exactly one element",
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Overwrites this tensor's elements with `src`'s, in place: every view
    /// sharing the storage sees the change. For optimizers updating parameters.
    pub fn set_data(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() || src.dtype() != self.dtype() {
            return Err(Error::shape(
                "set_data",
                &[self.shape(), src.shape()],
                format!(
                    "target {:?} and source {:?} must agree in shape and dtype",
                    self.dtype(),
                    src.dtype()
                ),
            ));
        }
        let Some(range) = self.layout().contiguous_range() else {
            return Err(Error::invalid("set_data", "the target must be contiguous"));
        };
        // Copy first when the source reads the same storage, to avoid aliasing the lock.
        let src = if src.shares_storage(self) {
            src.copy()?
        } else {
            src.clone()
        };
        let src_storage = src.storage();
        self.storage_mut()
            .write_range(range, &src_storage, src.layout())
    }

    /// A contiguous copy with its own storage and no history.
    pub fn copy(&self) -> Result<Tensor> {
        let storage = self.storage().copy_strided(self.layout())?;
        Ok(Tensor::from_storage(storage, self.shape()))
    }
}
