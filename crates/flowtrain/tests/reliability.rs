//! Hostile input and interrupted runs: every flag, data file and checkpoint
//! value that could crash, exhaust memory, or silently do the wrong thing
//! gives a clear error (exit status 1, never a panic's 101) or a correct
//! result; nothing a run wrote is lost or left half-written.

use flowtensor::{DType, Device, Tensor};
use flowtrain::checkpoint;
use flowtrain::data::mnist::encode_idx;
use flowtrain::train::CHECKPOINT;
use flowtrain::{TrainConfig, TrainError, Trainer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `flowtrain ARGS` in `cwd`, one thread (bit-reproducible), no progress bar.
fn flowtrain_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowtrain"))
        .args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1")
        .output()
        .unwrap()
}

/// A tiny training run's flags (fast on the built-in set).
const TINY: [&str; 16] = [
    "--preset",
    "quick",
    "--quiet",
    "--n-subflows",
    "1",
    "--hidden-channels",
    "4",
    "--batch-size",
    "8",
    "--eval-limit",
    "16",
    "--samples",
    "4",
    "--steps",
    "4",
    "--seed=3",
];

/// Runs `flowtrain train --out DIR TINY... EXTRA...`.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let out = dir.to_str().unwrap();
    let mut args = vec!["train", "--out", out];
    args.extend(TINY);
    args.extend(extra);
    flowtrain_in(dir.parent().unwrap(), &args)
}

/// Asserts that `output` is a clean failure (status 1) whose stderr holds every one of `needles`.
#[track_caller]
fn assert_error(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a clean error, got {:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

#[track_caller]
fn assert_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// MNIST-layout files: `train` and `test` images of `shape` (rows, cols), pixels from `pixel`.
fn write_mnist(
    dir: &Path,
    (train, test): (usize, usize),
    (train_shape, test_shape): ((usize, usize), (usize, usize)),
    pixel: impl Fn(usize) -> u8,
) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, count, (h, w)) in [("train", train, train_shape), ("t10k", test, test_shape)] {
        let pixels: Vec<u8> = (0..count * h * w).map(&pixel).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[count, h, w], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[count], &labels),
        )
        .unwrap();
    }
}

/// A finished tiny run in `root/run`.
fn finished_run(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    let run = root.join("run");
    assert_success(&train(&run, &[]));
    run
}

// ---------------------------------------------------------------------------
// Values that used to panic
// ---------------------------------------------------------------------------

#[test]
fn zero_widths_are_errors_not_panics() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_error(
        &train(&run, &["--hidden-channels", "0"]),
        &["hidden_channels = 0", "1..=4096"],
    );
    assert_error(
        &train(&run, &["--densenet-depth", "2", "--densenet-growth", "0"]),
        &["densenet_growth = 0"],
    );
    assert!(!run.join(CHECKPOINT).exists());
}

#[test]
fn a_data_set_without_training_images_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("mnist");
    write_mnist(&data, (0, 5), ((28, 28), (28, 28)), |i| i as u8);
    let msg = flowtrain::data::mnist::load(&data).unwrap_err().to_string();
    assert!(
        msg.contains("train-images") && msg.contains("no images"),
        "{msg}"
    );
    let output = train(
        &root.path().join("run"),
        &["--dataset", "mnist", "--data", data.to_str().unwrap()],
    );
    assert_error(&output, &["no images"]);
}

#[test]
fn an_empty_or_mismatched_test_split_fails_before_training() {
    let root = tempfile::tempdir().unwrap();
    for (name, counts, shapes, needle) in [
        ("empty", (20, 0), ((8, 8), (8, 8)), "no images"),
        (
            "mismatched",
            (20, 5),
            ((8, 8), (16, 16)),
            "test images are [1, 16, 16]",
        ),
    ] {
        let data = root.path().join(name);
        write_mnist(&data, counts, shapes, |i| (i * 7) as u8);
        let run = root.path().join(format!("run-{name}"));
        let output = train(
            &run,
            &[
                "--dataset",
                "mnist",
                "--data",
                data.to_str().unwrap(),
                "--n-levels",
                "1",
            ],
        );
        assert_error(&output, &[needle]);
        assert!(!run.join(CHECKPOINT).exists(), "{name}: it trained first");
    }
}

