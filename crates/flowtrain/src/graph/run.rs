//! A graph run: maximum likelihood of node features given the graph on a
//! fixed training set, test NLL per node, the picture of samples, the
//! checkpoint and `metrics.json`.

use super::config::{GraphConfig, GraphSource};
use super::data::{load_graphs, GraphBatch, GraphSample};
use super::picture::write_picture;
use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::files::{write_atomic, RunLock};
use crate::optim::{clip_factor, Optimizer, OptimizerKind};
use crate::report::{progress_bar, write_json, write_profile};
use flowlayers::{Flow, GraphFlow, GraphFlowConfig};
use flowtensor::{no_grad, profile, DType, Device, Generator};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The files of a run, in its folder.
pub const METRICS: &str = "metrics.json";
pub const CONFIG: &str = "config.toml";
pub const PICTURE: &str = "graphs.svg";
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Graph runs train in f32 on the CPU.
const DTYPE: DType = DType::F32;
const DEVICE: Device = Device::Cpu;
/// Graphs per evaluation batch, and of ActNorm's initialisation.
const EVAL_GRAPHS: usize = 64;
/// Salts that separate the generators of one seed.
const INIT_SALT: u64 = 0x11;
const TRAIN_SALT: u64 = 0x12;
const TEST_SALT: u64 = 0x13;
const SAMPLE_SALT: u64 = 0x14;

/// `metrics.json`: what a graph run measured. NLLs are in nats per node
/// (`-sum log p(X | A) / sum V` over the test graphs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphMetrics {
    pub dataset: String,
    pub mixing: String,
    pub steps: u64,
    /// Seconds in the training loop only.
    pub seconds: f64,
    pub sec_per_step: f64,
    pub parameters: usize,
    pub train_graphs: usize,
    pub test_graphs: usize,
    pub test_nodes: usize,
    /// Test NLL per node after the data-dependent initialisation.
    pub initial_test_nll: f64,
    pub test_nll: f64,
    /// `(step, test NLL per node)` of every evaluation.
    pub curve: Vec<(u64, f64)>,
    /// `(step, mean training NLL per node since the previous evaluation)`.
    pub train_curve: Vec<(u64, f64)>,
    pub config: GraphConfig,
}

/// What [`run`] produced.
#[derive(Clone, Debug)]
pub struct GraphReport {
    pub metrics: GraphMetrics,
    pub files: Vec<PathBuf>,
}

fn generator(seed: u64, salt: u64) -> Generator {
    Generator::new(seed ^ salt << 56)
}

/// The training and test graphs of `config` (errors before anything is written).
pub fn load_split(config: &GraphConfig) -> Result<(Vec<GraphSample>, Vec<GraphSample>)> {
    match config.source() {
        GraphSource::Family(family) => Ok((
            family.generate(config.train_graphs, config.seed ^ TRAIN_SALT << 56)?,
            family.generate(config.test_graphs, config.seed ^ TEST_SALT << 56)?,
        )),
        GraphSource::File(path) => {
            let all = load_graphs(&path)?;
            if all.len() < 2 {
                return Err(TrainError::data(
                    &path,
                    format!(
                        "{} graph(s): a run needs at least 2 (every tenth is a test graph)",
                        all.len()
                    ),
                ));
            }
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (i, g) in all.into_iter().enumerate() {
                match i % 10 {
                    9 => test.push(g),
                    _ => train.push(g),
                }
            }
            // fewer than 10 graphs: the last one is the test set
            if test.is_empty() {
                test.extend(train.pop());
            }
            Ok((train, test))
        }
    }
}

/// `-sum log p(X | A)` and the node count over `graphs`, in evaluation mode.
fn total_nll(flow: &GraphFlow, graphs: &[GraphSample]) -> Result<(f64, usize)> {
    flow.set_training(false);
    let (mut nll, mut nodes) = (0.0, 0);
    for chunk in graphs.chunks(EVAL_GRAPHS) {
        let refs: Vec<&GraphSample> = chunk.iter().collect();
        let batch = GraphBatch::new(&refs, DTYPE, DEVICE)?;
        let log_p = no_grad(|| flow.log_prob(&batch.features, &batch.adjacency))?;
        nll -= log_p.to_scalar()?;
        nodes += batch.nodes;
    }
    flow.set_training(true);
    Ok((nll, nodes))
}

/// Writes the parameters and buffers of `flow` atomically.
fn save_checkpoint(path: &Path, flow: &GraphFlow, config: &GraphConfig, step: u64) -> Result<()> {
    let mut tensors: Vec<_> = flow
        .parameters()
        .into_iter()
        .map(|(n, t)| (format!("param.{n}"), t))
        .collect();
    tensors.extend(
        flow.buffers()
            .into_iter()
            .map(|(n, t)| (format!("buffer.{n}"), t)),
    );
    let metadata = HashMap::from([
        ("config".to_string(), config.to_toml()?),
        ("step".to_string(), step.to_string()),
    ]);
    checkpoint::save(path, &tensors, metadata)
}

/// Trains and evaluates the run of `config` in `out` (locked while the run
/// writes; every file replaced atomically). `progress` shows a progress bar;
/// with profiling requested (`FLOWTENSOR_PROFILE=1`, `cargo xtask profile`)
/// the training loop's profile is written too.
pub fn run(config: &GraphConfig, out: &Path, progress: bool) -> Result<GraphReport> {
    flowtensor::in_pool(|| run_in_pool(config, out, progress))
}

