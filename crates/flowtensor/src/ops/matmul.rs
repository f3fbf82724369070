//! Matrix products with batch broadcasting.

use crate::autograd::op::Op;
use crate::layout::broadcast_shape;
use crate::ops::binary::check_compatible;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `self @ rhs` for `(..., m, k) @ (..., k, n)`; batch dimensions broadcast.
    /// Any strides are read directly (transposed operands are not copied).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.product(rhs, None)
    }

    /// `self @ rhs + bias` with `bias` of shape `(n)` added to every row (a
    /// linear layer), the bias added inside the product's kernel on the CPU.
    pub fn matmul_bias(&self, rhs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let n = rhs.shape().last().copied().unwrap_or(0);
        if bias.shape() != [n] {
            return Err(Error::shape(
                "matmul_bias",
                &[self.shape(), rhs.shape(), bias.shape()],
                format!("the bias must have shape [{n}]"),
            ));
        }
        check_compatible("matmul_bias", self, bias)?;
        self.product(rhs, Some(bias))
    }

    fn product(&self, rhs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (sa, sb) = (self.shape(), rhs.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::shape(
                "matmul",
                &[sa, sb],
                "both operands need at least 2 dimensions",
            ));
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return Err(Error::shape(
                "matmul",
                &[sa, sb],
                format!("inner dimensions differ ({k} vs {k2})"),
            ));
        }
        check_compatible("matmul", self, rhs)?;
        let batch = broadcast_shape("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])
            .map_err(|_| Error::shape("matmul", &[sa, sb], "batch dimensions do not broadcast"))?;
        let a = self.broadcast_as(&[batch.as_slice(), &[m, k]].concat())?;
        let b = rhs.broadcast_as(&[batch.as_slice(), &[k, n]].concat())?;
        let shape = [batch.as_slice(), &[m, n]].concat();
        Ok(match bias {
            None => {
                let storage = a
                    .storage()
                    .matmul(a.layout(), &b.storage(), b.layout(), None)?;
                Tensor::from_op(
                    storage,
                    &shape,
                    || Op::Matmul(a.clone(), b.clone()),
                    &[&a, &b],
                )
            }
            Some(c) => {
                let storage = a.storage().matmul(
                    a.layout(),
                    &b.storage(),
                    b.layout(),
                    Some((&c.storage(), c.layout())),
                )?;
                let op = || Op::MatmulBias(a.clone(), b.clone(), c.clone());
                Tensor::from_op(storage, &shape, op, &[&a, &b, c])
            }
        })
    }
}

/// Gradients of `a` and `b` for `y = a @ b` given the gradient `g` of `y`.
pub(crate) fn backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    [need_a, need_b]: [bool; 2],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let r = a.rank();
    let ga = need_a.then(|| g.matmul(&b.transpose(r - 2, r - 1)?));
    let gb = need_b.then(|| a.transpose(r - 2, r - 1)?.matmul(g));
    Ok((ga.transpose()?, gb.transpose()?))
}

/// Gradients of `a`, `b` and `bias` for `y = a @ b + bias`: the product's,
/// and the sum of `g` over every dimension but the last for the bias.
pub(crate) fn bias_backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    [need_a, need_b, need_bias]: [bool; 3],
) -> Result<Vec<Option<Tensor>>> {
    let (ga, gb) = backward(a, b, g, [need_a, need_b])?;
    let leading: Vec<usize> = (0..g.rank() - 1).collect();
    let gbias = need_bias.then(|| g.sum(&leading, false)).transpose()?;
    Ok(vec![ga, gb, gbias])
}