// ---------------------------------------------------------------------------
// Memory without bound
// ---------------------------------------------------------------------------

#[test]
fn sizes_past_their_bounds_are_errors_naming_the_value_and_the_bound() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_error(
        &train(&run, &["--mixing", "woodbury", "--woodbury-rank", "100000"]),
        &["woodbury_rank = 100000", "out of range"],
    );
    // the rank fits the last level's 4 x 4 positions at most
    assert_error(
        &train(&run, &["--mixing", "woodbury", "--woodbury-rank", "17"]),
        &["woodbury_rank = 17", "1..=16"],
    );
    assert_error(
        &train(&run, &["--batch-size", "100000000"]),
        &["batch_size = 100000000", "1..=65536"],
    );
    // a plan beyond the memory limit stops before anything is allocated
    assert_error(
        &train(
            &run,
            &[
                "--hidden-channels",
                "4096",
                "--n-subflows",
                "64",
                "--memory-limit",
                "1G",
            ],
        ),
        &["needs about", "memory limit is 1.00 GiB"],
    );
    assert!(!run.join(CHECKPOINT).exists());
    let finished = finished_run(root.path());
    let output = flowtrain_in(
        root.path(),
        &[
            "sample",
            "--run",
            finished.to_str().unwrap(),
            "--n",
            "100000000",
        ],
    );
    assert_error(&output, &["--n = 100000000", "1..=4096"]);
}

/// Rewrites the checkpoint of `run` with `edit` applied to its metadata
/// (the tensors are kept).
fn edit_checkpoint(run: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, String>)) {
    let path = run.join(CHECKPOINT);
    let mut ckpt = checkpoint::load(&path).unwrap();
    edit(&mut ckpt.metadata);
    let mut tensors: Vec<(String, Tensor)> = ckpt.tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    checkpoint::save(&path, &tensors, ckpt.metadata).unwrap();
}

#[test]
fn hostile_values_saved_in_a_checkpoint_are_errors_before_any_allocation() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        ("image_shape", "1,100000,100000", "height = 100000"),
        (
            "config",
            "hidden_channels = 1000000",
            "hidden_channels = 1000000",
        ),
        ("config", "densenet_depth = 65536", "densenet_depth = 65536"),
        ("config", "batch_size = 100000000", "batch_size = 100000000"),
    ];
    for (i, (key, value, needle)) in cases.into_iter().enumerate() {
        let run = finished_run(&root.path().join(i.to_string()));
        edit_checkpoint(&run, |meta| {
            if key == "config" {
                let config = meta.get_mut("config").unwrap();
                let name = value.split(" = ").next().unwrap();
                // first, before any [table] of the document
                *config = [value]
                    .into_iter()
                    .chain(
                        config
                            .lines()
                            .filter(|l| !l.starts_with(&format!("{name} ="))),
                    )
                    .collect::<Vec<_>>()
                    .join("\n");
            } else {
                meta.insert(key.to_string(), value.to_string());
            }
        });
        let run_arg = run.to_str().unwrap();
        for args in [
            vec!["sample", "--run", run_arg],
            vec!["eval", "--run", run_arg],
        ] {
            let output = flowtrain_in(root.path(), &args);
            if key == "image_shape" && args[0] == "eval" {
                // eval reads the shape from the data, which is fine
                assert_success(&output);
                continue;
            }
            assert_error(&output, &[needle]);
        }
        if key == "config" {
            let output = flowtrain_in(root.path(), &["train", "--resume", "--out", run_arg]);
            assert_error(&output, &[needle]);
        }
    }
}

// ---------------------------------------------------------------------------
// Values that were silently wrong
// ---------------------------------------------------------------------------

