//! The command line of `cargo xtask train|sample|eval|data` (and of the
//! `flowtrain` binary, which is the same).

use crate::config::{CouplingNet, CouplingType, Mixing, ModelType, TrainConfig, PRESETS};
use crate::data::download;
use crate::distributed::{threads_per_rank, Backend, DataParallel};
use crate::error::{Result, TrainError};
use crate::graph::{GraphConfig, GraphMixingKind, GRAPH_PRESET};
use crate::report::write_grid;
use crate::sampling::{load_run_on, sample_images};
use crate::toy::{FlowKind, Objective, Target, ToyConfig};
use crate::train::Trainer;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flowtensor::{Device, Generator};
use std::path::PathBuf;

/// The preset of the toy runs (flows on vectors, [`crate::toy`]).
pub const TOY_PRESET: &str = "toy";

/// The presets `train` takes: the image presets, `toy` and `graph-toy`.
pub const TRAIN_PRESETS: [&str; 5] = [PRESETS[0], PRESETS[1], PRESETS[2], TOY_PRESET, GRAPH_PRESET];

/// The datasets of the image presets.
const IMAGE_DATASETS: [&str; 3] = ["shapes16", "mnist", "cifar10"];

/// Flags of `train`. Every value flag replaces the same key of the preset
/// and of `--config` (the names follow the convolution-exponential paper's
/// experiment scripts).
#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// Preset to start from (`toy`: flows on 1-D and 2-D points, see
    /// `flowtrain::toy`; `graph-toy`: graph normalizing flows, see `flowtrain::graph`).
    #[arg(long, default_value = "default", value_parser = clap::builder::PossibleValuesParser::new(TRAIN_PRESETS))]
    pub preset: String,
    /// TOML file whose keys replace the preset's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run's folder (checkpoint, metrics, plots, samples); default
    /// `runs/default` (`runs/sweep` for a sweep's folder of runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in `--out` from its checkpoint (with its saved configuration; `--steps` may extend it).
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Validate the run (configuration, data, model shapes, memory) and
    /// print its size and memory estimate, without training.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Where to train: cpu, cuda or cuda:N (with --resume, moves the run).
    #[arg(long)]
    pub device: Option<String>,
    /// Data directory (MNIST IDX files, CIFAR-10 batches).
    #[arg(long = "data")]
    pub data_dir: Option<PathBuf>,
    /// shapes16, mnist or cifar10; with `--preset toy`, a toy density
    /// (moons, 8gaussians, checkerboard, spirals, mog1d, mog2d) or a `.csv` /
    /// `.npy` file of points.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Toy runs: test points (`.csv` / `.npy`) for a `--dataset` file (default: 10% of it).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Toy runs: planar, radial, realnvp, maf, nsf-ar or nsf-c.
    #[arg(long)]
    pub flow: Option<String>,
    /// Toy runs: layers (planar, radial) or steps (the others).
    #[arg(long)]
    pub n_layers: Option<usize>,
    /// Toy runs: units per hidden layer of the conditioners.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Toy runs: mle (fit --dataset) or reverse-kl (fit --target).
    #[arg(long)]
    pub objective: Option<String>,
    /// Toy runs with `--objective reverse-kl`: the energy u1, u2, u3 or u4.
    #[arg(long)]
    pub target: Option<String>,
    /// Graph runs: rings, grids, ladders, communities, or a JSON lines file
    /// of graphs (`{"nodes": [[x, y], ...], "edges": [[i, j], ...]}` per line).
    #[arg(long)]
    pub graph_dataset: Option<String>,
    /// Graph runs: the mixing of every step, none, 1x1 or convexp.
    #[arg(long)]
    pub graph_mixing: Option<String>,
    /// The mixing of every step: reverse, shuffle, 1x1 (LU), 1x1-plain,
    /// 1x1-qr, convexp, emerging, periodic, woodbury, woodbury-me (a
    /// comma-separated list for `sweep`).
    #[arg(long)]
    pub mixing: Option<String>,
    /// coupling_flow, sylvester or residual_flow (a list for `sweep`).
    #[arg(long)]
    pub model_type: Option<String>,
    /// The coupling of every step: affine or additive (a list for `sweep`).
    #[arg(long)]
    pub coupling: Option<String>,
    /// The network inside the couplings: biased (convolutions with biases,
    /// the default) or glow (Glow's own: the edge channel and ActNorm in the
    /// hidden layers, the edge channel in the split priors); a list for `sweep`.
    #[arg(long)]
    pub coupling_net: Option<String>,
    #[arg(long)]
    pub n_levels: Option<usize>,
    #[arg(long)]
    pub n_subflows: Option<usize>,
    #[arg(long)]
    pub hidden_channels: Option<usize>,
    #[arg(long)]
    pub densenet_depth: Option<usize>,
    #[arg(long)]
    pub densenet_growth: Option<usize>,
    #[arg(long)]
    pub n_intermediate_channels: Option<usize>,
    /// Split priors between levels (`--use-splitprior` alone: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub use_splitprior: Option<bool>,
    /// A gated output convolution in the DenseNet conditioner (`--use-gated-conv` alone: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub use_gated_conv: Option<bool>,
    #[arg(long = "dequantize-distribution", value_parser = ["uniform", "flow"])]
    pub dequantize: Option<String>,
    #[arg(long)]
    pub n_bits: Option<u32>,
    #[arg(long)]
    pub hflip: Option<bool>,
    #[arg(long)]
    pub convexp_terms: Option<usize>,
    #[arg(long)]
    pub woodbury_rank: Option<usize>,
    #[arg(long, value_parser = ["adam", "adamax", "sgd"])]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long = "warmup")]
    pub warmup_steps: Option<u64>,
    #[arg(long)]
    pub lr_decay: Option<f64>,
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long)]
    pub polyak: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub eval_every: Option<u64>,
    #[arg(long)]
    pub eval_limit: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    #[arg(long)]
    pub samples: Option<usize>,
    /// Data-parallel training over the processes that `mpirun -n P`
    /// starts: none, mpi, or nccl (CUDA, one rank per GPU). --batch-size is
    /// the global batch; each rank takes batch-size / P of its images.
    #[arg(long, value_enum, default_value_t = Backend::None)]
    pub distributed: Backend,
    /// With --distributed: steps between the checks that every rank holds
    /// the same parameters (a mismatch stops the run).
    #[arg(long, default_value_t = crate::distributed::CHECK_EVERY)]
    pub check_every: u64,
}

