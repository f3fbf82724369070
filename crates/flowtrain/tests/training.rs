//! The optimizers, the configuration, checkpoints, the NaN stop, and a run
//! killed with SIGKILL and resumed ending equal to an uninterrupted one.

use flowtensor::{DType, Device, Tensor};
use flowtrain::checkpoint;
use flowtrain::config::{DatasetKind, Mixing, TrainConfig};
use flowtrain::optim::{clip_factor, Optimizer, OptimizerKind, Polyak, Schedule};
use flowtrain::train::CHECKPOINT;
use flowtrain::{TrainError, Trainer};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tiny run on the built-in set.
fn tiny() -> TrainConfig {
    TrainConfig {
        n_levels: 2,
        n_subflows: 1,
        hidden_channels: 8,
        batch_size: 8,
        init_batch_size: 8,
        steps: 8,
        eval_every: 4,
        checkpoint_every: 2,
        eval_limit: Some(16),
        samples: 4,
        ..TrainConfig::default()
    }
}

#[test]
fn every_optimizer_minimises_a_quadratic() {
    for kind in [
        OptimizerKind::adam(),
        OptimizerKind::adamax(),
        OptimizerKind::Sgd { momentum: 0.9 },
    ] {
        let p = Tensor::from_vec(vec![3.0f64, -2.0, 0.5], &[3], Device::Cpu)
            .unwrap()
            .as_variable();
        let mut opt = Optimizer::new(kind, vec![("p".into(), p.clone())]).unwrap();
        for _ in 0..500 {
            opt.zero_grad();
            p.sub_scalar(1.0)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(0.02, 1.0).unwrap();
        }
        let v = p.to_vec_f64().unwrap();
        assert!(v.iter().all(|x| (x - 1.0).abs() < 0.05), "{kind:?}: {v:?}");
    }
}

#[test]
fn adam_matches_its_closed_form_first_step_and_clipping_scales_gradients() {
    // the first Adam step moves every coordinate by lr * sign(g) (bias-corrected)
    let p = Tensor::from_vec(vec![1.0f64, -1.0], &[2], Device::Cpu)
        .unwrap()
        .as_variable();
    let mut opt = Optimizer::new(OptimizerKind::adam(), vec![("p".into(), p.clone())]).unwrap();
    p.mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!((opt.grad_norm().unwrap() - 18f64.sqrt()).abs() < 1e-12);
    opt.step(0.1, clip_factor(18f64.sqrt(), Some(1.0))).unwrap();
    let v = p.to_vec_f64().unwrap();
    assert!(
        (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.1).abs() < 1e-6,
        "{v:?}"
    );
    assert_eq!(clip_factor(0.5, Some(1.0)), 1.0);
    assert_eq!(clip_factor(1e9, None), 1.0);
    assert!((clip_factor(100.0, Some(50.0)) - 50.0 / (100.0 + 1e-6)).abs() < 1e-15);
}

#[test]
fn the_schedule_warms_up_linearly_then_decays() {
    let s = Schedule {
        base: 1e-3,
        warmup: 100,
        decay: 0.99,
    };
    assert!((s.lr(0) - 1e-5).abs() < 1e-15);
    assert!((s.lr(49) - 5e-4).abs() < 1e-15);
    assert!((s.lr(100) - 1e-3).abs() < 1e-15);
    assert!((s.lr(110) - 1e-3 * 0.99f64.powi(10)).abs() < 1e-15);
}

#[test]
fn polyak_averages_and_swaps() {
    let p = Tensor::from_vec(vec![0.0f64], &[1], Device::Cpu)
        .unwrap()
        .as_variable();
    let params = vec![("p".to_string(), p.clone())];
    let avg = Polyak::new(0.5, &params).unwrap();
    p.set_data(&Tensor::from_vec(vec![4.0f64], &[1], Device::Cpu).unwrap())
        .unwrap();
    avg.update(&params).unwrap();
    avg.swap(&params).unwrap();
    assert_eq!(p.to_vec_f64().unwrap(), vec![2.0]);
    avg.swap(&params).unwrap();
    assert_eq!(p.to_vec_f64().unwrap(), vec![4.0]);
    assert!(Polyak::new(1.0, &params).is_err());
}

