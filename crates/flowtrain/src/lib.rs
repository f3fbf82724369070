//! flowtrain: reproducible training runs of the flows of flowlayers.
//!
//! - [`data`]: MNIST (IDX), CIFAR-10 (binary), the built-in `shapes16` set,
//!   toy densities, and checked downloads;
//! - [`model`]: a Glow-style flow (or Sylvester flow) over dequantised
//!   images, built from a [`config::TrainConfig`], with its bounds in bits/dim;
//! - [`optim`]: Adam, Adamax, SGD, clipping, the schedule, Polyak averages;
//! - [`train`]: the loop, evaluation, atomic [`checkpoint`]s and resumption;
//! - [`distributed`]: data-parallel training over MPI or NCCL;
//! - [`report`] and [`sampling`]: metrics, the loss plot, sample grids and
//!   interpolations;
//! - [`toy`]: flows on vectors fitted to 1-D and 2-D densities (`--preset toy`);
//! - [`cli`]: `cargo xtask train|sample|eval|data`.

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod dequant;
pub mod distributed;
pub mod error;
pub mod files;
pub mod fuzzing;
pub mod graph;
pub mod limits;
pub mod model;
pub mod optim;
pub mod provenance;
pub mod report;
pub mod sampling;
pub mod spikes;
pub mod sweep;
pub mod toy;
pub mod train;

pub mod allocator;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use train::Trainer;
