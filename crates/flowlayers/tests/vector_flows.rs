//! Flows on vectors: every layer through the layer checks, MADE's
//! autoregressive structure, conditional flows, the inverses of the planar
//! and radial flows near their invertibility boundary, and shape errors.

use flowlayers::layers::ScaleFn;
use flowlayers::testing::{check_flow, perturb_parameters, FlowCheck};
use flowlayers::vector::{
    ActNorm, Activation, AdditiveCoupling, AffineCoupling, BatchNorm, ConditionalFlow,
    ConditionalSequential, Conditioned, CouplingMask, InvertibleLinear, Made, MadeConfig,
    MadeOrder, MaskedAutoregressive, Mlp, MlpConfig, NetConfig, Planar, Radial, RandomPermutation,
    ReversePermutation,
};
use flowlayers::{Base, Flow, Inverse, StandardNormal};
use flowtensor::{DType, Device, Generator, Tensor};

const F64: DType = DType::F64;
const CPU: Device = Device::Cpu;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .unwrap()
        .to_vec_f64()
        .unwrap()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Sets the parameter `name` of `flow` to `values`.
fn set(flow: &dyn Flow, name: &str, values: &[f64]) {
    let (_, p) = flow
        .parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    let t = Tensor::from_vec(values.to_vec(), p.shape(), CPU)
        .unwrap()
        .to_dtype(p.dtype())
        .unwrap();
    p.set_data(&t).unwrap();
}

fn net(hidden_layers: usize, activation: Activation, context_features: usize) -> NetConfig {
    NetConfig {
        hidden_features: 12,
        hidden_layers,
        activation,
        context_features,
    }
}

/// `check_flow` on `(5, d)` inputs with a perturbation large enough that
/// zero-initialised conditioners are far from the identity.
fn check(flow: &dyn Flow, d: usize, seed: u64) {
    let opts = FlowCheck {
        perturbation: 0.3,
        seed,
        ..FlowCheck::default()
    };
    let report = check_flow(flow, &[5, d], &opts)
        .unwrap_or_else(|e| panic!("{} (seed {seed}): {e}", flow.name()));
    assert!(report.max_inverse_error < 1e-10, "{report:?}");
}

#[test]
fn planar_and_radial_pass_the_layer_checks() {
    for seed in 0..3 {
        let mut gen = Generator::new(seed);
        check(&Planar::new(4, F64, CPU, &mut gen).unwrap(), 4, seed);
        check(&Radial::new(4, F64, CPU, &mut gen).unwrap(), 4, seed);
        check(&Planar::new(1, F64, CPU, &mut gen).unwrap(), 1, seed);
        check(&Radial::new(1, F64, CPU, &mut gen).unwrap(), 1, seed);
    }
}

