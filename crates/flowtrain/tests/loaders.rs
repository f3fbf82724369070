//! Every loader on generated fixture files, including truncated and corrupt ones.

use flate2::write::GzEncoder;
use flowtensor::Generator;
use flowtrain::data::mnist::encode_idx;
use flowtrain::data::toys::Toy;
use flowtrain::data::{cifar10, mnist, shapes};
use std::io::Write;
use std::path::Path;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// MNIST-layout files with `n` 3x2 images in `dir` (gzipped or raw).
fn write_mnist(dir: &Path, n: usize, gzipped: bool) {
    for (prefix, count) in [("train", n), ("t10k", n - 1)] {
        let pixels: Vec<u8> = (0..count * 6).map(|i| (i * 37 % 256) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        for (name, bytes) in [
            (
                format!("{prefix}-images-idx3-ubyte"),
                encode_idx(&[count, 3, 2], &pixels),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                encode_idx(&[count], &labels),
            ),
        ] {
            if gzipped {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

#[test]
fn mnist_loads_raw_and_gzipped_files() {
    for gzipped in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_mnist(dir.path(), 5, gzipped);
        let splits = mnist::load(dir.path()).unwrap();
        assert_eq!(splits.train.shape, [1, 3, 2]);
        assert_eq!((splits.train.len(), splits.test.len()), (5, 4));
        assert_eq!(splits.train.image(1), &[222, 3, 40, 77, 114, 151]);
        assert_eq!(splits.train.labels, vec![0, 1, 2, 3, 4]);
    }
}

/// Loads MNIST from `dir` after `damage` and returns the error message.
fn mnist_error(damage: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), 5, false);
    damage(dir.path());
    mnist::load(dir.path())
        .expect_err("the damaged set must not load")
        .to_string()
}

#[test]
fn damaged_mnist_files_are_clear_errors() {
    let images = |d: &Path| d.join("train-images-idx3-ubyte");
    let labels = |d: &Path| d.join("train-labels-idx1-ubyte");
    // truncated pixel data
    let msg = mnist_error(|d| {
        let bytes = std::fs::read(images(d)).unwrap();
        std::fs::write(images(d), &bytes[..bytes.len() - 3]).unwrap();
    });
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );
    // truncated header
    let msg = mnist_error(|d| std::fs::write(images(d), [0, 0, 8, 3, 0]).unwrap());
    assert!(msg.contains("truncated IDX header"), "{msg}");
    // wrong magic (signed bytes, type 0x09)
    let msg = mnist_error(|d| {
        let mut bytes = std::fs::read(images(d)).unwrap();
        bytes[2] = 0x09;
        std::fs::write(images(d), bytes).unwrap();
    });
    assert!(msg.contains("bad IDX magic"), "{msg}");
    // trailing garbage
    let msg = mnist_error(|d| {
        let mut bytes = std::fs::read(labels(d)).unwrap();
        bytes.push(1);
        std::fs::write(labels(d), bytes).unwrap();
    });
    assert!(msg.contains("too long"), "{msg}");
    // label count that disagrees with the images
    let msg = mnist_error(|d| std::fs::write(labels(d), encode_idx(&[4], &[1, 2, 3, 4])).unwrap());
    assert!(msg.contains("4 labels for 5 images"), "{msg}");
    // a label that is not a digit
    let msg =
        mnist_error(|d| std::fs::write(labels(d), encode_idx(&[5], &[1, 2, 13, 4, 5])).unwrap());
    assert!(msg.contains("label 13"), "{msg}");
    // a missing file
    let msg = mnist_error(|d| std::fs::remove_file(labels(d)).unwrap());
    assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
    // a corrupt gzip stream
    let msg = mnist_error(|d| {
        std::fs::remove_file(images(d)).unwrap();
        let mut bytes = gz(&encode_idx(&[5, 3, 2], &[7; 30]));
        let mid = bytes.len() / 2;
        bytes.truncate(mid);
        std::fs::write(d.join("train-images-idx3-ubyte.gz"), bytes).unwrap();
    });
    assert!(
        msg.contains("train-images-idx3-ubyte.gz") && msg.contains("gzip"),
        "{msg}"
    );
}

/// A CIFAR-10 batch of `n` records with labels `i % 10`.
fn cifar_batch(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            std::iter::once((i % 10) as u8)
                .chain((0..3072).map(move |p| (p as u8).wrapping_add(seed).wrapping_add(i as u8)))
        })
        .collect()
}

