//! User-defined operations with their own backward.

use crate::{Result, Tensor};

/// An operation with a hand-written backward, recorded in the graph as one node.
///
/// Use it when autodiff through the composed ops would store too much (the
/// convolution exponential's backward recomputes its series instead of
/// keeping every term) or is the wrong algorithm (linear solves).
/// Apply it with [`Tensor::apply_custom`].
pub trait CustomOp: Send + Sync {
    /// A name for errors and graph dumps.
    fn name(&self) -> &'static str;

    /// The output for `inputs`. It runs with graph recording off: whatever it
    /// computes internally is not kept for backward.
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor>;

    /// The gradient of each input (same shape as that input, `None` where
    /// there is none) given the output and the gradient of the loss with
    /// respect to it. It runs with graph recording off, except in a
    /// [`crate::grad`] pass with `create_graph`, which only runs it when
    /// [`CustomOp::backward_is_differentiable`] says so.
    fn backward(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad_output: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;

    /// True when `backward` computes its gradients with tensor ops that
    /// autodiff records (not with raw kernels), so that they can be
    /// differentiated again. A recorded pass through an op that says
    /// `false` fails rather than return a wrong second derivative.
    fn backward_is_differentiable(&self) -> bool {
        false
    }
}
