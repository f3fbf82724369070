//! Elementwise functions of one tensor, and the ops with scalars.

use super::kinds::UnaryOp;
use crate::autograd::op::Op;
use crate::{Result, Tensor};

impl Tensor {
    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let storage = self.storage().unary(self.layout(), op)?;
        Ok(Tensor::from_op(
            storage,
            self.shape(),
            || Op::Unary(self.clone(), op),
            &[self],
        ))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    /// `log(1 + x)`, accurate for small `x`.
    pub fn log1p(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log1p)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Square)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    /// `1 / (1 + exp(-x))`, computed without overflow.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))`, stable for large |x|.
    pub fn log_sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::LogSigmoid)
    }
    /// `log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))`, stable for large |x|.
    pub fn softplus(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Softplus)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    /// `x * sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    /// `x^p` elementwise.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }
    /// `x * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    /// `min(max(x, lo), hi)`; the gradient passes where `lo <= x <= hi`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Clamp { lo, hi })
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, -v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0 / v, 0.0)
    }
}

/// The gradient of `x` for `y = op(x)` given the gradient `g` of `y`.
pub(crate) fn backward(x: &Tensor, y: &Tensor, g: &Tensor, op: UnaryOp) -> Result<Tensor> {
    match op {
        UnaryOp::Neg => g.neg(),
        UnaryOp::Exp => g.mul(y),
        UnaryOp::Log => g.div(x),
        UnaryOp::Log1p => g.div(&x.add_scalar(1.0)?),
        UnaryOp::Sqrt => g.div(&y.mul_scalar(2.0)?),
        UnaryOp::Abs => g.mul(&x.gt_scalar(0.0)?.sub(&x.lt_scalar(0.0)?)?),
        UnaryOp::Square => g.mul(&x.mul_scalar(2.0)?),
        UnaryOp::Tanh => g.mul(&y.square()?.affine(-1.0, 1.0)?),
        UnaryOp::Sigmoid => g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?),
        UnaryOp::LogSigmoid => g.mul(&x.neg()?.sigmoid()?),
        UnaryOp::Softplus => g.mul(&x.sigmoid()?),
        UnaryOp::Relu => g.where_positive(x),
        UnaryOp::Silu => {
            let s = x.sigmoid()?;
            // d/dx x s(x) = s (1 + x (1 - s))
            g.mul(&s.mul(&x.mul(&s.affine(-1.0, 1.0)?)?.add_scalar(1.0)?)?)
        }
        UnaryOp::Powf(p) => g.mul(&x.powf(p - 1.0)?.mul_scalar(p)?),
        UnaryOp::Affine { mul, .. } => g.mul_scalar(mul),
        UnaryOp::Clamp { lo, hi } => g.mul(&x.ge_scalar(lo)?.mul(&x.le_scalar(hi)?)?),
    }
}
