//! Downloads of the public datasets with MD5 verification
//! (`cargo xtask data mnist|cifar10 --dir DIR`).
//!
//! Each file is streamed to `NAME.part` in the target directory while its
//! MD5 is computed; it is renamed to `NAME` only when the digest matches, so
//! an interrupted or corrupted download never looks like a finished one.

use crate::error::{Result, TrainError};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One file to fetch: where from, its name on disk and its MD5 (hex).
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    pub name: String,
    pub md5: String,
}

/// The mirror torchvision uses for MNIST.
pub const MNIST_BASE: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// The CIFAR-10 site of the University of Toronto.
pub const CIFAR10_BASE: &str = "https://www.cs.toronto.edu/~kriz/";

/// The four MNIST files (gzipped IDX) under `base`, with their MD5 sums.
pub fn mnist_files(base: &str) -> Vec<Remote> {
    [
        (
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ]
    .into_iter()
    .map(|(name, md5)| Remote {
        url: format!("{base}{name}"),
        name: name.into(),
        md5: md5.into(),
    })
    .collect()
}

/// The CIFAR-10 binary archive under `base`, with its MD5 sum.
pub fn cifar10_archive(base: &str) -> Remote {
    Remote {
        url: format!("{base}cifar-10-binary.tar.gz"),
        name: "cifar-10-binary.tar.gz".into(),
        md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
    }
}

/// The MD5 of a file on disk, as lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches `remote` into `dir` (skipped when a file of that name with the
/// right MD5 is already there) and returns its path.
pub fn fetch(remote: &Remote, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let target = dir.join(&remote.name);
    if target.is_file() && md5_file(&target)? == remote.md5 {
        return Ok(target);
    }
    let fail = |detail: String| TrainError::Download {
        url: remote.url.clone(),
        detail,
    };
    let response = ureq::get(&remote.url)
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    let part = dir.join(format!("{}.part", remote.name));
    let mut file = std::fs::File::create(&part).map_err(|e| TrainError::io(&part, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(fail(format!("after {total} bytes: {e}")));
            }
        };
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| TrainError::io(&part, e))?;
    }
    file.sync_all().map_err(|e| TrainError::io(&part, e))?;
    let digest = hex(&hasher.finalize());
    if digest != remote.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(fail(format!(
            "MD5 {digest} of the {total} bytes received does not match the expected {}",
            remote.md5
        )));
    }
    std::fs::rename(&part, &target).map_err(|e| TrainError::io(&target, e))?;
    Ok(target)
}

/// Downloads MNIST into `dir` from `base` (default [`MNIST_BASE`]).
pub fn mnist(dir: &Path, base: Option<&str>) -> Result<()> {
    for remote in mnist_files(base.unwrap_or(MNIST_BASE)) {
        eprintln!("fetching {}", remote.url);
        fetch(&remote, dir)?;
    }
    Ok(())
}

/// Downloads the CIFAR-10 binary archive into `dir` from `base` (default
/// [`CIFAR10_BASE`]) and unpacks it (giving `dir/cifar-10-batches-bin`).
pub fn cifar10(dir: &Path, base: Option<&str>) -> Result<()> {
    let remote = cifar10_archive(base.unwrap_or(CIFAR10_BASE));
    eprintln!("fetching {}", remote.url);
    let archive = fetch(&remote, dir)?;
    unpack_tar_gz(&archive, dir)
}

/// Unpacks the gzipped tar `archive` into `dir` (entries that would land
/// outside `dir` are skipped by the `tar` crate); a damaged archive is an
/// error naming it.
pub fn unpack_tar_gz(archive: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| TrainError::io(archive, e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir)
        .map_err(|e| TrainError::data(archive, format!("cannot unpack: {e}")))
}
