//! Conditional flows: invertible maps of `x` given a context `c`, for
//! conditional densities `log p(x | c) = log p_base(f(x; c)) + log |det df/dx|`.

use super::check_context;
use crate::flow::{prefixed, Flow};
use flowtensor::{Error, Result, Tensor};

/// A flow `z = f(x; c)` that is invertible in `x` for every context `c`
/// `(N, C)` (as in nflows and zuko). The log-determinant is that of the
/// Jacobian in `x` only, `c` held fixed.
///
/// A layer built with `C = 0` context features takes `None`; one built with
/// `C > 0` needs `Some(c)` of shape `(N, C)`, and its [`Flow`] methods (which
/// pass no context) are an error. Layers without a conditioner implement
/// the trait with `C = 0`, so that they compose with conditional ones in a
/// [`ConditionalSequential`].
pub trait ConditionalFlow: Flow {
    /// `C`, the context features the layer needs (0: none).
    fn context_features(&self) -> usize;

    /// `z = f(x; c)` and `log |det df/dx|` per sample.
    fn forward_given(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)>;

    /// `x = f^{-1}(z; c)`.
    fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor>;

    /// `x = f^{-1}(z; c)` and `log |det d f^{-1}/dz|` per sample (by default
    /// minus the forward log-det at the result).
    fn inverse_with_logdet_given(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let x = self.inverse_given(z, context)?;
        let (_, logdet) = self.forward_given(&x, context)?;
        Ok((x, logdet.neg()?))
    }
}

/// The direction methods of [`Flow`] for a [`ConditionalFlow`] (inside its
/// `impl Flow`): the conditional ones without a context.
macro_rules! without_context {
    () => {
        fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
            self.forward_given(x, None)
        }
        fn inverse(&self, z: &Tensor) -> Result<Tensor> {
            self.inverse_given(z, None)
        }
        fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
            self.inverse_with_logdet_given(z, None)
        }
    };
}
pub(crate) use without_context;

/// A conditional flow with its context fixed: `x -> f(x; c)` as a plain
/// [`Flow`] (e.g. for [`crate::testing::check_flow`], or sampling from
/// `p(x | c)`). The batch must match the context's.
pub struct Conditioned<'a> {
    flow: &'a dyn ConditionalFlow,
    context: Option<Tensor>,
}

impl<'a> Conditioned<'a> {
    /// `flow` given `context` (`None` for a flow with 0 context features).
    pub fn new(flow: &'a dyn ConditionalFlow, context: Option<Tensor>) -> Self {
        Conditioned { flow, context }
    }
}

impl Flow for Conditioned<'_> {
    fn name(&self) -> &'static str {
        self.flow.name()
    }
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.flow.forward_given(x, self.context.as_ref())
    }
    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.flow.inverse_given(z, self.context.as_ref())
    }
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.flow
            .inverse_with_logdet_given(z, self.context.as_ref())
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.flow.parameters()
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.flow.buffers()
    }
    fn set_training(&self, training: bool) {
        self.flow.set_training(training)
    }
}

/// `f_n o ... o f_1` of conditional and unconditional layers: the context is
/// passed to every layer with context features (all of which must take the
/// same `C`), `None` to the others. Forward sums the log-determinants,
/// inverse applies the inverses in reverse order. Parameters and buffers are
/// prefixed with the layer's index.
pub struct ConditionalSequential {
    layers: Vec<Box<dyn ConditionalFlow>>,
    context_features: usize,
}

impl ConditionalSequential {
    /// The composition of `layers`; an error if two of them take different
    /// (non-zero) context sizes.
    pub fn new(layers: Vec<Box<dyn ConditionalFlow>>) -> Result<Self> {
        let mut context_features = 0;
        for layer in &layers {
            let c = layer.context_features();
            if c > 0 && context_features > 0 && c != context_features {
                return Err(Error::invalid(
                    "ConditionalSequential",
                    format!(
                        "{} takes {c} context features, an earlier layer {context_features}",
                        layer.name()
                    ),
                ));
            }
            context_features = context_features.max(c);
        }
        Ok(ConditionalSequential {
            layers,
            context_features,
        })
    }

    pub fn layers(&self) -> &[Box<dyn ConditionalFlow>] {
        &self.layers
    }

    fn context_for<'c>(
        layer: &dyn ConditionalFlow,
        context: Option<&'c Tensor>,
    ) -> Option<&'c Tensor> {
        context.filter(|_| layer.context_features() > 0)
    }

    fn check(&self, x: &Tensor, context: Option<&Tensor>) -> Result<()> {
        check_context(
            "ConditionalSequential",
            self.context_features,
            x.shape().first().copied().unwrap_or(0),
            x.dtype(),
            context,
        )
    }
}

impl ConditionalFlow for ConditionalSequential {
    fn context_features(&self) -> usize {
        self.context_features
    }

    fn forward_given(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x, context)?;
        let mut h = x.clone();
        let mut total: Option<Tensor> = None;
        for layer in &self.layers {
            let (next, logdet) =
                layer.forward_given(&h, Self::context_for(layer.as_ref(), context))?;
            total = Some(match total {
                Some(t) => t.add(&logdet)?,
                None => logdet,
            });
            h = next;
        }
        let total = match total {
            Some(t) => t,
            None => Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device())?,
        };
        Ok((h, total))
    }

    fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.check(z, context)?;
        self.layers.iter().rev().try_fold(z.clone(), |h, layer| {
            layer.inverse_given(&h, Self::context_for(layer.as_ref(), context))
        })
    }

    fn inverse_with_logdet_given(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.check(z, context)?;
        let mut h = z.clone();
        let mut total: Option<Tensor> = None;
        for layer in self.layers.iter().rev() {
            let (next, logdet) =
                layer.inverse_with_logdet_given(&h, Self::context_for(layer.as_ref(), context))?;
            total = Some(match total {
                Some(t) => t.add(&logdet)?,
                None => logdet,
            });
            h = next;
        }
        let total = match total {
            Some(t) => t,
            None => Tensor::zeros(&[z.shape()[0]], z.dtype(), z.device())?,
        };
        Ok((h, total))
    }
}

impl Flow for ConditionalSequential {
    fn name(&self) -> &'static str {
        "ConditionalSequential"
    }
    without_context!();
    fn parameters(&self) -> Vec<(String, Tensor)> {
        let named = self.layers.iter().enumerate();
        named
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.parameters()))
            .collect()
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let named = self.layers.iter().enumerate();
        named
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.buffers()))
            .collect()
    }
    fn set_training(&self, training: bool) {
        self.layers.iter().for_each(|l| l.set_training(training));
    }
}
