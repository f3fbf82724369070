//! Permutation: the layer checks, reverse and shuffle, the buffer as the
//! checkpointed state, and the errors.

use flowlayers::layers::permutation::Permutation;
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

#[test]
fn permutations_pass_the_layer_checks() {
    for c in 1..=4 {
        for shape in [vec![2, c, 3, 2], vec![4, c]] {
            let layers = [
                Permutation::reverse(c).unwrap(),
                Permutation::shuffle(c, &mut Generator::new(c as u64)).unwrap(),
            ];
            for layer in &layers {
                let report = check_flow(layer, &shape, &FlowCheck::default()).unwrap();
                assert_eq!(report.parameters, 0);
                assert_eq!(report.max_inverse_error, 0.0);
            }
        }
    }
}

#[test]
fn reverse_reverses_the_channels() {
    let layer = Permutation::reverse(4).unwrap();
    assert_eq!(layer.indices().unwrap(), [3, 2, 1, 0]);
    for shape in [[2, 4, 3, 2].as_slice(), &[5, 4]] {
        let x = randn(shape, 1);
        let (z, logdet) = layer.forward(&x).unwrap();
        assert_eq!(
            z.to_vec::<f64>().unwrap(),
            x.flip(&[1]).unwrap().to_vec::<f64>().unwrap()
        );
        assert_eq!(logdet.shape(), &[shape[0]]);
        assert!(logdet.to_vec::<f64>().unwrap().iter().all(|&l| l == 0.0));
        let (back, inverse_logdet) = layer.inverse_with_logdet(&z).unwrap();
        assert_eq!(back.to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
        assert!(inverse_logdet
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .all(|&l| l == 0.0));
    }
}

#[test]
fn shuffle_is_seeded() {
    let c = 16;
    let a = Permutation::shuffle(c, &mut Generator::new(7)).unwrap();
    let b = Permutation::shuffle(c, &mut Generator::new(7)).unwrap();
    let other = Permutation::shuffle(c, &mut Generator::new(8)).unwrap();
    assert_eq!(a.indices().unwrap(), b.indices().unwrap());
    assert_ne!(a.indices().unwrap(), other.indices().unwrap());
    assert_eq!(a.indices().unwrap(), Generator::new(7).permutation(c));
    let mut sorted = a.indices().unwrap();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..c).collect::<Vec<_>>());
    // z[:, i] = x[:, perm[i]], in f32 too
    let x = randn(&[2, c], 3).to_dtype(DType::F32).unwrap();
    let (z, logdet) = a.forward(&x).unwrap();
    assert_eq!((z.dtype(), logdet.dtype()), (DType::F32, DType::F32));
    let (xs, zs) = (x.to_vec::<f32>().unwrap(), z.to_vec::<f32>().unwrap());
    for (i, &p) in a.indices().unwrap().iter().enumerate() {
        for n in 0..2 {
            assert_eq!(zs[n * c + i], xs[n * c + p]);
        }
    }
}

#[test]
fn the_buffer_restores_the_permutation() {
    let trained = Permutation::shuffle(6, &mut Generator::new(1)).unwrap();
    let loaded = Permutation::reverse(6).unwrap();
    let (names, buffers): (Vec<String>, Vec<Tensor>) = trained.buffers().into_iter().unzip();
    assert_eq!(names, ["permutation"]);
    assert_eq!(buffers[0].shape(), &[6]);
    loaded.buffers()[0].1.set_data(&buffers[0]).unwrap();
    assert_eq!(loaded.indices().unwrap(), trained.indices().unwrap());
    let x = randn(&[2, 6, 2, 2], 2);
    let (a, _) = trained.forward(&x).unwrap();
    let (b, _) = loaded.forward(&x).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    assert_eq!(
        loaded.inverse(&a).unwrap().to_vec::<f64>().unwrap(),
        x.to_vec::<f64>().unwrap()
    );
}

#[test]
fn a_corrupt_buffer_is_an_error() {
    let layer = Permutation::reverse(3).unwrap();
    let bad = Tensor::from_vec(vec![0.0f64, 0.0, 1.0], &[3], Device::Cpu).unwrap();
    layer.buffers()[0].1.set_data(&bad).unwrap();
    let msg = layer.forward(&randn(&[2, 3], 1)).unwrap_err().to_string();
    assert!(msg.contains("Permutation") && msg.contains("0..3"), "{msg}");
    for perm in [vec![0, 0, 1], vec![0, 3, 1], vec![]] {
        assert!(Permutation::from_indices(&perm).is_err(), "{perm:?}");
    }
    assert_eq!(
        Permutation::from_indices(&[2, 0, 1])
            .unwrap()
            .indices()
            .unwrap(),
        [2, 0, 1]
    );
}

#[test]
fn wrong_inputs_name_the_layer_and_shape() {
    let layer = Permutation::shuffle(3, &mut Generator::new(0)).unwrap();
    for (shape, shown) in [
        (vec![2, 4, 2, 2], "[2, 4, 2, 2]"),
        (vec![2, 2], "[2, 2]"),
        (vec![3], "[3]"),
    ] {
        let x = randn(&shape, 1);
        for msg in [
            layer.forward(&x).unwrap_err().to_string(),
            layer.inverse(&x).unwrap_err().to_string(),
            layer.inverse_with_logdet(&x).unwrap_err().to_string(),
        ] {
            assert!(msg.contains("Permutation") && msg.contains(shown), "{msg}");
        }
    }
}
