//! conv2d forward and backward on the shapes of the peer benchmark
//! (`../shared/peers/torch_micro.py`): f32, 3x3 kernel, padding 1, stride 1.
//!
//! `conv2d_fwd/B{n}_C{c}_H{h}`: `y = conv2d(x, w)` for `x: (n, c, h, h)`, `w: (c, c, 3, 3)`.
//! `conv2d_bwd/...`: forward, then the gradients of `sum(y^2)` for `x` and `w`.
//! `glow_net_fwd|glow_net_bwd/C{c}_O{o}_K{k}_H{h}`: the same for the
//! convolutions (with bias) of the `glow-mnist-ref` coupling networks and
//! split priors, batch 64 (`benches/peers/glow_net.py` is the PyTorch twin).
//!
//! Each timed iteration runs on the kernels' pool (`in_pool`, as a training
//! step does), so it pays one hand-off from the bench thread rather than a
//! wake-up of the pool per kernel.
//!
//! `FLOWS_BENCH_DEVICE=cuda:0` runs them on the CUDA backend (each timed
//! iteration ends with a device synchronisation).

use criterion::{criterion_group, criterion_main, Criterion};
use flows::flowtensor::{in_pool, Conv2dParams, DType, Device, Generator, Tensor};
use flows::{bench_sync, on_bench_device};
use std::hint::black_box;

// The training binaries' allocator (see `flowtrain::allocator`).
flows::flowtrain::training_allocator!();

const CASES: [(usize, usize, usize); 3] = [(64, 12, 16), (64, 48, 8), (16, 12, 32)];

fn inputs(n: usize, c: usize, h: usize) -> (Tensor, Tensor) {
    let mut gen = Generator::new(0);
    let x = gen.randn(&[n, c, h, h], DType::F32, Device::Cpu).unwrap();
    let w = gen.randn(&[c, c, 3, 3], DType::F32, Device::Cpu).unwrap();
    let w = w.div_scalar((c * 9) as f64).unwrap();
    (on_bench_device(x), on_bench_device(w))
}

fn conv2d(crit: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let same = Conv2dParams::same(3);
    let mut fwd = crit.benchmark_group("conv2d_fwd");
    for (n, c, h) in CASES {
        let (x, w) = inputs(n, c, h);
        fwd.bench_function(format!("B{n}_C{c}_H{h}"), |b| {
            b.iter(|| {
                in_pool(|| black_box(x.conv2d(&w, None, &same).unwrap()));
                bench_sync()
            })
        });
    }
    fwd.finish();
    let mut bwd = crit.benchmark_group("conv2d_bwd");
    for (n, c, h) in CASES {
        let (x, w) = inputs(n, c, h);
        let (x, w) = (x.as_variable(), w.as_variable());
        bwd.bench_function(format!("B{n}_C{c}_H{h}"), |b| {
            b.iter(|| {
                in_pool(|| {
                    let loss = x
                        .conv2d(&w, None, &same)
                        .unwrap()
                        .square()
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    black_box(loss.backward_grads().unwrap())
                });
                bench_sync()
            })
        });
    }
    bwd.finish();
}

/// `(c, o, k, h)` of the `glow-mnist-ref` convolutions: level 1 (14x14) and
/// level 2 (7x7) coupling networks, and the split prior.
const GLOW_NET: [(usize, usize, usize, usize); 7] = [
    (2, 64, 3, 14),
    (64, 64, 1, 14),
    (64, 4, 3, 14),
    (4, 64, 3, 7),
    (64, 64, 1, 7),
    (64, 8, 3, 7),
    (2, 4, 3, 14),
];

fn glow_net(crit: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let n = 64;
    let mut gen = Generator::new(0);
    let mut cases = Vec::new();
    for (c, o, k, h) in GLOW_NET {
        let x = gen.randn(&[n, c, h, h], DType::F32, Device::Cpu).unwrap();
        let w = gen.randn(&[o, c, k, k], DType::F32, Device::Cpu).unwrap();
        let w = w.div_scalar((c * k * k) as f64).unwrap();
        let b = gen.randn(&[o], DType::F32, Device::Cpu).unwrap();
        cases.push((
            format!("C{c}_O{o}_K{k}_H{h}"),
            on_bench_device(x),
            on_bench_device(w),
            on_bench_device(b),
            Conv2dParams::same(k),
        ));
    }
    let mut fwd = crit.benchmark_group("glow_net_fwd");
    for (name, x, w, b, params) in &cases {
        fwd.bench_function(name, |bench| {
            bench.iter(|| {
                in_pool(|| black_box(x.conv2d(w, Some(b), params).unwrap()));
                bench_sync()
            })
        });
    }
    fwd.finish();
    let mut bwd = crit.benchmark_group("glow_net_bwd");
    for (name, x, w, b, params) in &cases {
        let (x, w, b) = (x.as_variable(), w.as_variable(), b.as_variable());
        bwd.bench_function(name, |bench| {
            bench.iter(|| {
                in_pool(|| {
                    let y = x.conv2d(&w, Some(&b), params).unwrap();
                    let loss = y.square().unwrap().sum_all().unwrap();
                    black_box(loss.backward_grads().unwrap())
                });
                bench_sync()
            })
        });
    }
    bwd.finish();
}

criterion_group!(benches, conv2d, glow_net);
criterion_main!(benches);
