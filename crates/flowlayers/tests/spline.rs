//! The rational-quadratic spline (`flowlayers::vector::rational_quadratic`)
//! in f64: inverse to 1e-10, the log-derivative against central differences,
//! monotonicity, identity tails, values exactly on the knots and at the
//! bounds, zero parameters as the identity, random knots with extreme
//! parameters, and gradients through it.

use flowlayers::vector::{rational_quadratic, SplineConfig};
use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{DType, Device, Generator, Tensor};

fn tensor(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, Device::Cpu).unwrap()
}

fn random_params(n: usize, config: &SplineConfig, scale: f64, seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(&[n, config.params_per_feature()], DType::F64, Device::Cpu)
        .unwrap()
        .mul_scalar(scale)
        .unwrap()
}

fn apply(x: &[f64], params: &Tensor, config: &SplineConfig, inverse: bool) -> (Vec<f64>, Vec<f64>) {
    let x = tensor(x.to_vec(), &[x.len()]);
    let (y, ld) = rational_quadratic(&x, params, config, inverse).unwrap();
    (y.to_vec_f64().unwrap(), ld.to_vec_f64().unwrap())
}

/// The knots' x positions of row `i`, found by inverting the heights' knots.
fn inputs_covering(config: &SplineConfig, n: usize) -> Vec<f64> {
    // a grid over [-1.2 B, 1.2 B] (tails included), with the bounds themselves
    let b = config.bound;
    let mut x: Vec<f64> = (0..n)
        .map(|i| -1.2 * b + 2.4 * b * i as f64 / (n - 1) as f64)
        .collect();
    x[0] = -b;
    x[n - 1] = b;
    x
}

#[test]
fn inverse_and_log_derivative_are_exact() {
    for (bins, scale, seed) in [(8, 1.0, 1), (5, 3.0, 2), (2, 0.5, 3), (16, 5.0, 4)] {
        let config = SplineConfig {
            bins,
            ..SplineConfig::default()
        };
        let x = inputs_covering(&config, 41);
        let params = random_params(x.len(), &config, scale, seed);
        let (y, ld) = apply(&x, &params, &config, false);
        let (back, ld_inv) = apply(&y, &params, &config, true);
        for i in 0..x.len() {
            // 1e-10, widened where the spline is nearly flat: an error of one
            // rounding unit in y moves x by about 1e-16 / (dy/dx)
            let tol = 1e-10 + 1e-15 / ld[i].exp();
            assert!(
                (back[i] - x[i]).abs() < tol,
                "bins {bins}: x {} -> {} -> {} (dy/dx {})",
                x[i],
                y[i],
                back[i],
                ld[i].exp()
            );
            assert!(
                (ld[i] + ld_inv[i]).abs() < 1e-9,
                "bins {bins}: log-dets {} and {}",
                ld[i],
                ld_inv[i]
            );
            // central differences of the forward map
            let h = 1e-6;
            let (yp, _) = apply(
                &[x[i] + h],
                &params.narrow(0, i, 1).unwrap(),
                &config,
                false,
            );
            let (ym, _) = apply(
                &[x[i] - h],
                &params.narrow(0, i, 1).unwrap(),
                &config,
                false,
            );
            let fd = (yp[0] - ym[0]) / (2.0 * h);
            let exact = ld[i].exp();
            if x[i].abs() < config.bound - 2.0 * h || x[i].abs() > config.bound + 2.0 * h {
                assert!(
                    (fd - exact).abs() < 1e-6 * exact + 1e-9,
                    "bins {bins}, x {}: dy/dx {exact} vs {fd}",
                    x[i]
                );
            }
        }
        // outside [-B, B]: the identity
        for i in 0..x.len() {
            if x[i].abs() > config.bound {
                assert_eq!(y[i], x[i]);
                assert_eq!(ld[i], 0.0);
            }
        }
    }
}