fn run_in_pool(config: &GraphConfig, out: &Path, progress: bool) -> Result<GraphReport> {
    config.check()?;
    let (train, test) = load_split(config)?;
    let _lock = RunLock::acquire(out)?;
    let config_path = out.join(CONFIG);
    write_atomic(&config_path, config.to_toml()?.as_bytes())?;
    let flow_config = GraphFlowConfig {
        channels: train[0].dim,
        steps: config.n_subflows,
        hidden: config.hidden,
        mixing: config.mixing.layer(config.convexp_terms),
    };
    let flow = GraphFlow::new(
        flow_config,
        DTYPE,
        DEVICE,
        &mut generator(config.seed, INIT_SALT),
    )?;
    let parameters = flow.parameters().iter().map(|(_, p)| p.elem_count()).sum();

    // ActNorm's data-dependent initialisation on the first training graphs
    let order = crate::batch::epoch_order(config.seed, 0, train.len());
    let init: Vec<&GraphSample> = order.iter().take(EVAL_GRAPHS).map(|&i| &train[i]).collect();
    let init = GraphBatch::new(&init, DTYPE, DEVICE)?;
    flow.set_training(true);
    no_grad(|| flow.log_prob(&init.features, &init.adjacency))?;

    let (nll, test_nodes) = total_nll(&flow, &test)?;
    let initial = nll / test_nodes as f64;
    let mut curve = vec![(0, initial)];
    let mut train_curve = Vec::new();
    let mut optimizer = Optimizer::new(OptimizerKind::adam(), flow.parameters())?;
    let checkpoint_path = out.join(CHECKPOINT);
    let mut saved: Option<PathBuf> = None;
    let bar = progress_bar(config.steps, progress);
    let session = profile::if_requested();
    let (mut seconds, mut interval) = (0.0, (0.0, 0u64));
    for step in 0..config.steps {
        let batch = config.batch_size.min(train.len());
        let indices = crate::batch::step_indices(config.seed, step, batch, train.len());
        let graphs: Vec<&GraphSample> = indices.iter().map(|&i| &train[i]).collect();
        let batch = GraphBatch::new(&graphs, DTYPE, DEVICE)?;
        let start = Instant::now();
        let loss = flow
            .log_prob(&batch.features, &batch.adjacency)?
            .sum_all()?
            .neg()?
            .div_scalar(batch.nodes as f64)?;
        let value = loss.to_scalar()?;
        let non_finite = |v: f64| TrainError::NonFinite {
            step: step + 1,
            loss: v,
            checkpoint: saved.clone(),
        };
        if !value.is_finite() {
            return Err(non_finite(value));
        }
        optimizer.zero_grad();
        loss.backward()?;
        let norm = optimizer.grad_norm()?;
        if !norm.is_finite() {
            return Err(non_finite(norm));
        }
        optimizer.step(
            config.schedule().lr(step),
            clip_factor(norm, config.max_grad_norm),
        )?;
        seconds += start.elapsed().as_secs_f64();
        interval = (interval.0 + value, interval.1 + 1);
        bar.set_position(step + 1);
        bar.set_message(format!("nll/node {value:.4}"));
        if (step + 1) % config.eval_every == 0 || step + 1 == config.steps {
            let (nll, nodes) = total_nll(&flow, &test)?;
            let nll = nll / nodes as f64;
            if !nll.is_finite() {
                return Err(non_finite(nll));
            }
            curve.push((step + 1, nll));
            train_curve.push((step + 1, interval.0 / interval.1.max(1) as f64));
            interval = (0.0, 0);
            save_checkpoint(&checkpoint_path, &flow, config, step + 1)?;
            saved = Some(checkpoint_path.clone());
            bar.println(format!("step {}: test nll {nll:.4} nats/node", step + 1));
        }
    }
    bar.finish_and_clear();
    let mut files = Vec::new();
    if let Some(session) = session {
        files.push(write_profile(out, &session.finish())?);
    }
    let test_nll = curve.last().map_or(initial, |c| c.1);

    let picture = out.join(PICTURE);
    let shown: Vec<&GraphSample> = test.iter().take(config.samples).collect();
    let mut gen = generator(config.seed, SAMPLE_SALT);
    flow.set_training(false);
    let mut sampled = Vec::with_capacity(shown.len());
    for g in &shown {
        let adjacency = GraphBatch::new(&[g], DTYPE, DEVICE)?.adjacency;
        let x = no_grad(|| flow.sample(&adjacency, 1, g.nodes(), 1.0, &mut gen))?;
        sampled.push(GraphSample {
            features: x.to_vec_f64()?,
            dim: g.dim,
            edges: g.edges.clone(),
        });
    }
    let title = format!(
        "{} with mixing {}: test NLL {test_nll:.3} nats/node",
        config.dataset,
        config.mixing.name()
    );
    write_picture(&picture, &title, &shown, &sampled)?;

    let metrics = GraphMetrics {
        dataset: config.dataset.clone(),
        mixing: config.mixing.name().into(),
        steps: config.steps,
        seconds,
        sec_per_step: seconds / config.steps as f64,
        parameters,
        train_graphs: train.len(),
        test_graphs: test.len(),
        test_nodes,
        initial_test_nll: initial,
        test_nll,
        curve,
        train_curve,
        config: config.clone(),
    };
    let metrics_path = out.join(METRICS);
    write_json(&metrics_path, &metrics)?;
    Ok(GraphReport {
        metrics,
        files: [
            vec![picture, checkpoint_path, metrics_path, config_path],
            files,
        ]
        .concat(),
    })
}
