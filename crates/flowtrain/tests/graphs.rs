//! The graph runs (`--preset graph-toy`): the built-in graph families, the
//! JSON lines reader and its errors, batches as disjoint unions, a short run
//! on each kind of data, and the flags.

use clap::Parser;
use flowtensor::{DType, Device};
use flowtrain::cli::{Cli, Command};
use flowtrain::graph::data::graphs_to_json_lines;
use flowtrain::graph::{
    load_graphs, run, GraphBatch, GraphConfig, GraphFamily, GraphMixingKind, GraphSample,
};
use std::path::Path;

#[test]
fn the_built_in_families_are_seeded_valid_graphs_in_random_order() {
    for family in GraphFamily::ALL {
        let graphs = family.generate(40, 3).unwrap();
        assert_eq!(graphs, family.generate(40, 3).unwrap(), "{family:?}");
        assert_ne!(graphs, family.generate(40, 4).unwrap(), "{family:?}");
        let mut sizes = std::collections::BTreeSet::new();
        for g in &graphs {
            let v = g.nodes();
            assert!((8..=32).contains(&v), "{family:?}: {v} nodes");
            assert_eq!((g.dim, g.features.len()), (2, 2 * v));
            assert!(g.features.iter().all(|x| x.is_finite() && x.abs() < 5.0));
            let mut degree = vec![0; v];
            for &(i, j) in &g.edges {
                assert!(i < j && j < v, "{family:?}: edge ({i}, {j})");
                degree[i] += 1;
                degree[j] += 1;
            }
            assert!(
                degree.iter().all(|&d| d > 0),
                "{family:?}: an isolated node"
            );
            let mut unique: Vec<(usize, usize)> =
                g.edges.iter().map(|&(i, j)| (i.min(j), i.max(j))).collect();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), g.edges.len(), "{family:?}: a repeated edge");
            sizes.insert(v);
        }
        assert!(sizes.len() > 3, "{family:?}: sizes {sizes:?}");
    }
    // a ring's edges join neighbours on the circle; random order: node 0 is
    // not always joined to node 1
    let rings = GraphFamily::Rings.generate(20, 0).unwrap();
    for g in &rings {
        assert_eq!(g.edges.len(), g.nodes());
        for &(i, j) in &g.edges {
            let (a, b) = (g.node(i), g.node(j));
            let gap = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
            let chord = 2.0 * (std::f64::consts::PI / g.nodes() as f64).sin();
            assert!((gap - chord).abs() < 0.4, "{gap} vs {chord}");
        }
    }
    assert!(rings
        .iter()
        .any(|g| !g.edges.iter().any(|&e| e == (0, 1) || e == (1, 0))));
}

