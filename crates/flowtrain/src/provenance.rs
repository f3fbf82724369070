//! What made a run: the code (git commit, whether the tree differed from it,
//! crate and dependency versions), the machine (threads, the kernels'
//! instruction set), the data (every file's MD5) and the full configuration,
//! written to `provenance.json` in the run's folder with one entry per
//! start (`train`, each `--resume`). Checkpoints record the code version, so
//! `eval` and `sample` can warn when a checkpoint came from other code.

use crate::config::{DatasetKind, TrainConfig};
use crate::error::{Result, TrainError};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file name in a run's folder.
pub const FILE: &str = "provenance.json";

/// The version of the code this binary was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// The git commit (or `unknown` outside a git checkout).
    pub commit: String,
    /// Whether the tracked sources differed from the commit.
    pub dirty: bool,
    /// A hash of that difference (empty when clean).
    pub diff_hash: String,
    /// The versions of flowtensor, flowlayers and flowtrain.
    pub crates: String,
    /// The versions of the main dependencies (from Cargo.lock).
    pub dependencies: String,
}

impl CodeVersion {
    /// The code of this binary.
    pub fn current() -> CodeVersion {
        CodeVersion {
            commit: env!("FLOWTRAIN_GIT_COMMIT").to_string(),
            dirty: env!("FLOWTRAIN_GIT_DIRTY") == "true",
            diff_hash: env!("FLOWTRAIN_GIT_DIFF_HASH").to_string(),
            crates: format!(
                "flowtensor {}, flowlayers {}, flowtrain {}",
                flowtensor::VERSION,
                flowlayers::VERSION,
                env!("CARGO_PKG_VERSION")
            ),
            dependencies: env!("FLOWTRAIN_DEPENDENCIES").to_string(),
        }
    }

    /// `commit`, with `+dirty.HASH` when the tree differed: one string that
    /// names the code exactly (saved in checkpoints).
    pub fn id(&self) -> String {
        if self.dirty {
            format!("{}+dirty.{}", self.commit, self.diff_hash)
        } else {
            self.commit.clone()
        }
    }
}

/// The machine a run ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub threads: usize,
    /// The instruction set of the hand-written kernels (`avx512f+fma`, ...).
    pub kernels_isa: String,
    /// The CPU's model name (from `/proc/cpuinfo`, where there is one).
    pub cpu: String,
    pub os: String,
}

impl Machine {
    pub fn current() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            threads: rayon::current_num_threads(),
            kernels_isa: flowtensor::isa_name().to_string(),
            cpu,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// One data file and its MD5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub md5: String,
}

/// The MD5 of a file's bytes, streamed.
pub fn md5_file(path: &Path) -> Result<DataFile> {
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut hasher = Md5::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(|e| TrainError::io(path, e))?;
    Ok(DataFile {
        path: path.to_path_buf(),
        bytes,
        md5: format!("{:x}", hasher.finalize()),
    })
}

/// The files a run of `config` reads (none for the built-in set).
pub fn data_files(config: &TrainConfig) -> Result<Vec<DataFile>> {
    let Some(dir) = &config.data_dir else {
        return Ok(Vec::new());
    };
    let names: Vec<PathBuf> = match config.dataset {
        DatasetKind::Shapes16 => Vec::new(),
        DatasetKind::Mnist => [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
        .iter()
        .filter_map(|n| crate::data::find_file(dir, &[n]).ok())
        .collect(),
        DatasetKind::Cifar10 => {
            let batches = crate::data::cifar10::batch_dir(dir);
            (1..=5)
                .map(|i| batches.join(format!("data_batch_{i}.bin")))
                .chain([batches.join("test_batch.bin")])
                .collect()
        }
    };
    names.iter().map(|p| md5_file(p)).collect()
}

/// One start of a run (`train`, or a `--resume`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
    /// The step the run started from.
    pub from_step: u64,
    pub command_line: Vec<String>,
    pub code: CodeVersion,
    pub machine: Machine,
}

/// The content of `provenance.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The full configuration (as `config.toml` holds it).
    pub config: TrainConfig,
    /// The data files read, with their checksums (the built-in set: none;
    /// it is a fixed function of its seed).
    pub data: Vec<DataFile>,
    /// Every start of the run, the first one first.
    pub starts: Vec<Start>,
}

/// Records a start of the run of `config` in `run_dir/provenance.json`
/// (created with the data checksums on the first start).
pub fn record_start(run_dir: &Path, config: &TrainConfig, from_step: u64) -> Result<()> {
    let path = run_dir.join(FILE);
    let mut provenance = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Provenance>(&text).ok(),
        Err(_) => None,
    }
    .filter(|p| p.config == *config || from_step > 0)
    .unwrap_or(Provenance {
        config: config.clone(),
        data: data_files(config)?,
        starts: Vec::new(),
    });
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    provenance.config = config.clone();
    provenance.starts.push(Start {
        unix_time,
        from_step,
        command_line: std::env::args().collect(),
        code: CodeVersion::current(),
        machine: Machine::current(),
    });
    let text =
        serde_json::to_string_pretty(&provenance).map_err(|e| TrainError::Config(e.to_string()))?;
    crate::files::write_atomic(&path, (text + "\n").as_bytes())
}

/// A warning when the checkpoint at `path` (whose metadata says `saved`)
/// came from other code than this binary's.
pub fn other_code_warning(saved: Option<&str>, path: &Path) -> Option<String> {
    let current = CodeVersion::current().id();
    match saved {
        Some(saved) if saved == current => None,
        Some(saved) => Some(format!(
            "warning: {} was written by code {saved}; this is {current}: results may differ",
            path.display()
        )),
        None => Some(format!(
            "warning: {} records no code version (written by an older flowtrain); this is {current}",
            path.display()
        )),
    }
}
