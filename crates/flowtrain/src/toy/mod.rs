//! Flows on vectors fitted to 1-D and 2-D densities (`--preset toy`):
//! density estimation by maximum likelihood on the toy densities of
//! [`crate::data::toys`] or on the user's own points (CSV, NPY), and
//! variational fits by reverse KL to the energies `U1..U4` of Rezende and
//! Mohamed (2015).
//!
//! - [`config`]: [`ToyConfig`], its defaults and checks;
//! - [`data`]: points, the CSV and NPY readers, the train/test split;
//! - [`flows`]: the flows, built from flowlayers' vector layers;
//! - [`energy`]: the energies `U1..U4` and their gradients;
//! - [`plot`]: the figures (PNG, drawn by a small rasteriser);
//! - [`run`]: the training loops, the metrics and the outputs.
//!
//! Runs are in f64 by default (`dtype = "f32"` in a `--config` file for
//! single precision), on the configuration's device.

pub mod config;
pub mod data;
pub mod energy;
pub mod flows;
pub mod plot;
pub mod run;

pub use config::{DataSource, FlowKind, Objective, Precision, Target, ToyConfig};
pub use data::{load_points, Points};
pub use run::{run, ToyMetrics, ToyReport, CONFIG, FIGURE, METRICS};
