//! ActNorm: the layer checks, its initialisation, and its errors.

use flowlayers::layers::ActNorm;
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator};

#[test]
fn actnorm_passes_the_layer_checks() {
    for shape in [[3, 4, 3, 2].as_slice(), &[5, 3]] {
        let layer = ActNorm::new(shape[1], DType::F64, Device::Cpu).unwrap();
        let report = check_flow(&layer, shape, &FlowCheck::default()).unwrap();
        assert_eq!(report.parameters, 2);
    }
}

#[test]
fn actnorm_initialises_once_from_the_first_batch() {
    let layer = ActNorm::new(3, DType::F64, Device::Cpu).unwrap();
    let x = Generator::new(1)
        .normal(&[64, 3, 4, 4], 2.0, 3.0, DType::F64, Device::Cpu)
        .unwrap();
    let (z, _) = layer.forward(&x).unwrap();
    let mean = z.mean(&[0, 2, 3], false).unwrap().to_vec::<f64>().unwrap();
    let var = z
        .square()
        .unwrap()
        .mean(&[0, 2, 3], false)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-12), "{mean:?}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-5), "{var:?}");
    // a second batch does not re-initialise
    let before = layer.parameters()[0].1.to_vec::<f64>().unwrap();
    layer.forward(&x.mul_scalar(5.0).unwrap()).unwrap();
    assert_eq!(layer.parameters()[0].1.to_vec::<f64>().unwrap(), before);
    assert_eq!(layer.buffers()[0].1.to_scalar().unwrap(), 1.0);
}

#[test]
fn a_loaded_actnorm_is_not_reinitialised() {
    let trained = ActNorm::new(2, DType::F64, Device::Cpu).unwrap();
    trained
        .forward(
            &Generator::new(2)
                .randn(&[8, 2, 3, 3], DType::F64, Device::Cpu)
                .unwrap(),
        )
        .unwrap();
    let loaded = ActNorm::new(2, DType::F64, Device::Cpu).unwrap();
    for ((_, dst), (_, src)) in loaded.parameters().iter().zip(trained.parameters()) {
        dst.set_data(&src).unwrap();
    }
    loaded.buffers()[0]
        .1
        .set_data(&trained.buffers()[0].1)
        .unwrap();
    let x = Generator::new(3)
        .randn(&[8, 2, 3, 3], DType::F64, Device::Cpu)
        .unwrap();
    let (a, _) = trained.forward(&x).unwrap();
    let (b, _) = loaded.forward(&x).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
}

#[test]
fn wrong_channel_count_names_the_layer_and_shape() {
    let layer = ActNorm::new(3, DType::F64, Device::Cpu).unwrap();
    let x = Generator::new(1)
        .randn(&[2, 4, 2, 2], DType::F64, Device::Cpu)
        .unwrap();
    let msg = layer.forward(&x).unwrap_err().to_string();
    assert!(
        msg.contains("ActNorm") && msg.contains("[2, 4, 2, 2]"),
        "{msg}"
    );
}

#[test]
fn a_constant_channel_starts_with_scale_one() {
    // channel 0 is constant over the batch (all-black images), channel 1 varies
    let layer = ActNorm::new(2, DType::F32, Device::Cpu).unwrap();
    let varying = Generator::new(4)
        .normal(&[16, 1, 3, 3], 0.0, 2.0, DType::F32, Device::Cpu)
        .unwrap();
    let constant =
        flowtensor::Tensor::full(-0.498, &[16, 1, 3, 3], DType::F32, Device::Cpu).unwrap();
    let x = flowtensor::Tensor::cat(&[&constant, &varying], 1).unwrap();
    let (z, logdet) = layer.forward(&x).unwrap();
    let log_scale = layer.parameters()[1].1.to_vec_f64().unwrap();
    assert_eq!(log_scale[0], 0.0, "{log_scale:?}");
    assert!((log_scale[1] + 2f64.ln()).abs() < 0.2, "{log_scale:?}");
    // the constant channel is centred, not blown up, and a later varying input stays finite
    let z0 = z.narrow(1, 0, 1).unwrap().to_vec_f64().unwrap();
    assert!(z0.iter().all(|v| v.abs() < 1e-6), "{z0:?}");
    assert!(logdet.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
    let noisy = x
        .add(
            &Generator::new(5)
                .uniform(x.shape(), 0.0, 0.004, DType::F32, Device::Cpu)
                .unwrap(),
        )
        .unwrap();
    let (z, _) = layer.forward(&noisy).unwrap();
    let z0 = z.narrow(1, 0, 1).unwrap().to_vec_f64().unwrap();
    assert!(z0.iter().all(|v| v.abs() < 0.01), "{z0:?}");
}
