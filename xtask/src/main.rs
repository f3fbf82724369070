//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask ci`: formatting check, clippy with warnings denied, and the test suite.
//! - `cargo xtask bench [NAME] [-- CRITERION ARGS]`: the criterion benches.
//! - `cargo xtask train|sweep|summarize|sample|eval|data ...`: training runs (see `flowtrain::cli`).
//! - `cargo xtask cuda-check`: every CUDA kernel compiled by NVRTC and assembled by ptxas
//!   (registers, shared memory, spills).
//! - `cargo xtask gpu-check`: a self-contained folder that checks and times the CUDA backend on a
//!   machine with a GPU but no Rust toolchain.

mod cuda_check;
mod gpu_check;

use clap::{Parser, Subcommand};

use std::process::{Command, ExitCode};

// See `flowtrain::allocator`.
flowtrain::training_allocator!();

#[derive(Parser)]
#[command(about = "Tasks of the flows workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Format check, clippy (warnings are errors) and the tests, as CI runs them.
    Ci,
    /// Runs the criterion benches (all, or the one named).
    Bench {
        /// A bench target, e.g. `matmul`.
        name: Option<String>,
        /// Arguments passed to criterion after `--` (e.g. a case filter).
        #[arg(last = true)]
        criterion_args: Vec<String>,
    },
    /// Trains a flow (a preset, a TOML file and flags), evaluating, checkpointing and sampling.
    /// A flag given twice takes its last value.
    #[command(args_override_self = true)]
    Train(Box<flowtrain::cli::TrainArgs>),
    /// Runs a grid of settings (comma-separated --mixing, --model-type,
    /// --coupling) times --seeds, resumable, and summarises it.
    #[command(args_override_self = true)]
    Sweep(Box<flowtrain::cli::SweepArgs>),
    /// Rebuilds the summary of finished runs (run folders or sweep folders).
    Summarize(flowtrain::cli::SummarizeArgs),
    /// Trains with the op profiler on (the flags of `train`; image presets
    /// draw no samples unless --samples): a table per op kind, per layer and outside ops, and
    /// profile.json and profile.svg in --out.
    #[command(args_override_self = true)]
    Profile(Box<flowtrain::cli::TrainArgs>),
    /// Draws a grid of samples from a run's checkpoint.
    Sample(flowtrain::cli::SampleArgs),
    /// Test bits/dim of a run's checkpoint.
    Eval(flowtrain::cli::EvalArgs),
    /// Downloads a dataset (mnist, cifar10) and verifies its checksums.
    Data(flowtrain::cli::DataArgs),
    /// Compiles every CUDA kernel with NVRTC and reports ptxas's registers and spills.
    CudaCheck(cuda_check::CudaCheckArgs),
    /// Builds the GPU check folder: release parity tests, benches, a script and PyTorch twins.
    GpuCheck(gpu_check::GpuCheckArgs),
}

pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    eprintln!("+ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn run(task: Task) -> Result<(), String> {
    match task {
        Task::Ci => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["test", "--workspace"])
        }
        Task::Bench {
            name,
            criterion_args,
        } => {
            let mut args = vec!["bench", "-p", "flows"];
            if let Some(name) = &name {
                args.extend(["--bench", name.as_str()]);
            }
            if !criterion_args.is_empty() {
                args.push("--");
                args.extend(criterion_args.iter().map(String::as_str));
            }
            cargo(&args)
        }
        Task::Train(args) => flow(flowtrain::cli::Command::Train(args)),
        Task::Sweep(args) => flow(flowtrain::cli::Command::Sweep(args)),
        Task::Summarize(args) => flow(flowtrain::cli::Command::Summarize(args)),
        Task::Profile(args) => flow(flowtrain::cli::Command::Profile(args)),
        Task::Sample(args) => flow(flowtrain::cli::Command::Sample(args)),
        Task::Eval(args) => flow(flowtrain::cli::Command::Eval(args)),
        Task::Data(args) => flow(flowtrain::cli::Command::Data(args)),
        Task::CudaCheck(args) => cuda_check::run(&args),
        Task::GpuCheck(args) => gpu_check::run(&args),
    }
}

fn flow(command: flowtrain::cli::Command) -> Result<(), String> {
    flowtrain::cli::run(&command).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    flowtrain::allocator::keep_freed_memory();
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
