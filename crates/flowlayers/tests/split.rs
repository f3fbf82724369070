//! The split prior: the layer checks, agreement with Glow's conditional
//! Gaussian, temperature, the starting point and errors.

use flowlayers::base::{standard_normal_log_density, sum_per_sample};
use flowlayers::layers::split::{ConditionalGaussian, SplitPrior};
use flowlayers::testing::{check_flow, perturb_parameters, FlowCheck};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn split_prior_passes_the_layer_checks() {
    for shape in [[2, 4, 3, 3], [2, 5, 2, 2]] {
        let layer = SplitPrior::new(shape[1], DType::F64, Device::Cpu).unwrap();
        let report = check_flow(&layer, &shape, &FlowCheck::default()).unwrap();
        assert_eq!(report.parameters, 3);
    }
}

#[test]
fn standardising_then_a_standard_normal_is_glows_conditional_gaussian() {
    let mut gen = Generator::new(11);
    let layer = SplitPrior::new(6, DType::F64, Device::Cpu).unwrap();
    perturb_parameters(&layer, 0.1, &mut gen).unwrap();
    let h = gen.randn(&[3, 6, 4, 2], DType::F64, Device::Cpu).unwrap();
    let (h1, z2, logdet) = layer.split(&h).unwrap();
    assert_eq!(h1.shape(), [3, 3, 4, 2]);
    assert_eq!(z2.shape(), [3, 3, 4, 2]);
    let ours = sum_per_sample(&standard_normal_log_density(&z2).unwrap())
        .unwrap()
        .add(&logdet)
        .unwrap();
    let glows = layer
        .prior()
        .log_prob(&h.narrow(1, 3, 3).unwrap(), &h1)
        .unwrap();
    let scale = glows.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
    let d = max_abs_diff(&ours, &glows);
    assert!(d <= 1e-13 * scale, "{d}: {ours:?} vs {glows:?}");
    // and merge undoes split, with the opposite log-det
    let (back, inv_logdet) = layer.merge_with_logdet(&h1, &z2).unwrap();
    assert!(max_abs_diff(&back, &h) < 1e-12);
    assert!(max_abs_diff(&inv_logdet, &logdet.neg().unwrap()) < 1e-12);
    assert!(max_abs_diff(&layer.merge(&h1, &z2).unwrap(), &h) < 1e-12);
}

#[test]
fn a_fresh_split_prior_is_a_standard_normal() {
    let layer = SplitPrior::new(4, DType::F64, Device::Cpu).unwrap();
    let h = Generator::new(2)
        .randn(&[2, 4, 2, 2], DType::F64, Device::Cpu)
        .unwrap();
    let (z, logdet) = layer.forward(&h).unwrap();
    assert_eq!(z.to_vec::<f64>().unwrap(), h.to_vec::<f64>().unwrap());
    assert_eq!(logdet.to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
    let names: Vec<(String, Vec<usize>)> = layer
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect();
    assert_eq!(
        names,
        [
            ("conv.weight".to_string(), vec![4, 2, 3, 3]),
            ("conv.bias".to_string(), vec![4]),
            ("conv.logs".to_string(), vec![4]),
        ]
    );
}

#[test]
fn conditional_samples_follow_mean_std_and_temperature() {
    let mut gen = Generator::new(5);
    let prior = ConditionalGaussian::new(2, 3, DType::F64, Device::Cpu).unwrap();
    assert_eq!((prior.cond_channels(), prior.channels()), (2, 3));
    for (_, p) in prior.parameters() {
        let noise = gen
            .normal(p.shape(), 0.0, 0.3, p.dtype(), p.device())
            .unwrap();
        p.set_data(&p.add(&noise).unwrap()).unwrap();
    }
    let context = gen.randn(&[400, 2, 4, 4], DType::F64, Device::Cpu).unwrap();
    let (mean, log_std) = prior.mean_and_log_std(&context).unwrap();
    let cold = prior.sample(&context, 0.0, &mut gen).unwrap();
    assert!(max_abs_diff(&cold, &mean) < 1e-12);
    for t in [0.7, 1.0] {
        let s = prior.sample(&context, t, &mut gen).unwrap();
        let eps = s
            .sub(&mean)
            .unwrap()
            .mul(&log_std.neg().unwrap().exp().unwrap())
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        let m = eps.iter().sum::<f64>() / eps.len() as f64;
        let sd = (eps.iter().map(|e| (e - m) * (e - m)).sum::<f64>() / eps.len() as f64).sqrt();
        assert!(m.abs() < 0.02, "{m}");
        assert!((sd - t).abs() < 0.02, "{sd} for temperature {t}");
    }
    // log_prob is the diagonal Gaussian density
    let x = gen.randn(&[400, 3, 4, 4], DType::F64, Device::Cpu).unwrap();
    let lp = prior
        .log_prob(&x, &context)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let (xv, mv, sv) = (
        x.to_vec::<f64>().unwrap(),
        mean.to_vec::<f64>().unwrap(),
        log_std.to_vec::<f64>().unwrap(),
    );
    let per = 3 * 16;
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    for (n, got) in lp.iter().enumerate().take(5) {
        let want: f64 = (n * per..(n + 1) * per)
            .map(|i| {
                let u = (xv[i] - mv[i]) * (-sv[i]).exp();
                -0.5 * u * u - half_log_2pi - sv[i]
            })
            .sum();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    }
}

#[test]
fn wrong_shapes_name_the_layer_and_shape() {
    let mut gen = Generator::new(1);
    let layer = SplitPrior::new(4, DType::F64, Device::Cpu).unwrap();
    for shape in [[2, 6, 2, 2].as_slice(), &[2, 4, 2], &[2, 4]] {
        let h = gen.randn(shape, DType::F64, Device::Cpu).unwrap();
        let shape_text = format!("{shape:?}");
        for msg in [
            layer.forward(&h).unwrap_err().to_string(),
            layer.inverse(&h).unwrap_err().to_string(),
        ] {
            assert!(
                msg.contains("SplitPrior") && msg.contains(&shape_text),
                "{msg}"
            );
        }
    }
    let h1 = gen.randn(&[2, 2, 2, 2], DType::F64, Device::Cpu).unwrap();
    let z2 = gen.randn(&[2, 2, 3, 2], DType::F64, Device::Cpu).unwrap();
    let msg = layer.merge(&h1, &z2).unwrap_err().to_string();
    assert!(
        msg.contains("SplitPrior") && msg.contains("[2, 2, 3, 2]"),
        "{msg}"
    );
    let msg = layer.prior().log_prob(&z2, &h1).unwrap_err().to_string();
    assert!(msg.contains("ConditionalGaussian"), "{msg}");
    assert!(SplitPrior::new(1, DType::F64, Device::Cpu).is_err());
}

#[test]
fn f32_split_round_trips() {
    let mut gen = Generator::new(3);
    let layer = SplitPrior::new(4, DType::F32, Device::Cpu).unwrap();
    perturb_parameters(&layer, 0.2, &mut gen).unwrap();
    let h = gen.randn(&[2, 4, 3, 3], DType::F32, Device::Cpu).unwrap();
    let (z, _) = layer.forward(&h).unwrap();
    assert_eq!(z.dtype(), DType::F32);
    assert!(max_abs_diff(&layer.inverse(&z).unwrap(), &h) < 1e-5);
}
