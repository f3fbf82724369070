//! Coupling layers and their conditioners: the layer checks for every kind,
//! scale and conditioner, the starting point, the initialisation, and errors.

use flowlayers::layers::conditioner::{
    with_edge_channel, Conditioner, Conv2d, DenseNet, DenseNetConfig, GlowNet, GlowNetStyle,
    ZeroConv2d,
};
use flowlayers::layers::coupling::{Coupling, CouplingKind, ScaleFn};
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator, Tensor};

const KINDS: [CouplingKind; 3] = [
    CouplingKind::Additive,
    CouplingKind::Affine(ScaleFn::Sigmoid2),
    CouplingKind::Affine(ScaleFn::ExpTanh),
];

const DENSE: DenseNetConfig = DenseNetConfig {
    depth: 2,
    growth: 3,
    intermediate: Some(5),
    gated: true,
};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn glownet_couplings_pass_the_layer_checks() {
    for kind in KINDS {
        for shape in [[2, 4, 3, 3], [2, 5, 2, 3]] {
            let mut gen = Generator::new(7);
            let layer =
                Coupling::glow(shape[1], kind, 6, DType::F64, Device::Cpu, &mut gen).unwrap();
            let report = check_flow(&layer, &shape, &FlowCheck::default())
                .unwrap_or_else(|e| panic!("{kind:?} on {shape:?}: {e}"));
            assert_eq!(report.parameters, 7);
        }
    }
}

#[test]
fn glows_original_network_passes_the_layer_checks() {
    for kind in KINDS {
        for shape in [[2, 4, 3, 3], [3, 5, 2, 3]] {
            let mut gen = Generator::new(17);
            let layer = Coupling::glow_styled(
                GlowNetStyle::Original,
                shape[1],
                kind,
                6,
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap();
            let report = check_flow(&layer, &shape, &FlowCheck::default())
                .unwrap_or_else(|e| panic!("{kind:?} on {shape:?}: {e}"));
            assert!(report.max_inverse_error <= 1e-10 && report.max_logdet_error <= 1e-8);
            // 3 weights, 2 ActNorms of 2, the output's bias and logs
            assert_eq!(report.parameters, 9);
        }
    }
}

#[test]
fn the_edge_channel_is_one_inside_and_zero_in_the_padding() {
    let x = Generator::new(2)
        .randn(&[2, 3, 3, 4], DType::F64, Device::Cpu)
        .unwrap();
    let with_edge = with_edge_channel(&x).unwrap();
    assert_eq!(with_edge.shape(), [2, 4, 3, 4]);
    assert_eq!(
        with_edge.narrow(1, 0, 3).unwrap().to_vec::<f64>().unwrap(),
        x.to_vec::<f64>().unwrap()
    );
    assert!(with_edge
        .narrow(1, 3, 1)
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));
    // the convolution with the edge channel, computed without building it
    let conv = Conv2d::new(4, 5, 3, DType::F64, Device::Cpu, &mut Generator::new(6)).unwrap();
    let direct = conv.forward(&with_edge).unwrap();
    assert!(max_abs_diff(&conv.forward_with_edge(&x).unwrap(), &direct) < 1e-12);
    let msg = conv.forward_with_edge(&with_edge).unwrap_err().to_string();
    assert!(
        msg.contains("forward_with_edge") && msg.contains("[2, 4, 3, 4]"),
        "{msg}"
    );
    // through the zero-padded 3x3 convolution: with weight 1 on every tap of
    // the edge channel and 0 elsewhere, each output counts the taps that fall
    // inside the image (4 at a corner, 6 on a side, 9 inside), so the channel
    // is 1 inside and 0 in the padding
    let conv = ZeroConv2d::with_edge_channel(3, 1, DType::F64, Device::Cpu).unwrap();
    assert_eq!(conv.in_channels(), 3);
    let (name, weight) = &conv.parameters()[0];
    assert_eq!(
        (name.as_str(), weight.shape()),
        ("weight", [1, 4, 3, 3].as_slice())
    );
    let mut w = vec![0.0; 36];
    w[27..].fill(1.0);
    weight
        .set_data(&Tensor::from_vec(w, &[1, 4, 3, 3], Device::Cpu).unwrap())
        .unwrap();
    let counts = conv.forward(&x).unwrap();
    let want = [4.0, 6.0, 6.0, 4.0, 6.0, 9.0, 9.0, 6.0, 4.0, 6.0, 6.0, 4.0];
    for sample in 0..2 {
        let got = counts
            .narrow(0, sample, 1)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        assert_eq!(got, want);
    }
    // the split prior's Gaussian and the coupling network see it too
    let net = GlowNet::with_style(
        GlowNetStyle::Original,
        3,
        5,
        4,
        DType::F64,
        Device::Cpu,
        &mut Generator::new(3),
    )
    .unwrap();
    let shapes: Vec<(String, Vec<usize>)> = net
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect();
    let find = |name: &str| shapes.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(find("0.weight"), [5, 4, 3, 3]);
    assert_eq!(find("1.weight"), [5, 5, 1, 1]);
    assert_eq!(find("2.weight"), [4, 6, 3, 3]);
    assert!(!shapes.iter().any(|(n, _)| n == "0.bias" || n == "1.bias"));
}

