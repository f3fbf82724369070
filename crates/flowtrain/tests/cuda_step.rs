//! Glow training on `Device::Cuda(0)` against the same run on the CPU: the
//! whole loop (data-dependent ActNorm initialisation, dequantisation draws
//! from the device's Philox stream, forward, backward, gradient norm and
//! clipping, optimizer, evaluation) for the 1x1 and the convolution
//! exponential mixings. With a GPU this runs on it; without one it runs on
//! the CPU emulation when flowtrain is built with `cuda-emu`, and is skipped
//! (with the reason printed) otherwise.
//!
//! Tolerances (f32 models): the test bpd agrees to 1e-4 relative; each
//! parameter's change over the run agrees to 1e-3 of that tensor's largest
//! change. The run's sums reach about 1e5 terms (batch x pixels x channels x
//! taps), so f32 rounding in a different order moves a gradient by about
//! sqrt(1e5) x 6e-8 = 2e-5 relative; SGD keeps the update linear in the
//! gradient (Adam's first step divides a gradient by its own magnitude, so a
//! gradient at rounding level would flip its update).

use flowtensor::{Device, Tensor};
use flowtrain::config::{Mixing, TrainConfig};
use flowtrain::optim::OptimizerKind;
use flowtrain::Trainer;

fn cuda() -> Option<Device> {
    match flowtensor::cuda::probe(0) {
        Ok(name) => {
            eprintln!("running on cuda:0 ({name})");
            Some(Device::Cuda(0))
        }
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn config(mixing: Mixing, device: Device) -> TrainConfig {
    TrainConfig {
        mixing,
        n_levels: 2,
        n_subflows: 2,
        hidden_channels: 16,
        batch_size: 8,
        init_batch_size: 8,
        steps: 3,
        eval_every: 3,
        checkpoint_every: 3,
        eval_limit: Some(8),
        samples: 4,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        lr: 1e-2,
        warmup_steps: 0,
        device,
        ..TrainConfig::default()
    }
}

fn host_values(params: &[(String, Tensor)]) -> Vec<(String, Vec<f64>)> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec_f64().unwrap()))
        .collect()
}

/// Trains `steps` steps; returns every parameter's change and the test bpd.
fn run(config: TrainConfig) -> (Vec<(String, Vec<f64>)>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    let before = host_values(&trainer.model.parameters());
    trainer.train_until(3).unwrap();
    let after = host_values(&trainer.model.parameters());
    let changes = before
        .into_iter()
        .zip(after)
        .map(|((name, b), (_, a))| (name, a.iter().zip(&b).map(|(a, b)| a - b).collect()))
        .collect();
    let (bpd, _) = trainer.evaluate().unwrap();
    (changes, bpd)
}

#[test]
fn glow_training_on_the_device_matches_the_cpu() {
    let Some(device) = cuda() else { return };
    for mixing in [Mixing::OneByOne, Mixing::ConvExp] {
        let (cpu_changes, cpu_bpd) = run(config(mixing, Device::Cpu));
        let (dev_changes, dev_bpd) = run(config(mixing, device));
        let bpd_error = (dev_bpd - cpu_bpd).abs() / cpu_bpd.abs();
        eprintln!(
            "{mixing:?}: test bpd cpu {cpu_bpd:.6}, device {dev_bpd:.6} (relative {bpd_error:.1e})"
        );
        assert!(
            bpd_error <= 1e-4,
            "{mixing:?}: test bpd {dev_bpd} vs {cpu_bpd}"
        );
        assert_eq!(cpu_changes.len(), dev_changes.len());
        let mut moved = 0;
        for ((name, want), (_, got)) in cpu_changes.iter().zip(&dev_changes) {
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            moved += usize::from(scale > 0.0);
            let worst = want
                .iter()
                .zip(got)
                .fold(0.0f64, |m, (w, g)| m.max((w - g).abs()));
            assert!(
                worst <= 1e-3 * scale + 1e-9,
                "{mixing:?} {name}: the change differs by {worst:.3e} (largest change {scale:.3e})"
            );
        }
        assert!(
            moved * 2 > cpu_changes.len(),
            "{mixing:?}: training moved too few parameters"
        );
    }
}

#[test]
fn training_on_a_missing_cuda_device_fails_before_anything_is_written() {
    if let Ok(name) = flowtensor::cuda::probe(0) {
        eprintln!(
            "skipped: this machine has cuda:0 ({name}); the test is for machines without CUDA"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flowtrain"))
        .args([
            "train", "--preset", "quick", "--device", "cuda:0", "--quiet", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "training on a missing device succeeded"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "not a clean error exit: {stderr}"
    );
    assert!(
        stderr.contains("cuda:0") && stderr.contains("unavailable"),
        "the error does not name the device and the reason: {stderr}"
    );
    assert!(
        !out.exists(),
        "a run folder was created for a run that cannot start"
    );
}

#[test]
fn the_default_preset_trains_a_few_steps_on_the_device() {
    let Some(_) = cuda() else { return };
    // the main job's model (L = 3, K = 4, 64 hidden channels, shapes16) for
    // two steps of two images, through the command line (the emulation runs
    // every CUDA thread on the CPU, one after another)
    let dir = tempfile::tempdir().unwrap();
    let (config, out) = (dir.path().join("small.toml"), dir.path().join("run"));
    std::fs::write(&config, "init_batch_size = 2\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flowtrain"))
        .args([
            "train", "--preset", "default", "--device", "cuda:0", "--config",
        ])
        .arg(&config)
        .args([
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--eval-every",
            "2",
            "--eval-limit",
            "2",
            "--samples",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "training failed: {stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.json")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert_eq!(metrics["steps"], 2, "{metrics}");
    let bpd = metrics["test_bpd"].as_f64().unwrap();
    assert!(bpd.is_finite() && bpd > 0.0, "test bpd {bpd}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("n_levels = 3") && config.contains("hidden_channels = 64"),
        "{config}"
    );
}
