//! Sylvester: the layer checks with and without basis change, the fixed-point
//! inverse's iteration count, the strict autoregressive structure, and errors.

use flowlayers::flowtensor::conv_exp::Terms;
use flowlayers::layers::masked_conv::{autoregressive_mask, hidden_degrees};
use flowlayers::layers::{Sylvester, SylvesterConfig};
use flowlayers::testing::{
    check_flow, conv_operator_norm, jacobian, perturb_parameters, FlowCheck,
};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator};

/// A configuration whose series is converged far below the check tolerances.
fn exact(use_basis_change: bool) -> SylvesterConfig {
    SylvesterConfig {
        use_basis_change,
        hidden_channels: 8,
        train_terms: Terms::Fixed(30),
        eval_terms: Terms::Fixed(30),
        ..SylvesterConfig::default()
    }
}

fn layer(shape: [usize; 4], config: SylvesterConfig, seed: u64) -> Sylvester {
    let mut gen = Generator::new(seed);
    Sylvester::with_config(
        shape[1],
        (shape[2], shape[3]),
        config,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap()
}

/// A few training forwards (power steps), then evaluation mode.
fn trained(shape: [usize; 4], config: SylvesterConfig, seed: u64) -> Sylvester {
    let layer = layer(shape, config, seed);
    let x = Generator::new(seed + 100)
        .randn(&shape, DType::F64, Device::Cpu)
        .unwrap();
    for _ in 0..3 {
        layer.forward(&x).unwrap();
    }
    layer.set_training(false);
    layer
}

#[test]
fn sylvester_passes_the_layer_checks() {
    for basis in [true, false] {
        for (shape, seed) in [([2, 2, 4, 3], 0u64), ([2, 3, 3, 3], 1)] {
            let layer = trained(shape, exact(basis), seed);
            let report = check_flow(&layer, &shape, &FlowCheck::default())
                .unwrap_or_else(|e| panic!("basis {basis}, {shape:?}: {e}"));
            assert!(report.max_inverse_error < 1e-10, "{report:?}");
            // six masked layers with a weight and a bias, and Q and M
            let expected = if basis { 14 } else { 12 };
            assert_eq!(report.parameters, expected);
            let names: Vec<String> = layer.parameters().into_iter().map(|(n, _)| n).collect();
            assert!(names.contains(&"ar.s1.weight".to_string()), "{names:?}");
            let buffers: Vec<String> = layer.buffers().into_iter().map(|(n, _)| n).collect();
            assert!(
                buffers.contains(&"ar.hidden.mask".to_string()),
                "{buffers:?}"
            );
            assert!(buffers.contains(&"ar.t2.spectral_norm.u".to_string()));
            assert_eq!(buffers.contains(&"spectral_norm.u".to_string()), basis);
        }
    }
}

#[test]
fn fixed_point_iterations_are_reported_and_below_the_cap() {
    for basis in [true, false] {
        let shape = [2, 3, 3, 3];
        let layer = trained(shape, exact(basis), 3);
        let mut gen = Generator::new(7);
        perturb_parameters(&layer, 0.1, &mut gen).unwrap();
        let x = gen.randn(&shape, DType::F64, Device::Cpu).unwrap();
        let (z, _) = layer.forward(&x).unwrap();
        assert_eq!(layer.last_iterations(), 0);
        let back = layer.inverse(&z).unwrap();
        let used = layer.last_iterations();
        eprintln!("basis change {basis}: {used} fixed-point iterations");
        assert!(used > 1 && used < 200, "{used}");
        let err = back
            .sub(&x)
            .unwrap()
            .to_vec_f64()
            .unwrap()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-10, "{err}");
    }
}

