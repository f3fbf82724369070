//! Bad input gives a typed error naming the op and the shapes, never a panic.

use flowtensor::{DType, Device, Error, PadMode, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F64, Device::Cpu).unwrap()
}

fn assert_names(err: Error, op: &str, shapes: &[&str]) {
    let msg = err.to_string();
    assert!(msg.contains(op), "error {msg:?} does not name {op}");
    for s in shapes {
        assert!(msg.contains(s), "error {msg:?} does not name shape {s}");
    }
}

#[test]
fn shape_errors_name_op_and_shapes() {
    let (a, b) = (zeros(&[2, 3]), zeros(&[4, 3]));
    assert_names(a.add(&b).unwrap_err(), "add", &["[2, 3]", "[4, 3]"]);
    assert_names(
        a.mul(&zeros(&[3, 2])).unwrap_err(),
        "mul",
        &["[2, 3]", "[3, 2]"],
    );
    assert_names(a.matmul(&b).unwrap_err(), "matmul", &["[2, 3]", "[4, 3]"]);
    assert_names(zeros(&[3]).matmul(&b).unwrap_err(), "matmul", &["[3]"]);
    assert_names(
        zeros(&[2, 2, 3]).matmul(&zeros(&[3, 3, 1])).unwrap_err(),
        "matmul",
        &["[2, 2, 3]", "[3, 3, 1]"],
    );
    assert_names(a.reshape(&[5]).unwrap_err(), "reshape", &["[2, 3]", "[5]"]);
    assert_names(a.narrow(1, 2, 2).unwrap_err(), "narrow", &["[2, 3]"]);
    assert_names(a.narrow(2, 0, 1).unwrap_err(), "narrow", &["[2, 3]"]);
    assert_names(a.permute(&[0, 0]).unwrap_err(), "permute", &[]);
    assert_names(a.permute(&[0]).unwrap_err(), "permute", &["[2, 3]"]);
    assert_names(
        a.broadcast_as(&[2, 2]).unwrap_err(),
        "broadcast_as",
        &["[2, 3]", "[2, 2]"],
    );
    assert_names(a.flip(&[3]).unwrap_err(), "flip", &["[2, 3]"]);
    assert_names(
        Tensor::cat(&[&a, &b], 1).unwrap_err(),
        "cat",
        &["[2, 3]", "[4, 3]"],
    );
    assert_names(Tensor::cat(&[], 0).unwrap_err(), "cat", &[]);
    assert_names(a.split(&[1, 1], 1).unwrap_err(), "split", &["[2, 3]"]);
    assert_names(a.chunk(0, 0).unwrap_err(), "chunk", &[]);
    assert_names(
        a.index_select(1, &[0, 3]).unwrap_err(),
        "index_select",
        &["[2, 3]"],
    );
    assert_names(
        a.pad(&[(4, 0)], PadMode::Circular).unwrap_err(),
        "pad",
        &["[2, 3]"],
    );
    assert_names(
        a.pad(&[(0, 0); 3], PadMode::Zero).unwrap_err(),
        "pad",
        &["[2, 3]"],
    );
    assert_names(a.sum(&[2], false).unwrap_err(), "sum", &["[2, 3]"]);
    assert_names(a.max(&[0, 0], false).unwrap_err(), "max", &[]);
    assert_names(a.squeeze(0).unwrap_err(), "squeeze", &["[2, 3]"]);
    assert_names(a.unsqueeze(3).unwrap_err(), "unsqueeze", &["[2, 3]"]);
    assert_names(
        a.where_cond(&b, &b).unwrap_err(),
        "where_cond",
        &["[2, 3]", "[4, 3]"],
    );
    assert_names(
        Tensor::from_vec(vec![1.0f64; 5], &[2, 3], Device::Cpu).unwrap_err(),
        "from_vec",
        &["[2, 3]"],
    );
    assert_names(a.to_scalar().unwrap_err(), "to_scalar", &["[2, 3]"]);
}

#[test]
fn dtypes_do_not_mix_implicitly() {
    let a = zeros(&[2]);
    let b = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
    let err = a.add(&b).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("add"));
    let (m64, m32) = (a.reshape(&[1, 2]).unwrap(), b.reshape(&[2, 1]).unwrap());
    assert!(matches!(
        m64.matmul(&m32).unwrap_err(),
        Error::DTypeMismatch { .. }
    ));
    assert!(matches!(
        Tensor::cat(&[&a, &b], 0).unwrap_err(),
        Error::DTypeMismatch { .. }
    ));
    assert!(matches!(
        a.to_vec::<f32>().unwrap_err(),
        Error::WrongDType { .. }
    ));
    // an explicit cast makes them meet
    let sum = a.add(&b.to_dtype(DType::F64).unwrap()).unwrap();
    assert_eq!(sum.dtype(), DType::F64);
}

#[test]
fn cuda_is_reported_unavailable() {
    if let Ok(name) = flowtensor::cuda::probe(0) {
        eprintln!(
            "skipped: this machine has cuda:0 ({name}); the test is for machines without CUDA"
        );
        return;
    }
    let err = Tensor::zeros(&[2], DType::F32, Device::Cuda(0)).unwrap_err();
    assert!(matches!(err, Error::DeviceUnavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cuda:0") && text.contains("unavailable"),
        "{err}"
    );
    assert!(zeros(&[2]).to_device(Device::Cuda(0)).is_err());
    assert!(Tensor::from_vec(vec![1.0f32], &[1], Device::Cuda(1)).is_err());
}
