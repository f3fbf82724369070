//! The mixing layers of the emerging-convolution and Woodbury papers:
//! emerging convolutions (and their triangular solvers), invertible periodic
//! convolutions and Woodbury transformations, checked against their
//! brute-force Jacobians on non-square images and several channel counts.

use flowlayers::layers::emerging::quadrant_mask;
use flowlayers::layers::{Conv1x1, EmergingConv, PeriodicConv, Woodbury, WoodburyAxis};
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::{Flow, Sequential};
use flowtensor::triangular::{solve_quadrant, solve_quadrant_reference};
use flowtensor::{Conv2dParams, DType, Device, Generator, Tensor};

const SHAPES: [[usize; 4]; 3] = [[2, 3, 4, 5], [1, 2, 3, 3], [2, 4, 5, 3]];

fn passes(layer: &dyn Flow, shape: &[usize], parameters: usize) {
    let report = check_flow(layer, shape, &FlowCheck::default())
        .unwrap_or_else(|e| panic!("{} on {shape:?}: {e}", layer.name()));
    assert!(report.max_inverse_error < 1e-10, "{report:?}");
    assert!(report.max_logdet_error < 1e-8, "{report:?}");
    assert_eq!(report.parameters, parameters, "{}", layer.name());
}

#[test]
fn emerging_convolutions_pass_the_layer_checks() {
    for (seed, shape) in SHAPES.iter().enumerate() {
        let mut gen = Generator::new(seed as u64);
        let layer = EmergingConv::new(
            shape[1],
            (shape[2], shape[3]),
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        passes(&layer, shape, 2);
        // the emerging mixing: a 1x1 convolution, then the pair
        let mixing = Sequential::new(vec![
            Box::new(Conv1x1::new(shape[1], DType::F64, Device::Cpu, &mut gen).unwrap()),
            Box::new(layer),
        ]);
        passes(&mixing, shape, 3);
    }
}

#[test]
fn the_two_masks_compose_to_a_full_receptive_field() {
    let mut gen = Generator::new(4);
    let layer = EmergingConv::new(2, (5, 5), DType::F64, Device::Cpu, &mut gen).unwrap();
    // one impulse at the centre pixel of channel 0 reaches the full 3x3 neighbourhood
    let mut impulse = vec![0.0; 2 * 25];
    impulse[12] = 1.0;
    let x = Tensor::from_vec(impulse, &[1, 2, 5, 5], Device::Cpu).unwrap();
    let (z, _) = layer.forward(&x).unwrap();
    let z = z.to_vec_f64().unwrap();
    for i in 0..5 {
        for j in 0..5 {
            let inside = (1..=3).contains(&i) && (1..=3).contains(&j);
            let reached = (0..2).any(|c| z[c * 25 + i * 5 + j] != 0.0);
            assert_eq!(reached, inside, "pixel ({i}, {j})");
        }
    }
}

/// A random upper-left-quadrant kernel with a well-conditioned centre.
fn quadrant_kernel(c: usize, seed: u64) -> Tensor {
    let mask = quadrant_mask(c, DType::F64, Device::Cpu).unwrap();
    let eye = Tensor::eye(c, DType::F64, Device::Cpu)
        .unwrap()
        .reshape(&[c, c, 1, 1])
        .unwrap()
        .pad(&[(1, 1), (1, 1)], flowtensor::PadMode::Zero)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap();
    Generator::new(seed)
        .randn(&[c, c, 3, 3], DType::F64, Device::Cpu)
        .unwrap()
        .mul_scalar(0.3)
        .unwrap()
        .add(&eye)
        .unwrap()
        .mul(&mask)
        .unwrap()
}

#[test]
fn the_fast_solver_matches_back_substitution_and_inverts_the_convolution() {
    for (threads, (n, c, h, w)) in [
        (1, (3, 4, 6, 5)),
        (4, (1, 5, 7, 9)),
        (4, (2, 3, 9, 4)),
        (2, (5, 2, 4, 4)),
    ] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let kernel = quadrant_kernel(c, n as u64);
        let kv = kernel.to_vec_f64().unwrap();
        let y = Generator::new(7)
            .randn(&[n, c, h, w], DType::F64, Device::Cpu)
            .unwrap();
        let yv = y.to_vec_f64().unwrap();
        let fast = pool.install(|| solve_quadrant(&yv, &kv, (n, c, h, w)));
        let img = c * h * w;
        let reference: Vec<f64> = yv
            .chunks(img)
            .flat_map(|yi| solve_quadrant_reference(yi, &kv, (c, h, w)))
            .collect();
        let diff = fast
            .iter()
            .zip(&reference)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 1e-12,
            "{threads} threads, {:?}: {diff}",
            (n, c, h, w)
        );
        // the solution convolves back to y
        let x = Tensor::from_vec(fast, &[n, c, h, w], Device::Cpu).unwrap();
        let back = x.conv2d(&kernel, None, &Conv2dParams::same(3)).unwrap();
        let err = back
            .sub(&y)
            .unwrap()
            .to_vec_f64()
            .unwrap()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-12, "{err}");
    }
}

