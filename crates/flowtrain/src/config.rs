//! The configuration of a training run, its presets, and TOML files.
//!
//! A run's configuration starts from a preset ([`TrainConfig::preset`]),
//! then a TOML file's keys replace the preset's, then command-line flags
//! replace both. The resolved configuration is written to the run's folder
//! (`config.toml`) and into every checkpoint.

use crate::error::{Result, TrainError};
use crate::optim::{OptimizerKind, Schedule};
use flowtensor::Device;
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
    /// Glow's multi-scale layout with steps of ActNorm and a residual block
    /// (no mixing layer; the residual flows' baseline of the Sylvester
    /// experiment): `n_intermediate_channels` hidden channels (or
    /// `hidden_channels` when 0), unbiased Russian-roulette log-det.
    ResidualFlow,
}

/// The mixing layer of every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mixing {
    /// The channel order reversed (Glow's baseline).
    #[serde(rename = "reverse")]
    Reverse,
    /// A fixed random channel permutation (Glow's other baseline).
    #[serde(rename = "shuffle")]
    Shuffle,
    /// LU-parametrised 1x1 convolution (Glow's).
    #[serde(rename = "1x1")]
    OneByOne,
    /// A 1x1 convolution with a free `C x C` weight (log-det by `slogdet`).
    #[serde(rename = "1x1-plain")]
    OneByOnePlain,
    /// A QR-parametrised 1x1 convolution (Householder reflections times a triangle).
    #[serde(rename = "1x1-qr")]
    OneByOneQr,
    /// LU 1x1 convolution, then a 3x3 convolution exponential.
    #[serde(rename = "convexp")]
    ConvExp,
    /// LU 1x1 convolution, then the emerging pair of masked 3x3 convolutions.
    #[serde(rename = "emerging")]
    Emerging,
    /// LU 1x1 convolution, then a periodic (circular) 3x3 convolution.
    #[serde(rename = "periodic")]
    Periodic,
    /// LU 1x1 convolution, then a spatial Woodbury transform of rank `woodbury_rank`.
    #[serde(rename = "woodbury")]
    Woodbury,
    /// The memory-efficient Woodbury transformation: channel, then height,
    /// then width transforms, each of rank `min(woodbury_rank, axis length)`.
    #[serde(rename = "woodbury-me")]
    WoodburyMe,
}

impl Mixing {
    /// Every mixing, in the order of the command line's help.
    pub const ALL: [Mixing; 10] = [
        Mixing::Reverse,
        Mixing::Shuffle,
        Mixing::OneByOne,
        Mixing::OneByOnePlain,
        Mixing::OneByOneQr,
        Mixing::ConvExp,
        Mixing::Emerging,
        Mixing::Periodic,
        Mixing::Woodbury,
        Mixing::WoodburyMe,
    ];

    /// The name used by the command line and configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Mixing::Reverse => "reverse",
            Mixing::Shuffle => "shuffle",
            Mixing::OneByOne => "1x1",
            Mixing::OneByOnePlain => "1x1-plain",
            Mixing::OneByOneQr => "1x1-qr",
            Mixing::ConvExp => "convexp",
            Mixing::Emerging => "emerging",
            Mixing::Periodic => "periodic",
            Mixing::Woodbury => "woodbury",
            Mixing::WoodburyMe => "woodbury-me",
        }
    }
}

impl std::str::FromStr for Mixing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Mixing::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mixing::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mixing {s:?}; the mixings are {}", names.join(", "))
            })
    }
}

/// The coupling of Glow's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CouplingType {
    /// `z2 = (x2 + t) * sigmoid(s + 2)` (Glow).
    Affine,
    /// `z2 = x2 + t` (NICE; volume preserving).
    Additive,
}

impl std::str::FromStr for CouplingType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "affine" => Ok(CouplingType::Affine),
            "additive" => Ok(CouplingType::Additive),
            other => Err(format!(
                "unknown coupling {other:?}; the couplings are affine, additive"
            )),
        }
    }
}

/// The network inside Glow's couplings (when `densenet_depth` is 0) and
/// whether the split priors see the edge channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CouplingNet {
    /// Biased hidden convolutions, zero padding (common PyTorch ports).
    #[default]
    Biased,
    /// Glow's own: the edge channel, ActNorm after the hidden convolutions,
    /// and the edge channel in the split priors' convolutions.
    Glow,
}

