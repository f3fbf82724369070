//! Toy runs (`--preset toy`): every flow kind trains, the 1-D mixture is
//! fitted, point files load (and their errors name the line or the header
//! problem), reverse KL lowers its loss, the energies' gradients are right,
//! and the figure and metrics are written.

use clap::Parser;
use flowtrain::cli::{run as run_cli, Cli, Command};
use flowtrain::data::toys::Toy;
use flowtrain::toy::data::{npy_bytes, parse_csv, parse_npy, Points};
use flowtrain::toy::energy::energy;
use flowtrain::toy::plot::{figure_size, PANEL, WIDE_PANEL};
use flowtrain::toy::{
    load_points, run, FlowKind, Objective, Target, ToyConfig, ToyMetrics, FIGURE, METRICS,
};
use std::path::Path;

/// A small, fast run of `flow` on `dataset`.
fn tiny(flow: FlowKind, dataset: &str, steps: u64) -> ToyConfig {
    ToyConfig {
        dataset: dataset.into(),
        flow,
        n_layers: Some(if flow.is_simple() { 4 } else { 2 }),
        hidden: 16,
        batch_size: 128,
        steps: Some(steps),
        eval_every: steps,
        test_size: 500,
        samples: 200,
        grid: 24,
        ..ToyConfig::default()
    }
}

/// The `(width, height)` of the PNG at `path`.
fn png_size(path: &Path) -> (usize, usize) {
    let file = std::fs::File::open(path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width as usize, info.height as usize)
}

fn read_metrics(dir: &Path) -> ToyMetrics {
    serde_json::from_str(&std::fs::read_to_string(dir.join(METRICS)).unwrap()).unwrap()
}

#[test]
fn every_flow_kind_lowers_its_test_nll_and_writes_its_figure() {
    for flow in FlowKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&tiny(flow, "moons", 40), dir.path(), false).unwrap();
        let m = &report.metrics;
        let (initial, last) = (m.initial_test_nll.unwrap(), m.test_nll.unwrap());
        assert!(last < initial, "{flow:?}: test nll {initial} -> {last}");
        assert!(m.parameters > 0 && m.steps == 40 && m.dim == 2);
        assert_eq!(png_size(&dir.path().join(FIGURE)), figure_size(4, PANEL));
        let saved = read_metrics(dir.path());
        assert_eq!((saved.steps, saved.config.flow), (m.steps, flow));
        assert!((saved.test_nll.unwrap() - last).abs() < 1e-12);
    }
}

#[test]
fn the_1d_mixture_is_fitted_closely() {
    let dir = tempfile::tempdir().unwrap();
    let config = ToyConfig {
        n_layers: Some(2),
        hidden: 32,
        lr: Some(1e-2),
        steps: Some(800),
        eval_every: 800,
        test_size: 4000,
        ..tiny(FlowKind::NsfAr, "mog1d", 800)
    };
    let m = run(&config, dir.path(), false).unwrap().metrics;
    let kl = m.kl_estimate.unwrap();
    eprintln!("mog1d: KL estimate {kl}");
    assert!(
        kl.abs() < 0.03,
        "KL estimate {kl} (test nll {:?}, true {:?})",
        m.test_nll,
        m.true_test_nll
    );
    assert_eq!(
        png_size(&dir.path().join(FIGURE)),
        figure_size(2, WIDE_PANEL)
    );
}

#[test]
fn one_feature_limits_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = run(&tiny(FlowKind::Maf, "mog1d", 3), dir.path(), false)
        .unwrap()
        .metrics;
    assert!(
        m.notes.iter().any(|n| n.contains("Gaussian")),
        "{:?}",
        m.notes
    );
    for flow in [FlowKind::Realnvp, FlowKind::NsfC] {
        let e = run(&tiny(flow, "mog1d", 3), dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("at least 2 features"), "{e}");
    }
}

