//! Optimizers (Adam, Adamax, SGD with momentum), gradient-norm clipping,
//! the learning-rate schedule and Polyak averaging.
//!
//! Every optimizer keeps its state as tensors keyed by parameter name, so
//! the state is saved in checkpoints next to the parameters and a resumed
//! run continues exactly.

use crate::error::{Result, TrainError};
use flowtensor::{no_grad, Tensor};
use serde::{Deserialize, Serialize};

/// Which update rule, with its constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Kingma and Ba: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
    Adam { beta1: f64, beta2: f64, eps: f64 },
    /// Adam's infinity-norm variant (as PyTorch): `m` as Adam,
    /// `u = max(b2 u, |g| + eps)`, `p -= lr / (1 - b1^t) * m / u`.
    Adamax { beta1: f64, beta2: f64, eps: f64 },
    /// `b = momentum b + g`, `p -= lr b` (plain SGD when `momentum = 0`).
    Sgd { momentum: f64 },
}

impl OptimizerKind {
    /// Adam with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Adamax with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adamax() -> Self {
        OptimizerKind::Adamax {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The names of the per-parameter state slots.
    fn slots(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Adam { .. } => &["m", "v"],
            OptimizerKind::Adamax { .. } => &["m", "u"],
            OptimizerKind::Sgd { momentum: 0.0 } => &[],
            OptimizerKind::Sgd { .. } => &["momentum"],
        }
    }
}

/// An optimizer over named parameters (leaf variables).
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<(String, Tensor)>,
    /// `state[i][s]`: slot `s` of parameter `i`.
    state: Vec<Vec<Tensor>>,
    /// Updates taken so far (`t` of the bias corrections).
    steps: u64,
}

