//! Reverse-mode traversal: topological order, one backward rule per op, and
//! accumulation of leaf gradients.

use super::op::Op;
use crate::conv;
use crate::ops::{binary, copy, gather, matmul, reduce, unary, view};
use crate::profile::{self, Phase};
use crate::{no_grad, Error, Result, Tensor, TensorId};
use std::collections::{HashMap, HashSet};

/// Gradients of the leaves of one backward pass, by tensor.
#[derive(Default)]
pub struct GradStore(HashMap<TensorId, (Tensor, Tensor)>);

impl GradStore {
    /// The gradient of `t`, if `t` is a leaf that the output depends on.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id()).map(|(_, g)| g)
    }

    /// The gradient of `t`, removed from the store.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id()).map(|(_, g)| g)
    }

    /// Every (leaf, gradient) pair.
    pub fn into_pairs(self) -> impl Iterator<Item = (Tensor, Tensor)> {
        self.0.into_values()
    }

    fn accumulate(&mut self, t: &Tensor, g: Tensor) -> Result<()> {
        if g.shape() != t.shape() {
            return Err(Error::Autograd(format!(
                "a backward rule produced a gradient of shape {:?} for an input of shape {:?}",
                g.shape(),
                t.shape()
            )));
        }
        let summed = match self.0.remove(&t.id()) {
            Some((_, prev)) => prev.add(&g)?,
            None => g,
        };
        self.0.insert(t.id(), (t.clone(), summed));
        Ok(())
    }
}

/// Nodes that `root` depends on through tracked ops, outputs before inputs.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, children already pushed).
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !seen.insert(node.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = node
            .op()
            .map(|op| {
                op.inputs()
                    .into_iter()
                    .filter(|t| t.requires_grad())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        stack.push((node, true));
        for input in inputs {
            if !seen.contains(&input.id()) {
                stack.push((input, false));
            }
        }
    }
    order.reverse();
    order
}

/// Gradients of `op`'s inputs (aligned with `op.inputs()`) from the gradient
/// of its output. Two-input rules skip the gradient of an input that does
/// not require one (`None` in its place).
fn backward_rule(op: &Op, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let needs = |a: &Tensor, b: &Tensor| [a.requires_grad(), b.requires_grad()];
    Ok(match op {
        Op::Unary(x, kind) => vec![Some(unary::backward(x, out, g, *kind)?)],
        Op::Binary(a, b, kind) => {
            let (ga, gb) = binary::backward(a, b, out, g, *kind, needs(a, b))?;
            vec![ga, gb]
        }
        Op::Where(mask, _, _) => {
            let (gt, gf) = binary::where_backward(mask, g)?;
            vec![Some(gt), Some(gf)]
        }
        Op::Reduce(x, kind, dims) => vec![Some(reduce::backward(x, out, g, *kind, dims)?)],
        Op::Matmul(a, b) => {
            let (ga, gb) = matmul::backward(a, b, g, needs(a, b))?;
            vec![ga, gb]
        }
        Op::MatmulBias(a, b, c) => {
            let need = [a.requires_grad(), b.requires_grad(), c.requires_grad()];
            matmul::bias_backward(a, b, g, need)?
        }
        Op::Conv2d {
            x,
            w,
            bias,
            relu,
            geom,
        } => conv::conv_backward(x, w, bias.as_ref(), *relu, out, g, geom)?,
        Op::ConvTranspose2d(y, w, geom) => {
            let (gy, gw) = conv::conv_transpose_backward(y, w, g, geom, needs(y, w))?;
            vec![gy, gw]
        }
        Op::Reshape(x) => vec![Some(g.reshape(x.shape())?)],
        Op::Permute(_, dims) => vec![Some(view::permute_backward(g, dims)?)],
        Op::Narrow(x, dim, start) => vec![Some(view::narrow_backward(x, g, *dim, *start)?)],
        Op::Broadcast(x) => vec![Some(view::broadcast_backward(x, g)?)],
        Op::Flip(_, dims) => vec![Some(g.flip(dims)?)],
        Op::Contiguous(_) => vec![Some(g.clone())],
        Op::Cat(xs, dim) => copy::cat_backward(xs, g, *dim)?
            .into_iter()
            .map(Some)
            .collect(),
        Op::IndexSelect(x, dim, idx) => vec![Some(copy::index_select_backward(x, g, *dim, idx)?)],
        Op::Cumsum(_, dim) => vec![Some(gather::cumsum_backward(g, *dim)?)],
        Op::TakeAlongDim(x, index, dim) => {
            vec![Some(gather::take_along_dim_backward(x, g, index, *dim)?)]
        }
        Op::Cast(x) => vec![Some(g.to_dtype(x.dtype())?)],
        Op::ToDevice(x) => vec![Some(g.to_device(x.device())?)],
        Op::Custom(custom, xs) => {
            let grads = custom.backward(xs, out, g)?;
            if grads.len() != xs.len() {
                return Err(Error::Autograd(format!(
                    "custom op {} returned {} gradients for {} inputs",
                    custom.name(),
                    grads.len(),
                    xs.len()
                )));
            }
            grads
        }
    })
}

/// Runs backward from `root` (seeded with ones) and returns the leaf gradients.
pub(crate) fn backward(root: &Tensor) -> Result<GradStore> {
    let outer = profile::current_scope();
    profile::with_scope(outer, Phase::Backward, || no_grad(|| backward_pass(root)))
}

fn backward_pass(root: &Tensor) -> Result<GradStore> {
    let mut pending = GradStore::default();
    let mut leaves = GradStore::default();
    if !root.requires_grad() {
        return Ok(leaves);
    }
    pending.accumulate(root, root.ones_like()?)?;
    for node in topological_order(root) {
        let Some(g) = pending.remove(&node) else {
            continue;
        };
        match node.op() {
            None => leaves.accumulate(&node, g)?,
            Some(op) => {
                // a node carries a scope only when it was recorded while profiling
                let rule = || backward_rule(op, &node, &g);
                let grads = match node.profile_scope() {
                    Some(scope) => profile::with_scope(scope.clone(), Phase::Backward, rule),
                    None => rule(),
                }?;
                drop(g);
                for (input, grad) in op.inputs().into_iter().zip(grads) {
                    if let (true, Some(grad)) = (input.requires_grad(), grad) {
                        pending.accumulate(input, grad)?;
                    }
                }
            }
        }
    }
    Ok(leaves)
}
