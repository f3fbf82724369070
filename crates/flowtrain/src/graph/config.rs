//! The configuration of a graph run (`--preset graph-toy`).

use super::data::GraphFamily;
use crate::error::{Result, TrainError};
use crate::limits::{float_in, in_range, MAX_STEPS};
use crate::optim::Schedule;
use flowlayers::flowtensor::conv_exp::Terms;
use flowlayers::GraphMixing;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The mixing layer of every step (`--graph-mixing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphMixingKind {
    /// The node features reversed (no learned mixing).
    #[serde(rename = "none")]
    None,
    /// A learned `C x C` map per node.
    #[serde(rename = "1x1")]
    OneByOne,
    /// The 1x1 map, then the graph convolution exponential.
    #[serde(rename = "convexp")]
    ConvExp,
}

impl GraphMixingKind {
    pub const ALL: [GraphMixingKind; 3] = [
        GraphMixingKind::None,
        GraphMixingKind::OneByOne,
        GraphMixingKind::ConvExp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GraphMixingKind::None => "none",
            GraphMixingKind::OneByOne => "1x1",
            GraphMixingKind::ConvExp => "convexp",
        }
    }

    /// The flowlayers mixing, with `terms` terms of the exponential's series.
    pub fn layer(self, terms: usize) -> GraphMixing {
        match self {
            GraphMixingKind::None => GraphMixing::Reverse,
            GraphMixingKind::OneByOne => GraphMixing::OneByOne,
            GraphMixingKind::ConvExp => GraphMixing::ConvExp(Terms::Fixed(terms)),
        }
    }
}

impl std::str::FromStr for GraphMixingKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        GraphMixingKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown graph mixing {s:?}; the mixings are none, 1x1, convexp")
            })
    }
}

/// Where a run's graphs come from.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphSource {
    Family(GraphFamily),
    /// A JSON lines file ([`super::data::load_graphs`]).
    File(PathBuf),
}

/// Everything a graph run depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// rings, grids, ladders, communities, or the path of a JSON lines file.
    pub dataset: String,
    pub mixing: GraphMixingKind,
    /// Flow steps `K`.
    pub n_subflows: usize,
    /// Hidden units per node of the couplings' message-passing networks.
    pub hidden: usize,
    /// Series terms of the graph convolution exponential.
    pub convexp_terms: usize,
    /// Graphs per training step (batched as their disjoint union).
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    /// Generated training graphs (built-in families); a file's graphs are
    /// split 9:1 into training and test graphs instead.
    pub train_graphs: usize,
    /// Generated test graphs (built-in families).
    pub test_graphs: usize,
    /// Steps between test evaluations (and at the end).
    pub eval_every: u64,
    /// Graphs in the picture (data above, samples on the same graphs below).
    pub samples: usize,
}

/// The preset's name.
pub const GRAPH_PRESET: &str = "graph-toy";

impl Default for GraphConfig {
    /// The `graph-toy` preset: 6 steps of 64 hidden units, 2000 steps of 16
    /// graphs, Adam at 1e-3 after 100 warmup steps, on 2000 training and 500
    /// test rings.
    fn default() -> Self {
        GraphConfig {
            dataset: "rings".into(),
            mixing: GraphMixingKind::None,
            n_subflows: 6,
            hidden: 64,
            convexp_terms: 12,
            batch_size: 16,
            steps: 2000,
            lr: 1e-3,
            warmup_steps: 100,
            max_grad_norm: Some(50.0),
            seed: 0,
            train_graphs: 2000,
            test_graphs: 500,
            eval_every: 500,
            samples: 8,
        }
    }
}

impl GraphConfig {
    pub fn source(&self) -> GraphSource {
        match GraphFamily::parse(&self.dataset) {
            Some(family) => GraphSource::Family(family),
            None => GraphSource::File(PathBuf::from(&self.dataset)),
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            base: self.lr,
            warmup: self.warmup_steps,
            decay: 1.0,
        }
    }

    /// Rejects values no run can use, naming the key.
    pub fn check(&self) -> Result<()> {
        in_range("n_subflows", self.n_subflows, 1, 256)?;
        in_range("hidden", self.hidden, 1, 4096)?;
        in_range("convexp_terms", self.convexp_terms, 1, 100)?;
        in_range("batch_size", self.batch_size, 1, 4096)?;
        in_range("steps", self.steps, 1, MAX_STEPS)?;
        in_range("warmup_steps", self.warmup_steps, 0, MAX_STEPS)?;
        in_range("eval_every", self.eval_every, 1, MAX_STEPS)?;
        in_range("train_graphs", self.train_graphs, 1, 1_000_000)?;
        in_range("test_graphs", self.test_graphs, 1, 1_000_000)?;
        in_range("samples", self.samples, 1, 64)?;
        float_in("lr", self.lr, 0.0, 10.0, true)?;
        if let Some(m) = self.max_grad_norm {
            float_in("max_grad_norm", m, 0.0, f64::MAX, true)?;
        }
        if let GraphSource::File(path) = self.source() {
            if !path.exists() {
                let families: Vec<&str> = GraphFamily::ALL.iter().map(|f| f.name()).collect();
                return Err(TrainError::Config(format!(
                    "graph dataset {:?} is neither a built-in family ({}) nor a file",
                    self.dataset,
                    families.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(e.to_string()))
    }
}