#[test]
fn a_relabelled_graph_is_the_same_graph() {
    let g = &GraphFamily::Communities.generate(1, 9).unwrap()[0];
    let order: Vec<usize> = (0..g.nodes()).rev().collect();
    let r = g.relabelled(&order);
    let v = g.nodes();
    for new in 0..v {
        assert_eq!(r.node(new), g.node(v - 1 - new));
    }
    let mut want: Vec<(usize, usize)> = g
        .edges
        .iter()
        .map(|&(i, j)| (v - 1 - j, v - 1 - i))
        .collect();
    let mut got = r.edges.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn graph_files_round_trip_and_malformed_lines_are_errors_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let graphs = GraphFamily::Ladders.generate(5, 1).unwrap();
    let text = graphs_to_json_lines(&graphs);
    let path = write(dir.path(), "ladders.jsonl", &format!("{text}\n"));
    let loaded = load_graphs(&path).unwrap();
    assert_eq!(loaded.len(), graphs.len());
    for (a, b) in loaded.iter().zip(&graphs) {
        assert_eq!((a.dim, &a.edges), (b.dim, &b.edges));
        let close = a.features.iter().zip(&b.features);
        assert!(close
            .into_iter()
            .all(|(x, y)| (x - y).abs() <= 1e-15 * y.abs().max(1.0)));
    }
    // three features, edges listed in both directions and twice
    let path = write(
        dir.path(),
        "three.jsonl",
        r#"{"nodes": [[0, 1, 2], [1, 1, 1], [2, 0, 0]], "edges": [[0, 1], [1, 0], [2, 1]], "label": 3}"#,
    );
    let loaded = load_graphs(&path).unwrap();
    assert_eq!((loaded[0].dim, loaded[0].nodes()), (3, 3));
    assert_eq!(loaded[0].edges, [(0, 1), (1, 2)]);

    let good = r#"{"nodes": [[0, 0], [1, 0]], "edges": [[0, 1]]}"#;
    let cases = [
        ("not json", "line 2", "expected"),
        (r#"{"nodes": [[0, 0]]}"#, "line 2", "edges"),
        (r#"{"nodes": [], "edges": []}"#, "line 2", "no nodes"),
        (
            r#"{"nodes": [[0, 0], [1]], "edges": []}"#,
            "line 2",
            "node 1 has 1 features",
        ),
        (
            r#"{"nodes": [[0, 0], [1, 1]], "edges": [[0, 2]]}"#,
            "line 2",
            "outside 0..2",
        ),
        (
            r#"{"nodes": [[0, 0], [1, 1]], "edges": [[1, 1]]}"#,
            "line 2",
            "self loop",
        ),
        (
            r#"{"nodes": [[0, "a"]], "edges": []}"#,
            "line 2",
            "expected",
        ),
        (
            r#"{"nodes": [[0, 0, 0]], "edges": []}"#,
            "line 2",
            "node 0 has 3 features",
        ),
    ];
    for (line, at, what) in cases {
        let path = write(dir.path(), "bad.jsonl", &format!("{good}\n{line}\n"));
        let msg = load_graphs(&path).unwrap_err().to_string();
        assert!(
            msg.contains("bad.jsonl") && msg.contains(at) && msg.contains(what),
            "{line}: {msg}"
        );
    }
    let path = write(
        dir.path(),
        "one.jsonl",
        r#"{"nodes": [[0], [1]], "edges": []}"#,
    );
    let msg = load_graphs(&path).unwrap_err().to_string();
    assert!(msg.contains("at least 2"), "{msg}");
    let path = write(dir.path(), "empty.jsonl", "\n\n");
    assert!(load_graphs(&path)
        .unwrap_err()
        .to_string()
        .contains("no graphs"));
    let missing = dir.path().join("missing.jsonl");
    assert!(load_graphs(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.jsonl"));
}

#[test]
fn a_batch_is_the_disjoint_union_of_its_graphs() {
    let a = GraphSample {
        features: vec![0.0, 1.0, 2.0, 3.0],
        dim: 2,
        edges: vec![(0, 1)],
    };
    let b = GraphSample {
        features: vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        dim: 2,
        edges: vec![(0, 2), (1, 2)],
    };
    let batch = GraphBatch::new(&[&a, &b], DType::F64, Device::Cpu).unwrap();
    assert_eq!(batch.nodes, 5);
    assert_eq!(batch.features.shape(), [1, 5, 2]);
    assert_eq!(
        batch.features.to_vec::<f64>().unwrap(),
        (0..10).map(f64::from).collect::<Vec<_>>()
    );
    let mut want = vec![0.0; 25];
    for (i, j) in [(0, 1), (2, 4), (3, 4)] {
        want[i * 5 + j] = 1.0;
        want[j * 5 + i] = 1.0;
    }
    assert_eq!(batch.adjacency.to_vec::<f64>().unwrap(), want);
}

fn short(dataset: &str, mixing: GraphMixingKind) -> GraphConfig {
    GraphConfig {
        dataset: dataset.into(),
        mixing,
        n_subflows: 2,
        hidden: 16,
        convexp_terms: 8,
        batch_size: 8,
        steps: 40,
        train_graphs: 64,
        test_graphs: 16,
        eval_every: 20,
        samples: 3,
        ..GraphConfig::default()
    }
}

#[test]
fn a_short_run_learns_and_writes_its_outputs() {
    for mixing in GraphMixingKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&short("grids", mixing), dir.path(), false).unwrap();
        let m = &report.metrics;
        assert!(
            m.test_nll.is_finite() && m.test_nll < m.initial_test_nll,
            "{mixing:?}: {m:?}"
        );
        assert_eq!(m.curve.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 20, 40]);
        assert_eq!(m.train_curve.len(), 2);
        assert_eq!((m.train_graphs, m.test_graphs), (64, 16));
        for file in [
            "graphs.svg",
            "metrics.json",
            "config.toml",
            "checkpoint.safetensors",
        ] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
        let svg = std::fs::read_to_string(dir.path().join("graphs.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<line") && svg.contains("<circle"));
        assert_eq!(
            svg.matches("<clipPath").count(),
            6,
            "3 data and 3 sampled graphs"
        );
        let ckpt = flowtrain::checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
        assert!(ckpt
            .tensors
            .contains_key("param.steps.0.coupling.output.weight"));
        assert!(ckpt
            .tensors
            .contains_key("buffer.steps.1.actnorm.initialized"));
        assert_eq!(
            ckpt.tensors.contains_key("param.steps.0.convexp.w1"),
            mixing == GraphMixingKind::ConvExp
        );
    }
    // the user's own graphs, split 9:1
    let dir = tempfile::tempdir().unwrap();
    let graphs = GraphFamily::Communities.generate(30, 5).unwrap();
    let path = write(dir.path(), "mine.jsonl", &graphs_to_json_lines(&graphs));
    let config = short(path.to_str().unwrap(), GraphMixingKind::ConvExp);
    let report = run(&config, &dir.path().join("run"), false).unwrap();
    assert_eq!(
        (report.metrics.train_graphs, report.metrics.test_graphs),
        (27, 3)
    );
    assert!(report.metrics.test_nll.is_finite());
}

fn resolve(flags: &[&str]) -> Result<GraphConfig, String> {
    let argv = [&["flowtrain", "train", "--preset", "graph-toy"], flags].concat();
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Train(args) => args.resolve_graph().map_err(|e| e.to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_graph_flags_resolve_and_the_other_presets_flags_are_refused() {
    let c = resolve(&[
        "--graph-dataset",
        "ladders",
        "--graph-mixing",
        "convexp",
        "--n-subflows",
        "3",
        "--hidden-channels",
        "32",
        "--steps",
        "10",
        "--seed",
        "4",
    ])
    .unwrap();
    assert_eq!(c.dataset, "ladders");
    assert_eq!(c.mixing, GraphMixingKind::ConvExp);
    assert_eq!((c.n_subflows, c.hidden, c.steps, c.seed), (3, 32, 10, 4));
    assert_eq!(resolve(&[]).unwrap(), GraphConfig::default());
    for (flags, want) in [
        (&["--graph-mixing", "woodbury"][..], "none, 1x1, convexp"),
        (
            &["--graph-dataset", "/no/such.jsonl"],
            "neither a built-in family",
        ),
        (
            &["--mixing", "convexp"],
            "--mixing is not for --preset graph-toy",
        ),
        (&["--flow", "planar"], "--flow is not"),
        (&["--device", "cuda"], "--device is not"),
        (&["--steps", "0"], "steps"),
    ] {
        let msg = resolve(flags).unwrap_err();
        assert!(msg.contains(want), "{flags:?}: {msg}");
    }
    // and the graph flags are refused by the other presets
    for preset in ["default", "toy"] {
        let argv = [
            "flowtrain",
            "train",
            "--preset",
            preset,
            "--graph-mixing",
            "1x1",
        ];
        let Command::Train(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a train");
        };
        let msg = match preset {
            "toy" => args.resolve_toy().unwrap_err().to_string(),
            _ => args.resolve().unwrap_err().to_string(),
        };
        assert!(msg.contains("--graph-mixing"), "{preset}: {msg}");
    }
}
