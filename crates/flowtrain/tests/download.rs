//! Downloads with checksums, against a local HTTP server on the loopback address.

use flowtrain::data::download::{fetch, md5_file, mnist, Remote};
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