#[test]
fn couplings_pass_the_layer_checks() {
    let d = 5;
    let masks = [
        CouplingMask::halves(d),
        CouplingMask::halves(d).flipped(),
        CouplingMask::alternating(d),
        CouplingMask::random(d, 7),
    ];
    let activations = [Activation::Relu, Activation::Tanh, Activation::Elu];
    for (k, mask) in masks.iter().enumerate() {
        let mut gen = Generator::new(k as u64);
        let activation = activations[k % 3];
        for scale in [ScaleFn::ExpTanh, ScaleFn::Sigmoid2] {
            let layer = AffineCoupling::new(
                mask.clone(),
                scale,
                net(1 + k % 2, activation, 0),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap();
            check(&layer, d, k as u64);
        }
        let layer =
            AdditiveCoupling::new(mask.clone(), net(2, activation, 0), F64, CPU, &mut gen).unwrap();
        check(&layer, d, k as u64);
        assert_eq!(layer.parameters().len(), 6);
    }
    // the random mask is reproducible and splits floor(D / 2) : rest
    assert_eq!(CouplingMask::random(d, 7), CouplingMask::random(d, 7));
    let transformed = CouplingMask::random(d, 7).transformed().to_vec();
    assert_eq!(transformed.iter().filter(|t| !**t).count(), d / 2);
    assert_eq!(
        CouplingMask::alternating(4).transformed(),
        [false, true, false, true]
    );
    assert_eq!(
        CouplingMask::halves(4).transformed(),
        [false, false, true, true]
    );
    assert_eq!(CouplingMask::halves(5).conditioning_indices(), [0, 1]);
    assert_eq!(CouplingMask::halves(5).transformed_indices(), [2, 3, 4]);
    assert_eq!(
        CouplingMask::alternating(5).flipped().transformed_indices(),
        [0, 2, 4]
    );
}

#[test]
fn maf_and_iaf_pass_the_layer_checks() {
    let d = 4;
    let orders = [
        MadeOrder::Natural,
        MadeOrder::Reversed,
        MadeOrder::Random(3),
    ];
    for (k, order) in orders.into_iter().enumerate() {
        let mut gen = Generator::new(10 + k as u64);
        let activation = [Activation::Relu, Activation::Tanh, Activation::Elu][k];
        let maf = MaskedAutoregressive::new(
            d,
            order.clone(),
            ScaleFn::ExpTanh,
            net(1 + k, activation, 0),
            F64,
            CPU,
            &mut gen,
        )
        .unwrap();
        check(&maf, d, k as u64);
        let names: Vec<String> = maf.buffers().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"made.layer0.mask".to_string()), "{names:?}");
        let iaf = Inverse(Box::new(
            MaskedAutoregressive::new(
                d,
                order,
                ScaleFn::Sigmoid2,
                net(2, activation, 0),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ));
        check(&iaf, d, k as u64);
    }
    // a single feature: no input feeds its parameters (so its input layer
    // gets no gradient and the layer check does not apply), D = 1 pass
    let mut gen = Generator::new(0);
    let maf = MaskedAutoregressive::new(
        1,
        MadeOrder::Natural,
        ScaleFn::ExpTanh,
        net(1, Activation::Relu, 0),
        F64,
        CPU,
        &mut gen,
    )
    .unwrap();
    perturb_parameters(&maf, 0.3, &mut gen).unwrap();
    let x = gen.randn(&[4, 1], F64, CPU).unwrap();
    let (z, logdet) = maf.forward(&x).unwrap();
    let (back, inverse_logdet) = maf.inverse_with_logdet(&z).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-12);
    assert!(max_abs_diff(&logdet.neg().unwrap(), &inverse_logdet) < 1e-12);
    // z = x exp(l) + t with constant t, l
    let (z0, _) = maf.forward(&x.zeros_like().unwrap()).unwrap();
    let (z1, _) = maf.forward(&x.ones_like().unwrap()).unwrap();
    let scale = z1.sub(&z0).unwrap().to_vec_f64().unwrap()[0];
    let expected = z0.add(&x.mul_scalar(scale).unwrap()).unwrap();
    assert!(max_abs_diff(&z, &expected) < 1e-12);
    assert!((logdet.to_vec_f64().unwrap()[0] - scale.ln()).abs() < 1e-12);
}

#[test]
fn maf_starts_at_the_identity() {
    let mut gen = Generator::new(4);
    let maf = MaskedAutoregressive::new(
        3,
        MadeOrder::Random(1),
        ScaleFn::ExpTanh,
        NetConfig::default(),
        F64,
        CPU,
        &mut gen,
    )
    .unwrap();
    let x = gen.randn(&[6, 3], F64, CPU).unwrap();
    let (z, logdet) = maf.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&z, &x), 0.0);
    assert_eq!(max_abs_diff(&logdet, &logdet.zeros_like().unwrap()), 0.0);
}