#[test]
fn values_that_would_train_nonsense_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_error(
        &train(&run, &["--epochs", "288230376151711744"]),
        &["epochs = 288230376151711744"],
    );
    for norm in ["-1", "0", "nan", "inf"] {
        let output = train(&run, &[&format!("--max-grad-norm={norm}")]);
        assert_error(&output, &["max_grad_norm", "out of range"]);
    }
    assert_error(
        &train(&run, &["--mixing", "convexp", "--convexp-terms", "0"]),
        &["convexp_terms = 0"],
    );
    for lr in ["nan", "-0.001", "0"] {
        assert_error(
            &train(&run, &[&format!("--lr={lr}")]),
            &["lr = ", "out of range"],
        );
    }
    assert_error(&train(&run, &["--eval-limit", "0"]), &["eval_limit = 0"]);
    assert!(!run.join(CHECKPOINT).exists());
}

/// Overwrites the values of tensor `name` in the checkpoint file of `run`
/// with `value` (bytes patched in place, the header untouched).
fn poison_tensor(run: &Path, name: &str, value: f64) {
    let path = run.join(CHECKPOINT);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let entry = &header[name];
    let [start, end] = [0, 1].map(|i| entry["data_offsets"][i].as_u64().unwrap() as usize);
    let pattern: Vec<u8> = match entry["dtype"].as_str().unwrap() {
        "F32" => (value as f32).to_le_bytes().to_vec(),
        _ => value.to_le_bytes().to_vec(),
    };
    for chunk in bytes[8 + n + start..8 + n + end].chunks_mut(pattern.len()) {
        chunk.copy_from_slice(&pattern);
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_checkpoint_with_non_finite_weights_is_an_error_for_eval_and_sample() {
    let root = tempfile::tempdir().unwrap();
    for (i, value) in [f64::NAN, f64::INFINITY].into_iter().enumerate() {
        let run = finished_run(&root.path().join(i.to_string()));
        let name = "param.flow.levels.0.steps.0.coupling.net.0.weight";
        poison_tensor(&run, name, value);
        for command in ["eval", "sample"] {
            let output = flowtrain_in(root.path(), &[command, "--run", run.to_str().unwrap()]);
            assert_error(&output, &[name, "NaN or infinite"]);
        }
        assert!(!run.join("sample_t0.70_s0.png").exists());
    }
}

#[test]
fn sampling_temperatures_outside_0_to_10_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let run = finished_run(root.path());
    for t in ["nan", "-1", "1e308", "inf"] {
        let output = flowtrain_in(
            root.path(),
            &[
                "sample",
                "--run",
                run.to_str().unwrap(),
                &format!("--temperature={t}"),
            ],
        );
        assert_error(&output, &["--temperature", "out of range"]);
    }
    let output = flowtrain_in(
        root.path(),
        &[
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--temperature",
            "0",
            "--n",
            "4",
        ],
    );
    assert_success(&output);
}

#[test]
fn a_second_writer_of_a_run_folder_gets_an_error() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_flowtrain"))
        .args(["train", "--quiet", "--steps", "100000", "--out"])
        .arg(&run)
        .args([
            "--n-subflows",
            "1",
            "--hidden-channels",
            "4",
            "--batch-size",
            "8",
            "--checkpoint-every",
            "3000",
        ])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !run.join("config.toml").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // a fresh run into the folder, before the first run's first checkpoint
    let second = train(&run, &[]);
    assert!(
        !run.join(CHECKPOINT).exists(),
        "the first run checkpointed too early for this test"
    );
    while !run.join(CHECKPOINT).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let resumed = flowtrain_in(
        root.path(),
        &["train", "--resume", "--out", run.to_str().unwrap()],
    );
    first.kill().unwrap();
    first.wait().unwrap();
    for output in [second, resumed] {
        assert_error(&output, &["is in use by another run", "process"]);
    }
    // the lock ends with its process
    let resumed = flowtrain_in(
        root.path(),
        &[
            "train",
            "--resume",
            "--quiet",
            "--steps",
            "1",
            "--out",
            run.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!stderr.contains("in use"), "{stderr}");
}

#[test]
fn zero_steps_writes_and_reports_only_real_files() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let stdout = assert_success(&train(&run, &["--steps", "0"]));
    let line = stdout.lines().find(|l| l.starts_with("wrote ")).unwrap();
    let files: Vec<&str> = line["wrote ".len()..].split(", ").collect();
    assert!(!files.iter().any(|f| f.ends_with("loss.svg")), "{line}");
    assert!(files.iter().any(|f| f.ends_with(CHECKPOINT)), "{line}");
    for f in files {
        assert!(Path::new(f).is_file(), "{f} was reported but not written");
    }
}

