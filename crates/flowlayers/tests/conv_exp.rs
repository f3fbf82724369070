//! ConvExp and SpectralNorm: the layer checks, the spectral normalisation
//! against the dense operator, training/evaluation behaviour, and errors.

use flowlayers::flowtensor::conv_exp::Terms;
use flowlayers::layers::conv_exp::{ConvExpConfig, OneByOne};
use flowlayers::layers::{ConvExp, SpectralNorm};
use flowlayers::testing::{check_flow, conv_operator_norm, FlowCheck};
use flowlayers::Flow;
use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{DType, Device, Generator, Tensor};

/// A configuration whose series is converged far below the check tolerances.
fn exact(terms: Terms) -> ConvExpConfig {
    ConvExpConfig {
        train_terms: terms,
        eval_terms: terms,
        ..ConvExpConfig::default()
    }
}

#[test]
fn conv_exp_passes_the_layer_checks() {
    // check_flow calls forward several times and compares its output with
    // inverse. In training mode every forward takes a power-iteration step,
    // which changes the normalised kernel between calls, so the layer would
    // not be the same function from one call to the next. We therefore take
    // a few training steps first (a realistic vector `u`) and then switch to
    // evaluation mode, where the normalised kernel is a fixed, differentiable
    // function of the kernel. Thirty terms make the series exact to far below
    // the 1e-10 inverse and 1e-8 log-det tolerances (the norm of M_hat is
    // about 1, and 1 / 30! ~ 4e-33).
    for (shape, seed) in [([2, 2, 4, 3], 0u64), ([2, 3, 4, 3], 1), ([2, 3, 3, 3], 2)] {
        let mut gen = Generator::new(seed);
        let layer = ConvExp::with_config(
            shape[1],
            (shape[2], shape[3]),
            exact(Terms::Fixed(30)),
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        let x = gen.randn(&shape, DType::F64, Device::Cpu).unwrap();
        for _ in 0..5 {
            layer.forward(&x).unwrap();
        }
        layer.set_training(false);
        let report = check_flow(&layer, &shape, &FlowCheck::default()).unwrap();
        assert_eq!(report.parameters, 3);
        assert!(report.max_inverse_error < 1e-10, "{report:?}");
    }
}

#[test]
fn conv_exp_with_adaptive_terms_passes_the_layer_checks() {
    let mut gen = Generator::new(5);
    let layer = ConvExp::with_config(
        2,
        (4, 3),
        exact(Terms::Adaptive {
            tol: 1e-14,
            max: 60,
        }),
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    layer.set_training(false);
    let report = check_flow(&layer, &[2, 2, 4, 3], &FlowCheck::default()).unwrap();
    assert_eq!(report.parameters, 3);
    let used = layer.last_terms_used();
    assert!(used > 5 && used < 60, "{used}");
}

#[test]
fn conv_exp_with_an_lu_or_no_1x1_passes_the_layer_checks() {
    // parameters: LU's lower, upper, log_scale (+ kernel, bias), or kernel and bias only
    for (one_by_one, parameters) in [(OneByOne::Lu, 5), (OneByOne::None, 2)] {
        let config = ConvExpConfig {
            one_by_one,
            ..exact(Terms::Fixed(40))
        };
        let mut gen = Generator::new(8);
        let layer =
            ConvExp::with_config(3, (3, 4), config, DType::F64, Device::Cpu, &mut gen).unwrap();
        layer.set_training(false);
        let report = check_flow(&layer, &[2, 3, 3, 4], &FlowCheck::default()).unwrap();
        assert_eq!(report.parameters, parameters, "{one_by_one:?}");
        assert!(
            report.max_inverse_error < 1e-10 && report.max_logdet_error < 1e-8,
            "{report:?}"
        );
    }
}

#[test]
fn spectral_norm_sigma_matches_the_dense_operator() {
    let (c, k, h, w) = (3, 3, 4, 3);
    let mut gen = Generator::new(7);
    let sn = SpectralNorm::new((c, c), k, (h, w), 0.95, DType::F64, Device::Cpu, &mut gen).unwrap();
    let kernel = gen.randn(&[c, c, k, k], DType::F64, Device::Cpu).unwrap();
    let want = conv_operator_norm(&kernel, (h, w)).unwrap();
    for _ in 0..2000 {
        sn.power_step(&kernel).unwrap();
    }
    let sigma = sn.sigma(&kernel).unwrap().to_scalar().unwrap();
    assert!((sigma - want).abs() < 1e-6, "sigma {sigma} vs dense {want}");
    assert_eq!(sn.last_sigma().unwrap(), sigma);
    // u stays a unit vector
    let norm = sn.vector().square().unwrap().sum_all().unwrap();
    assert!((norm.to_scalar().unwrap() - 1.0).abs() < 1e-12);

    // the normalised operator's norm is at most coeff (sigma >= coeff here)
    assert!(want > 0.95);
    let normalized = sn.normalize(&kernel, false).unwrap();
    let got = conv_operator_norm(&normalized, (h, w)).unwrap();
    assert!(got <= 0.95 + 1e-6, "normalised norm {got}");
    assert!((got - 0.95).abs() < 1e-6, "normalised norm {got}");

    // a kernel already within the bound is left as is
    let small = kernel.mul_scalar(0.5 / want).unwrap();
    let same = sn.normalize(&small, false).unwrap();
    assert_eq!(
        same.to_vec::<f64>().unwrap(),
        small.to_vec::<f64>().unwrap()
    );
}

/// The layer's `kernel` parameter.
fn kernel_of(layer: &dyn Flow) -> Tensor {
    layer
        .parameters()
        .into_iter()
        .find(|(n, _)| n.ends_with("kernel"))
        .unwrap()
        .1
}

/// Simulated training: `steps` small updates of the kernel, each followed by
/// a training-mode call of `run`.
fn train_kernel(kernel: &Tensor, steps: usize, gen: &mut Generator, run: impl Fn()) {
    for _ in 0..steps {
        let noise = gen
            .normal(kernel.shape(), 0.0, 1e-3, DType::F64, Device::Cpu)
            .unwrap();
        kernel.set_data(&kernel.add(&noise).unwrap()).unwrap();
        run();
    }
}

#[test]
fn the_layer_keeps_its_operator_norm_below_coeff_after_training_steps() {
    let mut gen = Generator::new(11);
    let layer = ConvExp::new(2, (4, 3), DType::F64, Device::Cpu, &mut gen).unwrap();
    // a kernel far outside the bound, then updates as an optimizer makes them
    let kernel = kernel_of(&layer);
    kernel
        .set_data(&gen.randn(&[2, 2, 3, 3], DType::F64, Device::Cpu).unwrap())
        .unwrap();
    let x = gen.randn(&[2, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
    train_kernel(&kernel, 200, &mut gen, || {
        layer.forward(&x).unwrap();
    });
    let normalized = layer.normalized_kernel().unwrap();
    let got = conv_operator_norm(&normalized, (4, 3)).unwrap();
    assert!(got <= 0.95 + 1e-4, "normalised norm {got}");
}

#[test]
fn the_bound_holds_before_any_training_forward_in_every_direction() {
    // evaluation mode, the inverse and Inverse(layer) all normalise with a
    // converged vector from their first use
    for use_as in ["eval forward", "eval inverse", "training inverse"] {
        let mut gen = Generator::new(12);
        let layer = ConvExp::new(2, (4, 3), DType::F64, Device::Cpu, &mut gen).unwrap();
        kernel_of(&layer)
            .set_data(&gen.randn(&[2, 2, 3, 3], DType::F64, Device::Cpu).unwrap())
            .unwrap();
        let x = gen.randn(&[2, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
        match use_as {
            "eval forward" => {
                layer.set_training(false);
                layer.forward(&x).unwrap();
            }
            "eval inverse" => {
                layer.set_training(false);
                layer.inverse(&x).unwrap();
            }
            _ => {
                layer.inverse_with_logdet(&x).unwrap();
            }
        }
        layer.set_training(false);
        let got = conv_operator_norm(&layer.normalized_kernel().unwrap(), (4, 3)).unwrap();
        assert!(got <= 0.95 + 1e-6, "{use_as}: normalised norm {got}");
    }
}

#[test]
fn training_through_the_inverse_keeps_the_bound() {
    use flowlayers::Inverse;
    let mut gen = Generator::new(14);
    let layer = ConvExp::new(2, (4, 3), DType::F64, Device::Cpu, &mut gen).unwrap();
    let kernel = kernel_of(&layer);
    let inverted = Inverse(Box::new(layer));
    let buffer = |name: &str| {
        inverted
            .buffers()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_vec_f64()
            .unwrap()
    };
    let x = gen.randn(&[2, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
    inverted.forward(&x).unwrap();
    let u_before = buffer("spectral_norm.u");
    // updates grow the kernel far past the bound; only the inverse runs
    let target = gen.randn(&[2, 2, 3, 3], DType::F64, Device::Cpu).unwrap();
    for i in 1..=100 {
        kernel
            .set_data(&target.mul_scalar(i as f64 / 100.0).unwrap())
            .unwrap();
        inverted.forward(&x).unwrap();
    }
    assert_ne!(buffer("spectral_norm.u"), u_before, "no power steps");
    // K_hat = K coeff / sigma_estimate: its norm is coeff * true / estimate
    let true_norm = conv_operator_norm(&kernel, (4, 3)).unwrap();
    let estimate = buffer("spectral_norm.sigma")[0];
    assert!(
        true_norm > 1.5,
        "the kernel should need normalising: {true_norm}"
    );
    let normalised = 0.95 * true_norm / estimate;
    assert!(normalised <= 0.95 + 1e-4, "normalised norm {normalised}");
}

#[test]
fn one_power_step_per_new_kernel_in_training() {
    let mut gen = Generator::new(15);
    let config = exact(Terms::Fixed(25));
    let layer = ConvExp::with_config(2, (4, 3), config, DType::F64, Device::Cpu, &mut gen).unwrap();
    let x = gen.randn(&[2, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
    let u = || layer.spectral_norm().vector().to_vec::<f64>().unwrap();
    let (z, _) = layer.forward(&x).unwrap();
    let first = u();
    // the same kernel again (a second forward, the inverse): no step, so the
    // round trip uses one normalised kernel
    layer.forward(&x).unwrap();
    let back = layer.inverse(&z).unwrap();
    assert_eq!(u(), first);
    let err = back.sub(&x).unwrap().to_vec_f64().unwrap();
    assert!(err.iter().all(|e| e.abs() < 1e-12), "{err:?}");
    // an update of the kernel: one step
    train_kernel(&kernel_of(&layer), 1, &mut gen, || {
        layer.forward(&x).unwrap();
    });
    assert_ne!(u(), first);
}

#[test]
fn training_steps_the_power_iteration_and_evaluation_does_not() {
    let mut gen = Generator::new(3);
    let layer = ConvExp::new(2, (4, 3), DType::F64, Device::Cpu, &mut gen).unwrap();
    assert_eq!(layer.config().train_terms, Terms::Fixed(6));
    assert_eq!(layer.config().eval_terms, Terms::Fixed(13));
    let x = gen.randn(&[3, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
    let u0 = layer.spectral_norm().vector().to_vec::<f64>().unwrap();
    layer.forward(&x).unwrap();
    assert_eq!(layer.last_terms_used(), 6);
    let u1 = layer.spectral_norm().vector().to_vec::<f64>().unwrap();
    assert_ne!(u0, u1);
    assert!(layer.spectral_norm().last_sigma().unwrap() > 0.0);

    layer.set_training(false);
    let (a, la) = layer.forward(&x).unwrap();
    assert_eq!(layer.last_terms_used(), 13);
    let (b, lb) = layer.forward(&x).unwrap();
    assert_eq!(layer.spectral_norm().vector().to_vec::<f64>().unwrap(), u1);
    assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    assert_eq!(la.to_vec::<f64>().unwrap(), lb.to_vec::<f64>().unwrap());

    // with the default 13 terms the round trip is already accurate
    let back = layer.inverse(&a).unwrap();
    let err = back
        .sub(&x)
        .unwrap()
        .abs()
        .unwrap()
        .max(&[0, 1, 2, 3], false)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(err < 1e-8, "{err}");
}

#[test]
fn parameters_and_buffers_are_named() {
    let layer = ConvExp::new(3, (2, 2), DType::F64, Device::Cpu, &mut Generator::new(0)).unwrap();
    let params: Vec<(String, Vec<usize>)> = layer
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    assert_eq!(
        params,
        vec![
            ("conv1x1.weight".to_string(), vec![3, 3]),
            ("kernel".to_string(), vec![3, 3, 3, 3]),
            ("bias".to_string(), vec![1, 3, 1, 1]),
        ]
    );
    let buffers: Vec<(String, Vec<usize>)> = layer
        .buffers()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    assert_eq!(
        buffers,
        vec![
            ("spectral_norm.u".to_string(), vec![1, 3, 2, 2]),
            ("spectral_norm.sigma".to_string(), vec![]),
            ("spectral_norm.kernel_hash".to_string(), vec![2]),
        ]
    );
}

#[test]
fn wrong_shapes_name_the_layer_and_shape() {
    let layer = ConvExp::new(3, (4, 3), DType::F64, Device::Cpu, &mut Generator::new(0)).unwrap();
    for shape in [[2, 4, 4, 3], [2, 3, 4, 4]] {
        let x = Generator::new(1)
            .randn(&shape, DType::F64, Device::Cpu)
            .unwrap();
        let msg = layer.forward(&x).unwrap_err().to_string();
        assert!(
            msg.contains("ConvExp") && msg.contains(&format!("{shape:?}")),
            "{msg}"
        );
        let msg = layer.inverse(&x).unwrap_err().to_string();
        assert!(
            msg.contains("ConvExp") && msg.contains(&format!("{shape:?}")),
            "{msg}"
        );
    }
    let sn = SpectralNorm::new(
        (2, 2),
        3,
        (4, 3),
        0.95,
        DType::F64,
        Device::Cpu,
        &mut Generator::new(0),
    )
    .unwrap();
    let kernel = Tensor::zeros(&[3, 3, 3, 3], DType::F64, Device::Cpu).unwrap();
    let msg = sn.power_step(&kernel).unwrap_err().to_string();
    assert!(
        msg.contains("SpectralNorm") && msg.contains("[3, 3, 3, 3]"),
        "{msg}"
    );
}

#[test]
fn the_normalised_kernel_is_differentiable_through_sigma() {
    // K_hat = K coeff / sigma(K) when the bound is active: its gradient has
    // the term through sigma(K) = ||M u|| (u fixed), checked numerically.
    let mut gen = Generator::new(13);
    let sn = SpectralNorm::new((2, 2), 3, (3, 3), 0.95, DType::F64, Device::Cpu, &mut gen).unwrap();
    let kernel = gen.randn(&[2, 2, 3, 3], DType::F64, Device::Cpu).unwrap();
    for _ in 0..3 {
        sn.power_step(&kernel).unwrap();
    }
    assert!(sn.sigma(&kernel).unwrap().to_scalar().unwrap() > 0.95);
    let err = check_gradients(
        |xs| sn.normalize(&xs[0], false),
        &[kernel],
        GradCheck::default(),
    )
    .unwrap();
    assert!(err < 1e-7, "{err}");
}

#[test]
fn zero_series_terms_are_an_error() {
    for config in [
        ConvExpConfig {
            train_terms: Terms::Fixed(0),
            ..ConvExpConfig::default()
        },
        ConvExpConfig {
            eval_terms: Terms::Fixed(0),
            ..ConvExpConfig::default()
        },
    ] {
        let msg = ConvExp::with_config(
            2,
            (4, 4),
            config,
            DType::F32,
            Device::Cpu,
            &mut Generator::new(0),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(msg.contains("ConvExp") && msg.contains("term"), "{msg}");
    }
}