impl TrainArgs {
    /// The flags given, as TOML keys of [`TrainConfig`].
    fn overrides(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let mut set = |key: &str, value: Option<toml::Value>| {
            if let Some(v) = value {
                t.insert(key.to_string(), v);
            }
        };
        let int = |v: Option<u64>| v.map(|v| toml::Value::Integer(v as i64));
        let size = |v: Option<usize>| v.map(|v| toml::Value::Integer(v as i64));
        let float = |v: Option<f64>| v.map(toml::Value::Float);
        let string = |v: &Option<String>| v.clone().map(toml::Value::String);
        set(
            "data_dir",
            self.data_dir
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
        );
        set("dataset", string(&self.dataset));
        set("device", string(&self.device));
        set("mixing", string(&self.mixing));
        set("model_type", string(&self.model_type));
        set("coupling", string(&self.coupling));
        set("coupling_net", string(&self.coupling_net));
        set("n_levels", size(self.n_levels));
        set("n_subflows", size(self.n_subflows));
        set("hidden_channels", size(self.hidden_channels));
        set("densenet_depth", size(self.densenet_depth));
        set("densenet_growth", size(self.densenet_growth));
        set(
            "n_intermediate_channels",
            size(self.n_intermediate_channels),
        );
        set(
            "use_splitprior",
            self.use_splitprior.map(toml::Value::Boolean),
        );
        set(
            "use_gated_conv",
            self.use_gated_conv.map(toml::Value::Boolean),
        );
        set("dequantize", string(&self.dequantize));
        set(
            "n_bits",
            self.n_bits.map(|v| toml::Value::Integer(i64::from(v))),
        );
        set("hflip", self.hflip.map(toml::Value::Boolean));
        set("convexp_terms", size(self.convexp_terms));
        set("woodbury_rank", size(self.woodbury_rank));
        set("lr", float(self.lr));
        set("warmup_steps", int(self.warmup_steps));
        set("lr_decay", float(self.lr_decay));
        set("max_grad_norm", float(self.max_grad_norm));
        set("polyak", float(self.polyak));
        set("batch_size", size(self.batch_size));
        set("steps", int(self.steps));
        set("epochs", int(self.epochs));
        set("seed", int(self.seed));
        set("eval_every", int(self.eval_every));
        set("eval_limit", size(self.eval_limit));
        set("checkpoint_every", int(self.checkpoint_every));
        set("samples", size(self.samples));
        if let Some(v) = self.optimizer_value() {
            t.insert("optimizer".into(), v);
        }
        t
    }

