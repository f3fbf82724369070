//! Records what the code is for run provenance: the git commit of the
//! workspace, whether its tree differed from the commit (and a hash of the
//! difference), and the versions of the main dependencies from Cargo.lock.
//! Outside a git checkout the commit is "unknown".

use std::path::Path;
use std::process::Command;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// FNV-1a of `bytes`, as 16 hex digits.
fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `name version` of each of `names` in the lock file's text.
fn locked_versions(lock: &str, names: &[&str]) -> String {
    let mut found = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take().filter(|n| names.contains(&n.as_str())) {
                found.push(format!("{n} {}", v.trim_matches('"')));
            }
        }
    }
    found.join(", ")
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../..");
    for watched in [
        ".git/HEAD",
        ".git/index",
        ".git/refs",
        ".git/packed-refs",
        "crates",
        "xtask",
        "benches",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let commit = git(&root, &["rev-parse", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let diff = git(
        &root,
        &[
            "diff",
            "HEAD",
            "--",
            "crates",
            "xtask",
            "benches",
            "kernels",
            "Cargo.toml",
            "Cargo.lock",
        ],
    )
    .unwrap_or_default();
    let (dirty, diff_hash) = if diff.is_empty() {
        ("false", String::new())
    } else {
        ("true", fnv(diff.as_bytes()))
    };
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let dependencies = locked_versions(
        &lock,
        &[
            "rayon",
            "matrixmultiply",
            "rustfft",
            "safetensors",
            "mimalloc",
            "flate2",
        ],
    );
    println!("cargo:rustc-env=FLOWTRAIN_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=FLOWTRAIN_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=FLOWTRAIN_GIT_DIFF_HASH={diff_hash}");
    println!("cargo:rustc-env=FLOWTRAIN_DEPENDENCIES={dependencies}");
}