#[test]
fn the_exact_densities_integrate_to_one() {
    for toy in [Toy::MixtureOfGaussians2d, Toy::EightGaussians] {
        let (half, cells) = (5.0, 800);
        let h = 2.0 * half / cells as f64;
        let mut total = 0.0;
        for i in 0..cells {
            for j in 0..cells {
                let x = [-half + (j as f64 + 0.5) * h, -half + (i as f64 + 0.5) * h];
                total += toy.log_density(&x).unwrap().exp() * h * h;
            }
        }
        assert!((total - 1.0).abs() < 1e-3, "{toy:?}: {total}");
    }
    assert!(Toy::TwoMoons.log_density(&[0.0, 0.0]).is_none());
}

#[test]
fn csv_files_load_and_their_errors_name_the_line() {
    let p = parse_csv("x,y\n1,2\n\n3.5, -4\n").unwrap();
    assert_eq!((p.len(), p.dim()), (2, 2));
    assert_eq!(p.values(), &[1.0, 2.0, 3.5, -4.0]);
    let p = parse_csv("1\n2\n3\n").unwrap();
    assert_eq!((p.len(), p.dim()), (3, 1));
    let cases = [
        ("1,2\n3,abc\n", "line 2, column 2"),
        ("1,2\n3,4,5\n", "line 2: 3 values, but line 1 has 2"),
        ("a,b\n1,2\n3\n", "line 3: 1 values, but line 1 has 2"),
        ("1,2\n3,NaN\n", "line 2, column 2"),
        ("1,2\ninf,4\n", "line 2, column 1"),
        ("", "no points"),
        ("x,y\n\n", "no points"),
    ];
    for (text, expected) in cases {
        let e = parse_csv(text).unwrap_err();
        assert!(e.contains(expected), "{text:?}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "1,2\n3,4\n5,x\n").unwrap();
    let e = load_points(&path).unwrap_err().to_string();
    assert!(e.contains("bad.csv") && e.contains("line 3"), "{e}");
    let e = load_points(&dir.path().join("points.txt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains(".csv or .npy"), "{e}");
}

#[test]
fn npy_files_load_and_bad_headers_are_named() {
    let points = Points::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2).unwrap();
    let bytes = npy_bytes(&points);
    assert_eq!(parse_npy(&bytes).unwrap(), points);
    // f4, version 2
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }\n";
    let mut f4 = b"\x93NUMPY\x02\x00".to_vec();
    f4.extend((header.len() as u32).to_le_bytes());
    f4.extend(header.as_bytes());
    f4.extend(1.5f32.to_le_bytes());
    f4.extend((-2.0f32).to_le_bytes());
    assert_eq!(parse_npy(&f4).unwrap().values(), &[1.5, -2.0]);

    let with_header = |h: &str, data: &[u8]| {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(data);
        out
    };
    let eight = [0u8; 16];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PK\x03\x04 not npy".to_vec(), "not an NPY file"),
        (
            with_header(
                "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 1), }",
                &eight,
            ),
            "'<f4' and '<f8'",
        ),
        (
            with_header(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }",
                &eight,
            ),
            "\"<i8\"",
        ),
        (
            with_header(
                "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 1), }",
                &eight,
            ),
            "Fortran order",
        ),
        (
            with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2), }",
                &eight,
            ),
            "expected (N, D)",
        ),
        (
            with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1), }",
                &eight,
            ),
            "needs 24 data bytes, the file holds 16",
        ),
        (
            with_header("{'descr': '<f8', 'fortran_order': False, }", &eight),
            "no \"shape\" key",
        ),
        (
            with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 2), }",
                &[],
            ),
            "no points",
        ),
    ];
    for (bytes, expected) in cases {
        let e = parse_npy(&bytes).unwrap_err();
        assert!(e.contains(expected), "expected {expected:?} in {e}");
    }
    let mut nan = with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }",
        &[],
    );
    nan.extend(1.0f64.to_le_bytes());
    nan.extend(f64::NAN.to_le_bytes());
    let e = parse_npy(&nan).unwrap_err();
    assert!(
        e.contains("point 2") && e.contains("not a finite number"),
        "{e}"
    );
}

