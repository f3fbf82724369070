//! The researcher's workflow: every mixing by name, sweeps (resumable,
//! SIGKILL-safe, summarised), provenance, loss spikes and the sample grids.

use flowtrain::config::Mixing;
use flowtrain::report::write_grid;
use flowtrain::spikes::SpikeDetector;
use flowtrain::sweep::{parse_seeds, summarize, SweepSummary};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn flowtrain(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowtrain"));
    cmd.args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1");
    cmd
}

fn output(cwd: &Path, args: &[&str]) -> Output {
    flowtrain(cwd, args).output().unwrap()
}

#[test]
fn every_mixing_has_a_name_and_an_unknown_one_lists_them() {
    for m in Mixing::ALL {
        assert_eq!(m.name().parse::<Mixing>().unwrap(), m);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = output(dir.path(), &["train", "--mixing", "3x3", "--out", "r"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for m in Mixing::ALL {
        assert!(stderr.contains(m.name()), "{stderr}");
    }
    let out = output(dir.path(), &["train", "--coupling", "cubic", "--out", "r"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("affine, additive"), "{stderr}");
    // several mixings are a sweep's
    let out = output(
        dir.path(),
        &["train", "--mixing", "1x1,convexp", "--out", "r"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("sweep"));
}

#[test]
fn seed_lists_parse() {
    assert_eq!(parse_seeds("0..3").unwrap(), vec![0, 1, 2]);
    assert_eq!(parse_seeds("2..=4").unwrap(), vec![2, 3, 4]);
    assert_eq!(parse_seeds("7,1").unwrap(), vec![7, 1]);
    for bad in ["", "3..1", "a..b", "1..2..3", "-1"] {
        assert!(parse_seeds(bad).is_err(), "{bad}");
    }
}

const SWEEP: [&str; 22] = [
    "sweep",
    "--preset",
    "quick",
    "--quiet",
    "--mixing",
    "reverse,1x1",
    "--seeds",
    "0..2",
    "--steps",
    "40",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "5",
    "--n-subflows",
    "1",
    "--hidden-channels",
    "8",
    "--eval-limit",
    "32",
    "--samples",
    "4",
];

/// `(seed, test bpd, parameters)` of a run.
type RunKey = (u64, f64, usize);

/// The summary without its timings (which differ between runs).
fn results(summary: &SweepSummary) -> Vec<(String, Vec<RunKey>)> {
    summary
        .settings
        .iter()
        .map(|s| {
            (
                s.setting.clone(),
                s.runs
                    .iter()
                    .map(|r| (r.seed, r.test_bpd, r.parameters))
                    .collect(),
            )
        })
        .collect()
}

fn read_summary(dir: &Path) -> SweepSummary {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_sweep_killed_and_run_again_ends_with_the_uninterrupted_summary() {
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    let status = flowtrain(root.path(), &[&SWEEP[..], &["--out", "whole"]].concat())
        .status()
        .unwrap();
    assert!(status.success());
    let expected = read_summary(&whole);
    assert_eq!(expected.varied, vec!["mixing".to_string()]);
    assert_eq!(expected.settings.len(), 2);
    assert!(expected.settings.iter().all(|s| s.runs.len() == 2));
    for file in ["summary.md", "curves.svg", "bars.svg", "sweep.json"] {
        assert!(whole.join(file).is_file(), "{file}");
    }

    // killed once the first run has finished and the second has a checkpoint
    let killed = root.path().join("killed");
    let mut child = flowtrain(root.path(), &[&SWEEP[..], &["--out", "killed"]].concat())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let second = killed.join("reverse-seed1");
    while !second.join("checkpoint.safetensors").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sweep stalled"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(killed.join("reverse-seed0/metrics.json").is_file());
    assert!(!killed.join("summary.json").exists());

    let again = flowtrain(root.path(), &[&SWEEP[..], &["--out", "killed"]].concat())
        .output()
        .unwrap();
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("reverse-seed0: finished, skipped"),
        "{stderr}"
    );
    assert_eq!(results(&read_summary(&killed)), results(&expected));

    // summarize rebuilds it from the folders
    let rebuilt = summarize(std::slice::from_ref(&whole), &root.path().join("rebuilt")).unwrap();
    assert_eq!(results(&rebuilt), results(&expected));
    let mean = expected.settings[1].test_bpd_mean;
    let per_seed: Vec<f64> = expected.settings[1]
        .runs
        .iter()
        .map(|r| r.test_bpd)
        .collect();
    assert!((mean - (per_seed[0] + per_seed[1]) / 2.0).abs() < 1e-12);
    let sd = ((per_seed[0] - per_seed[1]).abs()) / 2f64.sqrt();
    assert!((expected.settings[1].test_bpd_sd.unwrap() - sd).abs() < 1e-12);
    // a sweep into a folder of other runs is an error
    let other = flowtrain(
        root.path(),
        &[&SWEEP[..], &["--out", "whole", "--hidden-channels", "4"]].concat(),
    )
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&other.stderr).contains("another configuration"));
}

#[test]
fn a_run_records_its_provenance_and_eval_warns_about_other_code() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let args = [
        "train",
        "--preset",
        "quick",
        "--quiet",
        "--out",
        "run",
        "--steps",
        "2",
        "--n-subflows",
        "1",
        "--hidden-channels",
        "4",
        "--samples",
        "1",
        "--eval-limit",
        "8",
    ];
    assert!(output(root.path(), &args).status.success());
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap())
            .unwrap();
    let start = &provenance["starts"][0];
    assert!(start["code"]["commit"].as_str().unwrap().len() >= 7);
    assert!(start["code"]["crates"]
        .as_str()
        .unwrap()
        .contains("flowtensor"));
    assert!(start["machine"]["threads"].as_u64().unwrap() >= 1);
    assert!(!start["machine"]["kernels_isa"].as_str().unwrap().is_empty());
    assert_eq!(provenance["config"]["steps"], 2);
    // the checkpoint names the code; eval and sample say when it is other code
    let path = run.join("checkpoint.safetensors");
    let mut ckpt = flowtrain::checkpoint::load(&path).unwrap();
    let code = ckpt.metadata["code"].clone();
    let quiet = output(root.path(), &["eval", "--run", "run"]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("warning"));
    ckpt.metadata
        .insert("code".into(), "0123456789abcdef".into());
    let mut tensors: Vec<_> = ckpt.tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    flowtrain::checkpoint::save(&path, &tensors, ckpt.metadata).unwrap();
    for command in ["eval", "sample"] {
        let out = output(root.path(), &[command, "--run", "run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("warning")
                && stderr.contains("0123456789abcdef")
                && stderr.contains(&code),
            "{stderr}"
        );
    }
}

#[test]
fn data_files_are_checksummed_in_the_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let enc = flowtrain::data::mnist::encode_idx;
    std::fs::write(
        data.join("train-images-idx3-ubyte"),
        enc(&[16, 4, 4], &[7; 256]),
    )
    .unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), enc(&[16], &[1; 16])).unwrap();
    std::fs::write(
        data.join("t10k-images-idx3-ubyte"),
        enc(&[4, 4, 4], &[9; 64]),
    )
    .unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), enc(&[4], &[2; 4])).unwrap();
    let config = flowtrain::TrainConfig {
        dataset: flowtrain::config::DatasetKind::Mnist,
        data_dir: Some(data.clone()),
        ..flowtrain::TrainConfig::default()
    };
    let files = flowtrain::provenance::data_files(&config).unwrap();
    assert_eq!(files.len(), 4);
    // md5 of the 4 + 4 * 3 header bytes and 256 sevens, as any md5 tool gives
    let want = flowtrain::provenance::md5_file(&data.join("train-images-idx3-ubyte")).unwrap();
    assert_eq!(files[0], want);
    assert_eq!(want.bytes, 16 + 256);
    assert_eq!(want.md5.len(), 32);
}

