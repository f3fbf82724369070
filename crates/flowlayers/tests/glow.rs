//! The multi-scale Glow: the layer checks on whole models, the latent layout,
//! parameter names, the flow distribution over it (sampling at temperatures,
//! log-likelihood against the base density), training mode and errors.

use flowlayers::glow::{ConditionerKind, Glow, GlowConfig, MixingFactory};
use flowlayers::layers::conditioner::{DenseNetConfig, GlowNetStyle};
use flowlayers::layers::conv1x1::Conv1x1Lu;
use flowlayers::layers::coupling::{CouplingKind, ScaleFn};
use flowlayers::layers::permutation::Permutation;
use flowlayers::layers::squeeze::Squeeze;
use flowlayers::testing::{check_flow, perturb_parameters, FlowCheck};
use flowlayers::{Flow, FlowDistribution, StandardNormal};
use flowtensor::{DType, Device, Generator, Tensor};
use std::sync::Arc;

fn lu_mixing(dtype: DType) -> MixingFactory {
    Arc::new(move |[c, _, _]: [usize; 3], gen: &mut Generator| {
        Ok(Box::new(Conv1x1Lu::new(c, dtype, Device::Cpu, gen)?) as Box<dyn Flow>)
    })
}

fn reverse_mixing() -> MixingFactory {
    Arc::new(|[c, _, _]: [usize; 3], _: &mut Generator| {
        Ok(Box::new(Permutation::reverse(c)?) as Box<dyn Flow>)
    })
}

fn glow(config: GlowConfig, shape: [usize; 3], seed: u64) -> Glow {
    Glow::new(
        config,
        shape,
        DType::F64,
        Device::Cpu,
        &mut Generator::new(seed),
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn a_two_level_glow_passes_the_layer_checks() {
    let model = glow(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        1,
    );
    assert_eq!(model.latent_size(), 32);
    let report = check_flow(&model, &[2, 2, 4, 4], &FlowCheck::default()).unwrap();
    // per step: actnorm 2, LU 3, GlowNet 7; one split prior 3
    assert_eq!(report.parameters, 4 * 12 + 3);
}

#[test]
fn a_one_channel_eight_by_eight_glow_passes_the_layer_checks() {
    let model = glow(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F64)),
        [1, 8, 8],
        2,
    );
    assert_eq!(model.latent_size(), 64);
    assert_eq!(model.latent_shapes(), [[2, 4, 4], [8, 2, 2]]);
    check_flow(&model, &[2, 1, 8, 8], &FlowCheck::default()).unwrap();
}

#[test]
fn glow_variants_pass_the_layer_checks() {
    let dense = ConditionerKind::DenseNet(DenseNetConfig {
        depth: 2,
        growth: 4,
        intermediate: Some(8),
        gated: true,
    });
    let variants = [
        (CouplingKind::Additive, dense, true),
        (CouplingKind::Affine(ScaleFn::ExpTanh), dense, false),
        (
            CouplingKind::Affine(ScaleFn::ExpTanh),
            ConditionerKind::GlowNet(GlowNetStyle::Biased),
            true,
        ),
        (
            CouplingKind::Additive,
            ConditionerKind::GlowNet(GlowNetStyle::Biased),
            false,
        ),
        (
            CouplingKind::Affine(ScaleFn::Sigmoid2),
            ConditionerKind::GlowNet(GlowNetStyle::Original),
            true,
        ),
        (
            CouplingKind::Additive,
            ConditionerKind::GlowNet(GlowNetStyle::Original),
            false,
        ),
    ];
    for (coupling, conditioner, split_prior) in variants {
        let config = GlowConfig {
            coupling,
            conditioner,
            split_prior,
            ..GlowConfig::new(2, 1, 8, lu_mixing(DType::F64))
        };
        let model = glow(config, [2, 4, 4], 3);
        check_flow(&model, &[2, 2, 4, 4], &FlowCheck::default())
            .unwrap_or_else(|e| panic!("{coupling:?} {conditioner:?} {split_prior}: {e}"));
    }
    // the mixing layer is pluggable: a fixed reversal instead of the 1x1 convolution
    let model = glow(GlowConfig::new(3, 1, 8, reverse_mixing()), [1, 8, 8], 4);
    assert_eq!(model.latent_shapes(), [[2, 4, 4], [4, 2, 2], [16, 1, 1]]);
    check_flow(&model, &[2, 1, 8, 8], &FlowCheck::default()).unwrap();
}