#[test]
fn monotone_and_bounded_with_exact_knots() {
    let config = SplineConfig::default();
    let b = config.bound;
    let n = 400;
    let x: Vec<f64> = (0..n)
        .map(|i| -b + 2.0 * b * i as f64 / (n - 1) as f64)
        .collect();
    // the same random spline for every value
    let one = random_params(1, &config, 2.0, 7);
    let params = one.broadcast_as(&[n, config.params_per_feature()]).unwrap();
    let (y, _) = apply(&x, &params, &config, false);
    assert_eq!(y[0], -b);
    assert!((y[n - 1] - b).abs() < 1e-12);
    assert!(y.windows(2).all(|w| w[1] > w[0]), "not increasing");
    // values exactly on the knots: the bin edges map onto the height knots
    // (found as the spline's values at the width knots, then inverted)
    let params = one.broadcast_as(&[3, config.params_per_feature()]).unwrap();
    let edges = [-b, 0.0, b];
    let (ye, _) = apply(&edges, &params, &config, false);
    let (xe, _) = apply(&ye, &params, &config, true);
    for (a, e) in xe.iter().zip(edges) {
        assert!((a - e).abs() < 1e-12, "{a} vs {e}");
    }
}

#[test]
fn zero_parameters_are_the_identity() {
    let config = SplineConfig::default();
    let x = inputs_covering(&config, 25);
    let params =
        Tensor::zeros(&[25, config.params_per_feature()], DType::F64, Device::Cpu).unwrap();
    let (y, ld) = apply(&x, &params, &config, false);
    for i in 0..x.len() {
        assert!((y[i] - x[i]).abs() < 1e-12, "{} -> {}", x[i], y[i]);
        assert!(ld[i].abs() < 1e-12);
    }
}

#[test]
fn gradients_flow_to_inputs_and_parameters() {
    let config = SplineConfig {
        bins: 4,
        ..SplineConfig::default()
    };
    // values inside the bound, away from the knots' kinks in the bin search
    let x = tensor(vec![-2.1, -0.4, 0.3, 1.7, 2.6, -3.4], &[2, 3]);
    let params = Generator::new(9)
        .randn(
            &[2, 3, config.params_per_feature()],
            DType::F64,
            Device::Cpu,
        )
        .unwrap();
    for inverse in [false, true] {
        check_gradients(
            |t| {
                let (y, ld) = rational_quadratic(&t[0], &t[1], &config, inverse)?;
                y.add(&ld)
            },
            &[x.clone(), params.clone()],
            GradCheck::default(),
        )
        .unwrap();
    }
}

#[test]
fn wrong_parameter_shapes_are_errors() {
    let config = SplineConfig::default();
    let x = tensor(vec![0.0; 4], &[2, 2]);
    let params = Tensor::zeros(&[2, 2, 5], DType::F64, Device::Cpu).unwrap();
    let e = rational_quadratic(&x, &params, &config, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rational_quadratic") && e.contains("[2, 2, 23]"),
        "{e}"
    );
}

use flowlayers::testing::{check_flow, jacobian, FlowCheck};
use flowlayers::vector::{
    ConditionalFlow, Conditioned, CouplingMask, MadeOrder, NetConfig, SplineAutoregressive,
    SplineCoupling,
};
use flowlayers::Flow;