#[test]
fn spikes_are_found_and_noise_is_not() {
    // noise of +-0.05 around a slowly falling bpd, then a jump of 2 bpd for 3 steps
    let noise = |i: u64| ((i * 7919 % 101) as f64 / 100.0 - 0.5) * 0.1;
    let curve: Vec<(u64, f64)> = (1..=300)
        .map(|i| {
            let base = 5.0 - i as f64 * 0.002 + noise(i);
            (
                i,
                if (200..203).contains(&i) {
                    base + 2.0
                } else {
                    base
                },
            )
        })
        .collect();
    let d = SpikeDetector::from_curve(&curve);
    assert_eq!(d.spikes().len(), 1, "{:?}", d.spikes());
    let s = &d.spikes()[0];
    assert_eq!((s.step, s.steps), (200, 3));
    assert!((s.size - 2.0).abs() < 0.15, "{s:?}");
    let calm: Vec<(u64, f64)> = curve
        .iter()
        .filter(|p| !(200..203).contains(&p.0))
        .copied()
        .collect();
    assert!(SpikeDetector::from_curve(&calm).spikes().is_empty());
}

#[test]
fn grids_are_upscaled_with_visible_lines_between_cells() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.png");
    // five black 16x16 images in 3 columns
    write_grid(&path, &[0u8; 5 * 256], [1, 16, 16], 3).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    // 4x upscaled cells of 64 pixels with 2-pixel lines
    assert_eq!((info.width, info.height), (3 * 66 + 2, 2 * 66 + 2));
    let at = |x: usize, y: usize| buf[y * info.width as usize + x];
    assert_eq!(at(0, 0), at(66, 30));
    assert!(at(0, 0) > 100, "the lines are light");
    assert_eq!(at(2, 2), 0);
    assert_eq!(at(65, 65), 0);
}

