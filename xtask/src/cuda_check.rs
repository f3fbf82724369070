//! `cargo xtask cuda-check`: every kernel module of `kernels/*.cu` compiled
//! by NVRTC (as the CUDA backend compiles it at run time), then assembled by
//! `ptxas -v` for a real architecture, which reports each kernel's
//! registers, shared memory, stack frame and spills. Prints the table in
//! markdown (README quotes it) and fails when a module does not compile, a
//! kernel is missing from its PTX, or a kernel spills (unless allowed).
//!
//! Needs `libnvrtc.so` on `LD_LIBRARY_PATH` and a `ptxas` (both come with the
//! `nvidia-cuda-nvrtc` and `nvidia-cuda-nvcc` wheels; see `.ci/cuda`).

use std::path::{Path, PathBuf};
use std::process::Command;

use flowtensor::cuda::{compile_ptx, kernel_names, module_source, MODULES};

#[derive(clap::Args)]
pub struct CudaCheckArgs {
    /// The virtual architecture NVRTC compiles for.
    #[arg(long, default_value = "compute_90")]
    arch: String,
    /// The real architecture ptxas assembles for.
    #[arg(long, default_value = "sm_90")]
    sm: String,
    /// The ptxas binary (default: $PTXAS, else `ptxas` on PATH).
    #[arg(long)]
    ptxas: Option<PathBuf>,
    /// Where the PTX of every module is written.
    #[arg(long, default_value = "target/ptx")]
    out: PathBuf,
    /// Report spills without failing.
    #[arg(long)]
    allow_spills: bool,
}

/// What ptxas reports for one kernel.
#[derive(Default)]
struct KernelReport {
    module: String,
    name: String,
    registers: u32,
    shared_bytes: u32,
    stack_bytes: u32,
    spill_stores: u32,
    spill_loads: u32,
}

pub fn run(args: &CudaCheckArgs) -> Result<(), String> {
    let ptxas = args
        .ptxas
        .clone()
        .or_else(|| std::env::var_os("PTXAS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cuda-check: creating {}: {e}", args.out.display()))?;
    let mut reports = Vec::new();
    for (module, _) in MODULES {
        let ptx = compile_ptx(module, &args.arch).map_err(|e| format!("cuda-check: {e}"))?;
        let source = module_source(module).map_err(|e| e.to_string())?;
        for name in kernel_names(&source) {
            if !ptx.contains(&format!(".entry {name}(")) {
                return Err(format!(
                    "cuda-check: {module}.cu: the PTX lacks the kernel {name}"
                ));
            }
        }
        let path = args.out.join(format!("{module}.ptx"));
        std::fs::write(&path, &ptx)
            .map_err(|e| format!("cuda-check: writing {}: {e}", path.display()))?;
        reports.extend(assemble(&ptxas, &path, &args.sm, module)?);
    }
    print_table(&reports, &args.arch, &args.sm);
    let spilling: Vec<&str> = reports
        .iter()
        .filter(|r| r.spill_stores + r.spill_loads > 0)
        .map(|r| r.name.as_str())
        .collect();
    if !spilling.is_empty() && !args.allow_spills {
        return Err(format!(
            "cuda-check: kernels spill registers: {}",
            spilling.join(", ")
        ));
    }
    Ok(())
}

/// Runs `ptxas -v` on one module's PTX and parses its report.
fn assemble(ptxas: &Path, ptx: &Path, sm: &str, module: &str) -> Result<Vec<KernelReport>, String> {
    let output = Command::new(ptxas)
        .arg(format!("-arch={sm}"))
        .arg("-v")
        .arg(ptx)
        .arg("-o")
        .arg("/dev/null")
        .output()
        .map_err(|e| format!("cuda-check: could not run {}: {e}", ptxas.display()))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "cuda-check: ptxas rejected {}:\n{log}",
            ptx.display()
        ));
    }
    Ok(parse_ptxas(&log, module))
}

/// The first number before `unit` in `line` (e.g. `Used 34 registers`).
fn number_before(line: &str, unit: &str) -> u32 {
    line.find(unit)
        .and_then(|at| line[..at].split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn parse_ptxas(log: &str, module: &str) -> Vec<KernelReport> {
    let mut reports: Vec<KernelReport> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            reports.push(KernelReport {
                module: module.to_string(),
                name,
                ..KernelReport::default()
            });
        } else if let Some(report) = reports.last_mut() {
            if line.contains("bytes stack frame") {
                report.stack_bytes = number_before(line, "bytes stack frame");
                report.spill_stores = number_before(line, "bytes spill stores");
                report.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains("registers") {
                report.registers = number_before(line, "registers");
                report.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    reports
}

fn print_table(reports: &[KernelReport], arch: &str, sm: &str) {
    println!("NVRTC {arch} -> ptxas {sm}: {} kernels\n", reports.len());
    println!("| module | kernel | registers | shared memory (B) | stack (B) | spill stores (B) | spill loads (B) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            r.module,
            r.name,
            r.registers,
            r.shared_bytes,
            r.stack_bytes,
            r.spill_stores,
            r.spill_loads
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'matmul_f64' for 'sm_90'\n\
ptxas info    : Function properties for matmul_f64\n    \
8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 34 registers, used 1 barriers, 4352 bytes smem\n\
ptxas info    : Compiling entry function 'fill_f32' for 'sm_90'\n\
ptxas info    : Function properties for fill_f32\n    \
0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers\n";
        let r = parse_ptxas(log, "matmul");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "matmul_f64");
        assert_eq!(
            (
                r[0].registers,
                r[0].shared_bytes,
                r[0].stack_bytes,
                r[0].spill_stores,
                r[0].spill_loads
            ),
            (34, 4352, 8, 4, 12)
        );
        assert_eq!(
            (r[1].registers, r[1].shared_bytes, r[1].spill_loads),
            (10, 0, 0)
        );
    }
}