#[test]
fn the_reference_preset_is_the_specified_configuration() {
    let c = TrainConfig::preset("glow-mnist-ref").unwrap();
    assert_eq!(c.dataset, DatasetKind::Mnist);
    assert_eq!((c.n_levels, c.n_subflows, c.hidden_channels), (2, 4, 64));
    assert_eq!(
        (c.batch_size, c.steps, c.warmup_steps, c.init_batch_size),
        (64, 1500, 100, 64)
    );
    assert_eq!((c.lr, c.max_grad_norm, c.n_bits), (1e-3, Some(50.0), 8));
    assert_eq!(
        c.optimizer,
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8
        }
    );
    assert_eq!(
        (c.mixing, c.convexp_terms, c.use_splitprior, c.eval_limit),
        (Mixing::OneByOne, 6, true, None)
    );
    // TOML replaces keys; unknown keys and bad values are errors
    let c2 = c.merge_toml("mixing = \"convexp\"\nsteps = 20").unwrap();
    assert_eq!((c2.mixing, c2.steps), (Mixing::ConvExp, 20));
    assert!(c
        .merge_toml("stpes = 3")
        .unwrap_err()
        .to_string()
        .contains("stpes"));
    assert!(c.merge_toml("mixing = \"3x3\"").is_err());
    assert!(TrainConfig::preset("glow-cifar").is_err());
}

#[test]
fn a_damaged_checkpoint_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu).unwrap();
    checkpoint::save(&path, &[("a".into(), t.clone())], Default::default()).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.tensors["a"].to_vec_f64().unwrap(), vec![1.0, 2.0]);
    let wrong = Tensor::zeros(&[3], DType::F32, Device::Cpu).unwrap();
    let msg = loaded
        .tensor_like(&path, "a", &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("c.safetensors") && msg.contains("[2]"),
        "{msg}"
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let msg = checkpoint::load(&path).err().unwrap().to_string();
    assert!(
        msg.contains("c.safetensors") && msg.contains("safetensors"),
        "{msg}"
    );
}

fn saved_step(dir: &Path) -> Option<u64> {
    let ckpt = checkpoint::load(&dir.join(CHECKPOINT)).ok()?;
    ckpt.metadata.get("step")?.parse().ok()
}

