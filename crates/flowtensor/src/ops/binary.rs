//! Elementwise functions of two tensors with numpy broadcasting, comparisons
//! and `where_cond`.

use super::kinds::{BinaryOp, CmpOp};
use crate::autograd::op::Op;
use crate::layout::broadcast_shape;
use crate::storage::same_device;
use crate::{Error, Result, Tensor};

/// Checks that `a` and `b` share a dtype and a device.
pub(crate) fn check_compatible(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    same_device(op, a.device(), b.device())
}

/// Checks that `a` and `b` can meet in one op and broadcasts both to their common shape.
pub(crate) fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    check_compatible(op, a, b)?;
    let shape = broadcast_shape(op, a.shape(), b.shape())?;
    Ok((a.broadcast_as(&shape)?, b.broadcast_as(&shape)?))
}

impl Tensor {
    fn binary(&self, rhs: &Tensor, op: BinaryOp, name: &'static str) -> Result<Tensor> {
        let (a, b) = broadcast_pair(name, self, rhs)?;
        let storage = a
            .storage()
            .binary(a.layout(), &b.storage(), b.layout(), op)?;
        Ok(Tensor::from_op(
            storage,
            a.shape(),
            || Op::Binary(a.clone(), b.clone(), op),
            &[&a, &b],
        ))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add, "add")
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub, "sub")
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul, "mul")
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div, "div")
    }
    /// `self` where `gate > 0`, 0 elsewhere (NaN and infinities included):
    /// the gradient of ReLU, `g.where_positive(x)`, in one pass. The
    /// gradient flows to `self` only (the gate is piecewise constant).
    pub fn where_positive(&self, gate: &Tensor) -> Result<Tensor> {
        self.binary(gate, BinaryOp::WherePositive, "where_positive")
    }

    fn compare(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        let (a, b) = broadcast_pair("compare", self, rhs)?;
        let storage = a.storage().cmp(a.layout(), &b.storage(), b.layout(), op)?;
        Ok(Tensor::from_storage(storage, a.shape()))
    }

    /// Mask (1 where true, 0 elsewhere, in this dtype; not differentiable) of `self == rhs`.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Eq)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ne)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare(rhs, CmpOp::Ge)
    }
    pub fn lt_scalar(&self, v: f64) -> Result<Tensor> {
        self.lt(&self.scalar_like(v)?)
    }
    pub fn le_scalar(&self, v: f64) -> Result<Tensor> {
        self.le(&self.scalar_like(v)?)
    }
    pub fn gt_scalar(&self, v: f64) -> Result<Tensor> {
        self.gt(&self.scalar_like(v)?)
    }
    pub fn ge_scalar(&self, v: f64) -> Result<Tensor> {
        self.ge(&self.scalar_like(v)?)
    }

    /// `on_true` where this mask is non-zero, `on_false` elsewhere; all three broadcast.
    /// Gradients flow to `on_true` and `on_false`, not to the mask.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let (t, f) = broadcast_pair("where_cond", on_true, on_false)?;
        let (m, t) = broadcast_pair("where_cond", self, &t)?;
        let f = f.broadcast_as(t.shape())?;
        let storage = m.storage().where_cond(
            m.layout(),
            (&t.storage(), t.layout()),
            (&f.storage(), f.layout()),
        )?;
        Ok(Tensor::from_op(
            storage,
            t.shape(),
            || Op::Where(m.detach(), t.clone(), f.clone()),
            &[&t, &f],
        ))
    }
}

/// Gradients of `a` and `b` for `y = a op b` (same shapes) given the gradient `g` of `y`.
pub(crate) fn backward(
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    g: &Tensor,
    op: BinaryOp,
    [need_a, need_b]: [bool; 2],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let when = |need: bool, f: &dyn Fn() -> Result<Tensor>| need.then(f).transpose();
    Ok(match op {
        BinaryOp::Add => (
            when(need_a, &|| Ok(g.clone()))?,
            when(need_b, &|| Ok(g.clone()))?,
        ),
        BinaryOp::Sub => (when(need_a, &|| Ok(g.clone()))?, when(need_b, &|| g.neg())?),
        BinaryOp::Mul => (when(need_a, &|| g.mul(b))?, when(need_b, &|| g.mul(a))?),
        BinaryOp::Div => {
            let ga = g.div(b)?;
            let gb = when(need_b, &|| ga.mul(y)?.neg())?;
            (need_a.then_some(ga), gb)
        }
        BinaryOp::WherePositive => (
            when(need_a, &|| g.where_positive(b))?,
            when(need_b, &|| g.zeros_like())?,
        ),
    })
}

/// Gradients of the two branches of `where_cond` given the gradient `g` of its output.
pub(crate) fn where_backward(mask: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    let zero = g.scalar_like(0.0)?;
    Ok((mask.where_cond(g, &zero)?, mask.where_cond(&zero, g)?))
}