    /// The run's folder: `--out`, or `runs/default`.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs/default"))
    }

    /// The toy-only flags that were given, by name.
    fn toy_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--test", self.test.is_some()),
            ("--flow", self.flow.is_some()),
            ("--n-layers", self.n_layers.is_some()),
            ("--hidden", self.hidden.is_some()),
            ("--objective", self.objective.is_some()),
            ("--target", self.target.is_some()),
        ];
        given.iter().filter(|g| g.1).map(|g| g.0).collect()
    }

    /// The image-only flags that were given, by name.
    fn image_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--resume", self.resume),
            ("--data", self.data_dir.is_some()),
            ("--mixing", self.mixing.is_some()),
            ("--model-type", self.model_type.is_some()),
            ("--coupling", self.coupling.is_some()),
            ("--coupling-net", self.coupling_net.is_some()),
            ("--n-levels", self.n_levels.is_some()),
            ("--n-subflows", self.n_subflows.is_some()),
            ("--hidden-channels", self.hidden_channels.is_some()),
            ("--densenet-depth", self.densenet_depth.is_some()),
            ("--densenet-growth", self.densenet_growth.is_some()),
            (
                "--n-intermediate-channels",
                self.n_intermediate_channels.is_some(),
            ),
            ("--use-splitprior", self.use_splitprior.is_some()),
            ("--use-gated-conv", self.use_gated_conv.is_some()),
            ("--dequantize-distribution", self.dequantize.is_some()),
            ("--n-bits", self.n_bits.is_some()),
            ("--hflip", self.hflip.is_some()),
            ("--convexp-terms", self.convexp_terms.is_some()),
            ("--woodbury-rank", self.woodbury_rank.is_some()),
            ("--epochs", self.epochs.is_some()),
            ("--eval-limit", self.eval_limit.is_some()),
            ("--checkpoint-every", self.checkpoint_every.is_some()),
        ];
        given.iter().filter(|g| g.1).map(|g| g.0).collect()
    }

    /// The flags of a toy run, as TOML keys of [`ToyConfig`].
    fn toy_overrides(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let mut set = |key: &str, value: Option<toml::Value>| {
            if let Some(v) = value {
                t.insert(key.to_string(), v);
            }
        };
        let int = |v: Option<u64>| v.map(|v| toml::Value::Integer(v as i64));
        let size = |v: Option<usize>| v.map(|v| toml::Value::Integer(v as i64));
        let float = |v: Option<f64>| v.map(toml::Value::Float);
        let string = |v: &Option<String>| v.clone().map(toml::Value::String);
        set("device", string(&self.device));
        set("dataset", string(&self.dataset));
        set(
            "test",
            self.test
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
        );
        set("flow", string(&self.flow));
        set("objective", string(&self.objective));
        set("target", string(&self.target));
        set("n_layers", size(self.n_layers));
        set("hidden", size(self.hidden));
        set("lr", float(self.lr));
        set("warmup_steps", int(self.warmup_steps));
        set("lr_decay", float(self.lr_decay));
        set("max_grad_norm", float(self.max_grad_norm));
        set("batch_size", size(self.batch_size));
        set("steps", int(self.steps));
        set("seed", int(self.seed));
        set("eval_every", int(self.eval_every));
        set("samples", size(self.samples));
        if let Some(v) = self.optimizer_value() {
            t.insert("optimizer".into(), v);
        }
        t
    }

    /// `--optimizer` as the TOML value of [`crate::optim::OptimizerKind`].
    fn optimizer_value(&self) -> Option<toml::Value> {
        let kind = match self.optimizer.as_deref()? {
            "adamax" => crate::optim::OptimizerKind::adamax(),
            "sgd" => crate::optim::OptimizerKind::Sgd { momentum: 0.9 },
            _ => crate::optim::OptimizerKind::adam(),
        };
        toml::Value::try_from(kind).ok()
    }

    /// The resolved configuration of a toy run (`--preset toy`): the
    /// preset's defaults, then `--config`, then the flags. Image-only flags
    /// are an error.
    pub fn resolve_toy(&self) -> Result<ToyConfig> {
        let bad = |e: String| TrainError::Config(e);
        let image = self.image_flags();
        if !image.is_empty() {
            return Err(bad(format!(
                "{} {} for the image presets, not for --preset toy",
                image.join(", "),
                if image.len() == 1 { "is" } else { "are" }
            )));
        }
        let graph = self.graph_flags();
        if !graph.is_empty() {
            return Err(bad(format!(
                "{} {} for --preset graph-toy, not for --preset toy",
                graph.join(", "),
                if graph.len() == 1 { "is" } else { "are" }
            )));
        }
        if let Some(f) = &self.flow {
            f.parse::<FlowKind>().map_err(bad)?;
        }
        if let Some(o) = &self.objective {
            o.parse::<Objective>().map_err(bad)?;
        }
        if let Some(t) = &self.target {
            t.parse::<Target>().map_err(bad)?;
        }
        if let Some(d) = &self.device {
            d.parse::<Device>().map_err(bad)?;
        }
        let mut config = ToyConfig::default();
        if let Some(path) = &self.config {
            config = config.merge_toml_file(path)?;
        }
        config.merge_toml(
            &toml::to_string(&self.toy_overrides())
                .map_err(|e| TrainError::Config(e.to_string()))?,
        )
    }

    /// The graph-only flags that were given, by name.
    fn graph_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--graph-dataset", self.graph_dataset.is_some()),
            ("--graph-mixing", self.graph_mixing.is_some()),
        ];
        given.iter().filter(|g| g.1).map(|g| g.0).collect()
    }

    /// The resolved configuration of a graph run (`--preset graph-toy`):
    /// the preset's defaults ([`GraphConfig::default`]), then `--config`
    /// (keys of [`GraphConfig`]), then the flags. Flags of the other presets
    /// are an error.
    pub fn resolve_graph(&self) -> Result<GraphConfig> {
        let shared = ["--n-subflows", "--hidden-channels", "--convexp-terms"];
        let mut other: Vec<&str> = self
            .image_flags()
            .into_iter()
            .filter(|f| !shared.contains(f))
            .collect();
        other.extend(self.toy_flags());
        let given = [
            ("--dataset", self.dataset.is_some()),
            ("--device", self.device.is_some()),
            ("--distributed", self.distributed != Backend::None),
        ];
        other.extend(given.iter().filter(|g| g.1).map(|g| g.0));
        if !other.is_empty() {
            return Err(TrainError::Config(format!(
                "{} {} not for --preset graph-toy (it takes --graph-dataset, --graph-mixing, --n-subflows, --hidden-channels, --convexp-terms and the optimisation flags; it trains on the CPU)",
                other.join(", "),
                if other.len() == 1 { "is" } else { "are" }
            )));
        }
        if let Some(m) = &self.graph_mixing {
            m.parse::<GraphMixingKind>().map_err(TrainError::Config)?;
        }
        let to_table = |text: &str, what: &str| -> Result<toml::Table> {
            text.parse::<toml::Table>()
                .map_err(|e| TrainError::Config(format!("{what}: {e}")))
        };
        let mut table = to_table(&GraphConfig::default().to_toml()?, "the preset")?;
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            table.extend(to_table(&text, &path.display().to_string())?);
        }
        let mut set = |key: &str, value: Option<toml::Value>| {
            if let Some(v) = value {
                table.insert(key.into(), v);
            }
        };
        let int = |v: Option<u64>| v.map(|v| toml::Value::Integer(v.min(i64::MAX as u64) as i64));
        let size = |v: Option<usize>| int(v.map(|v| v as u64));
        let float = |v: Option<f64>| v.map(toml::Value::Float);
        set(
            "dataset",
            self.graph_dataset.clone().map(toml::Value::String),
        );
        set("mixing", self.graph_mixing.clone().map(toml::Value::String));
        set("n_subflows", size(self.n_subflows));
        set("hidden", size(self.hidden_channels));
        set("convexp_terms", size(self.convexp_terms));
        set("batch_size", size(self.batch_size));
        set("steps", int(self.steps));
        set("lr", float(self.lr));
        set("warmup_steps", int(self.warmup_steps));
        set("max_grad_norm", float(self.max_grad_norm));
        set("seed", int(self.seed));
        set("eval_every", int(self.eval_every));
        set("samples", size(self.samples));
        let config: GraphConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| TrainError::Config(format!("graph run: {e}")))?;
        config.check()?;
        Ok(config)
    }

    /// The resolved configuration: preset, then `--config`, then the flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let bad = |e: String| TrainError::Config(e);
        if self.preset == TOY_PRESET || self.preset == GRAPH_PRESET {
            return Err(bad(format!(
                "--preset {} runs with `train` only",
                self.preset
            )));
        }
        let graph = self.graph_flags();
        if !graph.is_empty() {
            return Err(bad(format!(
                "{} {} for --preset graph-toy",
                graph.join(", "),
                if graph.len() == 1 { "is" } else { "are" }
            )));
        }
        let toy = self.toy_flags();
        if !toy.is_empty() {
            return Err(bad(format!(
                "{} {} for --preset toy, not for the image presets",
                toy.join(", "),
                if toy.len() == 1 { "is" } else { "are" }
            )));
        }
        if let Some(d) = &self.dataset {
            if !IMAGE_DATASETS.contains(&d.as_str()) {
                return Err(bad(format!(
                    "--dataset {d}: the image presets take {}; toy densities and point files are for --preset toy",
                    IMAGE_DATASETS.join(", ")
                )));
            }
        }
        if let Some(m) = &self.mixing {
            if m.contains(',') {
                return Err(bad(format!(
                    "--mixing {m}: a list of mixings is for `sweep`; `train` takes one"
                )));
            }
            m.parse::<Mixing>().map_err(bad)?;
        }
        if let Some(m) = &self.model_type {
            m.parse::<ModelType>().map_err(bad)?;
        }
        if let Some(c) = &self.coupling {
            c.parse::<CouplingType>().map_err(bad)?;
        }
        if let Some(c) = &self.coupling_net {
            c.parse::<CouplingNet>().map_err(bad)?;
        }
        if let Some(d) = &self.device {
            d.parse::<Device>().map_err(bad)?;
        }
        let mut config = TrainConfig::preset(&self.preset)?;
        if let Some(path) = &self.config {
            config = config.merge_toml_file(path)?;
        }
        config.merge_toml(
            &toml::to_string(&self.overrides()).map_err(|e| TrainError::Config(e.to_string()))?,
        )
    }
}