fn max_abs(t: &Tensor) -> f64 {
    t.to_vec_f64()
        .unwrap()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

fn net(context_features: usize) -> NetConfig {
    NetConfig {
        hidden_features: 16,
        hidden_layers: 2,
        context_features,
        ..NetConfig::default()
    }
}

/// A narrow bound, so that check_flow's normal inputs also reach the tails.
fn narrow_spline(bins: usize) -> SplineConfig {
    SplineConfig {
        bins,
        bound: 1.5,
        ..SplineConfig::default()
    }
}

/// check_flow with the conditioner's output layer perturbed by `N(0, 0.3^2)`:
/// splines with bins of very different sizes, whose inverse is still
/// well conditioned (an inverse is accurate to about 1e-16 / (dy/dx)).
fn check(flow: &dyn Flow, d: usize, seed: u64) {
    let opts = FlowCheck {
        perturbation: 0.3,
        seed,
        ..FlowCheck::default()
    };
    let report = check_flow(flow, &[6, d], &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.max_inverse_error < 1e-10);
}

#[test]
fn spline_coupling_passes_check_flow() {
    let mut gen = Generator::new(1);
    for (d, mask, bins) in [
        (4, CouplingMask::halves(4), 8),
        (5, CouplingMask::alternating(5), 3),
        (6, CouplingMask::random(6, 7), 5),
    ] {
        let flow = SplineCoupling::new(
            mask,
            narrow_spline(bins),
            net(0),
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        check(&flow, d, d as u64);
    }
}

#[test]
fn spline_autoregressive_passes_check_flow() {
    let mut gen = Generator::new(2);
    for (d, order, bins) in [
        (3, MadeOrder::Natural, 8),
        (4, MadeOrder::Reversed, 4),
        (5, MadeOrder::Random(11), 6),
    ] {
        let flow = SplineAutoregressive::new(
            d,
            order,
            narrow_spline(bins),
            net(0),
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        check(&flow, d, 10 + d as u64);
    }
}

#[test]
fn spline_flows_start_at_the_identity() {
    let mut gen = Generator::new(3);
    let x = gen
        .randn(&[4, 3], DType::F64, Device::Cpu)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap();
    let flows: Vec<Box<dyn Flow>> = vec![
        Box::new(
            SplineCoupling::new(
                CouplingMask::halves(3),
                SplineConfig::default(),
                net(0),
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            SplineAutoregressive::new(
                3,
                MadeOrder::Natural,
                SplineConfig::default(),
                net(0),
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    for flow in flows {
        let (z, ld) = flow.forward(&x).unwrap();
        let err = max_abs(&z.sub(&x).unwrap());
        assert!(err < 1e-12, "{}: {err}", flow.name());
        assert!(max_abs(&ld) < 1e-12);
    }
}

#[test]
fn the_autoregressive_spline_has_a_triangular_jacobian() {
    let mut gen = Generator::new(4);
    let d = 5;
    let flow = SplineAutoregressive::new(
        d,
        MadeOrder::Random(3),
        narrow_spline(6),
        net(0),
        DType::F64,
        Device::Cpu,
        &mut gen,
    )
    .unwrap();
    flowlayers::testing::perturb_parameters(&flow, 0.5, &mut gen).unwrap();
    let order = MadeOrder::Random(3).degrees(d);
    let x = gen.randn(&[1, d], DType::F64, Device::Cpu).unwrap();
    let j = jacobian(&flow, &x).unwrap().to_vec_f64().unwrap();
    // z_i depends on x_j only when j comes no later than i in the order
    for i in 0..d {
        for k in 0..d {
            if order[k] > order[i] {
                assert_eq!(j[i * d + k], 0.0, "dz_{i}/dx_{k} should vanish");
            }
        }
    }
}

#[test]
fn conditional_splines_depend_on_the_context_and_stay_exact() {
    let mut gen = Generator::new(5);
    let (d, c) = (4, 3);
    let flows: Vec<Box<dyn ConditionalFlow>> = vec![
        Box::new(
            SplineCoupling::new(
                CouplingMask::alternating(d),
                narrow_spline(5),
                net(c),
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
        Box::new(
            SplineAutoregressive::new(
                d,
                MadeOrder::Natural,
                narrow_spline(5),
                net(c),
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    let x = gen.randn(&[6, d], DType::F64, Device::Cpu).unwrap();
    for flow in flows {
        flowlayers::testing::perturb_parameters(flow.as_ref(), 0.2, &mut gen).unwrap();
        let c1 = gen.randn(&[6, c], DType::F64, Device::Cpu).unwrap();
        let c2 = gen.randn(&[6, c], DType::F64, Device::Cpu).unwrap();
        let (_, ld1) = flow.forward_given(&x, Some(&c1)).unwrap();
        let (_, ld2) = flow.forward_given(&x, Some(&c2)).unwrap();
        let change = max_abs(&ld1.sub(&ld2).unwrap());
        assert!(
            change > 1e-6,
            "{}: the context changes nothing",
            flow.name()
        );
        check(&Conditioned::new(flow.as_ref(), Some(c1)), d, 21);
        // without the context it needs, an error
        assert!(flow.forward_given(&x, None).is_err());
    }
}
