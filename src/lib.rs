//! Umbrella crate: re-exports the engine, the layers and the trainer so that
//! the workspace-level `tests/` and `benches/` can use all three.

pub use flowlayers;
pub use flowtensor;
pub use flowtrain;

/// The device the criterion benches run on: `FLOWS_BENCH_DEVICE` (`cpu`,
/// `cuda`, `cuda:N`), the host by default. `cargo xtask gpu-check` sets it
/// to time the CUDA backend.
pub fn bench_device() -> flowtensor::Device {
    match std::env::var("FLOWS_BENCH_DEVICE") {
        Ok(name) => name
            .parse()
            .unwrap_or_else(|e| panic!("FLOWS_BENCH_DEVICE: {e}")),
        Err(_) => flowtensor::Device::Cpu,
    }
}

/// Moves a bench input to [`bench_device`] (a leaf: it stays a constant or
/// a variable as it was).
pub fn on_bench_device(t: flowtensor::Tensor) -> flowtensor::Tensor {
    let device = bench_device();
    if device == flowtensor::Device::Cpu {
        return t;
    }
    t.to_device(device)
        .map(|t| t.detach())
        .unwrap_or_else(|e| panic!("moving a bench input to {device}: {e}"))
}

/// Waits for the bench device's queued work, so that a timed iteration
/// includes its kernels (a no-op on the host).
pub fn bench_sync() {
    flowtensor::cuda::synchronize(bench_device())
        .unwrap_or_else(|e| panic!("synchronizing the bench device: {e}"));
}