#[test]
fn a_sweep_crosses_its_list_flags_the_coupling_network_included() {
    use clap::Parser;
    use flowtrain::cli::{sweep_runs, Cli, Command};
    use flowtrain::config::CouplingNet;
    let argv = [
        "flowtrain",
        "sweep",
        "--preset",
        "quick",
        "--coupling-net",
        "biased,glow",
        "--mixing",
        "reverse,1x1",
        "--seeds",
        "0..2",
    ];
    let Command::Sweep(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a sweep");
    };
    let runs = sweep_runs(&args).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "biased-reverse-seed0",
            "biased-reverse-seed1",
            "biased-1x1-seed0",
            "biased-1x1-seed1",
            "glow-reverse-seed0",
            "glow-reverse-seed1",
            "glow-1x1-seed0",
            "glow-1x1-seed1",
        ]
    );
    let nets: Vec<CouplingNet> = runs.iter().map(|r| r.config.coupling_net).collect();
    assert_eq!(nets[..4], [CouplingNet::Biased; 4]);
    assert_eq!(nets[4..], [CouplingNet::Glow; 4]);
    assert_eq!(runs[6].config.mixing, Mixing::OneByOne);
    assert_eq!(runs[7].config.seed, 1);
    // an unknown network is refused with the known ones named
    let argv = ["flowtrain", "train", "--coupling-net", "actnorm"];
    let Command::Train(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a train");
    };
    let msg = args.resolve().unwrap_err().to_string();
    assert!(msg.contains("biased, glow"), "{msg}");
    // Glow's network and a DenseNet exclude each other
    let config = flowtrain::TrainConfig {
        coupling_net: CouplingNet::Glow,
        densenet_depth: 2,
        ..flowtrain::TrainConfig::default()
    };
    let msg = config.check().unwrap_err().to_string();
    assert!(
        msg.contains("coupling_net = glow") && msg.contains("densenet_depth = 2"),
        "{msg}"
    );
}