#[test]
fn actnorm_linear_and_permutations_pass_the_layer_checks() {
    let d = 4;
    let mut gen = Generator::new(21);
    let actnorm = ActNorm::new(d, F64, CPU).unwrap();
    // the first training forward standardises the batch
    let x = gen
        .randn(&[50, d], F64, CPU)
        .unwrap()
        .mul_scalar(3.0)
        .unwrap()
        .add_scalar(2.0)
        .unwrap();
    let (z, _) = actnorm.forward(&x).unwrap();
    let mean = z.mean(&[0], false).unwrap();
    let var = z.square().unwrap().mean(&[0], false).unwrap();
    assert!(max_abs_diff(&mean, &mean.zeros_like().unwrap()) < 1e-12);
    assert!(max_abs_diff(&var, &var.ones_like().unwrap()) < 1e-5);
    check(&actnorm, d, 0);
    check(&ActNorm::new(d, F64, CPU).unwrap(), d, 1);

    let linear = InvertibleLinear::new(d, F64, CPU, &mut gen).unwrap();
    // W = P L U is the orthogonal matrix it was factored from: |det| = 1
    let w = linear.weight().unwrap();
    let wtw = w.transpose(0, 1).unwrap().matmul(&w).unwrap();
    assert!(max_abs_diff(&wtw, &Tensor::eye(d, F64, CPU).unwrap()) < 1e-12);
    check(&linear, d, 2);
    let identity = InvertibleLinear::identity(d, F64, CPU).unwrap();
    let x = gen.randn(&[3, d], F64, CPU).unwrap();
    assert_eq!(max_abs_diff(&identity.forward(&x).unwrap().0, &x), 0.0);
    check(&identity, d, 3);

    let reverse = ReversePermutation::new(d).unwrap();
    assert_eq!(reverse.indices().unwrap(), [3, 2, 1, 0]);
    let (z, _) = reverse.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&z, &x.flip(&[1]).unwrap()), 0.0);
    check(&reverse, d, 4);
    let random = RandomPermutation::new(6, 5).unwrap();
    assert_eq!(
        random.indices().unwrap(),
        RandomPermutation::new(6, 5).unwrap().indices().unwrap()
    );
    let mut sorted = random.indices().unwrap();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
    let others: Vec<Vec<usize>> = (0..5)
        .map(|s| RandomPermutation::new(6, s).unwrap().indices().unwrap())
        .collect();
    assert!(others.iter().any(|p| *p != others[0]));
    check(&random, 6, 5);
}

#[test]
fn batchnorm_in_evaluation_mode_passes_the_layer_checks() {
    let d = 3;
    let layer = BatchNorm::new(d, F64, CPU).unwrap();
    let mut gen = Generator::new(8);
    for _ in 0..5 {
        let x = gen
            .randn(&[16, d], F64, CPU)
            .unwrap()
            .mul_scalar(2.0)
            .unwrap()
            .add_scalar(1.0)
            .unwrap();
        layer.forward(&x).unwrap();
    }
    let (mean, var) = layer.running_statistics();
    assert!(max_abs_diff(&mean, &mean.zeros_like().unwrap()) > 0.1);
    assert!(max_abs_diff(&var, &var.ones_like().unwrap()) > 0.1);
    // no inverse in training mode
    let err = layer.inverse(&gen.randn(&[2, d], F64, CPU).unwrap());
    assert!(err.unwrap_err().to_string().contains("BatchNorm"));
    layer.set_training(false);
    check(&layer, d, 0);
}

