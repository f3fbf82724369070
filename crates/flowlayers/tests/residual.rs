//! ResidualBlock: the layer checks with the exact estimator, the spectral
//! bound on `g`'s Jacobian, the Russian-roulette estimator's unbiasedness
//! (value and gradient, both gradient modes), the fixed-point inverse, and
//! errors.

use flowlayers::fixed_point::FixedPoint;
use flowlayers::layers::{
    LogDetEstimator, LogDetGradient, ResidualActivation, ResidualBlock, ResidualConfig,
    TraceVectors,
};
use flowlayers::testing::{check_flow, conv_operator_norm, jacobian, matrix_norm, FlowCheck};
use flowlayers::Flow;
use flowtensor::{no_grad, DType, Device, Generator, Result, Tensor};

fn exact(activation: ResidualActivation) -> ResidualConfig {
    ResidualConfig {
        hidden: 5,
        activation,
        train_estimator: LogDetEstimator::Exact,
        eval_estimator: LogDetEstimator::Exact,
        fixed_point: FixedPoint {
            tol: 1e-13,
            max_iterations: 2000,
        },
        ..ResidualConfig::default()
    }
}

fn image_block(shape: [usize; 4], config: ResidualConfig, seed: u64) -> ResidualBlock {
    let mut gen = Generator::new(seed);
    let chw = (shape[1], shape[2], shape[3]);
    ResidualBlock::image(chw, config, DType::F64, Device::Cpu, &mut gen).unwrap()
}

fn vector_block(features: usize, config: ResidualConfig, seed: u64) -> ResidualBlock {
    let mut gen = Generator::new(seed);
    ResidualBlock::vector(features, config, DType::F64, Device::Cpu, &mut gen).unwrap()
}

#[test]
fn residual_blocks_pass_the_layer_checks_with_the_exact_estimator() {
    let check = FlowCheck {
        inverse_tol: 1e-9,
        ..FlowCheck::default()
    };
    for activation in [ResidualActivation::LipSwish, ResidualActivation::Elu] {
        for (shape, seed) in [([2, 2, 4, 3], 0u64), ([3, 1, 3, 3], 1)] {
            let block = image_block(shape, exact(activation), seed);
            let report = check_flow(&block, &shape, &check)
                .unwrap_or_else(|e| panic!("{activation:?} {shape:?}: {e}"));
            assert!(block.last_iterations() > 1, "{report:?}");
            let expected = if activation == ResidualActivation::LipSwish {
                8
            } else {
                6
            };
            assert_eq!(report.parameters, expected);
        }
        let block = vector_block(4, exact(activation), 2);
        check_flow(&block, &[3, 4], &check).unwrap_or_else(|e| panic!("{activation:?}: {e}"));
    }
}

#[test]
fn the_jacobian_of_g_is_bounded_by_the_coefficient() -> Result<()> {
    let shape = [2, 2, 3, 3];
    let config = ResidualConfig {
        coeff: 0.9,
        ..exact(ResidualActivation::LipSwish)
    };
    let block = image_block(shape, config, 3);
    let x = Generator::new(4).randn(&shape, DType::F64, Device::Cpu)?;
    let weights = block.normalized_weights()?;
    for (i, w) in weights.iter().enumerate() {
        let norm = conv_operator_norm(w, (3, 3))?;
        // random weights of these sizes exceed the bound, so it binds
        assert!((norm - 0.9).abs() < 1e-6, "layer {i}: norm {norm}");
    }
    // J_g = J - I per sample, its norm at most 0.9^3 (1-Lipschitz activations)
    let j = jacobian(&block, &x)?;
    let d = 18;
    let eye = Tensor::eye(d, DType::F64, Device::Cpu)?;
    for n in 0..2 {
        let jg = j.narrow(0, n, 1)?.reshape(&[d, d])?.sub(&eye)?;
        let norm = matrix_norm(&jg)?;
        assert!(norm <= 0.9f64.powi(3) + 1e-6, "sample {n}: {norm}");
    }
    // linear layers
    let block = vector_block(5, config_with_coeff(0.7), 5);
    for w in block.normalized_weights()? {
        let norm = matrix_norm(&w)?;
        assert!((norm - 0.7).abs() < 1e-6, "linear: {norm}");
    }
    Ok(())
}

fn config_with_coeff(coeff: f64) -> ResidualConfig {
    ResidualConfig {
        coeff,
        ..exact(ResidualActivation::Elu)
    }
}

/// Mean and standard error of each column of `(draws, k)` values.
fn mean_and_se(rows: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let n = rows.len() as f64;
    (0..rows[0].len())
        .map(|j| {
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            let var = rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean, (var / n).sqrt())
        })
        .collect()
}

fn roulette(gradient: LogDetGradient, vectors: TraceVectors) -> ResidualConfig {
    let estimator = LogDetEstimator::RussianRoulette {
        exact_terms: 1,
        p: 0.5,
    };
    ResidualConfig {
        hidden: 6,
        kernel_sizes: vec![1, 1],
        train_estimator: estimator,
        eval_estimator: estimator,
        trace_vectors: vectors,
        gradient,
        ..ResidualConfig::default()
    }
}