/// The memory limit of a command.
#[derive(Args, Debug, Default, Clone)]
pub struct MemoryArgs {
    /// The most memory the command may plan to use (e.g. `8G`, `512M`);
    /// default 90% of the available memory (see `flowtrain::limits`).
    #[arg(long, value_parser = parse_memory_limit)]
    pub memory_limit: Option<u64>,
}

fn parse_device(text: &str) -> std::result::Result<Device, String> {
    text.parse()
}

fn parse_memory_limit(text: &str) -> std::result::Result<u64, String> {
    crate::limits::parse_bytes(text)
}

impl MemoryArgs {
    /// Applies the limit to this process.
    fn apply(&self) {
        if let Some(bytes) = self.memory_limit {
            crate::limits::set_memory_limit(Some(bytes));
        }
    }
}

/// Flags of `sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The run's folder (with its checkpoint).
    #[arg(long)]
    pub run: PathBuf,
    /// Number of samples (1 to 4096).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// The standard deviation of the latent, as a fraction of the base's (0 to 10).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The PNG to write (default `RUN/sample_t{T}_s{SEED}.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to sample (default: the run's device).
    #[arg(long, value_parser = parse_device)]
    pub device: Option<Device>,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

/// Flags of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run's folder (with its checkpoint).
    #[arg(long)]
    pub run: PathBuf,
    /// Test images evaluated (all when absent; at least 1).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where to evaluate (default: the run's device).
    #[arg(long, value_parser = parse_device)]
    pub device: Option<Device>,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DataSet {
    Mnist,
    Cifar10,
}

