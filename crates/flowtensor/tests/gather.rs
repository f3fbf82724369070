//! `cumsum`, `take_along_dim` and `searchsorted` against plain loops, and
//! their errors. (Gradients: `gradients.rs`; CUDA: `cuda_parity.rs`.)

use flowtensor::{DType, Device, Generator, Indices, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

#[test]
fn cumsum_sums_along_each_dim_of_strided_views() {
    let x = randn(&[3, 4, 5], 1);
    let view = x.permute(&[2, 0, 1]).unwrap().flip(&[1]).unwrap();
    let v = view.contiguous().unwrap().to_vec_f64().unwrap();
    let shape = view.shape().to_vec();
    for dim in 0..3 {
        let got = view.cumsum(dim).unwrap().to_vec_f64().unwrap();
        let strides = [shape[1] * shape[2], shape[2], 1];
        for (i, g) in got.iter().enumerate() {
            let j = i / strides[dim] % shape[dim];
            let want: f64 = (0..=j)
                .map(|k| v[i - (j - k) * strides[dim]])
                .fold(0.0, |a, b| a + b);
            assert_eq!(*g, want, "dim {dim}, element {i}");
        }
    }
    // f32 too, and an empty dimension
    let y = x.to_dtype(DType::F32).unwrap().cumsum(1).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let empty = Tensor::zeros(&[2, 0, 3], DType::F64, Device::Cpu).unwrap();
    assert_eq!(empty.cumsum(1).unwrap().shape(), &[2, 0, 3]);
}

#[test]
fn take_along_dim_gathers_per_row() {
    let x = randn(&[2, 3, 4], 2);
    let xv = x.to_vec_f64().unwrap();
    let pos: Vec<usize> = (0..2 * 6 * 4).map(|i| (i * 5 + i / 7) % 3).collect();
    let idx = Indices::new(&pos, &[2, 6, 4], DType::F64, Device::Cpu).unwrap();
    assert_eq!(idx.bound(), 3);
    let y = x.take_along_dim(&idx, 1).unwrap();
    assert_eq!(y.shape(), &[2, 6, 4]);
    for (i, v) in y.to_vec_f64().unwrap().iter().enumerate() {
        let (o, r) = (i / 24, i % 4);
        assert_eq!(*v, xv[(o * 3 + pos[i]) * 4 + r]);
    }
    // the backward adds the gradient of every take into its slot
    let xv = x.as_variable();
    let grads = xv
        .take_along_dim(&idx, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward_grads()
        .unwrap();
    let g = grads.get(&xv).unwrap().to_vec_f64().unwrap();
    for (i, gi) in g.iter().enumerate() {
        let (o, slot, r) = (i / 12, i / 4 % 3, i % 4);
        let count = (0..6).filter(|j| pos[(o * 6 + j) * 4 + r] == slot).count();
        assert_eq!(*gi, count as f64);
    }
}

#[test]
fn searchsorted_finds_insertion_positions() {
    let knots = Tensor::from_vec(
        vec![0.0f64, 1.0, 1.0, 2.0, 5.0, -3.0, -1.0, 0.0, 0.0, 4.0],
        &[2, 5],
        Device::Cpu,
    )
    .unwrap();
    let values = Tensor::from_vec(
        vec![
            -1.0f64,
            0.0,
            1.0,
            1.5,
            5.0,
            9.0,
            f64::NAN,
            -3.0,
            0.0,
            4.5,
            -9.0,
            3.0,
            0.0,
            4.0,
        ],
        &[2, 7],
        Device::Cpu,
    )
    .unwrap();
    let left = knots.searchsorted(&values, false).unwrap();
    let right = knots.searchsorted(&values, true).unwrap();
    assert_eq!(left.bound(), 6);
    assert_eq!(
        left.to_vec().unwrap(),
        vec![0, 0, 1, 3, 4, 5, 5, 0, 2, 5, 0, 4, 2, 4]
    );
    assert_eq!(
        right.to_vec().unwrap(),
        vec![0, 1, 3, 3, 5, 5, 5, 1, 4, 5, 0, 4, 4, 5]
    );
    // random rows against a linear scan, f32
    let k = Generator::new(3)
        .uniform(&[4, 12], 0.0, 1.0, DType::F32, Device::Cpu)
        .unwrap()
        .cumsum(1)
        .unwrap();
    let v = Generator::new(4)
        .uniform(&[4, 30], -1.0, 8.0, DType::F32, Device::Cpu)
        .unwrap();
    let got = k.searchsorted(&v, false).unwrap().to_vec().unwrap();
    let (kv, vv) = (k.to_vec_f64().unwrap(), v.to_vec_f64().unwrap());
    for (i, g) in got.iter().enumerate() {
        let row = &kv[i / 30 * 12..][..12];
        assert_eq!(*g, row.iter().filter(|&&a| a < vv[i]).count());
    }
}

#[test]
fn indices_clamp_on_the_device_and_reject_bad_values() {
    let idx = Indices::new(&[0, 3, 5, 6], &[4], DType::F32, Device::Cpu).unwrap();
    let bins = idx.offset_clamped(-1, 0, 4).unwrap();
    assert_eq!(bins.to_vec().unwrap(), vec![0, 2, 4, 4]);
    assert_eq!(bins.bound(), 5);
    let t = Tensor::from_vec(vec![0.0f64, 1.5], &[2], Device::Cpu).unwrap();
    let e = Indices::from_tensor(&t).unwrap_err().to_string();
    assert!(e.contains("1.5") && e.contains("whole number"), "{e}");
    let t = Tensor::from_vec(vec![0.0f64, -1.0], &[2], Device::Cpu).unwrap();
    assert!(Indices::from_tensor(&t).is_err());
    let ok = Tensor::from_vec(vec![2.0f64, 0.0, 7.0], &[3], Device::Cpu).unwrap();
    assert_eq!(Indices::from_tensor(&ok).unwrap().bound(), 8);
}

#[test]
fn errors_name_the_op_and_the_shapes() {
    let x = randn(&[2, 3], 5);
    let idx = Indices::new(&[0, 1, 2, 3], &[2, 2], DType::F64, Device::Cpu).unwrap();
    let e = x.take_along_dim(&idx, 1).unwrap_err().to_string();
    assert!(
        e.contains("take_along_dim") && e.contains("out of range"),
        "{e}"
    );
    let idx = Indices::new(&[0, 1, 2], &[3, 1], DType::F64, Device::Cpu).unwrap();
    let e = x.take_along_dim(&idx, 1).unwrap_err().to_string();
    assert!(
        e.contains("take_along_dim") && e.contains("[2, 3]") && e.contains("[3, 1]"),
        "{e}"
    );
    assert!(x.cumsum(2).unwrap_err().to_string().contains("cumsum"));
    let e = x
        .searchsorted(&randn(&[3, 4], 6), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("searchsorted") && e.contains("[3, 4]"), "{e}");
    let e = x
        .searchsorted(&randn(&[2, 4], 6).to_dtype(DType::F32).unwrap(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("searchsorted"), "{e}");
}
