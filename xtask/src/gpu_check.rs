//! `cargo xtask gpu-check`: a folder that checks and times the CUDA backend
//! on a machine with an NVIDIA driver and PyTorch but no Rust toolchain.
//!
//! Builds here, in release: the parity suites (`flowtensor`'s `cuda_parity`,
//! `flowlayers`' `cuda_vector`, `flowtrain`'s `cuda_step`), the criterion
//! benches `conv`, `conv_exp` and `vector_flows`,
//! and `xtask` itself (for a `glow-mnist-ref` run); copies them stripped into
//! `OUT/bin`, with `run.sh`, the PyTorch twins (`device_micro.py`,
//! `glow_mnist_ref.py`), `table.py` and, when `--data` holds MNIST, its IDX
//! files. `bash OUT/run.sh` on the GPU machine prints the table. The folder
//! must stay under `--max-mib` (the device tool carries at most 64 MiB).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct GpuCheckArgs {
    /// The folder to write (replaced).
    #[arg(long, default_value = "target/gpu-check")]
    out: PathBuf,
    /// An MNIST folder (IDX files) for the glow-mnist-ref step; left out when missing.
    #[arg(long, default_value = "../shared/data/mnist")]
    data: PathBuf,
    /// The folder's size limit in MiB.
    #[arg(long, default_value_t = 64)]
    max_mib: u64,
}

const RUN_SH: &str = include_str!("../gpu-check/run.sh");
const TABLE_PY: &str = include_str!("../gpu-check/table.py");
const DEVICE_MICRO_PY: &str = include_str!("../../benches/peers/device_micro.py");
const GLOW_MNIST_REF_PY: &str = include_str!("../../benches/peers/glow_mnist_ref.py");
const VECTOR_FLOWS_PY: &str = include_str!("../../benches/peers/vector_flows.py");

/// The binaries of one cargo build, by target name (from `--message-format=json`).
fn build(args: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    eprintln!("+ cargo {} --message-format=json", args.join(" "));
    let output = Command::new(env!("CARGO"))
        .args(args)
        .arg("--message-format=json")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo {} failed", args.join(" ")));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

fn find(built: &[(String, PathBuf)], name: &str) -> Result<PathBuf, String> {
    built
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| format!("gpu-check: cargo built no binary named {name}"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("gpu-check: writing {}: {e}", path.display()))
}

/// Copies a binary, stripped of its debug information when `strip` exists.
fn install(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map_err(|e| format!("gpu-check: copying {}: {e}", from.display()))?;
    let stripped = Command::new("strip").arg(to).status();
    if !stripped.is_ok_and(|s| s.success()) {
        eprintln!(
            "gpu-check: could not strip {} (kept as built)",
            to.display()
        );
    }
    Ok(())
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(args: &GpuCheckArgs) -> Result<(), String> {
    let mut built = build(&[
        "test",
        "--release",
        "--no-run",
        "-p",
        "flowtensor",
        "--test",
        "cuda_parity",
        "-p",
        "flowlayers",
        "--test",
        "cuda_vector",
        "-p",
        "flowtrain",
        "--test",
        "cuda_step",
    ])?;
    built.extend(build(&[
        "bench", "--no-run", "-p", "flows", "--bench", "conv", "--bench", "conv_exp",
    ])?);
    built.extend(build(&[
        "build",
        "--release",
        "-p",
        "xtask",
        "--bin",
        "xtask",
    ])?);

    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .map_err(|e| format!("gpu-check: clearing {}: {e}", args.out.display()))?;
    }
    let bin = args.out.join("bin");
    std::fs::create_dir_all(&bin)
        .map_err(|e| format!("gpu-check: creating {}: {e}", bin.display()))?;
    for name in [
        "cuda_parity",
        "cuda_vector",
        "cuda_step",
        "conv",
        "conv_exp",
        "vector_flows",
        "xtask",
    ] {
        install(&find(&built, name)?, &bin.join(name))?;
    }
    write(&args.out.join("run.sh"), RUN_SH)?;
    write(&args.out.join("table.py"), TABLE_PY)?;
    write(&args.out.join("device_micro.py"), DEVICE_MICRO_PY)?;
    write(&args.out.join("glow_mnist_ref.py"), GLOW_MNIST_REF_PY)?;
    write(&args.out.join("vector_flows.py"), VECTOR_FLOWS_PY)?;
    let idx = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    if idx.iter().all(|f| args.data.join(f).is_file()) {
        let mnist = args.out.join("mnist");
        std::fs::create_dir_all(&mnist).map_err(|e| format!("gpu-check: {e}"))?;
        for f in idx {
            std::fs::copy(args.data.join(f), mnist.join(f))
                .map_err(|e| format!("gpu-check: copying {f}: {e}"))?;
        }
    } else {
        eprintln!(
            "gpu-check: no MNIST IDX files in {}; the glow-mnist-ref step is left out",
            args.data.display()
        );
    }
    let bytes = folder_bytes(&args.out);
    let mib = bytes as f64 / (1 << 20) as f64;
    if bytes > args.max_mib << 20 {
        return Err(format!(
            "gpu-check: {} holds {mib:.1} MiB, over the {} MiB limit",
            args.out.display(),
            args.max_mib
        ));
    }
    println!(
        "gpu-check: {} ({mib:.1} MiB); on the GPU machine run: bash {}/run.sh",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