// ---------------------------------------------------------------------------
// Work lost after training
// ---------------------------------------------------------------------------

#[test]
fn samples_zero_trains_and_writes_no_grids() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_success(&train(&run, &["--samples", "0"]));
    assert!(run.join(CHECKPOINT).is_file() && run.join("metrics.json").is_file());
    assert!(!run.join("samples_t0.7.png").exists());
}

#[test]
fn all_black_images_train_to_a_finite_loss() {
    // ActNorm sees zero variance in its initialisation batch
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("black");
    write_mnist(&data, (64, 16), ((8, 8), (8, 8)), |_| 0);
    let output = train(
        &root.path().join("run"),
        &[
            "--dataset",
            "mnist",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "20",
        ],
    );
    let stdout = assert_success(&output);
    assert!(stdout.contains("test bpd"), "{stdout}");
}

#[test]
fn a_nan_before_the_first_checkpoint_says_no_checkpoint_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        n_subflows: 1,
        hidden_channels: 4,
        batch_size: 8,
        init_batch_size: 8,
        steps: 4,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    // a weight the data-dependent initialisation does not overwrite
    let (_, p) = trainer
        .model
        .parameters()
        .into_iter()
        .find(|(n, _)| n.contains("coupling") && n.ends_with("weight"))
        .unwrap();
    p.set_data(&Tensor::full(f64::NAN, p.shape(), p.dtype(), p.device()).unwrap())
        .unwrap();
    let err = trainer.train_until(4).unwrap_err();
    assert!(matches!(
        err,
        TrainError::NonFinite {
            checkpoint: None,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("no checkpoint was written") && !msg.contains("kept"),
        "{msg}"
    );
    assert!(!dir.path().join(CHECKPOINT).exists());
}

#[test]
fn the_loss_curve_lives_in_the_data_not_the_header() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_success(&train(&run, &["--steps", "60"]));
    let bytes = std::fs::read(run.join(CHECKPOINT)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let ckpt = checkpoint::load(&run.join(CHECKPOINT)).unwrap();
    assert!(!ckpt.metadata.contains_key("curves"));
    assert_eq!(ckpt.tensors["curve.train_bpd"].shape(), &[60, 2]);
    // the header no longer grows with the steps (it grew by 24 bytes a step;
    // now only numbers gain digits)
    let again = root.path().join("longer");
    assert_success(&train(&again, &["--steps", "600"]));
    let longer = std::fs::read(again.join(CHECKPOINT)).unwrap();
    let longer_len = u64::from_le_bytes(longer[..8].try_into().unwrap());
    assert!(
        longer_len < header_len + 540,
        "{header_len} -> {longer_len}"
    );
}

#[test]
fn an_evaluation_lost_to_a_stop_after_its_checkpoint_is_made_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        n_subflows: 1,
        hidden_channels: 4,
        batch_size: 8,
        init_batch_size: 8,
        steps: 8,
        eval_every: 4,
        checkpoint_every: 4,
        eval_limit: Some(16),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    trainer.train_until(4).unwrap();
    drop(trainer);
    // the process died after the checkpoint of step 4, before its evaluation line
    let metrics = dir.path().join("metrics.jsonl");
    let line = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(line.lines().count(), 1);
    std::fs::write(&metrics, "").unwrap();
    let mut resumed = Trainer::resume(dir.path(), None).unwrap();
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), line);
    // and a line past the checkpoint (of lost steps) is dropped
    resumed.progress = false;
    resumed.train_until(8).unwrap();
    drop(resumed);
    let whole = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(whole.lines().count(), 2);
}