#[test]
fn batchnorm_training_logdet_uses_the_batch_statistics() {
    let d = 3;
    let eps = 1e-5;
    let layer = BatchNorm::with_options(d, 1.0, eps, F64, CPU).unwrap();
    let mut gen = Generator::new(9);
    perturb_parameters(&layer, 0.5, &mut gen).unwrap();
    let x = gen
        .randn(&[7, d], F64, CPU)
        .unwrap()
        .mul_scalar(3.0)
        .unwrap();
    let (z, logdet) = layer.forward(&x).unwrap();
    // by hand, with the biased batch variance
    let xs = x.to_vec_f64().unwrap();
    let (_, log_gamma) = layer.parameters().into_iter().next().unwrap();
    let log_gamma = log_gamma.to_vec_f64().unwrap();
    let mut expected = 0.0;
    for j in 0..d {
        let col: Vec<f64> = (0..7).map(|i| xs[i * d + j]).collect();
        let mean = col.iter().sum::<f64>() / 7.0;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0;
        expected += log_gamma[j] - 0.5 * (var + eps).ln();
    }
    for ld in logdet.to_vec_f64().unwrap() {
        assert!((ld - expected).abs() < 1e-12, "{ld} vs {expected}");
    }
    // with momentum 1 the running statistics are this batch's: evaluation
    // mode then reproduces the training map, whose per-sample Jacobian is
    // checked against the brute force by the evaluation-mode layer check
    layer.set_training(false);
    let (z_eval, logdet_eval) = layer.forward(&x).unwrap();
    assert!(max_abs_diff(&z, &z_eval) < 1e-12);
    assert!(max_abs_diff(&logdet, &logdet_eval) < 1e-12);
    let report = check_flow(
        &layer,
        &[7, d],
        &FlowCheck {
            perturbation: 0.0,
            ..FlowCheck::default()
        },
    )
    .unwrap();
    assert!(report.max_logdet_error < 1e-10);
    // the training-mode gradient reaches the input through the statistics
    layer.set_training(true);
    let xv = x.as_variable();
    let (z, _) = layer.forward(&xv).unwrap();
    let grads = z
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward_grads()
        .unwrap();
    assert!(grads.get(&xv).is_some());
    // training mode needs two samples
    let err = layer.forward(&x.narrow(0, 0, 1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("BatchNorm"), "{err}");
}

/// `d out[n, i, p] / d x[n, j]` for every `(i, p)`, as `[i][p] -> (N, D)` values.
fn made_jacobian(made: &Made, x: &Tensor, context: Option<&Tensor>) -> Vec<Vec<Vec<f64>>> {
    let cfg = made.config();
    let xv = x.detach().as_variable();
    let out = made.forward(&xv, context).unwrap();
    assert_eq!(
        out.shape(),
        [x.shape()[0], cfg.features, cfg.params_per_feature]
    );
    (0..cfg.features)
        .map(|i| {
            (0..cfg.params_per_feature)
                .map(|p| {
                    let grads = out
                        .narrow(1, i, 1)
                        .unwrap()
                        .narrow(2, p, 1)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward_grads()
                        .unwrap();
                    match grads.get(&xv) {
                        Some(g) => g.to_vec_f64().unwrap(),
                        None => vec![0.0; x.elem_count()],
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn made_is_autoregressive() {
    let d = 5;
    let cases = [
        (MadeOrder::Natural, 1, 1, 0, Activation::Tanh),
        (MadeOrder::Reversed, 3, 2, 0, Activation::Tanh),
        (MadeOrder::Random(11), 3, 3, 2, Activation::Elu),
        (MadeOrder::Random(12), 2, 0, 2, Activation::Tanh),
        (MadeOrder::Random(13), 4, 2, 0, Activation::Relu),
    ];
    for (k, (order, params, layers, context, activation)) in cases.into_iter().enumerate() {
        let mut gen = Generator::new(k as u64);
        let config = MadeConfig {
            hidden_features: 16,
            hidden_layers: layers,
            context_features: context,
            order: order.clone(),
            activation,
            ..MadeConfig::new(d, params)
        };
        let made = Made::new(&config, F64, CPU, &mut gen).unwrap();
        let degrees = made.degrees().to_vec();
        let mut sorted = degrees.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 4, 5], "{order:?}");
        let n = 3;
        let x = gen.randn(&[n, d], F64, CPU).unwrap();
        let c = (context > 0).then(|| gen.randn(&[n, context], F64, CPU).unwrap());
        let jac = made_jacobian(&made, &x, c.as_ref());
        for (i, rows) in jac.iter().enumerate() {
            for (p, row) in rows.iter().enumerate() {
                for s in 0..n {
                    for j in 0..d {
                        let g = row[s * d + j];
                        if degrees[j] >= degrees[i] {
                            assert_eq!(g, 0.0, "case {k}: out ({i}, {p}) depends on input {j}");
                        } else if activation != Activation::Relu && layers > 0 {
                            // smooth activations: every allowed connection is used
                            assert!(g != 0.0, "case {k}: out ({i}, {p}) ignores input {j}");
                        }
                    }
                }
            }
        }
        // the outputs one parameter at a time are the same numbers
        let full = made.forward(&x, c.as_ref()).unwrap();
        let by_param = made.forward_by_param(&x, c.as_ref()).unwrap();
        assert_eq!(by_param.len(), params, "case {k}");
        for (p, part) in by_param.iter().enumerate() {
            let column = full.narrow(2, p, 1).unwrap().reshape(&[n, d]).unwrap();
            assert!(
                max_abs_diff(part, &column) < 1e-12,
                "case {k}: parameter {p}"
            );
        }
        if let Some(c) = &c {
            // the context reaches every output, the first feature's included
            let other = gen.randn(&[n, context], F64, CPU).unwrap();
            let a = made.forward(&x, Some(c)).unwrap();
            let b = made.forward(&x, Some(&other)).unwrap();
            let first = degrees.iter().position(|&m| m == 1).unwrap();
            let diff = a.sub(&b).unwrap().narrow(1, first, 1).unwrap();
            assert!(max_abs_diff(&diff, &diff.zeros_like().unwrap()) > 1e-6);
        }
    }
    // a zero output layer starts at zero; the random order follows its seed
    let mut gen = Generator::new(0);
    let config = MadeConfig {
        zero_output: true,
        order: MadeOrder::Random(5),
        ..MadeConfig::new(4, 3)
    };
    let made = Made::new(&config, F64, CPU, &mut gen).unwrap();
    let out = made
        .forward(&gen.randn(&[2, 4], F64, CPU).unwrap(), None)
        .unwrap();
    assert_eq!(out.shape(), [2, 4, 3]);
    assert_eq!(max_abs_diff(&out, &out.zeros_like().unwrap()), 0.0);
    assert_eq!(made.degrees(), MadeOrder::Random(5).degrees(4));
    assert_eq!(MadeOrder::Reversed.degrees(3), [3, 2, 1]);
    assert_eq!(made.parameters().len(), 6);
    assert_eq!(made.buffers().len(), 3);
}

#[test]
fn mlp_shapes_activations_and_context() {
    let mut gen = Generator::new(1);
    let config = MlpConfig {
        hidden_features: 8,
        hidden_layers: 3,
        context_features: 2,
        activation: Activation::Elu,
        ..MlpConfig::new(3, 5)
    };
    let mlp = Mlp::new(&config, F64, CPU, &mut gen).unwrap();
    assert_eq!(mlp.parameters().len(), 8);
    let x = gen.randn(&[4, 3], F64, CPU).unwrap();
    let c = gen.randn(&[4, 2], F64, CPU).unwrap();
    let y = mlp.forward(&x, Some(&c)).unwrap();
    assert_eq!(y.shape(), [4, 5]);
    let y2 = mlp.forward(&x, Some(&c.add_scalar(1.0).unwrap())).unwrap();
    assert!(max_abs_diff(&y, &y2) > 1e-6);
    assert!(mlp.forward(&x, None).is_err());
    // ELU against its definition
    let t = Tensor::from_vec(vec![-2.0, -0.5, 0.0, 0.5, 3.0], &[5], CPU).unwrap();
    let elu = Activation::Elu.apply(&t).unwrap().to_vec_f64().unwrap();
    for (v, e) in [-2.0f64, -0.5, 0.0, 0.5, 3.0].iter().zip(elu) {
        let want = if *v > 0.0 { *v } else { v.exp() - 1.0 };
        assert!((e - want).abs() < 1e-15, "elu({v}) = {e}");
    }
    // zero output layer
    let zero = Mlp::new(
        &MlpConfig {
            zero_output: true,
            hidden_layers: 0,
            ..MlpConfig::new(3, 2)
        },
        F64,
        CPU,
        &mut gen,
    )
    .unwrap();
    let out = zero.forward(&x, None).unwrap();
    assert_eq!(out.shape(), [4, 2]);
    assert_eq!(max_abs_diff(&out, &out.zeros_like().unwrap()), 0.0);
}

/// `log p(x | c)` under a standard normal base.
fn log_density(flow: &dyn ConditionalFlow, x: &Tensor, c: &Tensor) -> Tensor {
    let (z, logdet) = flow.forward_given(x, Some(c)).unwrap();
    let base = StandardNormal::new(&[x.shape()[1]], F64, CPU);
    base.log_prob(&z).unwrap().add(&logdet).unwrap()
}

#[test]
fn conditional_flows_depend_on_the_context_with_exact_logdets() {
    let (d, cf, n) = (4, 3, 5);
    let mut gen = Generator::new(30);
    let flows: Vec<Box<dyn ConditionalFlow>> = vec![
        Box::new(
            AffineCoupling::new(
                CouplingMask::alternating(d),
                ScaleFn::ExpTanh,
                net(2, Activation::Elu, cf),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            AdditiveCoupling::new(
                CouplingMask::random(d, 1),
                net(1, Activation::Tanh, cf),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            MaskedAutoregressive::new(
                d,
                MadeOrder::Random(2),
                ScaleFn::ExpTanh,
                net(2, Activation::Relu, cf),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    for (k, flow) in flows.iter().enumerate() {
        assert_eq!(flow.context_features(), cf);
        perturb_parameters(flow.as_ref(), 0.3, &mut gen).unwrap();
        let x = gen.randn(&[n, d], F64, CPU).unwrap();
        let c1 = gen.randn(&[n, cf], F64, CPU).unwrap();
        let c2 = gen.randn(&[n, cf], F64, CPU).unwrap();
        let (l1, l2) = (
            log_density(flow.as_ref(), &x, &c1),
            log_density(flow.as_ref(), &x, &c2),
        );
        assert!(max_abs_diff(&l1, &l2) > 1e-3, "{}", flow.name());
        // the inverse needs the same context
        let (z, _) = flow.forward_given(&x, Some(&c1)).unwrap();
        let back = flow.inverse_given(&z, Some(&c1)).unwrap();
        assert!(max_abs_diff(&back, &x) < 1e-10);
        assert!(max_abs_diff(&flow.inverse_given(&z, Some(&c2)).unwrap(), &x) > 1e-6);
        // without a context it is an error
        let err = flow.forward(&x).unwrap_err().to_string();
        assert!(
            err.contains(flow.name()) && err.contains("context"),
            "{err}"
        );
        // the log-det against the brute-force Jacobian in x, c fixed
        check(&Conditioned::new(flow.as_ref(), Some(c1)), d, k as u64);
    }
    // composed with unconditional layers
    let mut layers = flows;
    layers.insert(1, Box::new(ReversePermutation::new(d).unwrap()));
    layers.push(Box::new(ActNorm::new(d, F64, CPU).unwrap()));
    let stack = ConditionalSequential::new(layers).unwrap();
    assert_eq!(stack.context_features(), cf);
    let c = gen.randn(&[n, cf], F64, CPU).unwrap();
    check(&Conditioned::new(&stack, Some(c.clone())), d, 9);
    let x = gen.randn(&[n, d], F64, CPU).unwrap();
    let (z, logdet) = stack.forward_given(&x, Some(&c)).unwrap();
    let (back, inverse_logdet) = stack.inverse_with_logdet_given(&z, Some(&c)).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-10);
    assert!(max_abs_diff(&logdet.neg().unwrap(), &inverse_logdet) < 1e-10);
    // mismatched context sizes do not compose
    let mut gen = Generator::new(0);
    let mixed: Vec<Box<dyn ConditionalFlow>> = vec![
        Box::new(
            AdditiveCoupling::new(
                CouplingMask::halves(d),
                net(1, Activation::Relu, 2),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            AdditiveCoupling::new(
                CouplingMask::halves(d),
                net(1, Activation::Relu, 3),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    assert!(ConditionalSequential::new(mixed).is_err());
}

#[test]
fn planar_inverse_is_exact_near_the_invertibility_boundary() {
    let d = 3;
    let mut gen = Generator::new(40);
    let layer = Planar::new(d, F64, CPU, &mut gen).unwrap();
    // w.u = -a drives m(w.u) = -1 + softplus(-a) towards -1
    for (a, bias) in [(2.0, 0.3), (6.0, -0.7), (8.0, 0.0), (30.0, 1.5)] {
        set(&layer, "w", &[0.6, -0.8, 0.0]);
        set(&layer, "u", &[-0.6 * a, 0.8 * a, 0.5]);
        set(&layer, "bias", &[bias]);
        let (_, m) = layer.u_hat().unwrap();
        let m = m.to_scalar().unwrap();
        assert!(m > -1.0 && m < -0.5, "{m}");
        // samples across the hyperplane w.x + b = 0 where the map is flattest
        let x = gen.randn(&[40, d], F64, CPU).unwrap();
        let w = Tensor::from_vec(vec![0.6, -0.8, 0.0], &[1, d], CPU).unwrap();
        let steep = 1.0 + m;
        let (z, logdet) = layer.forward(&x).unwrap();
        let back = layer.inverse(&z).unwrap();
        let err = max_abs_diff(&back, &x);
        let tol = 1e-12;
        eprintln!("planar a = {a}: 1 + m = {steep:e}, inverse error {err:e}");
        assert!(err < tol, "a = {a}: error {err:e} (1 + m = {steep:e})");
        // away from the flat hyperplane the inverse is exact at any m
        let offset = x
            .matmul(&w.transpose(0, 1).unwrap())
            .unwrap()
            .add_scalar(bias)
            .unwrap();
        let far = offset.abs().unwrap().gt_scalar(1.0).unwrap();
        let masked = back
            .sub(&x)
            .unwrap()
            .mul(&far)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let far_err = masked.iter().fold(0.0f64, |mx, v| mx.max(v.abs()));
        eprintln!("planar a = {a}: error off the flat hyperplane {far_err:e}");
        assert!(far_err < 1e-12, "a = {a}: far error {far_err:e}");
        assert!(logdet.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
        // on and just off the flat hyperplane (w is a unit vector), where
        // the inverse is ill-conditioned like eps / (1 + m tanh'(s))
        for s in [0.0, 1e-2, 1e-4, 1e-6] {
            let on = Tensor::from_vec(vec![0.6 * (s - bias), -0.8 * (s - bias), 0.2], &[1, d], CPU)
                .unwrap();
            let (z, _) = layer.forward(&on).unwrap();
            let err = max_abs_diff(&layer.inverse(&z).unwrap(), &on);
            let slope = 1.0 + m * (1.0 - s.tanh().powi(2));
            eprintln!("planar a = {a}, w.x + b = {s:e}: slope {slope:e}, error {err:e}");
            let tol = (1e-12f64).max(1e-15 / slope);
            assert!(err < tol, "a = {a}, s = {s}: error {err:e}");
        }
    }
}

#[test]
fn radial_inverse_is_exact_near_the_invertibility_boundary() {
    let d = 4;
    let mut gen = Generator::new(41);
    let layer = Radial::new(d, F64, CPU, &mut gen).unwrap();
    // b -> -inf: beta -> -alpha, the contraction to x0 becomes singular
    for (a, b) in [
        (0.0, 0.0),
        (1.0, -5.0),
        (-1.0, -15.0),
        (2.0, -25.0),
        (0.5, 5.0),
    ] {
        set(&layer, "a", &[a]);
        set(&layer, "b", &[b]);
        let x0 = layer.parameters()[0].1.detach().reshape(&[1, d]).unwrap();
        // radii from 1e-3 to 1e2
        let dirs = gen.randn(&[30, d], F64, CPU).unwrap();
        let dirs = dirs.div(&dirs.norm(&[1], true).unwrap()).unwrap();
        let radii: Vec<f64> = (0..30)
            .map(|i| 10f64.powf(-3.0 + 5.0 * i as f64 / 29.0))
            .collect();
        let radii = Tensor::from_vec(radii, &[30, 1], CPU).unwrap();
        let x = x0.add(&dirs.mul(&radii).unwrap()).unwrap();
        let (z, logdet) = layer.forward(&x).unwrap();
        let (back, inverse_logdet) = layer.inverse_with_logdet(&z).unwrap();
        let err = max_abs_diff(&back, &x);
        eprintln!("radial a = {a}, b = {b}: inverse error {err:e}");
        assert!(err < 1e-12, "a = {a}, b = {b}: error {err:e}");
        assert!(max_abs_diff(&logdet.neg().unwrap(), &inverse_logdet) < 1e-9);
        assert!(logdet.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
    }
    let report = check_flow(&layer, &[5, d], &FlowCheck::default()).unwrap();
    assert!(report.max_inverse_error < 1e-12);
}

#[test]
fn layers_run_in_f32() {
    let d = 4;
    let mut gen = Generator::new(50);
    let dt = DType::F32;
    let c = gen.randn(&[6, 2], dt, CPU).unwrap();
    let flows: Vec<Box<dyn ConditionalFlow>> = vec![
        Box::new(Planar::new(d, dt, CPU, &mut gen).unwrap()),
        Box::new(Radial::new(d, dt, CPU, &mut gen).unwrap()),
        Box::new(
            AffineCoupling::new(
                CouplingMask::halves(d),
                ScaleFn::ExpTanh,
                net(2, Activation::Relu, 2),
                dt,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            AdditiveCoupling::new(
                CouplingMask::alternating(d),
                net(1, Activation::Tanh, 0),
                dt,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            MaskedAutoregressive::new(
                d,
                MadeOrder::Natural,
                ScaleFn::ExpTanh,
                net(2, Activation::Elu, 2),
                dt,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(ActNorm::new(d, dt, CPU).unwrap()),
        Box::new(InvertibleLinear::new(d, dt, CPU, &mut gen).unwrap()),
        Box::new(ReversePermutation::new(d).unwrap()),
        Box::new(RandomPermutation::new(d, 3).unwrap()),
    ];
    for flow in &flows {
        perturb_parameters(flow.as_ref(), 0.2, &mut gen).unwrap();
        let x = gen.randn(&[6, d], dt, CPU).unwrap();
        let ctx = (flow.context_features() > 0).then_some(&c);
        let (z, logdet) = flow.forward_given(&x, ctx).unwrap();
        assert_eq!((z.dtype(), logdet.dtype()), (dt, dt), "{}", flow.name());
        assert_eq!(logdet.shape(), [6]);
        let back = flow.inverse_given(&z, ctx).unwrap();
        assert!(max_abs_diff(&back, &x) < 1e-4, "{}", flow.name());
    }
    let bn = BatchNorm::new(d, dt, CPU).unwrap();
    bn.forward(&gen.randn(&[8, d], dt, CPU).unwrap()).unwrap();
    bn.set_training(false);
    let x = gen.randn(&[6, d], dt, CPU).unwrap();
    let back = bn.inverse(&bn.forward(&x).unwrap().0).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-5);
}

#[test]
fn wrong_shapes_are_errors_naming_the_layer() {
    let d = 3;
    let mut gen = Generator::new(60);
    let flows: Vec<Box<dyn ConditionalFlow>> = vec![
        Box::new(Planar::new(d, F64, CPU, &mut gen).unwrap()),
        Box::new(Radial::new(d, F64, CPU, &mut gen).unwrap()),
        Box::new(
            AffineCoupling::new(
                CouplingMask::halves(d),
                ScaleFn::ExpTanh,
                net(1, Activation::Relu, 2),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            AdditiveCoupling::new(
                CouplingMask::halves(d),
                net(1, Activation::Relu, 0),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            MaskedAutoregressive::new(
                d,
                MadeOrder::Natural,
                ScaleFn::ExpTanh,
                net(1, Activation::Relu, 2),
                F64,
                CPU,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(ActNorm::new(d, F64, CPU).unwrap()),
        Box::new(BatchNorm::new(d, F64, CPU).unwrap()),
        Box::new(InvertibleLinear::new(d, F64, CPU, &mut gen).unwrap()),
        Box::new(ReversePermutation::new(d).unwrap()),
        Box::new(RandomPermutation::new(d, 1).unwrap()),
    ];
    let bad = [
        Tensor::zeros(&[4, d + 1], F64, CPU).unwrap(),
        Tensor::zeros(&[4, d, 1], F64, CPU).unwrap(),
        Tensor::zeros(&[d], F64, CPU).unwrap(),
    ];
    for flow in &flows {
        let name = flow.name();
        let c = Tensor::zeros(&[4, 2], F64, CPU).unwrap();
        let ctx = (flow.context_features() > 0).then_some(&c);
        for x in &bad {
            let shape = format!("{:?}", x.shape());
            for err in [
                flow.forward_given(x, ctx).err(),
                flow.inverse_given(x, ctx).err(),
            ] {
                let msg = err
                    .unwrap_or_else(|| panic!("{name} accepted {shape}"))
                    .to_string();
                assert!(msg.contains(name) && msg.contains(&shape), "{name}: {msg}");
            }
        }
        let x = Tensor::zeros(&[4, d], F64, CPU).unwrap();
        if flow.context_features() > 0 {
            // a context of the wrong batch or width, or none
            for c in [
                Tensor::zeros(&[5, 2], F64, CPU).unwrap(),
                Tensor::zeros(&[4, 3], F64, CPU).unwrap(),
            ] {
                let msg = flow.forward_given(&x, Some(&c)).unwrap_err().to_string();
                let shape = format!("{:?}", c.shape());
                assert!(msg.contains(name) && msg.contains(&shape), "{msg}");
            }
            assert!(flow.forward_given(&x, None).is_err());
        } else {
            // an unexpected context
            let msg = flow.forward_given(&x, Some(&c)).unwrap_err().to_string();
            assert!(msg.contains(name) && msg.contains("context"), "{msg}");
        }
    }
    // constructors
    assert!(AffineCoupling::new(
        CouplingMask::halves(1),
        ScaleFn::ExpTanh,
        NetConfig::default(),
        F64,
        CPU,
        &mut gen
    )
    .is_err());
    assert!(InvertibleLinear::from_weight(&Tensor::zeros(&[2, 3], F64, CPU).unwrap()).is_err());
    assert!(InvertibleLinear::from_weight(&Tensor::zeros(&[2, 2], F64, CPU).unwrap()).is_err());
    assert!(BatchNorm::with_options(3, 0.0, 1e-5, F64, CPU).is_err());
    assert!(Made::new(&MadeConfig::new(3, 0), F64, CPU, &mut gen).is_err());
    let made = Made::new(&MadeConfig::new(3, 2), F64, CPU, &mut gen).unwrap();
    let msg = made
        .forward(&Tensor::zeros(&[2, 4], F64, CPU).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Made") && msg.contains("[2, 4]"), "{msg}");
}