impl Optimizer {
    /// An optimizer with zero state for `params`.
    pub fn new(kind: OptimizerKind, params: Vec<(String, Tensor)>) -> Result<Self> {
        let state = params
            .iter()
            .map(|(_, p)| {
                kind.slots()
                    .iter()
                    .map(|_| Ok(p.detach().zeros_like()?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimizer {
            kind,
            params,
            state,
            steps: 0,
        })
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) {
        for (_, p) in &self.params {
            p.zero_grad();
        }
    }

    /// The global L2 norm of the gradients (parameters without one count as zero).
    /// Summed on the parameters' device (in f64), read back once.
    pub fn grad_norm(&self) -> Result<f64> {
        let mut total: Option<Tensor> = None;
        for (_, p) in &self.params {
            if let Some(g) = p.grad() {
                let part = g.square()?.sum_all()?.to_dtype(flowtensor::DType::F64)?;
                total = Some(match total {
                    Some(t) => t.add(&part)?,
                    None => part,
                });
            }
        }
        Ok(match total {
            Some(t) => t.to_scalar()?.sqrt(),
            None => 0.0,
        })
    }

    /// One update with learning rate `lr` from the current gradients, each
    /// multiplied by `grad_scale` (see [`clip_factor`]).
    pub fn step(&mut self, lr: f64, grad_scale: f64) -> Result<()> {
        self.steps = self.steps.saturating_add(1);
        // beta^t is 0 long before t leaves i32
        let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
        let kind = self.kind;
        no_grad(|| {
            for ((_, p), state) in self.params.iter().zip(&self.state) {
                let Some(g) = p.grad() else { continue };
                let g = if grad_scale == 1.0 {
                    g
                } else {
                    g.mul_scalar(grad_scale)?
                };
                let value = p.detach();
                let next = match kind {
                    OptimizerKind::Adam { beta1, beta2, eps } => {
                        let m = state[0]
                            .affine(beta1, 0.0)?
                            .add(&g.mul_scalar(1.0 - beta1)?)?;
                        let v = state[1]
                            .affine(beta2, 0.0)?
                            .add(&g.square()?.mul_scalar(1.0 - beta2)?)?;
                        let step_size = lr / (1.0 - beta1.powi(t));
                        let denom = v.div_scalar(1.0 - beta2.powi(t))?.sqrt()?.add_scalar(eps)?;
                        state[0].set_data(&m)?;
                        state[1].set_data(&v)?;
                        value.sub(&m.div(&denom)?.mul_scalar(step_size)?)?
                    }
                    OptimizerKind::Adamax { beta1, beta2, eps } => {
                        let m = state[0]
                            .affine(beta1, 0.0)?
                            .add(&g.mul_scalar(1.0 - beta1)?)?;
                        let scaled = state[1].mul_scalar(beta2)?;
                        let fresh = g.abs()?.add_scalar(eps)?;
                        let u = scaled.gt(&fresh)?.where_cond(&scaled, &fresh)?;
                        state[0].set_data(&m)?;
                        state[1].set_data(&u)?;
                        let step_size = lr / (1.0 - beta1.powi(t));
                        value.sub(&m.div(&u)?.mul_scalar(step_size)?)?
                    }
                    OptimizerKind::Sgd { momentum: 0.0 } => value.sub(&g.mul_scalar(lr)?)?,
                    OptimizerKind::Sgd { momentum } => {
                        let b = state[0].mul_scalar(momentum)?.add(&g)?;
                        state[0].set_data(&b)?;
                        value.sub(&b.mul_scalar(lr)?)?
                    }
                };
                p.set_data(&next)?;
            }
            Ok(())
        })
    }

    /// The state as named tensors (`{param}.{slot}`) and the update count.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let named = self
            .params
            .iter()
            .zip(&self.state)
            .flat_map(|((name, _), slots)| {
                self.kind
                    .slots()
                    .iter()
                    .zip(slots)
                    .map(move |(slot, t)| (format!("{name}.{slot}"), t.clone()))
            })
            .collect();
        (named, self.steps)
    }

    /// Restores the state saved by [`Optimizer::state`]; `lookup` returns
    /// the saved tensor of a name.
    pub fn load_state(
        &mut self,
        steps: u64,
        mut lookup: impl FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        for ((name, _), slots) in self.params.iter().zip(&self.state) {
            for (slot, t) in self.kind.slots().iter().zip(slots) {
                let saved = lookup(&format!("{name}.{slot}"), t)?;
                t.set_data(&saved)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The factor that clips gradients of global norm `norm` to at most
/// `max_norm`, as PyTorch's `clip_grad_norm_`: `max_norm / (norm + 1e-6)`
/// when that is below 1, else 1 (`None`: no clipping).
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) => (max / (norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

/// Linear warmup, then exponential decay: at update `t` (from 0),
/// `lr(t) = base * min(1, (t + 1) / warmup) * decay^max(0, t - warmup)`
/// (no warmup when `warmup = 0`; `decay = 1` keeps it constant).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base: f64,
    pub warmup: u64,
    pub decay: f64,
}

impl Schedule {
    /// The learning rate of update `t` (counted from 0).
    pub fn lr(&self, t: u64) -> f64 {
        let warm = if self.warmup == 0 {
            1.0
        } else {
            ((t + 1) as f64 / self.warmup as f64).min(1.0)
        };
        let decayed = t.saturating_sub(self.warmup);
        self.base * warm * self.decay.powf(decayed as f64)
    }
}

/// Polyak (exponential moving) averages of the parameters:
/// `avg = decay avg + (1 - decay) p` after every update. Evaluation and
/// sampling can [`swap`](Polyak::swap) the averages in and out.
pub struct Polyak {
    pub decay: f64,
    averages: Vec<Tensor>,
}

impl Polyak {
    /// Averages starting at the current values of `params`.
    pub fn new(decay: f64, params: &[(String, Tensor)]) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(TrainError::Config(format!(
                "polyak decay must be in [0, 1), got {decay}"
            )));
        }
        let averages = params
            .iter()
            .map(|(_, p)| Ok(p.detach().copy()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Polyak { decay, averages })
    }

    /// Moves the averages towards the current parameters.
    pub fn update(&self, params: &[(String, Tensor)]) -> Result<()> {
        no_grad(|| {
            for (avg, (_, p)) in self.averages.iter().zip(params) {
                let next = avg
                    .mul_scalar(self.decay)?
                    .add(&p.detach().mul_scalar(1.0 - self.decay)?)?;
                avg.set_data(&next)?;
            }
            Ok(())
        })
    }

    /// Exchanges the parameters' values with the averages (call twice to undo).
    pub fn swap(&self, params: &[(String, Tensor)]) -> Result<()> {
        for (avg, (_, p)) in self.averages.iter().zip(params) {
            let current = p.detach().copy()?;
            p.set_data(avg)?;
            avg.set_data(&current)?;
        }
        Ok(())
    }

    /// The averages by parameter name (`{param}`), for checkpoints.
    pub fn named(&self, params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
        params
            .iter()
            .zip(&self.averages)
            .map(|((name, _), avg)| (name.clone(), avg.clone()))
            .collect()
    }
}
