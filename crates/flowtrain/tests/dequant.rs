//! Variational dequantisation: `log q(u | x)` against the brute-force
//! Jacobian of the noise-to-`u` map, and the bounds of a run that trains it.

use flowtensor::{no_grad, DType, Device, Generator, Tensor};
use flowtrain::config::{Dequantize, TrainConfig};
use flowtrain::dequant::VariationalDequantizer;
use flowtrain::Trainer;

#[test]
fn log_q_is_the_density_of_the_noise_pushed_through_the_flow() {
    let mut gen = Generator::new(3);
    let shape = [1, 2, 3];
    let dq =
        VariationalDequantizer::new(shape, 8, 4, 2, DType::F64, Device::Cpu, &mut gen).unwrap();
    // move every parameter off its (partly zero) initialisation
    for (_, p) in dq.parameters() {
        let noise = gen
            .randn(p.shape(), DType::F64, Device::Cpu)
            .unwrap()
            .mul_scalar(0.3)
            .unwrap();
        p.set_data(&p.add(&noise).unwrap()).unwrap();
    }
    let x = Tensor::from_vec(
        vec![0.0f64, 17.0, 255.0, 128.0, 3.0, 90.0],
        &[1, 1, 2, 3],
        Device::Cpu,
    )
    .unwrap();
    let eps = gen.randn(&[1, 1, 2, 3], DType::F64, Device::Cpu).unwrap();
    let (u, log_q) = no_grad(|| dq.transform(&x, &eps)).unwrap();
    let u = u.to_vec_f64().unwrap();
    assert!(u.iter().all(|&v| v > 0.0 && v < 1.0), "{u:?}");

    // d u / d eps by central differences
    let d = 6;
    let e = eps.to_vec_f64().unwrap();
    let h = 1e-5;
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        let shifted = |delta: f64| {
            let mut v = e.clone();
            v[j] += delta;
            let t = Tensor::from_vec(v, &[1, 1, 2, 3], Device::Cpu).unwrap();
            no_grad(|| dq.transform(&x, &t))
                .unwrap()
                .0
                .to_vec_f64()
                .unwrap()
        };
        let (plus, minus) = (shifted(h), shifted(-h));
        for i in 0..d {
            jac[i * d + j] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    let (_, log_abs_det) = Tensor::from_vec(jac, &[d, d], Device::Cpu)
        .unwrap()
        .slogdet()
        .unwrap();
    let log_normal: f64 = e
        .iter()
        .map(|v| -0.5 * v * v - 0.5 * (2.0 * std::f64::consts::PI).ln())
        .sum();
    let expected = log_normal - log_abs_det.to_scalar().unwrap();
    let got = log_q.to_scalar().unwrap();
    assert!(
        (got - expected).abs() < 1e-6 * expected.abs().max(1.0),
        "{got} vs {expected}"
    );
}

#[test]
fn a_run_with_variational_dequantisation_reports_both_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        dequantize: Dequantize::Flow,
        n_levels: 1,
        n_subflows: 1,
        hidden_channels: 8,
        batch_size: 8,
        init_batch_size: 8,
        steps: 3,
        eval_every: 3,
        checkpoint_every: 3,
        eval_limit: Some(16),
        iw_samples: 4,
        samples: 4,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    let summary = trainer.run().unwrap().summary;
    let iw = summary.test_bpd_iw.expect("the importance-weighted bpd");
    assert!(summary.test_bpd.is_finite() && iw.is_finite());
    // log-mean-exp of the draws is at least their mean (Jensen); a fresh draw
    // differs, so allow for its noise
    assert!(
        iw <= summary.test_bpd + 0.05,
        "{iw} vs {}",
        summary.test_bpd
    );
    assert!(trainer
        .model
        .parameters()
        .iter()
        .any(|(n, _)| n.starts_with("dequant.")));
}