/// The exact log-det of one sample `x (1, d)` and its gradient: in `x`,
/// then projected on `directions` in the parameters.
fn exact_logdet_and_gradient(
    config: &ResidualConfig,
    x: &Tensor,
    directions: &[Vec<Tensor>],
) -> Result<(f64, Vec<f64>)> {
    let block = vector_block(
        x.shape()[1],
        ResidualConfig {
            train_estimator: LogDetEstimator::Exact,
            ..config.clone()
        },
        7,
    );
    let xv = x.detach().as_variable();
    let (_, logdet) = block.forward(&xv)?;
    let logdet = logdet.sum_all()?;
    let grads = logdet.backward_grads()?;
    let mut gradient = grads.get(&xv).unwrap().to_vec_f64()?;
    gradient.extend(project(&block, &grads, directions)?);
    Ok((logdet.to_scalar()?, gradient))
}

/// `<grad, r>` over the parameters for each direction `r`.
fn project(
    block: &ResidualBlock,
    grads: &flowtensor::GradStore,
    directions: &[Vec<Tensor>],
) -> Result<Vec<f64>> {
    directions
        .iter()
        .map(|r| {
            let mut total = 0.0;
            // (the last bias has no gradient: it does not move the Jacobian)
            for ((_, p), r) in block.parameters().iter().zip(r) {
                if let Some(g) = grads.get(p) {
                    total += g.mul(r)?.sum_all()?.to_scalar()?;
                }
            }
            Ok(total)
        })
        .collect()
}