#[test]
fn runs_on_point_files_split_them_or_use_the_test_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b\n");
    let sampled = Toy::MixtureOfGaussians2d
        .sample(200, &mut flowtensor::Generator::new(3))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    for p in sampled.chunks(2) {
        text += &format!("{},{}\n", p[0], p[1]);
    }
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, &text).unwrap();
    let npy = dir.path().join("test.npy");
    let test = Points::new(sampled[..40].to_vec(), 2).unwrap();
    std::fs::write(&npy, npy_bytes(&test)).unwrap();

    let config = tiny(FlowKind::Realnvp, csv.to_str().unwrap(), 20);
    let out = dir.path().join("split");
    let m = run(&config, &out, false).unwrap().metrics;
    assert_eq!((m.train_points, m.test_points), (Some(180), 20));
    assert!(m.true_test_nll.is_none() && m.test_nll.unwrap().is_finite());

    let config = ToyConfig {
        test: Some(npy.clone()),
        ..config
    };
    let m = run(&config, &dir.path().join("given"), false)
        .unwrap()
        .metrics;
    assert_eq!((m.train_points, m.test_points), (Some(200), 20));

    // a malformed file stops the run before anything is written
    std::fs::write(&csv, "1,2\n3\n").unwrap();
    let out = dir.path().join("bad");
    let e = run(&config, &out, false).unwrap_err().to_string();
    assert!(e.contains("points.csv") && e.contains("line 2"), "{e}");
    assert!(!out.exists());
}