#[test]
fn the_latent_is_the_factored_out_channels_then_the_top() {
    // without steps and split priors Glow is squeezes and splits only
    let config = GlowConfig {
        split_prior: false,
        ..GlowConfig::new(2, 0, 8, reverse_mixing())
    };
    let model = glow(config, [1, 4, 4], 0);
    let x = Generator::new(1)
        .randn(&[2, 1, 4, 4], DType::F64, Device::Cpu)
        .unwrap();
    let (z, logdet) = model.forward(&x).unwrap();
    assert_eq!(logdet.to_vec::<f64>().unwrap(), vec![0.0, 0.0]);
    let (s1, _) = Squeeze.forward(&x).unwrap(); // (2, 4, 2, 2)
    let z2 = s1.narrow(1, 2, 2).unwrap().reshape(&[2, 8]).unwrap();
    let (s2, _) = Squeeze.forward(&s1.narrow(1, 0, 2).unwrap()).unwrap(); // (2, 8, 1, 1)
    let want = Tensor::cat(&[&z2, &s2.reshape(&[2, 8]).unwrap()], 1).unwrap();
    assert_eq!(z.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
    assert_eq!(
        model.inverse(&z).unwrap().to_vec::<f64>().unwrap(),
        x.to_vec::<f64>().unwrap()
    );
}

#[test]
fn parameters_and_buffers_are_named_hierarchically() {
    let model = glow(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        1,
    );
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "levels.0.steps.0.actnorm.bias",
        "levels.0.steps.0.mixing.lower",
        "levels.0.steps.1.coupling.net.0.weight",
        "levels.0.steps.1.coupling.net.2.logs",
        "levels.0.split.conv.weight",
        "levels.1.steps.1.coupling.net.1.bias",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("levels.1.split")));
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    let buffers: Vec<String> = model.buffers().into_iter().map(|(n, _)| n).collect();
    assert!(buffers
        .iter()
        .any(|n| n == "levels.1.steps.0.actnorm.initialized"));
    assert!(buffers.iter().any(|n| n == "levels.0.steps.1.mixing.sign"));
    // shapes follow the squeezes and the split: level 1 has 16 channels
    let shape_of = |name: &str| {
        model
            .parameters()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .shape()
            .to_vec()
    };
    assert_eq!(
        shape_of("levels.0.steps.0.coupling.net.0.weight"),
        [8, 4, 3, 3]
    );
    assert_eq!(shape_of("levels.0.split.conv.weight"), [8, 4, 3, 3]);
    assert_eq!(
        shape_of("levels.1.steps.0.coupling.net.2.weight"),
        [16, 8, 3, 3]
    );
}

#[test]
fn glows_original_network_adds_the_edge_channel_and_hidden_actnorms() {
    let config = GlowConfig {
        conditioner: ConditionerKind::GlowNet(GlowNetStyle::Original),
        ..GlowConfig::new(2, 1, 8, lu_mixing(DType::F64))
    };
    let model = glow(config, [2, 4, 4], 1);
    let shape_of = |name: &str| {
        let all = model.parameters();
        let found = all.into_iter().find(|(n, _)| n == name);
        found.unwrap_or_else(|| panic!("{name}")).1.shape().to_vec()
    };
    // one more input channel in every 3x3 convolution, the split prior's included
    assert_eq!(
        shape_of("levels.0.steps.0.coupling.net.0.weight"),
        [8, 5, 3, 3]
    );
    assert_eq!(
        shape_of("levels.0.steps.0.coupling.net.1.weight"),
        [8, 8, 1, 1]
    );
    assert_eq!(
        shape_of("levels.0.steps.0.coupling.net.2.weight"),
        [8, 9, 3, 3]
    );
    assert_eq!(shape_of("levels.0.split.conv.weight"), [8, 5, 3, 3]);
    assert_eq!(
        shape_of("levels.1.steps.0.coupling.net.0.actnorm.log_scale"),
        [1, 8]
    );
    let buffers: Vec<String> = model.buffers().into_iter().map(|(n, _)| n).collect();
    for level in 0..2 {
        for layer in 0..2 {
            let name = format!("levels.{level}.steps.0.coupling.net.{layer}.actnorm.initialized");
            assert!(buffers.contains(&name), "{name} in {buffers:?}");
        }
    }
    // evaluation mode reaches the hidden ActNorms: nothing is initialised
    model.set_training(false);
    let x = Generator::new(2)
        .randn(&[3, 2, 4, 4], DType::F64, Device::Cpu)
        .unwrap();
    model.forward(&x).unwrap();
    assert!(model
        .buffers()
        .iter()
        .all(|(n, b)| !n.ends_with("initialized") || b.to_scalar().unwrap() == 0.0));
    model.set_training(true);
    model.forward(&x).unwrap();
    assert!(model
        .buffers()
        .iter()
        .all(|(n, b)| !n.ends_with("initialized") || b.to_scalar().unwrap() == 1.0));
}