#[test]
fn cifar10_loads_the_binary_batches() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&nested).unwrap();
    for i in 1..=5 {
        std::fs::write(
            nested.join(format!("data_batch_{i}.bin")),
            cifar_batch(3, i),
        )
        .unwrap();
    }
    std::fs::write(nested.join("test_batch.bin"), cifar_batch(2, 9)).unwrap();
    let splits = cifar10::load(dir.path()).unwrap();
    assert_eq!(splits.train.shape, [3, 32, 32]);
    assert_eq!((splits.train.len(), splits.test.len()), (15, 2));
    // record 1 of batch 2: channel-first pixels p + seed + i
    assert_eq!(splits.train.image(4)[..3], [3, 4, 5]);
    assert_eq!(splits.train.image(4)[1024], 3);
    assert_eq!(splits.train.labels[..4], [0, 1, 2, 0]);

    // a truncated batch and a bad label
    std::fs::write(nested.join("test_batch.bin"), &cifar_batch(2, 0)[..5000]).unwrap();
    let msg = cifar10::load(dir.path()).err().unwrap().to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("3073-byte records"),
        "{msg}"
    );
    let mut bad = cifar_batch(2, 0);
    bad[3073] = 11;
    std::fs::write(nested.join("test_batch.bin"), bad).unwrap();
    let msg = cifar10::load(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("record 1 has label 11"), "{msg}");
    std::fs::remove_file(nested.join("data_batch_3.bin")).unwrap();
    let msg = cifar10::load(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
}

#[test]
fn the_builtin_set_is_fixed_and_has_five_shapes() {
    let a = shapes::load().unwrap();
    let b = shapes::load().unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!((a.train.len(), a.test.len()), shapes::SIZES);
    assert_eq!(a.train.shape, [1, 16, 16]);
    for kind in 0..5u8 {
        let count = a.train.labels.iter().filter(|&&l| l == kind).count();
        assert!(count > 600, "shape {kind}: {count}");
    }
    // every image has a bright shape on a mostly black background
    for i in 0..a.train.len() {
        let image = a.train.image(i);
        let black = image.iter().filter(|&&v| v == 0).count();
        assert!(image.iter().any(|&v| v >= 70) && black > 64, "image {i}");
    }
    assert_ne!(a.train.image(0), a.test.image(0));
}

#[test]
fn toy_densities_have_their_shapes() {
    let n = 4000;
    let sample = |toy: Toy| {
        toy.sample(n, &mut Generator::new(1))
            .unwrap()
            .to_vec_f64()
            .unwrap()
    };
    // eight Gaussians: every point near radius 2
    let g = sample(Toy::EightGaussians);
    assert!(g
        .chunks(2)
        .all(|p| ((p[0] * p[0] + p[1] * p[1]).sqrt() - 2.0).abs() < 0.25));
    // checkerboard: inside [-2, 2]^2 and on squares with an odd sum of indices
    let c = sample(Toy::Checkerboard);
    for p in c.chunks(2) {
        assert!(p.iter().all(|v| (-2.0..2.0).contains(v)), "{p:?}");
        let (i, j) = ((p[0] + 2.0).floor() as i64, (p[1] + 2.0).floor() as i64);
        assert_eq!((i + j) % 2, 1, "{p:?}");
    }
    // moons and spirals stay bounded and fill both halves
    for toy in [Toy::TwoMoons, Toy::TwoSpirals] {
        let s = sample(toy);
        assert!(s.iter().all(|v| v.abs() < 3.0));
        let right = s.chunks(2).filter(|p| p[0] > 0.0).count();
        assert!(right > n / 4 && right < 3 * n / 4, "{toy:?}: {right}");
    }
    // the 1-D mixture's mean and its exact density integrating to 1
    let m = sample(Toy::MixtureOfGaussians1d);
    let mean = m.iter().sum::<f64>() / n as f64;
    assert!((mean - 0.15).abs() < 0.06, "{mean}");
    let integral: f64 = (0..2000)
        .map(|i| -6.0 + 12.0 * i as f64 / 2000.0)
        .map(|x| Toy::MixtureOfGaussians1d.log_density_1d(x).unwrap().exp() * 12.0 / 2000.0)
        .sum();
    assert!((integral - 1.0).abs() < 1e-3, "{integral}");
    assert!(Toy::from_name("spiral-galaxy").is_err());
}
