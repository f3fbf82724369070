//! [`ComplexTensor`]: complex data as a real tensor with a trailing (re, im)
//! dimension, and complex arithmetic built from differentiable real ops.

use crate::{DType, Device, Error, Result, Tensor};

/// A complex tensor stored as a real tensor whose last dimension has size 2
/// holding (re, im), like `torch.view_as_real`.
///
/// Its complex shape is the real shape without that trailing 2. A contiguous
/// tensor has the row-major layout of an array of `Complex<T>`. Every method
/// is a composition of real tensor ops (views, elementwise ops, matmul), so
/// it is differentiable: the gradient of a real loss with respect to the
/// underlying real tensor is `(dL/dRe z, dL/dIm z)` in the trailing dimension.
#[derive(Clone, Debug)]
pub struct ComplexTensor(Tensor);

impl ComplexTensor {
    /// Wraps a real tensor of shape `(..., 2)` (re, im) without copying.
    /// Errors when the tensor has no trailing dimension of size 2.
    pub fn new(x: Tensor) -> Result<ComplexTensor> {
        if x.shape().last() != Some(&2) {
            return Err(Error::shape(
                "ComplexTensor::new",
                &[x.shape()],
                "the last dimension must have size 2 (re, im)",
            ));
        }
        Ok(ComplexTensor(x))
    }

    /// `re + i im` from two real tensors of one shape and dtype.
    pub fn from_parts(re: &Tensor, im: &Tensor) -> Result<ComplexTensor> {
        if re.shape() != im.shape() {
            return Err(Error::shape(
                "ComplexTensor::from_parts",
                &[re.shape(), im.shape()],
                "the real and imaginary parts must have one shape",
            ));
        }
        Ok(ComplexTensor(Tensor::stack(&[re, im], re.rank())?))
    }

    /// `x + 0 i`.
    pub fn from_real(x: &Tensor) -> Result<ComplexTensor> {
        // a broadcast zero: nothing to read
        let zeros = Tensor::zeros(&[], x.dtype(), x.device())?.broadcast_as(x.shape())?;
        ComplexTensor::from_parts(x, &zeros)
    }

    /// The underlying real tensor of shape `(..., 2)`.
    pub fn as_tensor(&self) -> &Tensor {
        &self.0
    }

    /// The underlying real tensor of shape `(..., 2)`.
    pub fn into_tensor(self) -> Tensor {
        self.0
    }

    /// The complex shape: the real shape without the trailing 2.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape()[..self.last()]
    }

    /// The number of complex dimensions.
    pub fn rank(&self) -> usize {
        self.last()
    }

    /// The element type of the real and imaginary parts.
    pub fn dtype(&self) -> DType {
        self.0.dtype()
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.0.device()
    }

    /// The real part, of the complex shape (a copy).
    pub fn re(&self) -> Result<Tensor> {
        self.0.narrow(self.last(), 0, 1)?.squeeze(self.last())
    }

    /// The imaginary part, of the complex shape (a copy).
    pub fn im(&self) -> Result<Tensor> {
        self.0.narrow(self.last(), 1, 1)?.squeeze(self.last())
    }

    /// The complex conjugate `re - i im`.
    pub fn conj(&self) -> Result<ComplexTensor> {
        let signs = Tensor::from_vec(vec![1.0f64, -1.0], &[2], Device::Cpu)?
            .to_dtype(self.dtype())?
            .to_device(self.device())?;
        Ok(ComplexTensor(self.0.mul(&signs)?))
    }

    /// `self + rhs`, with numpy broadcasting of the complex shapes.
    pub fn add(&self, rhs: &ComplexTensor) -> Result<ComplexTensor> {
        Ok(ComplexTensor(self.0.add(&rhs.0)?))
    }

    /// `self - rhs`, with numpy broadcasting of the complex shapes.
    pub fn sub(&self, rhs: &ComplexTensor) -> Result<ComplexTensor> {
        Ok(ComplexTensor(self.0.sub(&rhs.0)?))
    }

    /// The elementwise product `(a + bi)(c + di) = (ac - bd) + (ad + bc) i`,
    /// with numpy broadcasting of the complex shapes.
    pub fn mul(&self, rhs: &ComplexTensor) -> Result<ComplexTensor> {
        let (a, b) = self.parts_keepdim()?;
        let (c, d) = rhs.parts_keepdim()?;
        let re = a.mul(&c)?.sub(&b.mul(&d)?)?;
        let im = a.mul(&d)?.add(&b.mul(&c)?)?;
        let last = re.rank() - 1;
        Ok(ComplexTensor(Tensor::cat(&[&re, &im], last)?))
    }

    /// Every element times the real number `s`.
    pub fn scale(&self, s: f64) -> Result<ComplexTensor> {
        Ok(ComplexTensor(self.0.mul_scalar(s)?))
    }

    /// The complex matrix product `(..., m, k) @ (..., k, n)` with batch
    /// broadcasting: `(Ar + i Ai)(Br + i Bi) = (Ar Br - Ai Bi) + i (Ar Bi + Ai Br)`,
    /// four real matmuls on strided views (no copies of the operands).
    pub fn matmul(&self, rhs: &ComplexTensor) -> Result<ComplexTensor> {
        if self.rank() < 2 || rhs.rank() < 2 {
            return Err(Error::shape(
                "ComplexTensor::matmul",
                &[self.shape(), rhs.shape()],
                "both operands need at least 2 complex dimensions",
            ));
        }
        let (ar, ai) = self.planes()?;
        let (br, bi) = rhs.planes()?;
        let re = ar.matmul(&br)?.sub(&ai.matmul(&bi)?)?;
        let im = ar.matmul(&bi)?.add(&ai.matmul(&br)?)?;
        ComplexTensor::from_planes(&re, &im)
    }

    /// `|z|^2 = re^2 + im^2` elementwise, a real tensor of the complex shape.
    pub fn abs_squared(&self) -> Result<Tensor> {
        self.0.square()?.sum(&[self.last()], false)
    }

    /// The index of the trailing (re, im) dimension.
    fn last(&self) -> usize {
        self.0.rank() - 1
    }

    /// The real and imaginary parts as views of shape `(..., 1)`.
    fn parts_keepdim(&self) -> Result<(Tensor, Tensor)> {
        let last = self.last();
        Ok((self.0.narrow(last, 0, 1)?, self.0.narrow(last, 1, 1)?))
    }

    /// The real and imaginary parts as views of shape `(1, ...)` (the
    /// (re, im) dimension moved to the front and narrowed). Real ops that
    /// broadcast keep that leading size-1 dimension in front of the result.
    pub(super) fn planes(&self) -> Result<(Tensor, Tensor)> {
        let last = self.last();
        let order: Vec<usize> = std::iter::once(last).chain(0..last).collect();
        let moved = self.0.permute(&order)?;
        Ok((moved.narrow(0, 0, 1)?, moved.narrow(0, 1, 1)?))
    }

    /// The complex tensor with real part `re` and imaginary part `im`, both of
    /// shape `(1, ...)` as [`ComplexTensor::planes`] gives them (a view).
    pub(super) fn from_planes(re: &Tensor, im: &Tensor) -> Result<ComplexTensor> {
        let stacked = Tensor::cat(&[re, im], 0)?;
        let order: Vec<usize> = (1..stacked.rank()).chain(std::iter::once(0)).collect();
        Ok(ComplexTensor(stacked.permute(&order)?))
    }
}