#[test]
fn masks_follow_the_degrees() {
    let inputs = [0, 1, 2];
    let hidden = hidden_degrees(7, 3);
    assert_eq!(hidden, [0, 0, 0, 1, 1, 2, 2]);
    for (strict, k) in [(true, 3), (false, 3), (false, 1), (true, 5)] {
        let m = autoregressive_mask(&hidden, &inputs, k, strict, DType::F64, Device::Cpu)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let centre = k / 2;
        for (o, &dout) in inputs.iter().enumerate() {
            for (i, &din) in hidden.iter().enumerate() {
                for a in 0..k {
                    for b in 0..k {
                        let kept = m[((o * hidden.len() + i) * k + a) * k + b] == 1.0;
                        let expected = if (a, b) == (centre, centre) {
                            if strict {
                                dout > din
                            } else {
                                dout >= din
                            }
                        } else {
                            a < centre || (a == centre && b < centre)
                        };
                        assert_eq!(
                            kept, expected,
                            "strict {strict} k {k} o {o} i {i} tap {a},{b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn without_basis_change_the_jacobian_is_unit_plus_triangular() {
    let shape = [2, 3, 3, 4];
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let d = c * h * w;
    let layer = trained(shape, exact(false), 5);
    let mut gen = Generator::new(11);
    perturb_parameters(&layer, 0.3, &mut gen).unwrap();
    let x = gen.randn(&shape, DType::F64, Device::Cpu).unwrap();
    let (_, logdet) = layer.forward(&x).unwrap();
    let logdet = logdet.to_vec_f64().unwrap();
    let jac = jacobian(&layer, &x).unwrap().to_vec_f64().unwrap();
    // (channel, pixel) flat index c * H W + p -> raster-then-channel order p C + c
    let ord = |i: usize| (i % (h * w)) * c + i / (h * w);
    for (n, &ld) in logdet.iter().enumerate() {
        let mut sum_log_diag = 0.0;
        let mut below = 0usize;
        for row in 0..d {
            for col in 0..d {
                let v = jac[(n * d + row) * d + col];
                if ord(col) > ord(row) {
                    assert_eq!(v, 0.0, "output {row} depends on later input {col}");
                } else if row == col {
                    assert!(v > 0.5 && v < 1.5, "diagonal {v}");
                    sum_log_diag += v.ln();
                } else if v != 0.0 {
                    below += 1;
                }
            }
        }
        assert!(below > 0, "the conditioner has no effect");
        assert!(
            (sum_log_diag - ld).abs() < 1e-10 * ld.abs().max(1.0),
            "{sum_log_diag} vs {ld}"
        );
    }
}

#[test]
fn errors_name_the_layer_and_shapes() {
    let layer = layer([2, 2, 4, 3], exact(true), 0);
    let x = Generator::new(1)
        .randn(&[2, 3, 4, 3], DType::F64, Device::Cpu)
        .unwrap();
    for msg in [
        layer.forward(&x).unwrap_err().to_string(),
        layer.inverse(&x).unwrap_err().to_string(),
    ] {
        assert!(msg.contains("Sylvester"), "{msg}");
        assert!(msg.contains("[2, 3, 4, 3]"), "{msg}");
    }

    let capped = SylvesterConfig {
        max_iterations: 1,
        ..exact(true)
    };
    let layer = trained([2, 2, 4, 3], capped, 0);
    let mut gen = Generator::new(2);
    perturb_parameters(&layer, 0.1, &mut gen).unwrap();
    let x = gen.randn(&[2, 2, 4, 3], DType::F64, Device::Cpu).unwrap();
    let (z, _) = layer.forward(&x).unwrap();
    let msg = layer.inverse(&z).unwrap_err().to_string();
    assert!(
        msg.contains("Sylvester") && msg.contains("converge"),
        "{msg}"
    );
    assert_eq!(layer.last_iterations(), 1);

    let bad = SylvesterConfig {
        reflections: 0,
        ..exact(true)
    };
    let msg = Sylvester::with_config(2, (4, 3), bad, DType::F64, Device::Cpu, &mut gen)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("Sylvester") && msg.contains("Householder"),
        "{msg}"
    );
}

#[test]
fn masked_layers_are_spectrally_normalised() {
    use flowlayers::layers::masked_conv::MaskedConvSpec;
    use flowlayers::layers::MaskedConv;
    let (h, w) = (4, 3);
    let inputs = [0, 1, 2];
    let hidden = hidden_degrees(6, 3);
    let spec = MaskedConvSpec {
        in_degrees: &hidden,
        out_degrees: &inputs,
        kernel_size: 3,
        strict: true,
        size: (h, w),
        coeff: 0.9,
        init_scale: 3.0,
    };
    let mut gen = Generator::new(3);
    let conv = MaskedConv::new(&spec, DType::F64, Device::Cpu, &mut gen).unwrap();
    let x = gen.randn(&[1, 6, h, w], DType::F64, Device::Cpu).unwrap();
    for _ in 0..200 {
        conv.forward(&x, true).unwrap();
    }
    let params = conv.parameters();
    let buffers = conv.buffers();
    let (weight, mask) = (&params[0].1, &buffers[0].1);
    let masked = weight.mul(mask).unwrap();
    let sigma = conv_operator_norm(&masked, (h, w)).unwrap();
    assert!(
        sigma > 0.9,
        "the test kernel should need normalising: {sigma}"
    );
    // the layer's output is conv(x, masked * 0.9 / sigma) + bias, bias zero
    let y = conv.forward(&x, false).unwrap();
    let expected = x
        .conv2d(
            &masked.mul_scalar(0.9 / sigma).unwrap(),
            None,
            &flowtensor::Conv2dParams::same(3),
        )
        .unwrap();
    let err = y
        .sub(&expected)
        .unwrap()
        .to_vec_f64()
        .unwrap()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err < 1e-6, "{err}");
}

#[test]
fn the_original_sylvester_flow_passes_the_layer_checks() {
    use flowlayers::layers::VectorSylvester;
    // full rank (Householder variant) and lower rank, flat and image-shaped samples
    for (shape, rank, reflections) in [
        (vec![3, 5], 5, 5),
        (vec![3, 5], 2, 3),
        (vec![2, 2, 2, 3], 12, 4),
        (vec![2, 2, 2, 3], 7, 12),
    ] {
        let features: usize = shape[1..].iter().product();
        let mut gen = Generator::new(rank as u64);
        let layer = VectorSylvester::new(
            features,
            rank,
            reflections,
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        // large parameters, so the tanh saturates and the diagonal terms vary
        let check = FlowCheck {
            perturbation: 1.0,
            ..FlowCheck::default()
        };
        let report = check_flow(&layer, &shape, &check)
            .unwrap_or_else(|e| panic!("{shape:?} rank {rank}: {e}"));
        assert!(report.max_inverse_error < 1e-10, "{report:?}");
        assert_eq!(report.parameters, 4);
    }
    let mut gen = Generator::new(0);
    let err = VectorSylvester::new(4, 5, 2, DType::F64, Device::Cpu, &mut gen)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("VectorSylvester") && err.contains("rank"),
        "{err}"
    );
    let layer = VectorSylvester::new(4, 2, 2, DType::F64, Device::Cpu, &mut gen).unwrap();
    let x = gen.randn(&[3, 5], DType::F64, Device::Cpu).unwrap();
    let msg = layer.forward(&x).unwrap_err().to_string();
    assert!(
        msg.contains("VectorSylvester") && msg.contains("[3, 5]"),
        "{msg}"
    );
}
