//! Reverse-mode automatic differentiation.
//!
//! Every op records, when grad mode is on and an input requires grad, an
//! [`op::Op`] naming its inputs. `backward` walks that graph once in reverse
//! topological order, applying one backward rule per op, and accumulates the
//! gradients of leaf variables into their `grad` slots. [`grad`] computes
//! vector-Jacobian products for any tensors and, with `create_graph`,
//! records its backward rules so that gradients can be differentiated again.

mod backprop;
mod custom;
mod mode;
pub(crate) mod op;

pub(crate) use backprop::backward;
pub use backprop::{grad, GradStore};
pub use custom::CustomOp;
pub(crate) use mode::with_grad_mode;
pub use mode::{enable_grad, is_grad_enabled, no_grad, NoGradGuard};