#[test]
fn the_russian_roulette_estimator_is_unbiased_in_value_and_gradient() -> Result<()> {
    let x = Generator::new(8).randn(&[1, 3], DType::F64, Device::Cpu)?;
    for (gradient, vectors) in [
        (LogDetGradient::Neumann, TraceVectors::Gaussian),
        (LogDetGradient::Autodiff, TraceVectors::Rademacher),
    ] {
        let config = roulette(gradient, vectors);
        let block = vector_block(3, config.clone(), 7);
        let mut gen = Generator::new(9);
        let directions: Vec<Vec<Tensor>> = (0..3)
            .map(|_| {
                block
                    .parameters()
                    .iter()
                    .map(|(_, p)| gen.randn(p.shape(), DType::F64, Device::Cpu))
                    .collect()
            })
            .collect::<Result<_>>()?;
        let (exact_value, exact_gradient) = exact_logdet_and_gradient(&config, &x, &directions)?;

        // values and x-gradients: 10^4 draws as 10^4 copies of x in one batch
        let copies = x.broadcast_as(&[10_000, 3])?.contiguous()?.as_variable();
        let (_, logdet) = block.forward(&copies)?;
        let grads = logdet.sum_all()?.backward_grads()?;
        let values = logdet.to_vec_f64()?;
        let x_grads = grads.get(&copies).unwrap().to_vec_f64()?;
        let rows: Vec<Vec<f64>> = (0..10_000)
            .map(|i| [&values[i..i + 1], &x_grads[3 * i..3 * i + 3]].concat())
            .collect();
        // parameter gradients: 200 batches of 50 draws, each batch mean one draw
        let mut param_rows = Vec::new();
        for _ in 0..200 {
            let batch = x.broadcast_as(&[50, 3])?.contiguous()?;
            let (_, logdet) = block.forward(&batch)?;
            let grads = logdet.mean_all()?.backward_grads()?;
            param_rows.push(project(&block, &grads, &directions)?);
        }
        let expected = [vec![exact_value], exact_gradient].concat();
        let stats = [mean_and_se(&rows), mean_and_se(&param_rows)].concat();
        for (j, ((mean, se), exact)) in stats.iter().zip(&expected).enumerate() {
            assert!(
                (mean - exact).abs() <= 3.0 * se,
                "{gradient:?} {vectors:?} quantity {j}: mean {mean} +- {se} vs exact {exact}"
            );
            assert!(
                *se > 0.0 && *se < 0.05 * exact.abs().max(0.1),
                "{j}: se {se}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_truncated_power_series_is_biased_where_the_roulette_is_not() -> Result<()> {
    let x = Generator::new(8).randn(&[1, 3], DType::F64, Device::Cpu)?;
    let config = roulette(LogDetGradient::Neumann, TraceVectors::Gaussian);
    let (exact_value, _) = exact_logdet_and_gradient(&config, &x, &[])?;
    let truncated = vector_block(
        3,
        ResidualConfig {
            train_estimator: LogDetEstimator::PowerSeries { terms: 1 },
            ..config
        },
        7,
    );
    let copies = x.broadcast_as(&[10_000, 3])?.contiguous()?;
    let values = no_grad(|| truncated.forward(&copies))?.1.to_vec_f64()?;
    let rows: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
    let (mean, se) = mean_and_se(&rows)[0];
    assert!(
        (mean - exact_value).abs() > 5.0 * se,
        "{mean} +- {se} vs {exact_value}"
    );
    Ok(())
}

#[test]
fn the_inverse_reports_its_iterations_and_fails_when_capped() -> Result<()> {
    let shape = [2, 2, 3, 3];
    let z = Generator::new(10).randn(&shape, DType::F64, Device::Cpu)?;
    let block = image_block(shape, exact(ResidualActivation::LipSwish), 11);
    let (y, _) = block.forward(&z)?;
    let x = block.inverse(&y)?;
    let first = block.last_iterations();
    assert!(first > 2 && first < 2000, "{first}");
    let err = x.sub(&z)?.abs()?.max(&[0, 1, 2, 3], false)?.to_scalar()?;
    assert!(err < 1e-10, "{err}");
    let capped = ResidualConfig {
        fixed_point: FixedPoint {
            tol: 1e-13,
            max_iterations: 2,
        },
        ..exact(ResidualActivation::LipSwish)
    };
    let block = image_block(shape, capped, 11);
    let e = block.inverse(&y).unwrap_err().to_string();
    assert!(
        e.contains("ResidualBlock") && e.contains("did not converge"),
        "{e}"
    );
    assert_eq!(block.last_iterations(), 2);
    Ok(())
}

#[test]
fn evaluation_takes_no_graph_and_a_resumed_stream_draws_the_same() -> Result<()> {
    let config = roulette(LogDetGradient::Neumann, TraceVectors::Gaussian);
    let x = Generator::new(12).randn(&[4, 3], DType::F64, Device::Cpu)?;
    let a = vector_block(3, config.clone(), 13);
    let b = vector_block(3, config, 13);
    a.forward(&x)?;
    // copy a's buffers (the estimator stream included) into b
    for ((_, from), (_, to)) in a.buffers().iter().zip(b.buffers()) {
        to.set_data(from)?;
    }
    let (za, la) = no_grad(|| a.forward(&x))?;
    let (zb, lb) = no_grad(|| b.forward(&x))?;
    assert!(!za.requires_grad() && !la.requires_grad());
    assert_eq!(la.to_vec_f64()?, lb.to_vec_f64()?);
    assert_eq!(za.to_vec_f64()?, zb.to_vec_f64()?);
    Ok(())
}

#[test]
fn errors_name_the_layer_and_the_problem() {
    let mut gen = Generator::new(0);
    let bad = |config: ResidualConfig| {
        ResidualBlock::image(
            (2, 4, 4),
            config,
            DType::F64,
            Device::Cpu,
            &mut Generator::new(0),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let default = ResidualConfig::default;
    let e = bad(ResidualConfig {
        coeff: 1.0,
        ..default()
    });
    assert!(e.contains("ResidualBlock") && e.contains("coeff"), "{e}");
    let e = bad(ResidualConfig {
        kernel_sizes: vec![3, 2],
        ..default()
    });
    assert!(e.contains("odd"), "{e}");
    let e = bad(ResidualConfig {
        train_estimator: LogDetEstimator::RussianRoulette {
            exact_terms: 2,
            p: 0.0,
        },
        ..default()
    });
    assert!(e.contains("geometric p"), "{e}");
    let e = bad(ResidualConfig {
        eval_estimator: LogDetEstimator::PowerSeries { terms: 0 },
        ..default()
    });
    assert!(e.contains("at least one term"), "{e}");
    let block =
        ResidualBlock::image((2, 4, 4), default(), DType::F64, Device::Cpu, &mut gen).unwrap();
    let x = Tensor::zeros(&[1, 3, 4, 4], DType::F64, Device::Cpu).unwrap();
    let e = block.forward(&x).unwrap_err().to_string();
    assert!(
        e.contains("ResidualBlock") && e.contains("[1, 3, 4, 4]"),
        "{e}"
    );
    let x = Tensor::zeros(&[1, 2, 4, 4], DType::F32, Device::Cpu).unwrap();
    assert!(block.inverse(&x).is_err());
}

#[test]
fn the_multi_scale_residual_flow_passes_the_layer_checks() {
    use flowlayers::{Glow, GlowConfig, LayerFactory};
    use std::sync::Arc;
    let residual: LayerFactory = Arc::new(|[c, h, w]: [usize; 3], gen: &mut Generator| {
        let block = ResidualBlock::image(
            (c, h, w),
            ResidualConfig {
                hidden: 4,
                ..exact(ResidualActivation::LipSwish)
            },
            DType::F64,
            Device::Cpu,
            gen,
        )?;
        Ok(Box::new(block) as Box<dyn Flow>)
    });
    let mut config = GlowConfig::new(2, 2, 8, residual.clone());
    config.mixing = None;
    config.transform = Some(residual);
    let model = Glow::new(
        config,
        [1, 4, 4],
        DType::F64,
        Device::Cpu,
        &mut Generator::new(14),
    )
    .unwrap();
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"levels.1.steps.1.transform.net.2.weight".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("mixing")), "{names:?}");
    let check = FlowCheck {
        inverse_tol: 1e-9,
        ..FlowCheck::default()
    };
    check_flow(&model, &[2, 1, 4, 4], &check).unwrap();
}