impl CouplingNet {
    /// The flowlayers form of the network.
    pub fn style(self) -> flowlayers::layers::GlowNetStyle {
        match self {
            CouplingNet::Biased => flowlayers::layers::GlowNetStyle::Biased,
            CouplingNet::Glow => flowlayers::layers::GlowNetStyle::Original,
        }
    }
}

impl std::str::FromStr for CouplingNet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "biased" => Ok(CouplingNet::Biased),
            "glow" => Ok(CouplingNet::Glow),
            other => Err(format!(
                "unknown coupling network {other:?}; the networks are biased, glow"
            )),
        }
    }
}

impl std::str::FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "coupling_flow" => Ok(ModelType::CouplingFlow),
            "sylvester" => Ok(ModelType::Sylvester),
            "residual_flow" => Ok(ModelType::ResidualFlow),
            other => Err(format!(
                "unknown model type {other:?}; the model types are coupling_flow, sylvester, residual_flow"
            )),
        }
    }
}

/// (De)serialises a [`Device`] as `cpu` / `cuda:N`.
pub(crate) mod device_name {
    use flowtensor::Device;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Device, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Everything a run depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the model trains: `cpu` or `cuda:N`.
    #[serde(default, with = "device_name")]
    pub device: Device,
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
    /// The coupling of every step (coupling flows).
    #[serde(default = "default_coupling")]
    pub coupling: CouplingType,
    /// Levels `L`.
    pub n_levels: usize,
    /// Steps `K` per level.
    pub n_subflows: usize,
    /// Hidden channels of Glow's coupling network, or of the Sylvester conditioner.
    pub hidden_channels: usize,
    /// The form of Glow's coupling network (and split priors).
    #[serde(default)]
    pub coupling_net: CouplingNet,
    /// DenseNet conditioner depth (0: Glow's three-layer network instead).
    pub densenet_depth: usize,
    pub densenet_growth: usize,
    /// DenseNet 1x1 bottleneck width (0: the layer's input width); the
    /// residual blocks' hidden width (0: `hidden_channels`).
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

fn default_coupling() -> CouplingType {
    CouplingType::Affine
}

impl Default for TrainConfig {
    /// The base every preset starts from: a small Glow (L = 2, K = 4, 32
    /// hidden channels) on `shapes16`, 600 steps of batch 64 (the `quick`
    /// preset; about 15 s on two cores).
    fn default() -> Self {
        TrainConfig {
            device: Device::Cpu,
            dataset: DatasetKind::Shapes16,
            data_dir: None,
            n_bits: 8,
            dequantize: Dequantize::Uniform,
            hflip: false,
            model_type: ModelType::CouplingFlow,
            mixing: Mixing::OneByOne,
            coupling: CouplingType::Affine,
            n_levels: 2,
            n_subflows: 4,
            hidden_channels: 32,
            coupling_net: CouplingNet::Biased,
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
pub const PRESETS: [&str; 3] = ["default", "quick", "glow-mnist-ref"];

impl TrainConfig {
    /// A preset by name:
    /// - `default`, the main job: a Glow on the built-in `shapes16` whose
    ///   samples look like its data after about 2.5 minutes on two cores
    ///   (L = 3, K = 4, 64 hidden channels, 6000 steps of batch 32);
    /// - `quick`: the base configuration ([`TrainConfig::default`]), 600
    ///   steps of a smaller Glow, for a check that everything runs;
    /// - `glow-mnist-ref`, the reference configuration: MNIST, L = 2, K = 4,
    ///   64 hidden channels, Adam at 1e-3 with 100 warmup steps, clipping at
    ///   50, batch 64, 1500 steps.
    pub fn preset(name: &str) -> Result<TrainConfig> {
        let glow_mnist_ref = TrainConfig {
            dataset: DatasetKind::Mnist,
            hidden_channels: 64,
            warmup_steps: 100,
            steps: 1500,
            eval_every: 500,
            checkpoint_every: 500,
            ..TrainConfig::default()
        };
        match name {
            "default" => Ok(TrainConfig {
                n_levels: 3,
                hidden_channels: 64,
                batch_size: 32,
                steps: 6000,
                eval_every: 1500,
                checkpoint_every: 1500,
                ..TrainConfig::default()
            }),
            "quick" => Ok(TrainConfig::default()),
            "glow-mnist-ref" => Ok(glow_mnist_ref),
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
