//! Graph normalizing flows on node features (`--preset graph-toy`): the
//! density `p(X | A)` of node positions given the graph, by maximum
//! likelihood, with the graph convolution exponential as an optional mixing
//! layer (the graph experiment of "The Convolution Exponential and
//! Generalized Sylvester Flows", Hoogeboom et al., 2020).
//!
//! - [`data`]: the built-in graph families, the JSON lines reader, batches
//!   as disjoint unions;
//! - [`config`]: [`GraphConfig`], its defaults and checks;
//! - [`picture`]: data and sampled graphs as SVG;
//! - [`run`]: the training loop, the test NLL per node and the outputs.

pub mod config;
pub mod data;
pub mod picture;
pub mod run;

pub use config::{GraphConfig, GraphMixingKind, GRAPH_PRESET};
pub use data::{load_graphs, GraphBatch, GraphFamily, GraphSample};
pub use run::{run, GraphMetrics, GraphReport};
