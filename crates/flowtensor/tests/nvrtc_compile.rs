//! Every kernel module of `kernels/*.cu` compiles with NVRTC for `compute_90`
//! (the H100/H200 class) and declares the kernels the backend launches.
//! Needs NVRTC (`libnvrtc.so`, e.g. from the `nvidia-cuda-nvrtc` wheel on
//! `LD_LIBRARY_PATH`); without it the test prints why it is skipped. With
//! `FLOWTENSOR_PTX_DIR` set, the PTX of every module is written there (CI
//! then runs `ptxas -v` on it for the register and spill table).

use flowtensor::cuda::{compile_ptx, kernel_names, module_source, nvrtc_available, MODULES};

#[test]
fn every_kernel_module_compiles_with_nvrtc() {
    if !nvrtc_available() {
        eprintln!("skipped: NVRTC (libnvrtc.so) is not installed on this machine");
        return;
    }
    let out = std::env::var_os("FLOWTENSOR_PTX_DIR").map(std::path::PathBuf::from);
    for (module, _) in MODULES {
        let ptx = compile_ptx(module, "compute_90").unwrap_or_else(|e| panic!("{e}"));
        let source = module_source(module).unwrap();
        for name in kernel_names(&source) {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{module}.cu: the PTX lacks the kernel {name}"
            );
        }
        if let Some(dir) = &out {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{module}.ptx")), ptx).unwrap();
        }
    }
}

#[test]
fn every_module_declares_kernels() {
    for (module, source) in MODULES {
        assert!(
            !kernel_names(source).is_empty(),
            "{module}.cu declares no kernel"
        );
    }
}
