//! Invertible 1x1 convolutions (plain, LU, QR): the layer checks, their
//! parametrisations, f32 against f64, and their errors.

use flowlayers::layers::conv1x1::{Conv1x1, Conv1x1Lu, Conv1x1Qr};
use flowlayers::testing::{check_flow, perturb_parameters, FlowCheck};
use flowlayers::Flow;
use flowtensor::{no_grad, DType, Device, Generator, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

fn shapes(c: usize) -> [Vec<usize>; 2] {
    [vec![2, c, 3, 2], vec![4, c]]
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

fn transpose(t: &Tensor) -> Tensor {
    t.transpose(0, 1).unwrap()
}

/// Entry `(i, j)` of a matrix.
fn at(m: &Tensor, i: usize, j: usize) -> f64 {
    let n = m.shape()[1];
    m.to_vec_f64().unwrap()[i * n + j]
}

#[test]
fn conv1x1_passes_the_layer_checks() {
    for c in 1..=4 {
        for shape in shapes(c) {
            let layer =
                Conv1x1::new(c, DType::F64, Device::Cpu, &mut Generator::new(c as u64)).unwrap();
            let report = check_flow(&layer, &shape, &FlowCheck::default()).unwrap();
            assert_eq!(report.parameters, 1);
        }
    }
}

#[test]
fn conv1x1_lu_passes_the_layer_checks() {
    for c in 2..=4 {
        for shape in shapes(c) {
            let layer =
                Conv1x1Lu::new(c, DType::F64, Device::Cpu, &mut Generator::new(c as u64)).unwrap();
            let report = check_flow(&layer, &shape, &FlowCheck::default()).unwrap();
            assert_eq!(report.parameters, 3);
        }
    }
}

#[test]
fn conv1x1_qr_passes_the_layer_checks() {
    for c in 2..=4 {
        for k in [1, c] {
            for shape in shapes(c) {
                let mut gen = Generator::new(c as u64);
                let layer =
                    Conv1x1Qr::with_reflections(c, k, DType::F64, Device::Cpu, &mut gen).unwrap();
                let report = check_flow(&layer, &shape, &FlowCheck::default()).unwrap();
                assert_eq!(report.parameters, 3);
            }
        }
    }
}

/// With one channel the LU and QR layers have no off-diagonal entries to
/// learn (so `check_flow`'s every-parameter-gets-a-gradient rule does not
/// apply): they scale by `sign * exp(log_s)`.
#[test]
fn single_channel_lu_and_qr_layers_scale_by_the_diagonal() {
    let x = randn(&[3, 1, 2, 2], 5);
    let lu = Conv1x1Lu::new(1, DType::F64, Device::Cpu, &mut Generator::new(1)).unwrap();
    let qr = Conv1x1Qr::new(1, DType::F64, Device::Cpu, &mut Generator::new(1)).unwrap();
    for layer in [&lu as &dyn Flow, &qr] {
        let log_scale = &layer.parameters()[2].1;
        log_scale
            .set_data(&Tensor::from_vec(vec![0.3f64], &[1], Device::Cpu).unwrap())
            .unwrap();
        let (z, logdet) = layer.forward(&x).unwrap();
        let scale = z.div(&x).unwrap().to_vec_f64().unwrap();
        assert!(
            scale.iter().all(|s| (s.abs() - 0.3f64.exp()).abs() < 1e-12),
            "{scale:?}"
        );
        assert!(logdet
            .to_vec_f64()
            .unwrap()
            .iter()
            .all(|l| (l - 4.0 * 0.3).abs() < 1e-12));
        let (back, inv_logdet) = layer.inverse_with_logdet(&z).unwrap();
        assert!(max_diff(&back, &x) < 1e-12);
        assert!(max_diff(&inv_logdet, &logdet.neg().unwrap()) < 1e-12);
    }
}

#[test]
fn every_layer_starts_orthogonal_and_acts_on_channels_only() {
    let c = 4;
    let layers: Vec<Box<dyn Fn() -> Tensor>> = vec![
        Box::new(|| {
            Conv1x1::new(c, DType::F64, Device::Cpu, &mut Generator::new(3))
                .unwrap()
                .weight()
                .unwrap()
        }),
        Box::new(|| {
            Conv1x1Lu::new(c, DType::F64, Device::Cpu, &mut Generator::new(3))
                .unwrap()
                .weight()
                .unwrap()
        }),
        Box::new(|| {
            Conv1x1Qr::new(c, DType::F64, Device::Cpu, &mut Generator::new(3))
                .unwrap()
                .weight()
                .unwrap()
        }),
    ];
    let eye = Tensor::eye(c, DType::F64, Device::Cpu).unwrap();
    for weight in layers {
        let w = weight();
        assert!(max_diff(&transpose(&w).matmul(&w).unwrap(), &eye) < 1e-12);
    }
    // z[n, :, h, w] = W x[n, :, h, w] at every position, and the flat layout agrees
    let layer = Conv1x1Lu::new(c, DType::F64, Device::Cpu, &mut Generator::new(3)).unwrap();
    let w = layer.weight().unwrap();
    let x = randn(&[2, c, 3, 2], 4);
    let (z, _) = layer.forward(&x).unwrap();
    let x_flat = x.permute(&[0, 2, 3, 1]).unwrap().reshape(&[12, c]).unwrap();
    let (z_flat, _) = layer.forward(&x_flat).unwrap();
    let expected = x_flat.matmul(&transpose(&w)).unwrap();
    assert!(max_diff(&z_flat, &expected) < 1e-14);
    let z_as_flat = z.permute(&[0, 2, 3, 1]).unwrap().reshape(&[12, c]).unwrap();
    assert!(max_diff(&z_as_flat, &expected) < 1e-14);
}

#[test]
fn f32_conv1x1_agrees_with_f64() {
    let c = 4;
    let l64 = Conv1x1::new(c, DType::F64, Device::Cpu, &mut Generator::new(9)).unwrap();
    let l32 = Conv1x1::new(c, DType::F32, Device::Cpu, &mut Generator::new(9)).unwrap();
    assert_eq!(l32.weight().unwrap().dtype(), DType::F32);
    assert!(max_diff(&l32.weight().unwrap(), &l64.weight().unwrap()) < 1e-7);
    // move away from the orthogonal start so that the log-det is not 0
    perturb_parameters(&l64, 0.3, &mut Generator::new(10)).unwrap();
    no_grad(|| {
        l32.weight()
            .unwrap()
            .set_data(&l64.weight().unwrap().to_dtype(DType::F32).unwrap())
    })
    .unwrap();
    for shape in shapes(c) {
        let x64 = randn(&shape, 11);
        let x32 = x64.to_dtype(DType::F32).unwrap();
        let (z64, ld64) = l64.forward(&x64).unwrap();
        let (z32, ld32) = l32.forward(&x32).unwrap();
        assert_eq!((z32.dtype(), ld32.dtype()), (DType::F32, DType::F32));
        assert!(max_diff(&z32, &z64) < 1e-5);
        assert!(ld64.to_vec_f64().unwrap()[0].abs() > 1e-2);
        assert!(max_diff(&ld32, &ld64) < 1e-5);
        let (x32_back, ild32) = l32.inverse_with_logdet(&z32).unwrap();
        assert!(max_diff(&x32_back, &x64) < 1e-4);
        assert!(max_diff(&ild32, &ld64.neg().unwrap()) < 1e-5);
    }
}

#[test]
fn lu_and_qr_layers_run_in_f32() {
    let c = 3;
    let layers: [Box<dyn Flow>; 2] = [
        Box::new(Conv1x1Lu::new(c, DType::F32, Device::Cpu, &mut Generator::new(2)).unwrap()),
        Box::new(Conv1x1Qr::new(c, DType::F32, Device::Cpu, &mut Generator::new(2)).unwrap()),
    ];
    for layer in &layers {
        perturb_parameters(layer.as_ref(), 0.1, &mut Generator::new(3)).unwrap();
        let x = randn(&[2, c, 3, 2], 4).to_dtype(DType::F32).unwrap();
        let (z, logdet) = layer.forward(&x).unwrap();
        let (back, inverse_logdet) = layer.inverse_with_logdet(&z).unwrap();
        assert_eq!(z.dtype(), DType::F32);
        assert!(max_diff(&back, &x) < 1e-5, "{}", layer.name());
        assert!(max_diff(&inverse_logdet, &logdet.neg().unwrap()) < 1e-6);
    }
}

#[test]
fn lu_reconstructs_the_weight_it_was_initialised_from() {
    for c in 1..=5 {
        // the same seed draws the same orthogonal matrix
        let plain = Conv1x1::new(c, DType::F64, Device::Cpu, &mut Generator::new(7)).unwrap();
        let lu = Conv1x1Lu::new(c, DType::F64, Device::Cpu, &mut Generator::new(7)).unwrap();
        assert!(max_diff(&lu.weight().unwrap(), &plain.weight().unwrap()) < 1e-14);

        // any invertible weight: the two layers compute the same map and log-det
        let w = randn(&[c, c], 20 + c as u64);
        let plain = Conv1x1::from_weight(&w).unwrap();
        let lu = Conv1x1Lu::from_weight(&w).unwrap();
        let (p, l, u) = lu.factors().unwrap();
        assert!(max_diff(&p.matmul(&l).unwrap().matmul(&u).unwrap(), &w) < 1e-12);
        for i in 0..c {
            let row: f64 = (0..c).map(|j| at(&p, i, j)).sum();
            let col: f64 = (0..c).map(|j| at(&p, j, i)).sum();
            assert_eq!((row, col), (1.0, 1.0));
            assert_eq!(at(&l, i, i), 1.0);
            for j in i + 1..c {
                assert_eq!((at(&l, i, j), at(&u, j, i)), (0.0, 0.0));
            }
        }
        let x = randn(&[2, c, 2, 2], 8);
        let (z_plain, ld_plain) = plain.forward(&x).unwrap();
        let (z_lu, ld_lu) = lu.forward(&x).unwrap();
        assert!(max_diff(&z_lu, &z_plain) < 1e-12);
        assert!(max_diff(&ld_lu, &ld_plain) < 1e-10);
    }
}

#[test]
fn from_weight_copies_the_weight() {
    let w = randn(&[3, 3], 1);
    let layer = Conv1x1::from_weight(&w).unwrap();
    no_grad(|| layer.weight().unwrap().set_data(&w.zeros_like().unwrap())).unwrap();
    assert!(w.to_vec_f64().unwrap().iter().any(|&v| v != 0.0));
}

#[test]
fn lu_gradients_stay_off_the_fixed_parts() {
    let c = 4;
    let layer = Conv1x1Lu::new(c, DType::F64, Device::Cpu, &mut Generator::new(5)).unwrap();
    let params = layer.parameters();
    let (lower, upper) = (&params[0].1, &params[1].1);
    let x = randn(&[3, c, 2, 2], 6);
    let buffers_before: Vec<Vec<f64>> = layer
        .buffers()
        .iter()
        .map(|(_, b)| b.to_vec_f64().unwrap())
        .collect();
    let (sign_before, _) = layer.weight().unwrap().slogdet().unwrap();

    for step in 0..5 {
        let (z, logdet) = layer.forward(&x).unwrap();
        let loss = z
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .mul_scalar(0.5)
            .unwrap()
            .sub(&logdet.sum_all().unwrap())
            .unwrap();
        let grads = loss.backward_grads().unwrap();
        let (g_lower, g_upper) = (grads.get(lower).unwrap(), grads.get(upper).unwrap());
        for i in 0..c {
            for j in 0..c {
                if j >= i {
                    assert_eq!(at(g_lower, i, j), 0.0, "lower gradient at ({i}, {j})");
                }
                if j <= i {
                    assert_eq!(at(g_upper, i, j), 0.0, "upper gradient at ({i}, {j})");
                }
            }
        }
        assert!(max_diff(g_lower, &g_lower.zeros_like().unwrap()) > 0.0);
        // an optimizer-like update, plus noise on every raw entry (masked ones included)
        no_grad(|| {
            for (_, p) in layer.parameters() {
                let g = grads.get(&p).unwrap();
                p.set_data(&p.sub(&g.mul_scalar(0.05).unwrap()).unwrap())
                    .unwrap();
            }
        });
        let w_before_noise = layer.weight().unwrap();
        let noise = Generator::new(100 + step)
            .normal(&[c, c], 0.0, 1.0, DType::F64, Device::Cpu)
            .unwrap();
        // raising every masked entry of `lower` and `upper` leaves W unchanged
        no_grad(|| {
            for (p, used) in [
                (lower, strict_triangle(c, false)),
                (upper, strict_triangle(c, true)),
            ] {
                let unused = noise.sub(&noise.mul(&used).unwrap()).unwrap();
                p.set_data(&p.add(&unused).unwrap()).unwrap();
            }
        });
        assert!(max_diff(&layer.weight().unwrap(), &w_before_noise) < 1e-15);
    }
    let buffers_after: Vec<Vec<f64>> = layer
        .buffers()
        .iter()
        .map(|(_, b)| b.to_vec_f64().unwrap())
        .collect();
    assert_eq!(buffers_after, buffers_before);
    // the sign of det W cannot change, and the cheap log-det is still exact
    let w = layer.weight().unwrap();
    let (sign_after, log_abs_det) = w.slogdet().unwrap();
    assert_eq!(
        sign_after.to_scalar().unwrap(),
        sign_before.to_scalar().unwrap()
    );
    let (_, logdet) = layer.forward(&x).unwrap();
    let expected = 4.0 * log_abs_det.to_scalar().unwrap();
    assert!((logdet.to_vec_f64().unwrap()[0] - expected).abs() < 1e-12);
    assert!(expected.abs() > 1e-3);
}

/// Ones strictly above (`upper`) or strictly below the diagonal of a `c x c` matrix.
fn strict_triangle(c: usize, upper: bool) -> Tensor {
    let v: Vec<f64> = (0..c * c)
        .map(|k| {
            let (i, j) = (k / c, k % c);
            if (upper && j > i) || (!upper && j < i) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, &[c, c], Device::Cpu).unwrap()
}

#[test]
fn qr_weight_is_orthogonal_times_triangular() {
    for (c, k) in [(2, 2), (3, 3), (4, 4), (4, 2), (5, 1)] {
        let layer =
            Conv1x1Qr::with_reflections(c, k, DType::F64, Device::Cpu, &mut Generator::new(4))
                .unwrap();
        assert_eq!(layer.parameters()[0].1.shape(), &[k, c]);
        perturb_parameters(&layer, 0.3, &mut Generator::new(5)).unwrap();
        let (q, r) = layer.factors().unwrap();
        let w = layer.weight().unwrap();
        let eye = Tensor::eye(c, DType::F64, Device::Cpu).unwrap();
        assert!(max_diff(&transpose(&q).matmul(&q).unwrap(), &eye) < 1e-12);
        assert!(max_diff(&q.matmul(&r).unwrap(), &w) < 1e-14);
        let log_scale = layer.parameters()[2].1.to_vec_f64().unwrap();
        for (i, s) in log_scale.iter().enumerate() {
            assert!((at(&r, i, i) - s.exp()).abs() < 1e-14);
            for j in 0..i {
                assert_eq!(at(&r, i, j), 0.0);
            }
        }
        // W^T W = R^T Q^T Q R = R^T R
        let wtw = transpose(&w).matmul(&w).unwrap();
        assert!(max_diff(&wtw, &transpose(&r).matmul(&r).unwrap()) < 1e-12);
        // |det W| = prod of R's diagonal
        let (_, log_abs_det) = w.slogdet().unwrap();
        let sum: f64 = log_scale.iter().sum();
        assert!((log_abs_det.to_scalar().unwrap() - sum).abs() < 1e-12);
    }
}

#[test]
fn invalid_constructions_are_errors() {
    let gen = &mut Generator::new(0);
    let msg = Conv1x1::new(0, DType::F64, Device::Cpu, gen)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("Conv1x1"), "{msg}");
    assert!(Conv1x1Lu::new(0, DType::F64, Device::Cpu, gen).is_err());
    assert!(Conv1x1Qr::new(0, DType::F64, Device::Cpu, gen).is_err());
    let msg = Conv1x1Qr::with_reflections(3, 0, DType::F64, Device::Cpu, gen)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("Conv1x1Qr") && msg.contains("reflection"),
        "{msg}"
    );
    let rect = randn(&[2, 3], 1);
    let msg = Conv1x1::from_weight(&rect).err().unwrap().to_string();
    assert!(msg.contains("Conv1x1") && msg.contains("[2, 3]"), "{msg}");
    let msg = Conv1x1Lu::from_weight(&rect).err().unwrap().to_string();
    assert!(msg.contains("Conv1x1Lu") && msg.contains("[2, 3]"), "{msg}");
    let singular = Tensor::from_vec(vec![1.0f64, 2.0, 2.0, 4.0], &[2, 2], Device::Cpu).unwrap();
    let msg = Conv1x1::from_weight(&singular).err().unwrap().to_string();
    assert!(msg.contains("Conv1x1") && msg.contains("singular"), "{msg}");
    let msg = Conv1x1Lu::from_weight(&singular).err().unwrap().to_string();
    assert!(
        msg.contains("Conv1x1Lu") && msg.contains("singular"),
        "{msg}"
    );
}

#[test]
fn wrong_inputs_name_the_layer_and_shape() {
    let gen = &mut Generator::new(0);
    let layers: [Box<dyn Flow>; 3] = [
        Box::new(Conv1x1::new(3, DType::F64, Device::Cpu, gen).unwrap()),
        Box::new(Conv1x1Lu::new(3, DType::F64, Device::Cpu, gen).unwrap()),
        Box::new(Conv1x1Qr::new(3, DType::F64, Device::Cpu, gen).unwrap()),
    ];
    for layer in &layers {
        let name = layer.name();
        for (shape, shown) in [
            (vec![2, 4, 2, 2], "[2, 4, 2, 2]"),
            (vec![2, 4], "[2, 4]"),
            (vec![3], "[3]"),
        ] {
            let x = randn(&shape, 1);
            for msg in [
                layer.forward(&x).unwrap_err().to_string(),
                layer.inverse(&x).unwrap_err().to_string(),
                layer.inverse_with_logdet(&x).unwrap_err().to_string(),
            ] {
                assert!(msg.contains(name) && msg.contains(shown), "{msg}");
            }
        }
        let x32 = randn(&[2, 3], 1).to_dtype(DType::F32).unwrap();
        let msg = layer.forward(&x32).unwrap_err().to_string();
        assert!(msg.contains(name) && msg.contains("F32"), "{msg}");
    }
}

#[test]
fn parameter_and_buffer_names() {
    let gen = &mut Generator::new(0);
    let names = |named: Vec<(String, Tensor)>| -> Vec<String> {
        named.into_iter().map(|(n, _)| n).collect()
    };
    let plain = Conv1x1::new(3, DType::F64, Device::Cpu, gen).unwrap();
    assert_eq!(names(plain.parameters()), ["weight"]);
    assert!(plain.buffers().is_empty());
    let lu = Conv1x1Lu::new(3, DType::F64, Device::Cpu, gen).unwrap();
    assert_eq!(names(lu.parameters()), ["lower", "upper", "log_scale"]);
    assert_eq!(names(lu.buffers()), ["permutation", "sign"]);
    let qr = Conv1x1Qr::new(3, DType::F64, Device::Cpu, gen).unwrap();
    assert_eq!(
        names(qr.parameters()),
        ["householder", "upper", "log_scale"]
    );
    assert_eq!(names(qr.buffers()), ["sign"]);
    assert!(lu
        .parameters()
        .iter()
        .chain(&qr.parameters())
        .all(|(_, p)| p.is_leaf() && p.requires_grad()));
}