/// Flags of `data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    pub dataset: DataSet,
    /// Where to put the files.
    #[arg(long)]
    pub dir: PathBuf,
    /// Another mirror (a URL prefix ending in `/`).
    #[arg(long)]
    pub base_url: Option<String>,
}

/// The tasks of the command line.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trains a flow (a preset, a TOML file and flags), evaluating, checkpointing and sampling.
    /// A flag given twice takes its last value.
    #[command(args_override_self = true)]
    Train(Box<TrainArgs>),
    /// Draws a grid of samples from a run's checkpoint.
    Sample(SampleArgs),
    /// Test bits/dim of a run's checkpoint.
    Eval(EvalArgs),
    /// Downloads a dataset and verifies its checksums.
    Data(DataArgs),
    /// Runs a grid of settings (comma-separated --mixing, --model-type,
    /// --coupling) times --seeds, one run after another, resumable, and
    /// summarises it (summary.md, summary.json, curves.svg, bars.svg).
    #[command(args_override_self = true)]
    Sweep(Box<SweepArgs>),
    /// Rebuilds the summary of finished runs (run folders or sweep folders).
    Summarize(SummarizeArgs),
    /// Trains like `train` (image presets without samples unless --samples) with
    /// the op profiler on: prints time per op kind (forward and backward), per
    /// layer and outside ops, and writes profile.json and profile.svg in --out.
    #[command(args_override_self = true)]
    Profile(Box<TrainArgs>),
}

/// Flags of `sweep`: every flag of `train`, lists where a setting varies.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The seeds of every setting: a range `0..3` (3 excluded), `0..=2`, or a list `0,1,2`.
    #[arg(long, default_value = "0")]
    pub seeds: String,
}

/// Flags of `summarize`.
#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Run folders, or folders of runs (a sweep's `--out`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the summary (default: the first folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The values of a list flag (`None`: the preset's, one setting).
fn list(flag: &Option<String>) -> Vec<Option<String>> {
    match flag {
        Some(v) => v.split(',').map(|x| Some(x.trim().to_string())).collect(),
        None => vec![None],
    }
}

/// The runs of a sweep: every combination of the list flags, times the seeds.
pub fn sweep_runs(args: &SweepArgs) -> Result<Vec<crate::sweep::SweepRun>> {
    if args.train.resume {
        return Err(TrainError::Config(
            "a sweep resumes its runs by itself; run the same command again without --resume"
                .into(),
        ));
    }
    let seeds = crate::sweep::parse_seeds(&args.seeds)?;
    // the list flags, outermost first: every combination is a setting
    let axes = [
        list(&args.train.model_type),
        list(&args.train.coupling),
        list(&args.train.coupling_net),
        list(&args.train.mixing),
    ];
    let mut settings: Vec<[Option<String>; 4]> = vec![Default::default()];
    for (i, axis) in axes.iter().enumerate() {
        settings = settings
            .into_iter()
            .flat_map(|setting| {
                axis.iter().map(move |value| {
                    let mut setting = setting.clone();
                    setting[i] = value.clone();
                    setting
                })
            })
            .collect();
    }
    let mut runs = Vec::new();
    for setting in settings {
        let varied: Vec<&str> = setting
            .iter()
            .zip(&axes)
            .filter(|(_, axis)| axis.len() > 1)
            .filter_map(|(value, _)| value.as_deref())
            .collect();
        let name = if varied.is_empty() {
            "run".to_string()
        } else {
            varied.join("-")
        };
        let [model, coupling, coupling_net, mixing] = setting;
        for &seed in &seeds {
            let mut one = args.train.clone();
            one.model_type = model.clone();
            one.coupling = coupling.clone();
            one.coupling_net = coupling_net.clone();
            one.mixing = mixing.clone();
            one.seed = Some(seed);
            runs.push(crate::sweep::SweepRun {
                name: format!("{name}-seed{seed}"),
                config: one.resolve()?,
            });
        }
    }
    Ok(runs)
}