#[test]
fn periodic_convolutions_pass_the_layer_checks() {
    // odd and even widths (the rfft's self-conjugate columns), kernels 3 and 5
    for (seed, (shape, k)) in [
        ([2, 3, 4, 5], 3),
        ([1, 2, 4, 4], 3),
        ([2, 2, 5, 6], 5),
        ([1, 4, 3, 3], 3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut gen = Generator::new(seed as u64);
        let layer = PeriodicConv::new(
            shape[1],
            (shape[2], shape[3]),
            k,
            DType::F64,
            Device::Cpu,
            &mut gen,
        )
        .unwrap();
        passes(&layer, &shape, 1);
    }
    let mut gen = Generator::new(0);
    let err = PeriodicConv::new(2, (2, 4), 3, DType::F64, Device::Cpu, &mut gen)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("PeriodicConv") && err.contains("odd kernel"),
        "{err}"
    );
}

#[test]
fn woodbury_transforms_pass_the_layer_checks() {
    for (seed, shape) in SHAPES.iter().enumerate() {
        let (c, size) = (shape[1], (shape[2], shape[3]));
        let mut gen = Generator::new(seed as u64);
        let mut make = |axis, rank| -> Box<dyn Flow> {
            Box::new(Woodbury::new(axis, c, size, rank, DType::F64, Device::Cpu, &mut gen).unwrap())
        };
        for axis in [
            WoodburyAxis::Channel,
            WoodburyAxis::Spatial,
            WoodburyAxis::Height,
            WoodburyAxis::Width,
        ] {
            passes(make(axis, 2).as_ref(), shape, 2);
        }
        // Lu and Huang's transform (channel, spatial) and the memory-efficient one
        let woodbury = Sequential::new(vec![
            make(WoodburyAxis::Channel, 2),
            make(WoodburyAxis::Spatial, 3),
        ]);
        passes(&woodbury, shape, 4);
        let efficient = Sequential::new(vec![
            make(WoodburyAxis::Channel, 2),
            make(WoodburyAxis::Height, 2),
            make(WoodburyAxis::Width, 2),
        ]);
        passes(&efficient, shape, 6);
    }
}

#[test]
fn bad_shapes_name_the_layer() {
    let mut gen = Generator::new(0);
    let x = gen.randn(&[2, 3, 4, 4], DType::F64, Device::Cpu).unwrap();
    let layers: Vec<Box<dyn Flow>> = vec![
        Box::new(EmergingConv::new(2, (4, 4), DType::F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(PeriodicConv::new(2, (4, 4), 3, DType::F64, Device::Cpu, &mut gen).unwrap()),
        Box::new(
            Woodbury::new(
                WoodburyAxis::Spatial,
                2,
                (4, 4),
                2,
                DType::F64,
                Device::Cpu,
                &mut gen,
            )
            .unwrap(),
        ),
    ];
    for layer in layers {
        for msg in [
            layer.forward(&x).unwrap_err().to_string(),
            layer.inverse(&x).unwrap_err().to_string(),
        ] {
            assert!(
                msg.contains(layer.name()) && msg.contains("[2, 3, 4, 4]"),
                "{msg}"
            );
        }
    }
}

#[test]
fn a_woodbury_rank_beyond_its_axis_is_an_error_naming_the_bound() {
    let mut gen = Generator::new(0);
    for (axis, len) in [
        (WoodburyAxis::Spatial, 12),
        (WoodburyAxis::Channel, 2),
        (WoodburyAxis::Height, 4),
        (WoodburyAxis::Width, 3),
    ] {
        for rank in [0, len + 1, 100_000] {
            let msg = Woodbury::new(axis, 2, (4, 3), rank, DType::F64, Device::Cpu, &mut gen)
                .err()
                .unwrap()
                .to_string();
            assert!(
                msg.contains("Woodbury") && msg.contains(&format!("1..={len}")),
                "{msg}"
            );
        }
        assert!(Woodbury::new(axis, 2, (4, 3), len, DType::F64, Device::Cpu, &mut gen).is_ok());
    }
}
