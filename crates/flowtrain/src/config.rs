//! The configuration of a training run, its presets, and TOML files.
//!
//! A run's configuration starts from a preset ([`TrainConfig::preset`]),
//! then a TOML file's keys replace the preset's, then command-line flags
//! replace both. The resolved configuration is written to the run's folder
//! (`config.toml`) and into every checkpoint.

use crate::error::{Result, TrainError};
use crate::optim::{OptimizerKind, Schedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the images come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The built-in `shapes16` set (no download).
    Shapes16,
    /// MNIST from `data_dir` (IDX, raw or gz).
    Mnist,
    /// CIFAR-10 from `data_dir` (binary batches).
    Cifar10,
}

/// How the discrete pixels become continuous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dequantize {
    /// `y = (x + u) / 2^n_bits - 0.5`, `u ~ U(0, 1)` per value.
    Uniform,
    /// `u ~ q(u | x)`, a conditional flow trained with the model.
    Flow,
}

/// The flow's architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// Glow: steps of ActNorm, mixing and affine coupling.
    CouplingFlow,
    /// Glow's multi-scale layout with generalized Sylvester flows in place
    /// of the couplings (the paper's Sylvester experiment).
    Sylvester,
}

/// The mixing layer of every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mixing {
    /// LU-parametrised 1x1 convolution.
    #[serde(rename = "1x1")]
    OneByOne,
    /// LU 1x1 convolution, then a 3x3 convolution exponential.
    #[serde(rename = "convexp")]
    ConvExp,
    /// LU 1x1 convolution, then the emerging pair.
    #[serde(rename = "emerging")]
    Emerging,
    /// LU 1x1 convolution, then a spatial Woodbury transform.
    #[serde(rename = "woodbury")]
    Woodbury,
}

impl std::str::FromStr for Mixing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "1x1" => Mixing::OneByOne,
            "convexp" => Mixing::ConvExp,
            "emerging" => Mixing::Emerging,
            "woodbury" => Mixing::Woodbury,
            other => {
                return Err(format!(
                    "unknown mixing {other:?} (1x1, convexp, emerging, woodbury)"
                ))
            }
        })
    }
}

/// Everything a run depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    // data
    pub dataset: DatasetKind,
    /// The data directory (MNIST, CIFAR-10).
    pub data_dir: Option<PathBuf>,
    /// Bits per value after reduction (8: none).
    pub n_bits: u32,
    pub dequantize: Dequantize,
    /// Random horizontal flips of training images.
    pub hflip: bool,
    // model
    pub model_type: ModelType,
    pub mixing: Mixing,
    /// Levels `L`.
    pub n_levels: usize,
    /// Steps `K` per level.
    pub n_subflows: usize,
    /// Hidden channels of Glow's coupling network, or of the Sylvester conditioner.
    pub hidden_channels: usize,
    /// DenseNet conditioner depth (0: Glow's three-layer network instead).
    pub densenet_depth: usize,
    pub densenet_growth: usize,
    /// DenseNet 1x1 bottleneck width (0: the layer's input width).
    pub n_intermediate_channels: usize,
    /// A gated output convolution in the DenseNet conditioner.
    pub use_gated_conv: bool,
    pub use_splitprior: bool,
    /// Series terms of the convolution exponential in training (evaluation uses `convexp_eval_terms`).
    pub convexp_terms: usize,
    pub convexp_eval_terms: usize,
    /// Rank `d` of the spatial Woodbury transform.
    pub woodbury_rank: usize,
    // optimisation
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Multiplicative decay of the learning rate per step after warmup (1: none).
    pub lr_decay: f64,
    /// Gradient-norm clipping (none when absent).
    pub max_grad_norm: Option<f64>,
    /// Polyak averaging decay (none when absent).
    pub polyak: Option<f64>,
    pub batch_size: usize,
    /// Training steps; `epochs` (when set) overrides it with whole passes over the training set.
    pub steps: u64,
    pub epochs: Option<u64>,
    /// Images for ActNorm's data-dependent initialisation.
    pub init_batch_size: usize,
    pub seed: u64,
    // evaluation and outputs
    /// Steps between test evaluations (and at the end).
    pub eval_every: u64,
    pub eval_batch_size: usize,
    /// Test images evaluated (all when absent).
    pub eval_limit: Option<usize>,
    /// Importance samples of the importance-weighted bpd (variational dequantisation).
    pub iw_samples: usize,
    /// Steps between checkpoints (and at the end).
    pub checkpoint_every: u64,
    /// Samples per grid.
    pub samples: usize,
}

