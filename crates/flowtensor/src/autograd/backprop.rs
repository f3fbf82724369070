//! Reverse-mode traversal: topological order, one backward rule per op, and
//! accumulation of leaf gradients.

use super::mode::{is_grad_enabled, with_grad_mode};
use super::op::Op;
use crate::conv;
use crate::ops::{binary, copy, gather, matmul, reduce, unary, view};
use crate::profile::{self, Phase};
use crate::{Error, Result, Tensor, TensorId};
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

/// Nodes that `roots` depend on through tracked ops, outputs before inputs.
fn topological_order(roots: &[Tensor]) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, children already pushed).
    let mut stack: Vec<(Tensor, bool)> = roots.iter().rev().map(|r| (r.clone(), false)).collect();
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
/// not need one (`None` in its place): `need` says which inputs the pass
/// delivers gradients to.
fn backward_rule(
    op: &Op,
    out: &Tensor,
    g: &Tensor,
    need: &dyn Fn(&Tensor) -> bool,
) -> Result<Vec<Option<Tensor>>> {
    let needs = |a: &Tensor, b: &Tensor| [need(a), need(b)];
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
        Op::MatmulBias(a, b, c) => matmul::bias_backward(a, b, g, [need(a), need(b), need(c)])?,
        Op::Conv2d {
            x,
            w,
            bias,
            relu,
            geom,
        } => {
            // with ReLU, the gradient flows where the output is positive
            let g = if *relu {
                g.where_positive(out)?
            } else {
                g.clone()
            };
            let wanted = [need(x), need(w), bias.as_ref().is_some_and(need)];
            conv::conv_backward(x, w, bias.as_ref(), &g, geom, wanted)?
        }
        Op::ConvTranspose2d(y, w, geom) => {
            let (gy, gw) = conv::conv_transpose_backward(y, w, g, geom, needs(y, w))?;
            vec![gy, gw]
        }
        Op::ConvWeightGrad(x, dy, geom) => {
            let (gx, gdy) = conv::conv_weight_grad_backward(x, dy, g, geom, needs(x, dy))?;
            vec![gx, gdy]
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
        Op::IndexAdd(_, dim, idx) => vec![Some(g.index_select(*dim, idx)?)],
        Op::ScatterAdd(_, index, dim) => vec![Some(g.take_along_dim(index, *dim)?)],
        Op::Cumsum(_, dim) => vec![Some(gather::cumsum_backward(g, *dim)?)],
        Op::TakeAlongDim(x, index, dim) => {
            vec![Some(gather::take_along_dim_backward(x, g, index, *dim)?)]
        }
        Op::Cast(x) => vec![Some(g.to_dtype(x.dtype())?)],
        Op::ToDevice(x) => vec![Some(g.to_device(x.device())?)],
        Op::Custom(custom, xs) => {
            if is_grad_enabled() && !custom.backward_is_differentiable() {
                return Err(Error::Autograd(format!(
                    "custom op {} has no recorded backward, so a gradient through it cannot be \
                     differentiated again (grad with create_graph)",
                    custom.name()
                )));
            }
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

/// Where a backward pass delivers gradients.
enum Targets {
    /// Every leaf the roots depend on ([`Tensor::backward`]).
    Leaves,
    /// These tensors, leaves or not ([`grad`]); the pass visits only the
    /// nodes through which a root depends on one of them.
    Tensors(HashSet<TensorId>),
}

/// Runs backward from `root` (seeded with ones) and returns the leaf gradients.
pub(crate) fn backward(root: &Tensor) -> Result<GradStore> {
    let seed = root.ones_like()?;
    run_pass(vec![(root.clone(), seed)], &Targets::Leaves, false)
}

/// Vector-Jacobian products: the gradient of `sum_i <outputs[i],
/// grad_outputs[i]>` with respect to each of `inputs` (leaves or not), or
/// `None` for an input the outputs do not depend on. An empty
/// `grad_outputs` means ones (the gradient of the outputs' sum).
///
/// With `create_graph` the backward rules are recorded like any other ops,
/// so the gradients can be differentiated again (Hessian-vector products,
/// the log-det estimators of residual flows); without it they are plain
/// values, as from [`Tensor::backward`]. No leaf's `grad` slot is touched.
/// Custom ops take part in a recorded pass when their backward is
/// ([`crate::CustomOp::backward_is_differentiable`]); else the pass fails.
pub fn grad(
    outputs: &[Tensor],
    inputs: &[Tensor],
    grad_outputs: &[Tensor],
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    if !grad_outputs.is_empty() && grad_outputs.len() != outputs.len() {
        return Err(Error::Autograd(format!(
            "grad: {} grad_outputs for {} outputs",
            grad_outputs.len(),
            outputs.len()
        )));
    }
    if let Some(i) = inputs.iter().position(|t| !t.requires_grad()) {
        return Err(Error::Autograd(format!(
            "grad: input {i} (shape {:?}) does not require grad",
            inputs[i].shape()
        )));
    }
    let mut seeds = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let seed = match grad_outputs.get(i) {
            Some(g) if g.shape() != out.shape() => {
                return Err(Error::Autograd(format!(
                    "grad: grad_outputs[{i}] has shape {:?}, output {i} has shape {:?}",
                    g.shape(),
                    out.shape()
                )))
            }
            Some(g) => g.clone(),
            None => out.ones_like()?,
        };
        if out.requires_grad() {
            seeds.push((out.clone(), seed));
        }
    }
    let targets = Targets::Tensors(inputs.iter().map(|t| t.id()).collect());
    let store = run_pass(seeds, &targets, create_graph)?;
    Ok(inputs.iter().map(|t| store.get(t).cloned()).collect())
}

fn run_pass(
    seeds: Vec<(Tensor, Tensor)>,
    targets: &Targets,
    create_graph: bool,
) -> Result<GradStore> {
    let outer = profile::current_scope();
    profile::with_scope(outer, Phase::Backward, || {
        with_grad_mode(create_graph, || backward_pass(seeds, targets))
    })
}

fn backward_pass(seeds: Vec<(Tensor, Tensor)>, targets: &Targets) -> Result<GradStore> {
    let mut pending = GradStore::default();
    let mut found = GradStore::default();
    let roots: Vec<Tensor> = seeds.iter().map(|(r, _)| r.clone()).collect();
    for (root, seed) in seeds {
        if root.requires_grad() {
            pending.accumulate(&root, seed)?;
        }
    }
    let order = topological_order(&roots);
    let relevant = match targets {
        Targets::Leaves => None,
        Targets::Tensors(wanted) => Some(leading_to(&order, wanted)),
    };
    for node in order {
        if relevant.as_ref().is_some_and(|r| !r.contains(&node.id())) {
            continue;
        }
        let Some(g) = pending.remove(&node) else {
            continue;
        };
        let wanted = match targets {
            Targets::Leaves => node.op().is_none(),
            Targets::Tensors(wanted) => wanted.contains(&node.id()),
        };
        if wanted {
            found.accumulate(&node, g.clone())?;
        }
        let Some(op) = node.op() else {
            continue;
        };
        let need = |t: &Tensor| match &relevant {
            Some(r) => r.contains(&t.id()),
            None => t.requires_grad(),
        };
        // a requested tensor's own inputs may lead nowhere requested
        if !op.inputs().into_iter().any(need) {
            continue;
        }
        // a node carries a scope only when it was recorded while profiling
        let rule = || backward_rule(op, &node, &g, &need);
        let grads = match node.profile_scope() {
            Some(scope) => profile::with_scope(scope.clone(), Phase::Backward, rule),
            None => rule(),
        }?;
        drop(g);
        for (input, grad) in op.inputs().into_iter().zip(grads) {
            if let (true, Some(grad)) = (need(input), grad) {
                pending.accumulate(input, grad)?;
            }
        }
    }
    Ok(found)
}

/// The nodes of `order` (outputs before inputs) that are in `wanted` or
/// depend on one of them.
fn leading_to(order: &[Tensor], wanted: &HashSet<TensorId>) -> HashSet<TensorId> {
    let mut leads = HashSet::new();
    for node in order.iter().rev() {
        let feeds = wanted.contains(&node.id())
            || node
                .op()
                .is_some_and(|op| op.inputs().iter().any(|t| leads.contains(&t.id())));
        if feeds {
            leads.insert(node.id());
        }
    }
    leads
}
