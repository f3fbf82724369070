//! Running backward and reading leaf gradients.

use super::Tensor;
use crate::autograd::op::Op;
use crate::{no_grad, CustomOp, Error, GradStore, Result};
use std::sync::Arc;

impl Tensor {
    /// Gradients of this scalar with respect to every leaf it depends on,
    /// returned without touching the leaves' `grad` slots.
    pub fn backward_grads(&self) -> Result<GradStore> {
        if self.elem_count() != 1 {
            return Err(Error::Autograd(format!(
                "backward needs a one-element output, got shape {:?}",
                self.shape()
            )));
        }
        crate::autograd::backward(self)
    }

    /// Backpropagates from this scalar and adds each gradient to its leaf
    /// variable's `grad` (so several calls accumulate).
    pub fn backward(&self) -> Result<()> {
        for (leaf, g) in self.backward_grads()?.into_pairs() {
            let mut slot = leaf.0.grad.lock().unwrap_or_else(|e| e.into_inner());
            let sum = match slot.take() {
                Some(prev) => no_grad(|| prev.add(&g))?,
                None => g,
            };
            *slot = Some(sum);
        }
        Ok(())
    }

    /// The gradient accumulated by [`Tensor::backward`] calls, for leaf variables.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the accumulated gradient with `grad`, which must have this
    /// tensor's shape, dtype and device (a data-parallel run puts the
    /// average over its processes here).
    pub fn set_grad(&self, grad: Tensor) -> Result<()> {
        if grad.shape() != self.shape()
            || grad.dtype() != self.dtype()
            || grad.device() != self.device()
        {
            return Err(Error::shape(
                "set_grad",
                &[self.shape(), grad.shape()],
                format!(
                    "the gradient ({:?} on {:?}) must match the tensor ({:?} on {:?})",
                    grad.dtype(),
                    grad.device(),
                    self.dtype(),
                    self.device()
                ),
            ));
        }
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = Some(grad.detach());
        Ok(())
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Applies a user-defined op: its forward runs without recording, and the
    /// result is recorded as one node whose backward is `op.backward`.
    pub fn apply_custom(op: Arc<dyn CustomOp>, inputs: &[Tensor]) -> Result<Tensor> {
        let out = no_grad(|| op.forward(inputs))?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        Ok(Tensor::tracked(
            out.0.storage.clone(),
            out.layout().clone(),
            || Op::Custom(op.clone(), inputs.to_vec()),
            &refs,
        ))
    }
}