/// Runs `sweep`.
pub fn sweep(args: &SweepArgs) -> Result<()> {
    if args.train.distributed != Backend::None {
        return Err(TrainError::Config(
            "--distributed: a sweep runs its settings one after another in one process; start each run with `mpirun -n P ... train --distributed ...` instead".into(),
        ));
    }
    args.train.memory.apply();
    let runs = sweep_runs(args)?;
    let out = args
        .train
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/sweep"));
    if args.train.dry_run {
        for run in &runs {
            println!("{}:", run.name);
            print_dry_run(&run.config)?;
        }
        return Ok(());
    }
    // every run is checked before the first one starts
    for run in &runs {
        run.config.check()?;
    }
    let summary = crate::sweep::run_sweep(&runs, &out, !args.train.quiet)?;
    print!("{}", crate::sweep::markdown(&summary));
    println!(
        "wrote {0}/summary.md, {0}/summary.json, {0}/curves.svg, {0}/bars.svg",
        out.display()
    );
    Ok(())
}

/// The `flowtrain` binary's arguments.
#[derive(Parser, Debug)]
#[command(about = "Training, evaluation and sampling of normalizing flows")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Prints what `--dry-run` found: the run's size and memory estimate.
fn print_dry_run(config: &TrainConfig) -> Result<()> {
    use crate::limits::human;
    let (data, total, estimate) = Trainer::validate(config)?;
    println!(
        "valid: {} training and {} test images of shape {:?}, {total} steps of batch {}",
        data.train.len(),
        data.test.len(),
        data.train.shape,
        config.batch_size
    );
    println!(
        "model: about {} parameters, {} buffer values",
        estimate.parameters, estimate.buffer_values
    );
    println!(
        "memory estimate: {} in all (state {}, data {}, and at most one of: training step {}, evaluation batch {}, sample grid {}, checkpoint write {}); limit {}",
        human(estimate.peak()),
        human(estimate.state_bytes),
        human(estimate.data_bytes),
        human(estimate.step_bytes),
        human(estimate.eval_bytes),
        human(estimate.sample_bytes),
        human(estimate.checkpoint_bytes),
        crate::limits::memory_limit().map_or("none".to_string(), human)
    );
    Ok(())
}

/// Prints `wrote FILE, FILE, ...`.
fn print_written(files: &[PathBuf]) {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("wrote {}", files.join(", "));
}

