//! A distribution defined by a flow and a base: `log p(x) = log p_base(f(x)) + log |det J_f(x)|`.

use crate::base::Base;
use crate::flow::{prefixed, Flow};
use flowtensor::{profile, Generator, Result, Tensor};

/// The push-forward of `base` through the inverse of `flow`.
pub struct FlowDistribution {
    pub flow: Box<dyn Flow>,
    pub base: Box<dyn Base>,
}

impl FlowDistribution {
    pub fn new(flow: Box<dyn Flow>, base: Box<dyn Base>) -> Self {
        FlowDistribution { flow, base }
    }

    /// `log p(x)` per sample.
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let (z, logdet) = self.flow.forward(x)?;
        profile::scope("base", || self.base.log_prob(&z)?.add(&logdet))
    }

    /// `n` samples `f^{-1}(z)`, `z` from the base with its standard deviation
    /// scaled by `temperature` (at every level of a multi-scale flow, whose
    /// split priors are standardising layers of the flow).
    pub fn sample(&self, n: usize, temperature: f64, gen: &mut Generator) -> Result<Tensor> {
        self.flow.inverse(&self.base.sample(n, temperature, gen)?)
    }

    /// The flow's and the base's parameters.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("flow", self.flow.parameters());
        all.extend(prefixed("base", self.base.parameters()));
        all
    }

    /// The flow's buffers.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("flow", self.flow.buffers())
    }
}
