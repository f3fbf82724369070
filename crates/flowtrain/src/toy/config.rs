//! The configuration of a toy run (`--preset toy`): the data, the flow, the
//! objective and the optimisation, with defaults that depend on the flow
//! and the objective, resolved once before the run starts.

use crate::data::toys::{Toy, TOY_NAMES};
use crate::error::{Result, TrainError};
use crate::limits::{float_in, in_range, MAX_BATCH, MAX_STEPS};
use crate::optim::{OptimizerKind, Schedule};
use flowtensor::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The flow of a toy run (`--flow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// `K` planar layers (Rezende and Mohamed 2015).
    Planar,
    /// `K` radial layers (Rezende and Mohamed 2015).
    Radial,
    /// `K` steps of ActNorm and an affine coupling with alternating masks (Dinh et al. 2017).
    Realnvp,
    /// `K` steps of ActNorm, an affine MAF and a reversal (Papamakarios et al. 2017).
    Maf,
    /// `K` steps of ActNorm, an autoregressive spline and a reversal (Durkan et al. 2019).
    NsfAr,
    /// `K` steps of ActNorm and a spline coupling with alternating masks (Durkan et al. 2019).
    NsfC,
}

impl FlowKind {
    pub const ALL: [FlowKind; 6] = [
        FlowKind::Planar,
        FlowKind::Radial,
        FlowKind::Realnvp,
        FlowKind::Maf,
        FlowKind::NsfAr,
        FlowKind::NsfC,
    ];

    /// The name used by `--flow`.
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Planar => "planar",
            FlowKind::Radial => "radial",
            FlowKind::Realnvp => "realnvp",
            FlowKind::Maf => "maf",
            FlowKind::NsfAr => "nsf-ar",
            FlowKind::NsfC => "nsf-c",
        }
    }

    /// Planar or radial: layers without a conditioner network.
    pub fn is_simple(self) -> bool {
        matches!(self, FlowKind::Planar | FlowKind::Radial)
    }
}

impl std::str::FromStr for FlowKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        FlowKind::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FlowKind::ALL.iter().map(|f| f.name()).collect();
                format!("unknown flow {s:?}; the flows are {}", names.join(", "))
            })
    }
}

/// What a toy run minimises (`--objective`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The negative log-likelihood of data points (density estimation).
    Mle,
    /// `E_q[log q(z) + U(z)]` for an unnormalised target `exp(-U)` (variational inference).
    ReverseKl,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mle" => Ok(Objective::Mle),
            "reverse-kl" => Ok(Objective::ReverseKl),
            other => Err(format!(
                "unknown objective {other:?}; the objectives are mle, reverse-kl"
            )),
        }
    }
}

/// The energies `U1..U4` of Rezende and Mohamed (2015), Table 1 (`--target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    U1,
    U2,
    U3,
    U4,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "u1" => Ok(Target::U1),
            "u2" => Ok(Target::U2),
            "u3" => Ok(Target::U3),
            "u4" => Ok(Target::U4),
            other => Err(format!(
                "unknown target {other:?}; the targets are u1, u2, u3, u4"
            )),
        }
    }
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::U1 => "u1",
            Target::U2 => "u2",
            Target::U3 => "u3",
            Target::U4 => "u4",
        }
    }
}

/// The element type of a toy run (`f64` by default: these models are small
/// enough that double precision costs little).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// Everything a toy run depends on. The optional keys take defaults that
/// depend on the flow and the objective ([`ToyConfig::resolved`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyConfig {
    /// Where the model trains: `cpu` or `cuda:N`.
    #[serde(default, with = "crate::config::device_name")]
    pub device: Device,
    pub dtype: Precision,
    /// A toy density ([`TOY_NAMES`]) or a `.csv` / `.npy` file of points.
    pub dataset: String,
    /// A file of test points (with a file `dataset`; otherwise 10% of it is held out).
    pub test: Option<PathBuf>,
    pub objective: Objective,
    /// The energy of `reverse-kl` runs.
    pub target: Option<Target>,
    pub flow: FlowKind,
    /// Layers (planar, radial) or steps (the others) `K`; default 32 for
    /// planar and radial, 8 for the others.
    pub n_layers: Option<usize>,
    /// Units per hidden layer of the conditioners.
    pub hidden: usize,
    /// Hidden layers of the conditioners.
    pub hidden_layers: usize,
    /// Spline bins (NSF).
    pub spline_bins: usize,
    /// The splines act on `[-B, B]` (after each step's ActNorm, which
    /// standardises its input at initialisation); the identity outside.
    pub spline_bound: f64,
    pub optimizer: OptimizerKind,
    /// Default 5e-3 for planar and radial, 1e-3 for the others.
    pub lr: Option<f64>,
    pub warmup_steps: u64,
    /// Multiplicative decay of the learning rate per step after warmup (1: none).
    pub lr_decay: f64,
    /// Gradient-norm clipping (none when absent).
    pub max_grad_norm: Option<f64>,
    pub batch_size: usize,
    /// Default 2000 for `mle`, 10000 for `reverse-kl`.
    pub steps: Option<u64>,
    /// Steps over which the energy's weight rises linearly from 0.01 to 1
    /// (`reverse-kl`; default half the steps).
    pub anneal_steps: Option<u64>,
    pub seed: u64,
    /// Steps between test evaluations (and at the start and the end).
    pub eval_every: u64,
    /// Test points drawn from a toy density.
    pub test_size: usize,
    /// Points in each scatter panel of the figure (and samples drawn for it).
    pub samples: usize,
    /// Cells per side of the figure's density grids.
    pub grid: usize,
}