#[test]
fn the_flow_distribution_samples_and_scores_consistently() {
    let mut gen = Generator::new(21);
    let model = glow(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        5,
    );
    // data-dependent initialisation, then move away from the identity
    let data = gen
        .normal(&[16, 2, 4, 4], 0.5, 2.0, DType::F64, Device::Cpu)
        .unwrap();
    model.forward(&data).unwrap();
    perturb_parameters(&model, 0.05, &mut gen).unwrap();
    let d = model.latent_size();
    let dist = FlowDistribution::new(
        Box::new(model),
        Box::new(StandardNormal::new(&[d], DType::F64, Device::Cpu)),
    );
    for t in [0.0, 0.7, 1.0] {
        let x = dist.sample(5, t, &mut gen).unwrap();
        assert_eq!(x.shape(), [5, 2, 4, 4]);
        assert!(
            x.to_vec::<f64>().unwrap().iter().all(|v| v.is_finite()),
            "t = {t}"
        );
        let lp = dist.log_prob(&x).unwrap().to_vec::<f64>().unwrap();
        assert!(lp.iter().all(|v| v.is_finite()), "t = {t}");
    }
    // at temperature 0 every level's z2 is 0: one deterministic sample
    let a = dist.sample(2, 0.0, &mut gen).unwrap();
    let b = dist.sample(2, 0.0, &mut gen).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());

    // log p(f^{-1}(z)) = log p_base(z) - log |det J_{f^{-1}}(z)|
    let z = dist.base.sample(6, 1.0, &mut gen).unwrap();
    let (x, inverse_logdet) = dist.flow.inverse_with_logdet(&z).unwrap();
    let want = dist
        .base
        .log_prob(&z)
        .unwrap()
        .sub(&inverse_logdet)
        .unwrap();
    let got = dist.log_prob(&x).unwrap();
    let err = max_abs_diff(&got, &want);
    assert!(err < 1e-9, "{err}: {got:?} vs {want:?}");
    // and the inverse without the log-det is the same map
    assert!(max_abs_diff(&dist.flow.inverse(&z).unwrap(), &x) < 1e-12);
}

#[test]
fn training_mode_reaches_every_actnorm() {
    let model = glow(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        1,
    );
    let x = Generator::new(3)
        .randn(&[4, 2, 4, 4], DType::F64, Device::Cpu)
        .unwrap();
    let flags = |m: &Glow| -> Vec<f64> {
        m.buffers()
            .into_iter()
            .filter(|(n, _)| n.ends_with("initialized"))
            .map(|(_, b)| b.to_scalar().unwrap())
            .collect()
    };
    model.set_training(false);
    model.forward(&x).unwrap();
    assert_eq!(flags(&model), vec![0.0; 4]);
    model.set_training(true);
    model.forward(&x).unwrap();
    assert_eq!(flags(&model), vec![1.0; 4]);
}

#[test]
fn an_f32_glow_round_trips() {
    let model = Glow::new(
        GlowConfig::new(2, 2, 8, lu_mixing(DType::F32)),
        [2, 4, 4],
        DType::F32,
        Device::Cpu,
        &mut Generator::new(6),
    )
    .unwrap();
    let mut gen = Generator::new(7);
    let x = gen.randn(&[3, 2, 4, 4], DType::F32, Device::Cpu).unwrap();
    model.forward(&x).unwrap();
    perturb_parameters(&model, 0.05, &mut gen).unwrap();
    let (z, logdet) = model.forward(&x).unwrap();
    assert_eq!((z.dtype(), z.shape()), (DType::F32, [3, 32].as_slice()));
    let (back, inverse_logdet) = model.inverse_with_logdet(&z).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-4);
    let scale = logdet
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap()
        .max(1.0);
    assert!(max_abs_diff(&inverse_logdet.neg().unwrap(), &logdet) < 1e-5 * scale);
}

#[test]
fn wrong_shapes_name_glow_and_the_shape() {
    let model = glow(
        GlowConfig::new(2, 1, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        1,
    );
    let mut gen = Generator::new(1);
    for shape in [[2, 3, 4, 4].as_slice(), &[2, 2, 8, 8], &[2, 2, 4]] {
        let x = gen.randn(shape, DType::F64, Device::Cpu).unwrap();
        let msg = model.forward(&x).unwrap_err().to_string();
        let shape_text = format!("{shape:?}");
        assert!(msg.contains("Glow") && msg.contains(&shape_text), "{msg}");
    }
    let z = gen.randn(&[2, 31], DType::F64, Device::Cpu).unwrap();
    let msg = model.inverse(&z).unwrap_err().to_string();
    assert!(msg.contains("Glow") && msg.contains("[2, 31]"), "{msg}");
    // the spatial size must survive every squeeze
    let msg = Glow::new(
        GlowConfig::new(2, 1, 8, lu_mixing(DType::F64)),
        [2, 4, 6],
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(msg.contains("Glow") && msg.contains("[2, 4, 6]"), "{msg}");
    assert!(Glow::new(
        GlowConfig::new(0, 1, 8, lu_mixing(DType::F64)),
        [2, 4, 4],
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .is_err());
}