#[test]
fn the_hidden_actnorms_initialise_once_on_the_first_training_batch() {
    let mut gen = Generator::new(4);
    let net = GlowNet::with_style(
        GlowNetStyle::Original,
        2,
        6,
        4,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let buffer_names: Vec<String> = net.buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        buffer_names,
        ["0.actnorm.initialized", "1.actnorm.initialized"]
    );
    let param = |name: &str| {
        let all = net.parameters();
        all.into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_vec::<f64>()
            .unwrap()
    };
    // evaluation mode: no initialisation
    net.set_training(false);
    net.forward(&gen.randn(&[4, 2, 5, 5], DType::F64, Device::Cpu).unwrap())
        .unwrap();
    assert!(net
        .buffers()
        .iter()
        .all(|(_, b)| b.to_scalar().unwrap() == 0.0));
    assert!(param("0.actnorm.bias").iter().all(|&v| v == 0.0));
    // training: the first batch initialises both, a second batch changes nothing
    net.set_training(true);
    let x = gen.randn(&[4, 2, 5, 5], DType::F64, Device::Cpu).unwrap();
    net.forward(&x.mul_scalar(3.0).unwrap().add_scalar(1.0).unwrap())
        .unwrap();
    assert!(net
        .buffers()
        .iter()
        .all(|(_, b)| b.to_scalar().unwrap() == 1.0));
    let (bias, log_scale) = (param("0.actnorm.bias"), param("0.actnorm.log_scale"));
    assert!(bias.iter().all(|&v| v != 0.0) && log_scale.iter().all(|&v| v != 0.0));
    net.forward(&gen.randn(&[4, 2, 5, 5], DType::F64, Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(param("0.actnorm.bias"), bias);
    assert_eq!(param("0.actnorm.log_scale"), log_scale);
    // a coupling reports them under `net.`
    let layer = Coupling::glow_styled(
        GlowNetStyle::Original,
        4,
        CouplingKind::Additive,
        6,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let names: Vec<String> = layer.buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["net.0.actnorm.initialized", "net.1.actnorm.initialized"]
    );
}

#[test]
fn densenet_couplings_pass_the_layer_checks() {
    // `intermediate: None` (the reference code's bottleneck width) on more
    // channels, so that this tiny network has live ReLUs after perturbation
    let wide = DenseNetConfig {
        depth: 2,
        growth: 4,
        intermediate: None,
        gated: false,
    };
    for kind in KINDS {
        for (config, shape) in [(DENSE, [2, 4, 3, 3]), (wide, [2, 6, 3, 3])] {
            let mut gen = Generator::new(8);
            let layer =
                Coupling::densenet(shape[1], kind, config, DType::F64, Device::Cpu, &mut gen)
                    .unwrap();
            let report = check_flow(&layer, &shape, &FlowCheck::default())
                .unwrap_or_else(|e| panic!("{kind:?} with {config:?}: {e}"));
            assert_eq!(report.parameters, 4 * config.depth + 2);
        }
    }
}

#[test]
fn densenet_output_is_plain_or_gated() {
    // The same dense layers (same seed), then the output convolution: plain,
    // or 3 * out channels (a, b, c) combined as a + b * sigmoid(c).
    let mut gen = Generator::new(11);
    let x = gen.randn(&[2, 3, 4, 5], DType::F64, Device::Cpu).unwrap();
    let net = |gated| {
        let config = DenseNetConfig { gated, ..DENSE };
        DenseNet::new(
            3,
            4,
            config,
            DType::F64,
            Device::Cpu,
            &mut Generator::new(2),
        )
        .unwrap()
    };
    let (plain, gated) = (net(false), net(true));
    let output = |n: &DenseNet| {
        n.parameters()
            .into_iter()
            .filter(|(name, _)| name.starts_with("output."))
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
    };
    let (po, go) = (output(&plain), output(&gated));
    assert_eq!(po[0].shape(), [4, 9, 1, 1]);
    assert_eq!(go[0].shape(), [12, 9, 1, 1]);
    // gated output weights = [A; B; C]; the plain net gets A
    for t in &go {
        t.set_data(&gen.randn(t.shape(), DType::F64, Device::Cpu).unwrap())
            .unwrap();
    }
    for (p, g) in po.iter().zip(&go) {
        p.set_data(&g.narrow(0, 0, 4).unwrap()).unwrap();
    }
    let y_plain = plain.forward(&x).unwrap();
    let y_gated = gated.forward(&x).unwrap();
    // rebuild b * sigmoid(c) with the plain net carrying B, then C
    let part = |k: usize| {
        for (p, g) in po.iter().zip(&go) {
            p.set_data(&g.narrow(0, 4 * k, 4).unwrap()).unwrap();
        }
        plain.forward(&x).unwrap()
    };
    let (b, c) = (part(1), part(2));
    let want = y_plain.add(&b.mul(&c.sigmoid().unwrap()).unwrap()).unwrap();
    assert!(max_abs_diff(&y_gated, &want) < 1e-12);
}

#[test]
fn conditioners_start_at_exactly_zero() {
    let mut gen = Generator::new(3);
    let x = gen.randn(&[2, 3, 4, 5], DType::F64, Device::Cpu).unwrap();
    let nets: Vec<Box<dyn Conditioner>> = vec![
        Box::new(GlowNet::new(3, 8, 4, DType::F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(DenseNet::new(3, 4, DENSE, DType::F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(
            DenseNet::new(
                3,
                4,
                DenseNetConfig {
                    gated: false,
                    ..DENSE
                },
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(ZeroConv2d::new(3, 4, DType::F64, Device::Cpu).unwrap()),
        Box::new(ZeroConv2d::with_edge_channel(3, 4, DType::F64, Device::Cpu).unwrap()),
        Box::new(
            GlowNet::with_style(
                GlowNetStyle::Original,
                3,
                8,
                4,
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    for net in nets {
        let y = net.forward(&x).unwrap();
        assert_eq!(y.shape(), [2, 4, 4, 5]);
        assert!(y.to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!((net.in_channels(), net.out_channels()), (3, 4));
    }
}

#[test]
fn couplings_start_as_the_identity_or_glows_constant_scale() {
    let mut gen = Generator::new(5);
    let x = gen.randn(&[2, 4, 3, 3], DType::F64, Device::Cpu).unwrap();
    for kind in KINDS {
        let layer = Coupling::glow(4, kind, 6, DType::F64, Device::Cpu, &mut gen).unwrap();
        let (z, logdet) = layer.forward(&x).unwrap();
        let ld = logdet.to_vec::<f64>().unwrap();
        match kind {
            CouplingKind::Affine(ScaleFn::Sigmoid2) => {
                let s = 1.0 / (1.0 + (-2.0f64).exp());
                let want = Tensor::cat(
                    &[
                        &x.narrow(1, 0, 2).unwrap(),
                        &x.narrow(1, 2, 2).unwrap().mul_scalar(s).unwrap(),
                    ],
                    1,
                )
                .unwrap();
                assert!(max_abs_diff(&z, &want) < 1e-15);
                for v in ld {
                    assert!((v - 18.0 * s.ln()).abs() < 1e-12, "{v}");
                }
            }
            _ => {
                assert_eq!(z.to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
                assert_eq!(ld, vec![0.0, 0.0]);
            }
        }
    }
}

#[test]
fn scale_functions_match_their_formulas() {
    let h = Tensor::from_vec(vec![-30.0, -1.0, 0.0, 0.5, 30.0], &[5], Device::Cpu).unwrap();
    let sig = ScaleFn::Sigmoid2
        .log_scale(&h)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let tanh = ScaleFn::ExpTanh
        .log_scale(&h)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for (i, v) in h.to_vec::<f64>().unwrap().into_iter().enumerate() {
        let want_sig = (1.0 / (1.0 + (-(v + 2.0)).exp())).ln();
        assert!((sig[i] - want_sig).abs() < 1e-12, "{v}: {}", sig[i]);
        assert!((tanh[i] - 2.0 * (v / 2.0).tanh()).abs() < 1e-15);
        assert!(tanh[i].abs() <= 2.0);
    }
}

#[test]
fn parameters_are_named_after_the_conditioner_layers() {
    let mut gen = Generator::new(1);
    let glow = Coupling::glow(
        4,
        CouplingKind::Affine(ScaleFn::Sigmoid2),
        6,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let names: Vec<String> = glow.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "net.0.weight",
            "net.0.bias",
            "net.1.weight",
            "net.1.bias",
            "net.2.weight",
            "net.2.bias",
            "net.2.logs"
        ]
    );
    let shapes: Vec<Vec<usize>> = glow
        .parameters()
        .iter()
        .map(|(_, p)| p.shape().to_vec())
        .collect();
    assert_eq!(shapes[0], [6, 2, 3, 3]);
    assert_eq!(shapes[2], [6, 6, 1, 1]);
    assert_eq!(shapes[4], [4, 6, 3, 3]);
    assert_eq!(shapes[6], [4]);

    let dense = Coupling::densenet(
        4,
        CouplingKind::Additive,
        DENSE,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let named: Vec<(String, Vec<usize>)> = dense
        .parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape().to_vec()))
        .collect();
    let find = |name: &str| named.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(find("net.layers.0.0.weight"), [5, 2, 1, 1]);
    assert_eq!(find("net.layers.0.1.weight"), [3, 5, 3, 3]);
    assert_eq!(find("net.layers.1.0.weight"), [5, 5, 1, 1]);
    assert_eq!(find("net.output.weight"), [6, 8, 1, 1]);
    assert_eq!(find("net.output.bias"), [6]);
}

#[test]
fn conv2d_uses_pytorchs_default_initialisation() {
    let conv = Conv2d::new(4, 16, 3, DType::F64, Device::Cpu, &mut Generator::new(2)).unwrap();
    let bound = 1.0 / 36f64.sqrt();
    for (name, p) in conv.parameters() {
        let v = p.to_vec::<f64>().unwrap();
        assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
        // uniform on [-b, b): the spread is close to the bound
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max > 0.7 * bound, "{name}: {max}");
    }
}

#[test]
fn f32_couplings_invert() {
    let mut gen = Generator::new(9);
    let x = gen.randn(&[3, 4, 4, 4], DType::F32, Device::Cpu).unwrap();
    for kind in KINDS {
        let layer = Coupling::densenet(4, kind, DENSE, DType::F32, Device::Cpu, &mut gen).unwrap();
        flowlayers::testing::perturb_parameters(&layer, 0.2, &mut gen).unwrap();
        let (z, logdet) = layer.forward(&x).unwrap();
        let (back, inv_logdet) = layer.inverse_with_logdet(&z).unwrap();
        assert_eq!(z.dtype(), DType::F32);
        assert!(max_abs_diff(&back, &x) < 1e-5);
        assert!(max_abs_diff(&logdet.neg().unwrap(), &inv_logdet) < 1e-5);
    }
}

#[test]
fn wrong_channel_counts_name_the_layer_and_shape() {
    let mut gen = Generator::new(1);
    let layer = Coupling::glow(
        4,
        CouplingKind::Additive,
        6,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    for shape in [[2, 3, 2, 2].as_slice(), &[2, 4, 2], &[2, 4]] {
        let x = gen.randn(shape, DType::F64, Device::Cpu).unwrap();
        for msg in [
            layer.forward(&x).unwrap_err().to_string(),
            layer.inverse(&x).unwrap_err().to_string(),
        ] {
            let shape_text = format!("{shape:?}");
            assert!(
                msg.contains("Coupling") && msg.contains(&shape_text),
                "{msg}"
            );
        }
    }
    // a conditioner of the wrong size is refused at construction
    let net = GlowNet::new(2, 6, 2, DType::F64, Device::Cpu, &mut gen).unwrap();
    let msg = Coupling::new(4, CouplingKind::Affine(ScaleFn::ExpTanh), Box::new(net))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("Coupling") && msg.contains("2 -> 4"), "{msg}");
    assert!(Coupling::glow(
        1,
        CouplingKind::Additive,
        6,
        DType::F64,
        Device::Cpu,
        &mut gen
    )
    .is_err());
}

#[test]
fn glows_original_network_computes_its_formula() {
    use flowtensor::Conv2dParams;
    let mut gen = Generator::new(12);
    let net = GlowNet::with_style(
        GlowNetStyle::Original,
        3,
        5,
        4,
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    let x = gen.randn(&[6, 3, 4, 5], DType::F64, Device::Cpu).unwrap();
    net.forward(&x).unwrap(); // the ActNorms' initialisation
    let p = |name: &str| {
        let all = net.parameters();
        all.into_iter().find(|(n, _)| n == name).unwrap().1
    };
    let per_channel = |t: Tensor| t.reshape(&[1, t.elem_count(), 1, 1]).unwrap();
    // relu((conv(h) + b) exp(s)), the ActNorm written out
    let hidden = |h: &Tensor, layer: &str, kernel: usize| {
        let pre = h
            .conv2d(
                &p(&format!("{layer}.weight")),
                None,
                &Conv2dParams::same(kernel),
            )
            .unwrap();
        let b = per_channel(p(&format!("{layer}.actnorm.bias")));
        let s = per_channel(p(&format!("{layer}.actnorm.log_scale")));
        pre.add(&b).unwrap().mul(&s.exp().unwrap()).unwrap()
    };
    // the initialisation normalised the first layer's pre-activations
    let normalised = hidden(&with_edge_channel(&x).unwrap(), "0", 3);
    let mean = normalised
        .mean(&[0, 2, 3], false)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let var = normalised
        .square()
        .unwrap()
        .mean(&[0, 2, 3], false)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-10), "{mean:?}");
    // (std + 1e-6 in the scale: the variance falls short by about 2e-6 / std)
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");

    for (_, t) in net.parameters() {
        let noise = gen
            .normal(t.shape(), 0.0, 0.3, DType::F64, Device::Cpu)
            .unwrap();
        t.set_data(&t.add(&noise).unwrap()).unwrap();
    }
    let h1 = hidden(&with_edge_channel(&x).unwrap(), "0", 3);
    let h2 = hidden(&h1.relu().unwrap(), "1", 1);
    let last = with_edge_channel(&h2.relu().unwrap())
        .unwrap()
        .conv2d(&p("2.weight"), Some(&p("2.bias")), &Conv2dParams::same(3))
        .unwrap();
    let scale = per_channel(p("2.logs").mul_scalar(3.0).unwrap().exp().unwrap());
    let want = last.mul(&scale).unwrap();
    assert!(max_abs_diff(&net.forward(&x).unwrap(), &want) < 1e-12);
}
