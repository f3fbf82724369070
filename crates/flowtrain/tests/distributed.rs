//! Data-parallel training over MPI (`--features mpi`): two ranks started by
//! `mpirun -n 2 --oversubscribe` against one process with the same global
//! batch. Without `mpirun` the tests print why and pass, unless
//! `FLOWS_REQUIRE_MPI=1` (CI sets it) makes that a failure.
#![cfg(feature = "mpi")]

use flowtrain::checkpoint;
use std::path::Path;
use std::process::{Command, Output};

/// `mpirun`, or `None` (with the reason printed) where it is missing.
fn mpirun() -> Option<Command> {
    let found = Command::new("mpirun").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("FLOWS_REQUIRE_MPI").is_none(),
            "FLOWS_REQUIRE_MPI is set and mpirun is not on PATH"
        );
        eprintln!("skipped: no mpirun on PATH (Debian: openmpi-bin)");
        return None;
    }
    let mut cmd = Command::new("mpirun");
    cmd.args(["-n", "2", "--oversubscribe"])
        // Open MPI refuses root unless told (CI containers run as root)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // one kernel thread per rank: two ranks on two cores
        .env("RAYON_NUM_THREADS", "1");
    Some(cmd)
}

/// The flags of a small run: the default preset's model, narrower, on
/// the built-in shapes16, with a global batch of 64.
fn train_flags(out: &Path, steps: &str) -> Vec<String> {
    let mut flags: Vec<String> = [
        "train",
        "--preset",
        "default",
        "--hidden-channels",
        "16",
        "--n-levels",
        "2",
        "--n-subflows",
        "2",
        "--batch-size",
        "64",
        "--steps",
        steps,
        "--eval-every",
        steps,
        "--checkpoint-every",
        "10",
        "--eval-limit",
        "96",
        "--samples",
        "0",
        "--quiet",
        "--out",
    ]
    .map(String::from)
    .into();
    flags.push(out.display().to_string());
    flags
}

fn flowtrain() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowtrain"));
    cmd.env("RAYON_NUM_THREADS", "1");
    cmd
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn test_bpd(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.json")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&text).unwrap();
    metrics["test_bpd"].as_f64().unwrap()
}

#[test]
fn two_ranks_train_like_one_process_with_their_global_batch() {
    let Some(mut mpi) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    succeeded(
        &flowtrain().args(train_flags(&one, "20")).output().unwrap(),
        "one process",
    );
    let output = mpi
        .arg(env!("CARGO_BIN_EXE_flowtrain"))
        .args(train_flags(&two, "20"))
        .args(["--distributed", "mpi", "--check-every", "5"])
        .output()
        .unwrap();
    succeeded(&output, "two ranks");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 ranks"), "{stdout}");

    let (a, b) = (
        checkpoint::load(&one.join("checkpoint.safetensors")).unwrap(),
        checkpoint::load(&two.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!(a.metadata["step"], "20");
    assert_eq!(
        (a.metadata["ranks"].as_str(), b.metadata["ranks"].as_str()),
        ("1", "2")
    );
    let mut compared = 0;
    // parameters, buffers, optimizer state and Polyak averages
    for (name, ta) in a.tensors.iter().filter(|(n, _)| !n.starts_with("curve.")) {
        let (va, vb) = (
            ta.to_vec_f64().unwrap(),
            b.tensors[name].to_vec_f64().unwrap(),
        );
        // relative to the tensor's size: f32 sums in another order
        let norm = va.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-3);
        let diff = va
            .iter()
            .zip(&vb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        // the parameters and buffers to 1e-6; Adam's moments (averages of
        // the gradients and their squares) to 1e-5
        let tol = if name.starts_with("optim.") {
            1e-5
        } else {
            1e-6
        };
        assert!(
            diff <= tol * norm,
            "{name}: |a - b| = {diff:e}, |a| = {norm:e}"
        );
        compared += 1;
    }
    assert!(
        compared > 10,
        "only {compared} tensors: {:?}",
        a.tensors.keys()
    );
    let (bpd1, bpd2) = (test_bpd(&one), test_bpd(&two));
    assert!(
        (bpd1 - bpd2).abs() <= 1e-6 * bpd1,
        "test bpd {bpd1} vs {bpd2}"
    );

    // the run resumes only with the number of ranks that saved it
    let output = flowtrain()
        .args(train_flags(&two, "30"))
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("saved by 2 rank(s)"), "{stderr}");
}

#[test]
fn an_error_on_a_rank_ends_the_job_and_names_the_rank() {
    let Some(mut mpi) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut flags = train_flags(&dir.path().join("odd"), "2");
    // 63 images do not split over two ranks
    let batch = flags.iter().position(|f| f == "64").unwrap();
    flags[batch] = "63".into();
    let output = mpi
        .arg(env!("CARGO_BIN_EXE_flowtrain"))
        .args(flags)
        .args(["--distributed", "mpi"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("of 2 (mpi): error") && stderr.contains("multiple of the 2 ranks"),
        "{stderr}"
    );
}

/// The pid of the `flowtrain` process of MPI rank `rank` writing to `out`.
fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
    let out = out.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let has =
                |bytes: &[u8], text: &str| bytes.split(|&b| b == 0).any(|a| a == text.as_bytes());
            let ours = has(&cmdline, &out) && !has(&cmdline, "mpirun");
            (ours && has(&environ, &format!("OMPI_COMM_WORLD_RANK={rank}"))).then_some(pid)
        })
}

#[test]
fn a_killed_rank_ends_the_job_naming_it_and_the_checkpoint_stays_loadable() {
    let Some(mut mpi) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let child = mpi
        .arg(env!("CARGO_BIN_EXE_flowtrain"))
        .args(train_flags(&out, "100000"))
        .args(["--distributed", "mpi"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let start = std::time::Instant::now();
    while !ckpt.exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ckpt.exists(), "no checkpoint after two minutes");
    let pid = rank_pid(&out, 1).expect("rank 1's process");
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rank 1"), "{stderr}");
    let saved = checkpoint::load(&ckpt).unwrap();
    assert_eq!(saved.metadata["ranks"], "2");
}