#[test]
fn reverse_kl_lowers_its_loss_and_draws_the_target() {
    for (flow, target) in [
        (FlowKind::Planar, Target::U1),
        (FlowKind::Radial, Target::U3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = ToyConfig {
            objective: Objective::ReverseKl,
            target: Some(target),
            flow,
            n_layers: Some(8),
            batch_size: 128,
            steps: Some(150),
            eval_every: 150,
            test_size: 2000,
            grid: 40,
            ..ToyConfig::default()
        };
        let m = run(&config, dir.path(), false).unwrap().metrics;
        let (initial, last) = (m.initial_loss.unwrap(), m.reverse_kl_loss.unwrap());
        assert!(last < initial, "{flow:?} {target:?}: {initial} -> {last}");
        // E_q[log q + U] >= -log Z, up to the Monte Carlo error
        assert!(m.kl_estimate.unwrap() > -0.05, "{m:?}");
        assert_eq!(png_size(&dir.path().join(FIGURE)), figure_size(2, PANEL));
    }
}

#[test]
fn the_energy_gradients_match_finite_differences() {
    let h = 1e-6;
    for target in [Target::U1, Target::U2, Target::U3, Target::U4] {
        for &(z1, z2) in &[
            (0.3, -0.7),
            (-2.1, 1.4),
            (1.7, 2.2),
            (4.3, -0.2),
            (-4.6, 0.5),
        ] {
            let (_, g) = energy(target, z1, z2);
            let d1 = (energy(target, z1 + h, z2).0 - energy(target, z1 - h, z2).0) / (2.0 * h);
            let d2 = (energy(target, z1, z2 + h).0 - energy(target, z1, z2 - h).0) / (2.0 * h);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
            assert!(
                close(g[0], d1) && close(g[1], d2),
                "{target:?} at ({z1}, {z2}): {g:?} vs ({d1}, {d2})"
            );
        }
    }
}

#[test]
fn the_command_line_runs_toy_presets_and_keeps_flags_apart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let parse = |args: &[&str]| {
        let mut all = vec!["flowtrain", "train"];
        all.extend(args);
        Cli::try_parse_from(all).unwrap().command
    };
    let out_text = out.to_str().unwrap();
    let command = parse(&[
        "--preset",
        "toy",
        "--dataset",
        "mog2d",
        "--flow",
        "maf",
        "--n-layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "10",
        "--batch-size",
        "64",
        "--lr",
        "0.002",
        "--seed",
        "4",
        "--out",
        out_text,
        "--quiet",
    ]);
    run_cli(&command).unwrap();
    let m = read_metrics(&out);
    assert_eq!(
        (m.flow.as_str(), m.dataset.as_str(), m.steps),
        ("maf", "mog2d", 10)
    );
    assert_eq!(
        (m.config.lr, m.config.seed, m.config.batch_size),
        (Some(0.002), 4, 64)
    );
    assert!(m.true_test_nll.is_some() && m.kl_estimate.is_some());
    assert!(out.join("config.toml").exists() && out.join(FIGURE).exists());

    let failures: [(&[&str], &str); 6] = [
        (
            &["--preset", "toy", "--mixing", "reverse"],
            "--mixing is for the image presets",
        ),
        (
            &["--preset", "quick", "--flow", "maf"],
            "--flow is for --preset toy",
        ),
        (
            &["--preset", "quick", "--dataset", "moons"],
            "the image presets take",
        ),
        (&["--preset", "toy", "--flow", "glow"], "unknown flow"),
        (
            &["--preset", "toy", "--dataset", "galaxy"],
            "neither a toy density",
        ),
        (
            &["--preset", "toy", "--objective", "reverse-kl"],
            "needs --target",
        ),
    ];
    for (args, expected) in failures {
        let mut all = args.to_vec();
        all.extend(["--out", out_text, "--quiet", "--steps", "1"]);
        let e = run_cli(&parse(&all)).unwrap_err().to_string();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    assert!(matches!(parse(&["--preset", "toy"]), Command::Train(_)));
}

/// The README's example ("Flows on vectors"), with fewer steps.
#[test]
fn the_readme_example_trains_a_spline_flow() -> Result<(), Box<dyn std::error::Error>> {
    use flowlayers::vector::{SplineConfig, SplineCoupling};
    use flowlayers::{CouplingMask, Flow, FlowDistribution, NetConfig, Sequential};
    use flowlayers::{StandardNormal, VectorActNorm};
    use flowtensor::{DType::F64, Device::Cpu, Generator};
    use flowtrain::optim::{Optimizer, OptimizerKind};

    let mut gen = Generator::new(0);
    let mut layers: Vec<Box<dyn Flow>> = Vec::new();
    for k in 0..4 {
        let mask = CouplingMask::alternating(2);
        let mask = if k % 2 == 0 { mask } else { mask.flipped() };
        let spline = SplineConfig {
            bound: 4.0,
            ..Default::default()
        };
        layers.push(Box::new(VectorActNorm::new(2, F64, Cpu)?));
        layers.push(Box::new(SplineCoupling::new(
            mask,
            spline,
            NetConfig::default(),
            F64,
            Cpu,
            &mut gen,
        )?));
    }
    let model = FlowDistribution::new(
        Box::new(Sequential::new(layers)),
        Box::new(StandardNormal::new(&[2], F64, Cpu)),
    );
    let mut adam = Optimizer::new(OptimizerKind::adam(), model.parameters())?;
    let mut losses = Vec::new();
    for _ in 0..60 {
        let x = Toy::TwoMoons.sample(256, &mut gen)?; // (256, 2) f64
        let loss = model.log_prob(&x)?.mean_all()?.neg()?; // NLL in nats
        adam.zero_grad();
        loss.backward()?;
        adam.step(1e-3, 1.0)?;
        losses.push(loss.to_scalar()?);
    }
    let samples = model.sample(1000, 1.0, &mut gen)?; // (1000, 2)
    assert_eq!(samples.shape(), &[1000, 2]);
    let (first, last) = (
        losses[..10].iter().sum::<f64>(),
        losses[50..].iter().sum::<f64>(),
    );
    assert!(last < first, "{losses:?}");
    Ok(())
}
