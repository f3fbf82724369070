//! Composition (Sequential, Inverse) and the base distributions.

use flowlayers::layers::{ActNorm, Conv1x1, Conv1x1Lu, Coupling, CouplingKind, ScaleFn};
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::{Base, DiagGaussian, Flow, FlowDistribution, Inverse, Sequential, StandardNormal};
use flowtensor::{DType, Device, Generator, Tensor};

const F64: DType = DType::F64;

#[test]
fn sequential_and_inverse_pass_the_layer_checks() {
    let mut gen = Generator::new(1);
    let coupling = Coupling::glow(
        4,
        CouplingKind::Affine(ScaleFn::ExpTanh),
        8,
        F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let seq = Sequential::new(vec![
        Box::new(ActNorm::new(4, F64, Device::Cpu).unwrap()),
        Box::new(Conv1x1::new(4, F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(coupling),
    ]);
    let report = check_flow(&seq, &[2, 4, 3, 3], &FlowCheck::default()).unwrap();
    assert_eq!(report.parameters, seq.parameters().len());
    assert!(seq
        .parameters()
        .iter()
        .any(|(n, _)| n.starts_with("2.net.")));

    let inverse = Inverse(Box::new(
        Conv1x1Lu::new(3, F64, Device::Cpu, &mut gen).unwrap(),
    ));
    check_flow(&inverse, &[2, 3, 2, 2], &FlowCheck::default()).unwrap();
    let inverse_seq = Inverse(Box::new(seq));
    check_flow(&inverse_seq, &[2, 4, 3, 3], &FlowCheck::default()).unwrap();
}

#[test]
fn inverse_swaps_directions() {
    let mut gen = Generator::new(2);
    let layer = Conv1x1::new(3, F64, Device::Cpu, &mut gen).unwrap();
    let x = gen.randn(&[2, 3, 2, 2], F64, Device::Cpu).unwrap();
    let (z, ld) = layer.forward(&x).unwrap();
    let wrapped = Inverse(Box::new(
        Conv1x1::from_weight(&layer.weight().unwrap()).unwrap(),
    ));
    let (back, ld_inv) = wrapped.forward(&z).unwrap();
    assert!(
        back.sub(&x)
            .unwrap()
            .abs()
            .unwrap()
            .max(&[0, 1, 2, 3], false)
            .unwrap()
            .to_scalar()
            .unwrap()
            < 1e-12
    );
    assert!(
        ld.add(&ld_inv)
            .unwrap()
            .abs()
            .unwrap()
            .max(&[0], false)
            .unwrap()
            .to_scalar()
            .unwrap()
            < 1e-12
    );
}

#[test]
fn diag_gaussian_density_and_samples() {
    let base = DiagGaussian::new(&[3], F64, Device::Cpu).unwrap();
    let params = base.parameters();
    params[0]
        .1
        .set_data(&Tensor::from_slice(&[1.0, -2.0, 0.5], &[3], Device::Cpu).unwrap())
        .unwrap();
    params[1]
        .1
        .set_data(&Tensor::from_slice(&[0.0, 0.7, -0.3], &[3], Device::Cpu).unwrap())
        .unwrap();
    let z = Tensor::from_slice(&[0.3, -1.0, 2.0, 1.0, -2.0, 0.5], &[2, 3], Device::Cpu).unwrap();
    let got = base.log_prob(&z).unwrap().to_vec::<f64>().unwrap();
    let (mean, log_std) = ([1.0, -2.0, 0.5], [0.0f64, 0.7, -0.3]);
    for (row, g) in [[0.3, -1.0, 2.0], [1.0, -2.0, 0.5]].iter().zip(&got) {
        let want: f64 = (0..3)
            .map(|i| {
                let s = log_std[i].exp();
                -0.5 * ((row[i] - mean[i]) / s).powi(2)
                    - s.ln()
                    - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum();
        assert!((g - want).abs() < 1e-12, "{g} vs {want}");
    }
    let samples = base.sample(20_000, 0.5, &mut Generator::new(3)).unwrap();
    let m = samples.mean(&[0], false).unwrap().to_vec::<f64>().unwrap();
    let sd = samples
        .sub(&samples.mean(&[0], true).unwrap())
        .unwrap()
        .square()
        .unwrap()
        .mean(&[0], false)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for i in 0..3 {
        assert!((m[i] - mean[i]).abs() < 0.03, "mean {m:?}");
        assert!((sd[i] - 0.5 * log_std[i].exp()).abs() < 0.03, "std {sd:?}");
    }
}

#[test]
fn flow_distribution_log_prob_is_base_plus_logdet() {
    let mut gen = Generator::new(4);
    let dist = FlowDistribution::new(
        Box::new(Conv1x1::new(2, F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(StandardNormal::new(&[2], F64, Device::Cpu)),
    );
    let x = gen.randn(&[5, 2], F64, Device::Cpu).unwrap();
    let (z, ld) = dist.flow.forward(&x).unwrap();
    let want = dist
        .base
        .log_prob(&z)
        .unwrap()
        .add(&ld)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(dist.log_prob(&x).unwrap().to_vec::<f64>().unwrap(), want);
    assert!(dist
        .parameters()
        .iter()
        .all(|(n, _)| n.starts_with("flow.")));
}