/// Runs `train --preset toy`.
pub fn train_toy(args: &TrainArgs) -> Result<()> {
    args.memory.apply();
    let config = args.resolve_toy()?.resolved();
    config.check()?;
    let out = args.out.clone().unwrap_or_else(|| {
        let name = match (config.objective, config.target) {
            (Objective::ReverseKl, Some(t)) => t.name().to_string(),
            _ => std::path::Path::new(&config.dataset)
                .file_stem()
                .map_or("data".into(), |s| s.to_string_lossy().into_owned()),
        };
        PathBuf::from("runs/toy").join(format!("{name}-{}", config.flow.name()))
    });
    if args.dry_run {
        println!("valid toy run into {}:", out.display());
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    let device = match config.device {
        Device::Cpu => format!("the CPU, {} thread(s)", rayon::current_num_threads()),
        Device::Cuda(n) => format!(
            "cuda:{n} ({})",
            flowtensor::cuda::probe(n).unwrap_or_else(|e| e.to_string())
        ),
    };
    eprintln!(
        "training {} ({} x{}) for {} steps in {} on {device}",
        match config.objective {
            Objective::Mle => format!("on {}", config.dataset),
            Objective::ReverseKl => format!(
                "by reverse KL to {}",
                config.target.map_or("?", |t| t.name())
            ),
        },
        config.flow.name(),
        config.layers(),
        config.total_steps(),
        out.display()
    );
    let report = crate::toy::run(&config, &out, !args.quiet)?;
    let m = &report.metrics;
    for note in &m.notes {
        eprintln!("note: {note}");
    }
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    match m.objective {
        Objective::Mle => println!(
            "test nll {} nats (initially {}; true {}, KL estimate {}) after {} steps; {:.1} s training, {} parameters",
            fmt(m.test_nll),
            fmt(m.initial_test_nll),
            fmt(m.true_test_nll),
            fmt(m.kl_estimate),
            m.steps,
            m.seconds,
            m.parameters
        ),
        Objective::ReverseKl => println!(
            "E[log q + U] {} (initially {}; log Z {}, KL(q || p) estimate {}) after {} steps; {:.1} s training, {} parameters",
            fmt(m.reverse_kl_loss),
            fmt(m.initial_loss),
            fmt(m.log_z),
            fmt(m.kl_estimate),
            m.steps,
            m.seconds,
            m.parameters
        ),
    }
    print_written(&report.files);
    Ok(())
}

/// Runs `train --preset graph-toy`.
pub fn train_graph(args: &TrainArgs) -> Result<()> {
    args.memory.apply();
    let config = args.resolve_graph()?;
    let out = args.out.clone().unwrap_or_else(|| {
        let name = std::path::Path::new(&config.dataset)
            .file_stem()
            .map_or("graphs".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs/graph").join(format!("{name}-{}", config.mixing.name()))
    });
    if args.dry_run {
        crate::graph::run::load_split(&config)?;
        println!("valid graph run into {}:", out.display());
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    eprintln!(
        "training a graph flow (mixing {}, {} steps of {} graphs) on {} in {} on the CPU, {} thread(s)",
        config.mixing.name(),
        config.steps,
        config.batch_size,
        config.dataset,
        out.display(),
        rayon::current_num_threads()
    );
    let report = crate::graph::run(&config, &out, !args.quiet)?;
    let m = &report.metrics;
    println!(
        "test nll {:.4} nats/node (initially {:.4}) on {} test graphs ({} nodes) after {} steps; {:.1} s training, {:.4} s/step, {} parameters",
        m.test_nll, m.initial_test_nll, m.test_graphs, m.test_nodes, m.steps, m.seconds, m.sec_per_step, m.parameters
    );
    print_written(&report.files);
    Ok(())
}

/// Joins the `--distributed` group (before the kernels' threads start) and
/// gives each rank its share of the machine's cores, unless
/// `RAYON_NUM_THREADS` sets them.
fn join_group(args: &TrainArgs) -> Result<DataParallel> {
    let device = args
        .device
        .as_deref()
        .map(str::parse::<Device>)
        .transpose()
        .map_err(TrainError::Config)?;
    let group = args.distributed.connect(device)?;
    if group.world_size() > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = threads_per_rank(group.local_size());
        // fails only when the pool already runs (then it keeps its threads)
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
    Ok(DataParallel::new(group).with_check_every(args.check_every))
}

/// Runs `train`. In a data-parallel run, an error on any rank ends the
/// whole job with a message naming the rank.
pub fn train(args: &TrainArgs) -> Result<()> {
    if args.preset == TOY_PRESET {
        if args.distributed != Backend::None {
            return Err(TrainError::Config(
                "--distributed: the toy runs train in one process".into(),
            ));
        }
        return train_toy(args);
    }
    if args.preset == GRAPH_PRESET {
        return train_graph(args);
    }
    let parallel = join_group(args)?;
    let result = train_images(args, &parallel);
    if let Err(e) = &result {
        if parallel.world_size() > 1 {
            eprintln!(
                "rank {} of {} ({}): error: {e}; ending the job",
                parallel.rank(),
                parallel.world_size(),
                parallel.group().name()
            );
            parallel.group().abort(1);
        }
    }
    result
}

/// Runs `train` for the image presets as one rank of `parallel`.
fn train_images(args: &TrainArgs, parallel: &DataParallel) -> Result<()> {
    args.memory.apply();
    if args.dry_run {
        let config = if args.resume {
            let path = args.out_dir().join(crate::train::CHECKPOINT);
            let mut config = crate::train::saved_config(&crate::checkpoint::load(&path)?, &path)?;
            if let Some(steps) = args.steps {
                config.steps = steps;
                config.epochs = None;
            }
            config
        } else {
            if args.out_dir().join(crate::train::CHECKPOINT).exists() {
                return Err(TrainError::Config(format!(
                    "{} already holds a run; use --resume to continue it or choose another --out",
                    args.out_dir().display()
                )));
            }
            args.resolve()?
        };
        return print_dry_run(&config);
    }
    // the rank's device, where the backend chose it (NCCL: its GPU)
    let device = match parallel.device() {
        Some(device) => Some(device),
        None => args
            .device
            .as_deref()
            .map(str::parse::<Device>)
            .transpose()
            .map_err(TrainError::Config)?,
    };
    let mut trainer = if args.resume {
        Trainer::resume_in(&args.out_dir(), args.steps, device, parallel.clone())?
    } else {
        let mut config = args.resolve()?;
        if let Some(device) = device {
            config.device = device;
        }
        Trainer::new_in(config, &args.out_dir(), parallel.clone())?
    };
    let writer = parallel.is_writer();
    trainer.progress = !args.quiet && writer;
    let device = match trainer.config.device {
        Device::Cpu => format!("the CPU, {} thread(s)", rayon::current_num_threads()),
        Device::Cuda(n) => format!(
            "cuda:{n} ({})",
            flowtensor::cuda::probe(n).unwrap_or_else(|e| e.to_string())
        ),
    };
    let ranks = match parallel.world_size() {
        1 => String::new(),
        p => format!(
            " x {p} ranks ({}, {} images each)",
            parallel.group().name(),
            trainer.config.batch_size / p
        ),
    };
    if writer {
        eprintln!(
            "training {} steps ({} done) in {} on {device}{ranks}",
            trainer.total_steps(),
            trainer.step(),
            args.out_dir().display(),
        );
    }
    let report = trainer.run()?;
    if !writer {
        return Ok(());
    }
    let summary = &report.summary;
    println!(
        "test bpd {:.4}{} after {} steps; {:.1} s training, {:.4} s/step",
        summary.test_bpd,
        summary
            .test_bpd_iw
            .map(|b| format!(" (importance-weighted {b:.4})"))
            .unwrap_or_default(),
        summary.steps,
        summary.train_seconds,
        summary.sec_per_step
    );
    if summary.ranks > 1 {
        println!(
            "{} ranks: {:.4} s/step averaging gradients ({:.1}% of the step)",
            summary.ranks,
            summary.all_reduce_seconds / summary.steps.max(1) as f64,
            100.0 * summary.all_reduce_seconds / summary.train_seconds.max(f64::MIN_POSITIVE)
        );
    }
    print_written(&report.files);
    Ok(())
}

/// Checks the flags of `sample`.
fn check_sample_args(args: &SampleArgs) -> Result<()> {
    use crate::limits::{float_in, in_range, MAX_SAMPLES, MAX_TEMPERATURE};
    in_range("--n", args.n, 1, MAX_SAMPLES)?;
    float_in(
        "--temperature",
        args.temperature,
        0.0,
        MAX_TEMPERATURE,
        false,
    )
}

/// Runs any command.
pub fn run(command: &Command) -> Result<()> {
    match command {
        Command::Train(args) => train(args),
        Command::Profile(args) => {
            flowtensor::profile::request();
            let mut args = args.as_ref().clone();
            if args.preset != TOY_PRESET && args.preset != GRAPH_PRESET {
                args.samples = args.samples.or(Some(0));
            }
            train(&args)
        }
        Command::Sweep(args) => sweep(args),
        Command::Summarize(args) => {
            let out = args.out.clone().unwrap_or_else(|| args.dirs[0].clone());
            let summary = crate::sweep::summarize(&args.dirs, &out)?;
            print!("{}", crate::sweep::markdown(&summary));
            println!(
                "wrote {0}/summary.md, {0}/summary.json, {0}/curves.svg, {0}/bars.svg",
                out.display()
            );
            Ok(())
        }
        Command::Sample(args) => {
            args.memory.apply();
            check_sample_args(args)?;
            let (config, model) = load_run_on(&args.run, args.device)?;
            crate::limits::check_memory(
                &format!("{} samples", args.n),
                crate::limits::sample_bytes(&config, model.shape, args.n),
            )?;
            let images = sample_images(
                &model,
                args.n,
                args.temperature,
                &mut Generator::new(args.seed),
            )?;
            let out = args.out.clone().unwrap_or_else(|| {
                args.run.join(format!(
                    "sample_t{:.2}_s{}.png",
                    args.temperature, args.seed
                ))
            });
            write_grid(
                &out,
                &images,
                model.shape,
                (args.n as f64).sqrt().ceil() as usize,
            )?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Eval(args) => {
            args.memory.apply();
            if let Some(limit) = args.limit {
                crate::limits::in_range("--limit", limit, 1, usize::MAX)?;
            }
            let mut trainer = Trainer::for_evaluation_on(&args.run, args.device)?;
            if args.limit.is_some() {
                trainer.config.eval_limit = args.limit;
            }
            let (bpd, iw) = trainer.evaluate()?;
            let n = trainer.data.test.len();
            println!(
                "test bpd {bpd:.4}{} over {} test images at step {}",
                iw.map(|b| format!(" (importance-weighted {b:.4})"))
                    .unwrap_or_default(),
                trainer.config.eval_limit.map_or(n, |l| l.min(n)),
                trainer.step()
            );
            Ok(())
        }
        Command::Data(args) => {
            let base = args.base_url.as_deref();
            match args.dataset {
                DataSet::Mnist => download::mnist(&args.dir, base)?,
                DataSet::Cifar10 => download::cifar10(&args.dir, base)?,
            }
            println!("{:?} is in {}", args.dataset, args.dir.display());
            Ok(())
        }
    }
}