#[test]
fn a_nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(tiny(), dir.path()).unwrap();
    trainer.progress = false;
    trainer.train_until(4).unwrap();
    assert_eq!(saved_step(dir.path()), Some(4));
    let before = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();
    // poison one parameter
    let (_, p) = &trainer.model.parameters()[0];
    p.set_data(&Tensor::full(f64::NAN, p.shape(), p.dtype(), p.device()).unwrap())
        .unwrap();
    match trainer.train_until(8) {
        Err(TrainError::NonFinite {
            step, checkpoint, ..
        }) => {
            assert_eq!(step, 5);
            assert_eq!(checkpoint, Some(dir.path().join(CHECKPOINT)));
        }
        other => panic!("expected a NaN stop, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(dir.path().join(CHECKPOINT)).unwrap(), before);
    // the kept checkpoint resumes once the stopped run has let go of the folder
    assert!(Trainer::resume(dir.path(), None)
        .err()
        .unwrap()
        .to_string()
        .contains("in use by another run"));
    drop(trainer);
    let resumed = Trainer::resume(dir.path(), None).unwrap();
    assert_eq!(resumed.step(), 4);
}

#[test]
fn a_run_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(tiny(), dir.path()).unwrap();
    trainer.progress = false;
    let summary = trainer.run().unwrap().summary;
    assert!(summary.test_bpd.is_finite() && summary.test_bpd > 0.0);
    assert_eq!(summary.steps, 8);
    for file in [
        "metrics.json",
        "metrics.jsonl",
        "loss.svg",
        "config.toml",
        "samples_t0.5.png",
        "samples_t0.7.png",
        "samples_t1.0.png",
        "interpolation.png",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    // a second run may not overwrite it
    assert!(Trainer::new(tiny(), dir.path()).is_err());
    // sample and eval work from the checkpoint
    use flowtrain::cli::{run, Command, EvalArgs, SampleArgs};
    let out = dir.path().join("more.png");
    run(&Command::Sample(SampleArgs {
        run: dir.path().to_path_buf(),
        n: 9,
        temperature: 0.5,
        seed: 3,
        out: Some(out.clone()),
        memory: Default::default(),
        device: None,
    }))
    .unwrap();
    assert!(out.is_file());
    run(&Command::Eval(EvalArgs {
        run: dir.path().to_path_buf(),
        limit: Some(8),
        memory: Default::default(),
        device: None,
    }))
    .unwrap();
}

/// Final parameters of a run's checkpoint, by name.
fn final_params(dir: &Path) -> Vec<(String, Vec<f64>)> {
    let ckpt = checkpoint::load(&dir.join(CHECKPOINT)).unwrap();
    let mut all: Vec<_> = ckpt
        .tensors
        .iter()
        .filter(|(n, _)| {
            n.starts_with("param.") || n.starts_with("buffer.") || n.starts_with("optim.")
        })
        .map(|(n, t)| (n.clone(), t.to_vec_f64().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn flowtrain(args: &[&str], out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowtrain"));
    cmd.args(["train", "--quiet", "--out"]).arg(out).args(args);
    // one thread: the reductions of a step are then in a fixed order, so two runs agree bit for bit
    cmd.env("RAYON_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1");
    cmd
}

/// Kills a run of `args` after its first checkpoint, resumes it, and checks
/// that it ends bit-equal to an uninterrupted run.
fn kill_and_resume(args: &[&str]) {
    let whole = tempfile::tempdir().unwrap();
    assert!(flowtrain(args, whole.path()).status().unwrap().success());

    let killed = tempfile::tempdir().unwrap();
    let mut child = flowtrain(args, killed.path()).spawn().unwrap();
    let start = Instant::now();
    // wait for the first checkpoint, then kill the run mid-way
    while saved_step(killed.path()).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = saved_step(killed.path()).unwrap();
    assert!(at_kill < 60, "the run finished before it could be killed");
    assert!(!killed.path().join("metrics.json").exists());

    let resumed = flowtrain(&["--resume"], killed.path()).status().unwrap();
    assert!(resumed.success());
    assert_eq!(saved_step(killed.path()), Some(60));
    let (a, b) = (final_params(whole.path()), final_params(killed.path()));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs after resuming from step {at_kill}");
    }
}

const KILLED_RUN: [&str; 20] = [
    "--preset",
    "quick",
    "--steps",
    "60",
    "--checkpoint-every",
    "5",
    "--eval-every",
    "60",
    "--batch-size",
    "16",
    "--n-subflows",
    "2",
    "--hidden-channels",
    "16",
    "--eval-limit",
    "32",
    "--samples",
    "4",
    "--seed",
    "7",
];

#[test]
fn a_run_killed_between_checkpoints_resumes_to_the_uninterrupted_result() {
    kill_and_resume(&KILLED_RUN);
}

#[test]
fn a_killed_convexp_run_resumes_to_the_uninterrupted_result() {
    // the spectral normalisation's power iteration is part of the state
    kill_and_resume(&[&KILLED_RUN[..], &["--mixing", "convexp"]].concat());
}

#[test]
fn the_paper_flags_resolve_to_the_configuration() {
    use clap::Parser;
    use flowtrain::cli::{Cli, Command};
    let resolve = |flags: &[&str]| {
        let argv = [&["flowtrain", "train"], flags].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Train(args) => args.resolve().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let c = resolve(&[
        "--mixing",
        "emerging",
        "--densenet-depth",
        "3",
        "--densenet-growth",
        "12",
        "--n-intermediate-channels",
        "24",
        "--use-gated-conv",
        "--use-splitprior",
        "false",
        "--epochs",
        "2",
    ]);
    assert_eq!(c.mixing, Mixing::Emerging);
    assert_eq!(
        (
            c.densenet_depth,
            c.densenet_growth,
            c.n_intermediate_channels
        ),
        (3, 12, 24)
    );
    assert!(c.use_gated_conv && !c.use_splitprior);
    assert_eq!(c.epochs, Some(2));
    let c = resolve(&["--use-splitprior"]);
    assert!(!c.use_gated_conv && c.use_splitprior);
}

#[test]
fn every_mixing_and_the_sylvester_and_residual_models_train() {
    use flowtrain::config::{CouplingType, ModelType};
    // (mixing, model, coupling, DenseNet conditioner depth and gate)
    let mut runs: Vec<_> = Mixing::ALL
        .iter()
        .map(|&m| (m, ModelType::CouplingFlow, CouplingType::Affine, (0, false)))
        .collect();
    runs.extend([
        (
            Mixing::OneByOne,
            ModelType::CouplingFlow,
            CouplingType::Additive,
            (0, false),
        ),
        (
            Mixing::OneByOne,
            ModelType::Sylvester,
            CouplingType::Affine,
            (0, false),
        ),
        (
            Mixing::OneByOne,
            ModelType::ResidualFlow,
            CouplingType::Affine,
            (0, false),
        ),
        (
            Mixing::OneByOne,
            ModelType::CouplingFlow,
            CouplingType::Affine,
            (2, false),
        ),
        (
            Mixing::OneByOne,
            ModelType::CouplingFlow,
            CouplingType::Affine,
            (2, true),
        ),
    ]);
    for (mixing, model_type, coupling, (densenet_depth, use_gated_conv)) in runs {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            mixing,
            model_type,
            coupling,
            densenet_depth,
            use_gated_conv,
            woodbury_rank: 4,
            steps: 3,
            eval_every: 3,
            checkpoint_every: 3,
            ..tiny()
        };
        let mut trainer = Trainer::new(config, dir.path()).unwrap();
        trainer.progress = false;
        trainer.train_until(3).unwrap();
        let (bpd, _) = trainer.evaluate().unwrap();
        assert!(
            bpd.is_finite() && bpd > 0.0,
            "{mixing:?} {model_type:?} {coupling:?}: {bpd}"
        );
        assert_eq!(saved_step(dir.path()), Some(3));
        // the flow inverts: samples decode to finite images
        let images = flowtrain::sampling::sample_images(
            &trainer.model,
            2,
            0.7,
            &mut flowtensor::Generator::new(1),
        )
        .unwrap();
        assert_eq!(images.len(), 2 * 256, "{mixing:?}");
    }
}

#[test]
fn glows_coupling_network_initialises_its_hidden_actnorms_once_and_saves_them() {
    use flowtrain::config::CouplingNet;
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        coupling_net: CouplingNet::Glow,
        steps: 4,
        eval_every: 4,
        ..tiny()
    };
    let hidden = "flow.levels.0.steps.0.coupling.net.0.actnorm";
    let value = |named: Vec<(String, Tensor)>, name: &str| {
        let found = named.into_iter().find(|(n, _)| n == name);
        found
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .to_vec_f64()
            .unwrap()
    };
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    // not initialised until the first step, which initialises it
    let flag = format!("{hidden}.initialized");
    assert_eq!(value(trainer.model.buffers(), &flag), [0.0]);
    let log_scale = format!("{hidden}.log_scale");
    assert!(value(trainer.model.parameters(), &log_scale)
        .iter()
        .all(|&v| v == 0.0));
    trainer.train_until(1).unwrap();
    assert_eq!(value(trainer.model.buffers(), &flag), [1.0]);
    let initial = value(trainer.model.parameters(), &log_scale);
    assert!(initial.iter().all(|&v| v != 0.0), "{initial:?}");
    trainer.run().unwrap();
    drop(trainer); // its lock on the run folder

    // saved with the parameters, and a resumed run starts from the saved
    // values instead of initialising again
    let ckpt = checkpoint::load(&dir.path().join(CHECKPOINT)).unwrap();
    let saved = |name: &str| {
        let found = ckpt.tensors.get(name);
        found
            .unwrap_or_else(|| panic!("{name}"))
            .to_vec_f64()
            .unwrap()
    };
    assert_eq!(saved(&format!("buffer.{flag}")), [1.0]);
    let trained = saved(&format!("param.{log_scale}"));
    assert_ne!(trained, initial, "training moves the hidden ActNorm");
    let resumed = Trainer::resume(dir.path(), Some(6)).unwrap();
    assert_eq!(value(resumed.model.parameters(), &log_scale), trained);
    assert_eq!(value(resumed.model.buffers(), &flag), [1.0]);
}
