//! The convolution exponential `exp(M) x` (`flowtensor::conv_exp`) on the
//! shapes of the peer benchmark (`../shared/peers/torch_micro.py`): f32,
//! 3x3 kernel `randn / (9 C)`, stride 1, zero padding 1.
//!
//! - `convexp_fwd/B{n}_C{c}_H{h}_T{t}`: the forward with `t` terms.
//! - `convexp_fwdbwd/B64_C12_H16_T6`: forward, then the gradients of
//!   `sum(y^2)` for the input and the kernel.

use criterion::{criterion_group, criterion_main, Criterion};
use flows::flowtensor::conv_exp::{conv_exp, Terms};
use flows::flowtensor::{DType, Device, Generator, Tensor};
use std::hint::black_box;

const SHAPES: [(usize, usize, usize); 3] = [(64, 12, 16), (64, 48, 8), (16, 12, 32)];

fn inputs(n: usize, c: usize, h: usize) -> (Tensor, Tensor) {
    let mut gen = Generator::new(0);
    let x = gen.randn(&[n, c, h, h], DType::F32, Device::Cpu).unwrap();
    let k = gen.randn(&[c, c, 3, 3], DType::F32, Device::Cpu).unwrap();
    (x, k.div_scalar((c * 9) as f64).unwrap())
}

fn convexp(crit: &mut Criterion) {
    let mut fwd = crit.benchmark_group("convexp_fwd");
    for (n, c, h) in SHAPES {
        let (x, k) = inputs(n, c, h);
        for t in [6, 10] {
            fwd.bench_function(format!("B{n}_C{c}_H{h}_T{t}"), |b| {
                b.iter(|| black_box(conv_exp(&x, &k, Terms::Fixed(t)).unwrap()))
            });
        }
    }
    fwd.finish();
    let mut fwdbwd = crit.benchmark_group("convexp_fwdbwd");
    let (x, k) = inputs(64, 12, 16);
    let (x, k) = (x.as_variable(), k.as_variable());
    fwdbwd.bench_function("B64_C12_H16_T6", |b| {
        b.iter(|| {
            let (y, _) = conv_exp(&x, &k, Terms::Fixed(6)).unwrap();
            let loss = y.square().unwrap().sum_all().unwrap();
            black_box(loss.backward_grads().unwrap())
        })
    });
    fwdbwd.finish();
}

criterion_group!(benches, convexp);
criterion_main!(benches);
