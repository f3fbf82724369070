//! The error type of training, data loading and checkpoints.

use std::path::{Path, PathBuf};

/// Errors of flowtrain. Each names the file, the step or the option it is about.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (the message names the op and shapes).
    #[error(transparent)]
    Tensor(#[from] flowtensor::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A data file whose content is not what its format requires.
    #[error("{path}: {detail}")]
    Data { path: PathBuf, detail: String },
    /// A checkpoint that cannot be written, read or applied to the model.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: PathBuf, detail: String },
    /// A configuration value that cannot be used.
    #[error("config: {0}")]
    Config(String),
    /// The loss became NaN or infinite; training stopped.
    #[error("step {step}: the loss is {loss}; training stopped ({})", match checkpoint {
        Some(p) => format!("the last good checkpoint is kept at {}", p.display()),
        None => "no checkpoint was written before it".to_string(),
    })]
    NonFinite {
        step: u64,
        loss: f64,
        checkpoint: Option<PathBuf>,
    },
    /// A collective operation of a data-parallel run failed, or its ranks disagree.
    #[error("distributed: {0}")]
    Distributed(String),
    /// A download that failed or did not match its checksum.
    #[error("download {url}: {detail}")]
    Download { url: String, detail: String },
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A malformed-data error about `path`.
    pub fn data(path: &Path, detail: impl Into<String>) -> Self {
        TrainError::Data {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// A checkpoint error about `path`.
    pub fn checkpoint(path: &Path, detail: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}