impl Default for ToyConfig {
    /// The `toy` preset: NSF-C on two moons, 2000 steps of batch 256.
    fn default() -> Self {
        ToyConfig {
            device: Device::Cpu,
            dtype: Precision::F64,
            dataset: "moons".into(),
            test: None,
            objective: Objective::Mle,
            target: None,
            flow: FlowKind::NsfC,
            n_layers: None,
            hidden: 64,
            hidden_layers: 2,
            spline_bins: 8,
            spline_bound: 4.0,
            optimizer: OptimizerKind::adam(),
            lr: None,
            warmup_steps: 0,
            lr_decay: 1.0,
            max_grad_norm: Some(50.0),
            batch_size: 256,
            steps: None,
            anneal_steps: None,
            seed: 0,
            eval_every: 500,
            test_size: 10_000,
            samples: 2000,
            grid: 200,
        }
    }
}

/// Where a toy run's points come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// A built-in toy density (fresh samples every step).
    Toy(Toy),
    /// A file of points (a fixed training set).
    File(PathBuf),
}

impl ToyConfig {
    /// `self` with the keys of the TOML document `text` replacing its values.
    pub fn merge_toml(&self, text: &str) -> Result<ToyConfig> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| TrainError::Config(format!("cannot encode the configuration: {e}")))?;
        let overrides: toml::Table = text
            .parse()
            .map_err(|e| TrainError::Config(format!("invalid TOML: {e}")))?;
        table.extend(overrides);
        table
            .try_into()
            .map_err(|e| TrainError::Config(format!("invalid toy configuration: {e}")))
    }

    /// `self` with the keys of the TOML file at `path` replacing its values.
    pub fn merge_toml_file(&self, path: &Path) -> Result<ToyConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        self.merge_toml(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| TrainError::Config(format!("cannot encode: {e}")))
    }

    /// The data source: a toy name, or a path ending in `.csv` / `.npy`.
    pub fn source(&self) -> Result<DataSource> {
        let lower = self.dataset.to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".npy") {
            return Ok(DataSource::File(PathBuf::from(&self.dataset)));
        }
        Toy::from_name(&self.dataset)
            .map(DataSource::Toy)
            .map_err(|_| {
                TrainError::Config(format!(
                    "dataset {:?} is neither a toy density ({}) nor a .csv or .npy file",
                    self.dataset,
                    TOY_NAMES.join(", ")
                ))
            })
    }

    /// The layers `K`.
    pub fn layers(&self) -> usize {
        self.n_layers
            .unwrap_or(if self.flow.is_simple() { 32 } else { 8 })
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.lr
            .unwrap_or(if self.flow.is_simple() { 5e-3 } else { 1e-3 })
    }

    /// The training steps.
    pub fn total_steps(&self) -> u64 {
        self.steps.unwrap_or(match self.objective {
            Objective::Mle => 2000,
            Objective::ReverseKl => 10_000,
        })
    }

    /// The steps of the energy's annealing.
    pub fn annealing(&self) -> u64 {
        self.anneal_steps.unwrap_or(self.total_steps() / 2)
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            base: self.learning_rate(),
            warmup: self.warmup_steps,
            decay: self.lr_decay,
        }
    }

    /// Every default filled in (what the run's `config.toml` and
    /// `metrics.json` record).
    pub fn resolved(&self) -> ToyConfig {
        let mut c = self.clone();
        c.n_layers = Some(self.layers());
        c.lr = Some(self.learning_rate());
        c.steps = Some(self.total_steps());
        if self.objective == Objective::ReverseKl {
            c.anneal_steps = Some(self.annealing());
        }
        c
    }

    /// Rejects values no run can use, naming the key, the value and the range.
    pub fn check(&self) -> Result<()> {
        in_range("n_layers", self.layers(), 1, 1024)?;
        in_range("hidden", self.hidden, 1, 65_536)?;
        in_range("hidden_layers", self.hidden_layers, 0, 64)?;
        in_range("spline_bins", self.spline_bins, 1, 1024)?;
        float_in("spline_bound", self.spline_bound, 0.0, 1e6, true)?;
        float_in("lr", self.learning_rate(), 0.0, 10.0, true)?;
        float_in("lr_decay", self.lr_decay, 0.0, 1.0, true)?;
        if let Some(m) = self.max_grad_norm {
            float_in("max_grad_norm", m, 0.0, f64::MAX, true)?;
        }
        in_range("batch_size", self.batch_size, 1, MAX_BATCH)?;
        in_range("steps", self.total_steps(), 1, MAX_STEPS)?;
        in_range("anneal_steps", self.annealing(), 0, MAX_STEPS)?;
        in_range("eval_every", self.eval_every, 1, MAX_STEPS)?;
        in_range("test_size", self.test_size, 1, 10_000_000)?;
        in_range("samples", self.samples, 1, 1_000_000)?;
        in_range("grid", self.grid, 8, 2048)?;
        match (self.objective, self.target) {
            (Objective::ReverseKl, None) => {
                return Err(TrainError::Config(
                    "--objective reverse-kl needs --target u1|u2|u3|u4".into(),
                ))
            }
            (Objective::Mle, Some(t)) => {
                return Err(TrainError::Config(format!(
                    "--target {} is for --objective reverse-kl; maximum likelihood fits --dataset",
                    t.name()
                )))
            }
            _ => {}
        }
        if self.objective == Objective::Mle {
            let source = self.source()?;
            if self.test.is_some() && matches!(source, DataSource::Toy(_)) {
                return Err(TrainError::Config(format!(
                    "--test is for a dataset file; the toy {:?} draws its own test points",
                    self.dataset
                )));
            }
        }
        Ok(())
    }
}
