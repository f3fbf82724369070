//! The kernel modules: `kernels/*.cu`, embedded in the binary, each compiled
//! by NVRTC (with `kernels/common.cuh` prepended) once per process and
//! architecture, and cached.

use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The header every module starts with.
pub(crate) const COMMON: &str = include_str!("../../../../kernels/common.cuh");

/// Every kernel module: its name and source.
pub const MODULES: [(&str, &str); 10] = [
    (
        "elementwise",
        include_str!("../../../../kernels/elementwise.cu"),
    ),
    ("reduce", include_str!("../../../../kernels/reduce.cu")),
    ("copy", include_str!("../../../../kernels/copy.cu")),
    ("matmul", include_str!("../../../../kernels/matmul.cu")),
    ("conv", include_str!("../../../../kernels/conv.cu")),
    ("series", include_str!("../../../../kernels/series.cu")),
    ("random", include_str!("../../../../kernels/random.cu")),
    ("fft", include_str!("../../../../kernels/fft.cu")),
    ("solve", include_str!("../../../../kernels/solve.cu")),
    ("gather", include_str!("../../../../kernels/gather.cu")),
];

/// The full source NVRTC compiles for `module`.
pub fn module_source(module: &str) -> Result<String> {
    let (_, source) = MODULES
        .iter()
        .find(|(name, _)| *name == module)
        .ok_or_else(|| Error::invalid("cuda", format!("no kernel module {module:?}")))?;
    Ok(format!("{COMMON}\n{source}"))
}

/// The names of the `extern "C" __global__` kernels of a module's source.
pub fn kernel_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("__global__ void ") {
        rest = &rest[at + "__global__ void ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// Whether NVRTC (`libnvrtc.so`) can be loaded on this machine.
pub fn nvrtc_available() -> bool {
    // SAFETY: probing only tries to open the library by its known names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles `module` for `arch` (e.g. `compute_90`) to PTX text; compile
/// errors carry NVRTC's log.
pub fn compile_ptx(module: &str, arch: &str) -> Result<String> {
    if !nvrtc_available() {
        return Err(Error::invalid(
            "nvrtc",
            "NVRTC (libnvrtc.so) was not found; install the CUDA toolkit's NVRTC or the nvidia-cuda-nvrtc wheel and point LD_LIBRARY_PATH at it",
        ));
    }
    let source = module_source(module)?;
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("{module}.cu")),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(Error::invalid(
            "nvrtc",
            format!(
                "{module}.cu does not compile for {arch}:\n{}",
                log.to_string_lossy()
            ),
        )),
        Err(e) => Err(Error::invalid("nvrtc", format!("{module}.cu: {e:?}"))),
    }
}

/// [`compile_ptx`], cached per (module, arch) for the process.
pub(crate) fn cached_ptx(module: &'static str, arch: &str) -> Result<Arc<String>> {
    /// PTX by (module, architecture).
    type Cache = Mutex<HashMap<(String, String), Arc<String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (module.to_string(), arch.to_string());
    if let Some(ptx) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(ptx.clone());
    }
    let ptx = Arc::new(compile_ptx(module, arch)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, ptx.clone());
    Ok(ptx)
}