impl Default for TrainConfig {
    /// The built-in default: a small Glow on `shapes16` that trains,
    /// evaluates and samples in about a minute on two cores.
    fn default() -> Self {
        TrainConfig {
            dataset: DatasetKind::Shapes16,
            data_dir: None,
            n_bits: 8,
            dequantize: Dequantize::Uniform,
            hflip: false,
            model_type: ModelType::CouplingFlow,
            mixing: Mixing::OneByOne,
            n_levels: 2,
            n_subflows: 4,
            hidden_channels: 32,
            densenet_depth: 0,
            densenet_growth: 16,
            n_intermediate_channels: 0,
            use_gated_conv: false,
            use_splitprior: true,
            convexp_terms: 6,
            convexp_eval_terms: 13,
            woodbury_rank: 8,
            optimizer: OptimizerKind::adam(),
            lr: 1e-3,
            warmup_steps: 50,
            lr_decay: 1.0,
            max_grad_norm: Some(50.0),
            polyak: None,
            batch_size: 64,
            steps: 600,
            epochs: None,
            init_batch_size: 64,
            seed: 0,
            eval_every: 200,
            eval_batch_size: 256,
            eval_limit: None,
            iw_samples: 8,
            checkpoint_every: 200,
            samples: 64,
        }
    }
}

/// The names [`TrainConfig::preset`] knows.
pub const PRESETS: [&str; 2] = ["default", "glow-mnist-ref"];

impl TrainConfig {
    /// A preset by name: `default` (the built-in data) or `glow-mnist-ref`
    /// (the reference configuration: MNIST, L = 2, K = 4, 64 hidden
    /// channels, Adam at 1e-3 with 100 warmup steps, clipping at 50, batch
    /// 64, 1500 steps).
    pub fn preset(name: &str) -> Result<TrainConfig> {
        match name {
            "default" => Ok(TrainConfig::default()),
            "glow-mnist-ref" => Ok(TrainConfig {
                dataset: DatasetKind::Mnist,
                hidden_channels: 64,
                warmup_steps: 100,
                steps: 1500,
                eval_every: 500,
                checkpoint_every: 500,
                ..TrainConfig::default()
            }),
            other => Err(TrainError::Config(format!(
                "unknown preset {other:?} (one of {PRESETS:?})"
            ))),
        }
    }

    /// `self` with the keys of the TOML document `text` replacing its values.
    pub fn merge_toml(&self, text: &str) -> Result<TrainConfig> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| TrainError::Config(format!("cannot encode the configuration: {e}")))?;
        let overrides: toml::Table = text
            .parse()
            .map_err(|e| TrainError::Config(format!("invalid TOML: {e}")))?;
        table.extend(overrides);
        table
            .try_into()
            .map_err(|e| TrainError::Config(format!("invalid configuration: {e}")))
    }

    /// `self` with the keys of the TOML file at `path` replacing its values.
    pub fn merge_toml_file(&self, path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        self.merge_toml(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(format!("cannot encode: {e}")))
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            base: self.lr,
            warmup: self.warmup_steps,
            decay: self.lr_decay,
        }
    }

    /// Rejects values no run can use: every key against its bounds, with an
    /// error naming the key, the value and the range
    /// ([`crate::limits::check_config`]).
    pub fn check(&self) -> Result<()> {
        crate::limits::check_config(self)
    }
}
