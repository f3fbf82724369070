//! Downloads with checksums, against a local HTTP server on the loopback address.

use flowtrain::data::cifar10;
use flowtrain::data::download::{self, fetch, md5_file, mnist, unpack_tar_gz, Remote};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// Serves the files of `root` over HTTP/1.1 on 127.0.0.1 (404 for others)
/// and returns the base URL.
fn serve(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // skip the headers
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let response = match std::fs::read(root.join(path)) {
                Ok(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }
                Err(_) => {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                }
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}/")
}

#[test]
fn fetch_verifies_the_checksum_and_never_leaves_a_bad_file() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("a.bin"), b"flows on their own engine").unwrap();
    let base = serve(served.path());
    let good_md5 = md5_file(&served.path().join("a.bin")).unwrap();
    let target = tempfile::tempdir().unwrap();

    let remote = |md5: &str, name: &str| Remote {
        url: format!("{base}{name}"),
        name: name.into(),
        md5: md5.into(),
    };
    let path = fetch(&remote(&good_md5, "a.bin"), target.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"flows on their own engine");
    // fetched again: already there, verified, not downloaded
    assert_eq!(
        fetch(&remote(&good_md5, "a.bin"), target.path()).unwrap(),
        path
    );

    let other = tempfile::tempdir().unwrap();
    let err = fetch(
        &remote("00000000000000000000000000000000", "a.bin"),
        other.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("a.bin") && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(other.path()).unwrap().count(),
        0,
        "no file may be left behind"
    );

    let err = fetch(&remote(&good_md5, "missing.bin"), other.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.bin") && err.contains("404"), "{err}");
}

#[test]
fn the_mnist_command_rejects_files_with_the_wrong_checksum() {
    let served = tempfile::tempdir().unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::write(served.path().join(name), b"not mnist").unwrap();
    }
    let base = serve(served.path());
    let target = tempfile::tempdir().unwrap();
    let err = mnist(target.path(), Some(&base)).unwrap_err().to_string();
    assert!(
        err.contains("train-images-idx3-ubyte.gz")
            && err.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "{err}"
    );
}

/// A gzipped tar of `cifar-10-batches-bin/` with five training batches of
/// `per_batch` records and a test batch of 2, laid out like the real archive.
fn cifar_archive(path: &Path, per_batch: usize) {
    let record = |label: u8, fill: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    };
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, records: Vec<u8>| {
        let mut header = tar::Header::new_gnu();
        header.set_size(records.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &records[..],
        )
        .unwrap();
    };
    for i in 1..=5u8 {
        let batch: Vec<u8> = (0..per_batch)
            .flat_map(|k| record(k as u8 % 10, i))
            .collect();
        add(&format!("data_batch_{i}.bin"), batch);
    }
    add("test_batch.bin", [record(7, 200), record(3, 100)].concat());
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn the_cifar10_archive_unpacks_into_loadable_batches() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    cifar_archive(&archive, 3);
    unpack_tar_gz(&archive, dir.path()).unwrap();
    let splits = cifar10::load(dir.path()).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (15, 2));
    assert_eq!(splits.test.labels, vec![7, 3]);
    assert_eq!(splits.train.image(3)[0], 2, "the second batch's pixels");

    // a truncated archive is an error naming it
    let bytes = std::fs::read(&archive).unwrap();
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let other = tempfile::tempdir().unwrap();
    let msg = unpack_tar_gz(&cut, other.path()).unwrap_err().to_string();
    assert!(
        msg.contains("cut.tar.gz") && msg.contains("unpack"),
        "{msg}"
    );
}

#[test]
fn the_cifar10_command_rejects_an_archive_with_the_wrong_checksum() {
    let served = tempfile::tempdir().unwrap();
    cifar_archive(&served.path().join("cifar-10-binary.tar.gz"), 2);
    let base = serve(served.path());
    let target = tempfile::tempdir().unwrap();
    let err = download::cifar10(target.path(), Some(&base))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cifar-10-binary.tar.gz") && err.contains("c32a1d4ab5d03f1284b67883e8d87530"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
}
