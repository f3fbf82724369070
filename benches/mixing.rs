//! The four mixings compared in the convolution-exponential paper, and the
//! periodic and memory-efficient Woodbury ones, forward and inverse on
//! `B64_C12_H16` (f32, batch 64, 12 channels, 16x16):
//!
//! - `mixing_fwd/{name}`, `mixing_inv/{name}` for `1x1` (LU-parametrised),
//!   `convexp` (1x1 + convolution exponential; training-mode forward with 6
//!   terms and a power step, inverse with 13 terms), `emerging` (1x1 +
//!   emerging pair), `periodic` (1x1 + 3x3 periodic convolution),
//!   `woodbury` (1x1 + spatial Woodbury, rank 16) and `woodbury_me` (1x1 +
//!   channel, height and width Woodbury, rank 4 each);
//! - `emerging_solve/{fast,sequential}/{case}`: the emerging convolution's
//!   triangular solve (f64) by the parallel solver against plain sequential
//!   back-substitution, on `B64_C12_H16` and on one `C12_H64` image (where
//!   the fast solver runs along anti-diagonal wavefronts).

use criterion::{criterion_group, criterion_main, Criterion};
use flows::flowlayers::layers::emerging::quadrant_mask;
use flows::flowlayers::layers::{
    Conv1x1Lu, ConvExp, EmergingConv, PeriodicConv, Woodbury, WoodburyAxis,
};
use flows::flowlayers::{Flow, Sequential};
use flows::flowtensor::triangular::{solve_quadrant, solve_quadrant_reference};
use flows::flowtensor::{DType, Device, Generator, Tensor};
use std::hint::black_box;

// The training binaries' allocator (see `flowtrain::allocator`).
flows::flowtrain::training_allocator!();

const SHAPE: [usize; 4] = [64, 12, 16, 16];

fn mixings(gen: &mut Generator) -> Vec<(&'static str, Box<dyn Flow>)> {
    let (c, size, f32) = (SHAPE[1], (SHAPE[2], SHAPE[3]), DType::F32);
    let cpu = Device::Cpu;
    let with_1x1 = |layer: Box<dyn Flow>, gen: &mut Generator| -> Box<dyn Flow> {
        Box::new(Sequential::new(vec![
            Box::new(Conv1x1Lu::new(c, f32, cpu, gen).unwrap()),
            layer,
        ]))
    };
    let woodbury = |axis, rank, gen: &mut Generator| -> Box<dyn Flow> {
        Box::new(Woodbury::new(axis, c, size, rank, f32, cpu, gen).unwrap())
    };
    let emerging = Box::new(EmergingConv::new(c, size, f32, cpu, gen).unwrap());
    let periodic = Box::new(PeriodicConv::new(c, size, 3, f32, cpu, gen).unwrap());
    let spatial = woodbury(WoodburyAxis::Spatial, 16, gen);
    let efficient: Box<dyn Flow> = Box::new(Sequential::new(vec![
        woodbury(WoodburyAxis::Channel, 4, gen),
        woodbury(WoodburyAxis::Height, 4, gen),
        woodbury(WoodburyAxis::Width, 4, gen),
    ]));
    vec![
        (
            "1x1",
            Box::new(Conv1x1Lu::new(c, f32, cpu, gen).unwrap()) as Box<dyn Flow>,
        ),
        (
            "convexp",
            Box::new(ConvExp::new(c, size, f32, cpu, gen).unwrap()),
        ),
        ("emerging", with_1x1(emerging, gen)),
        ("periodic", with_1x1(periodic, gen)),
        ("woodbury", with_1x1(spatial, gen)),
        ("woodbury_me", with_1x1(efficient, gen)),
    ]
}

fn mixing(crit: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let mut gen = Generator::new(0);
    let x = gen.randn(&SHAPE, DType::F32, Device::Cpu).unwrap();
    let layers = mixings(&mut gen);
    let mut fwd = crit.benchmark_group("mixing_fwd");
    for (name, layer) in &layers {
        fwd.bench_function(*name, |b| b.iter(|| black_box(layer.forward(&x).unwrap())));
    }
    fwd.finish();
    let mut inv = crit.benchmark_group("mixing_inv");
    for (name, layer) in &layers {
        let (z, _) = layer.forward(&x).unwrap();
        inv.bench_function(*name, |b| b.iter(|| black_box(layer.inverse(&z).unwrap())));
    }
    inv.finish();
}

fn emerging_solve(crit: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let mut group = crit.benchmark_group("emerging_solve");
    for (n, c, h) in [(64, 12, 16), (1, 12, 64)] {
        let mut gen = Generator::new(1);
        let mask = quadrant_mask(c, DType::F64, Device::Cpu).unwrap();
        let centre = Tensor::eye(c, DType::F64, Device::Cpu)
            .unwrap()
            .reshape(&[c, c, 1, 1])
            .unwrap()
            .pad(&[(1, 1), (1, 1)], flows::flowtensor::PadMode::Zero)
            .unwrap();
        let kernel = gen
            .randn(&[c, c, 3, 3], DType::F64, Device::Cpu)
            .unwrap()
            .mul_scalar(0.05)
            .unwrap()
            .add(&centre)
            .unwrap()
            .mul(&mask)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let y = gen
            .randn(&[n, c, h, h], DType::F64, Device::Cpu)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let case = format!("B{n}_C{c}_H{h}");
        group.bench_function(format!("fast/{case}"), |b| {
            b.iter(|| black_box(solve_quadrant(&y, &kernel, (n, c, h, h))))
        });
        group.bench_function(format!("sequential/{case}"), |b| {
            b.iter(|| {
                let img = c * h * h;
                let x: Vec<f64> = y
                    .chunks(img)
                    .flat_map(|yi| solve_quadrant_reference(yi, &kernel, (c, h, h)))
                    .collect();
                black_box(x)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mixing, emerging_solve);
criterion_main!(benches);
