//! `profile`: a training run with the op profiler on writes profile.json
//! (rows per scope, phase and op) and profile.svg in its folder. Alone in
//! its test binary: the profiler is one per process.

use clap::Parser;
use flowtrain::cli::{run as run_cli, Cli};

#[test]
fn the_profile_command_writes_the_profile_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "flowtrain",
        "profile",
        "--preset",
        "toy",
        "--dataset",
        "moons",
        "--flow",
        "maf",
        "--n-layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "5",
        "--batch-size",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    run_cli(&Cli::try_parse_from(args).unwrap().command).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("profile.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let has = |scope: &str, phase: &str, op: &str| {
        rows.iter().any(|r| {
            r["scope"].as_str().unwrap().ends_with(scope)
                && r["phase"] == phase
                && r["op"] == op
                && r["calls"].as_u64().unwrap() > 0
        })
    };
    // the MAF layers' products, forward and backward, and the optimizer's arithmetic
    assert!(has("MaskedAutoregressive", "forward", "matmul"), "{json}");
    assert!(has("MaskedAutoregressive", "backward", "matmul"), "{json}");
    assert!(rows.iter().any(|r| r["scope"] == "optimizer"), "{json}");
    let wall = json["wall_ms"].as_f64().unwrap();
    let outside = json["outside_ops_ms"].as_f64().unwrap();
    assert!(wall > 0.0 && (0.0..=wall).contains(&outside), "{json}");
    let svg = std::fs::read_to_string(out.join("profile.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("matmul (backward)"));
    assert!(out.join("metrics.json").exists());
}
