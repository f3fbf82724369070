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
    /// respect to it. It runs with graph recording off.
    fn backward(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad_output: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;
}