#[test]
fn the_training_curve_stays_bounded() {
    use flowtrain::report::TrainingCurve;
    let mut curve = TrainingCurve::default();
    let n = TrainingCurve::MAX_POINTS as u64 * 2 + 3;
    for step in 1..=n {
        curve.push(step, step as f64);
    }
    let points = curve.points();
    assert!(points.len() <= TrainingCurve::MAX_POINTS);
    assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(points.last().unwrap().0, n);
    // a merged point keeps the mean of the steps it stands for (here 1..=s)
    let (s, mean) = points[0];
    assert!(s > 1 && mean == (s as f64 + 1.0) / 2.0, "{:?}", points[0]);
}

#[test]
fn a_checkpoint_that_cannot_be_read_back_never_replaces_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CHECKPOINT);
    let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu).unwrap();
    checkpoint::save(&path, &[("a".into(), t.clone())], Default::default()).unwrap();
    let good = std::fs::read(&path).unwrap();
    // a header past the readers' limit
    let meta = [(
        "big".to_string(),
        "x".repeat(checkpoint::MAX_HEADER as usize),
    )]
    .into();
    let msg = checkpoint::save(&path, &[("a".into(), t.clone())], meta)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("header") && msg.contains("previous checkpoint is kept"),
        "{msg}"
    );
    // values that would not load back (NaN)
    let bad = Tensor::full(f64::NAN, &[2], DType::F32, Device::Cpu).unwrap();
    assert!(checkpoint::save(&path, &[("a".into(), bad)], Default::default()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

/// Names in `dir` that are temporary files of interrupted writes.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".flowtrain-tmp") || n.starts_with(".tmp"))
        .collect()
}

#[test]
fn leftovers_of_interrupted_writes_are_removed_when_a_run_takes_its_folder() {
    let root = tempfile::tempdir().unwrap();
    let run = finished_run(root.path());
    for name in [
        ".checkpoint.safetensors.4242.flowtrain-tmp",
        ".tmpAb12Cd",
        ".loss.svg.17.flowtrain-tmp",
    ] {
        std::fs::write(run.join(name), b"partial").unwrap();
    }
    // files the library did not write stay
    for name in ["notes.tmp.txt", ".mine.tmp"] {
        std::fs::write(run.join(name), b"the user's").unwrap();
    }
    let output = flowtrain_in(
        root.path(),
        &[
            "train",
            "--resume",
            "--quiet",
            "--out",
            run.to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(leftovers(&run), Vec::<String>::new());
    assert!(run.join("notes.tmp.txt").exists() && run.join(".mine.tmp").exists());
}

#[test]
fn a_relative_data_directory_is_saved_absolute() {
    let root = tempfile::tempdir().unwrap();
    write_mnist(&root.path().join("mnist"), (32, 8), ((8, 8), (8, 8)), |i| {
        (i * 13) as u8
    });
    let output = flowtrain_in(
        root.path(),
        &[
            &[
                "train",
                "--out",
                "run",
                "--dataset",
                "mnist",
                "--data",
                "mnist",
            ][..],
            &TINY[..],
        ]
        .concat(),
    );
    assert_success(&output);
    let config = std::fs::read_to_string(root.path().join("run/config.toml")).unwrap();
    let saved: TrainConfig = TrainConfig::default().merge_toml(&config).unwrap();
    let data_dir = saved.data_dir.unwrap();
    assert!(data_dir.is_absolute(), "{data_dir:?}");
    // eval and resume from another directory find the data
    let elsewhere = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    assert_success(&flowtrain_in(
        elsewhere.path(),
        &["eval", "--run", run.to_str().unwrap()],
    ));
    assert_success(&flowtrain_in(
        elsewhere.path(),
        &[
            "train",
            "--resume",
            "--quiet",
            "--steps",
            "6",
            "--out",
            run.to_str().unwrap(),
        ],
    ));
}

#[test]
fn dry_run_validates_and_prints_the_memory_estimate_without_training() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let stdout = assert_success(&train(&run, &["--dry-run"]));
    assert!(
        stdout.contains("valid:") && stdout.contains("memory estimate:"),
        "{stdout}"
    );
    assert!(!run.join(CHECKPOINT).exists());
    assert_error(
        &train(&run, &["--dry-run", "--n-levels", "5"]),
        &["n_levels = 5", "divisible"],
    );
}

// ---------------------------------------------------------------------------
// SIGKILL at random moments
// ---------------------------------------------------------------------------

/// The final parameters, buffers and optimizer state of a run's checkpoint.
fn final_state(run: &Path) -> Vec<(String, Vec<f64>)> {
    let ckpt = checkpoint::load(&run.join(CHECKPOINT)).unwrap();
    let mut all: Vec<_> = ckpt
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec_f64().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn sigkill_at_random_moments_leaves_a_loadable_checkpoint_and_no_stray_files() {
    let args = [
        "--preset",
        "quick",
        "--quiet",
        "--steps",
        "4000",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "1000",
        "--n-subflows",
        "1",
        "--hidden-channels",
        "4",
        "--batch-size",
        "8",
        "--eval-limit",
        "16",
        "--samples",
        "4",
        "--seed",
        "11",
    ];
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    assert_success(&flowtrain_in(
        root.path(),
        &[&["train", "--out", whole.to_str().unwrap()][..], &args[..]].concat(),
    ));
    let killed = root.path().join("killed");
    let known = [
        ".lock",
        "config.toml",
        "provenance.json",
        CHECKPOINT,
        "metrics.jsonl",
        "metrics.json",
        "loss.svg",
        "samples_t0.5.png",
        "samples_t0.7.png",
        "samples_t1.0.png",
        "interpolation.png",
    ];
    // a fixed sequence of kill delays between 20 and 700 ms
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while kills < 20 {
        let resume = killed.join(CHECKPOINT).exists();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowtrain"));
        cmd.arg("train").arg("--out").arg(&killed);
        if resume {
            cmd.args(["--resume", "--quiet"]);
        } else {
            cmd.args(args);
        }
        let mut child = cmd
            .env("RAYON_NUM_THREADS", "1")
            .env("MATMUL_NUM_THREADS", "1")
            .spawn()
            .unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(20 + state % 680));
        if child.try_wait().unwrap().is_some() {
            break; // it finished before this kill
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if killed.join(CHECKPOINT).exists() {
            let ckpt = checkpoint::load(&killed.join(CHECKPOINT))
                .unwrap_or_else(|e| panic!("kill {kills}: the checkpoint does not load: {e}"));
            flowtrain::train::saved_config(&ckpt, &killed.join(CHECKPOINT)).unwrap();
        }
        for entry in std::fs::read_dir(&killed).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // the only name a kill can leave, for the microseconds between
            // an atomic write's link and its rename, and the next run removes it
            let in_flight = name.starts_with('.') && name.ends_with(".flowtrain-tmp");
            assert!(
                known.contains(&name.as_str()) || in_flight,
                "kill {kills}: stray file {name}"
            );
        }
    }
    assert!(
        kills >= 10,
        "only {kills} kills landed before the run finished"
    );
    // the last start takes the folder, cleans it and finishes the run
    let output = flowtrain_in(
        root.path(),
        &[
            "train",
            "--resume",
            "--quiet",
            "--out",
            killed.to_str().unwrap(),
        ],
    );
    assert_success(&output);
    assert_eq!(leftovers(&killed), Vec::<String>::new());
    let (a, b) = (final_state(&whole), final_state(&killed));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs after {kills} kills and resumptions");
    }
}
