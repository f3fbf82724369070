//! Flows on vectors: forward and backward of the negative log-likelihood of
//! a batch of 1024, f32, for RealNVP (affine couplings), MAF and NSF-C
//! (rational-quadratic spline couplings, 8 bins on [-3, 3]) at D = 2 and
//! D = 64: 5 layers, conditioners with 2 hidden layers of 64 ReLU units,
//! alternating masks (couplings) or alternating natural / reversed orders
//! (MAF). `benches/peers/vector_flows.py` is the PyTorch twin.
//!
//! `vector_flows/{realnvp,maf,nsf_c}_D{d}`: `loss = -mean(log p(x))`, then
//! the gradients of every parameter.

use criterion::{criterion_group, criterion_main, Criterion};
use flows::flowlayers::layers::ScaleFn;
use flows::flowlayers::vector::{
    AffineCoupling, CouplingMask, MadeOrder, MaskedAutoregressive, NetConfig, SplineConfig,
    SplineCoupling,
};
use flows::flowlayers::{Flow, FlowDistribution, Sequential, StandardNormal};
use flows::flowtensor::{DType, Generator, Tensor};
use flows::{bench_device, bench_sync, on_bench_device};
use std::hint::black_box;

// The training binaries' allocator (see `flowtrain::allocator`).
flows::flowtrain::training_allocator!();

const LAYERS: usize = 5;
const BATCH: usize = 1024;

fn mask(d: usize, layer: usize) -> CouplingMask {
    let m = CouplingMask::alternating(d);
    if layer % 2 == 1 {
        m.flipped()
    } else {
        m
    }
}

fn model(kind: &str, d: usize, gen: &mut Generator) -> FlowDistribution {
    let (dtype, device) = (DType::F32, bench_device());
    let net = NetConfig {
        hidden_features: 64,
        hidden_layers: 2,
        ..NetConfig::default()
    };
    let layers: Vec<Box<dyn Flow>> = (0..LAYERS)
        .map(|l| -> Box<dyn Flow> {
            match kind {
                "realnvp" => Box::new(
                    AffineCoupling::new(mask(d, l), ScaleFn::ExpTanh, net, dtype, device, gen)
                        .unwrap(),
                ),
                "maf" => {
                    let order = if l % 2 == 0 {
                        MadeOrder::Natural
                    } else {
                        MadeOrder::Reversed
                    };
                    Box::new(
                        MaskedAutoregressive::new(
                            d,
                            order,
                            ScaleFn::ExpTanh,
                            net,
                            dtype,
                            device,
                            gen,
                        )
                        .unwrap(),
                    )
                }
                _ => Box::new(
                    SplineCoupling::new(
                        mask(d, l),
                        SplineConfig::default(),
                        net,
                        dtype,
                        device,
                        gen,
                    )
                    .unwrap(),
                ),
            }
        })
        .collect();
    let flow = Sequential::new(layers);
    // start away from the identity, as after some training
    flows::flowlayers::testing::perturb_parameters(&flow, 0.05, gen).unwrap();
    FlowDistribution::new(
        Box::new(flow),
        Box::new(StandardNormal::new(&[d], dtype, device)),
    )
}

fn vector_flows(crit: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let mut group = crit.benchmark_group("vector_flows");
    for d in [2, 64] {
        for kind in ["realnvp", "maf", "nsf_c"] {
            let mut gen = Generator::new(0);
            let dist = model(kind, d, &mut gen);
            let x = on_bench_device(
                gen.randn(&[BATCH, d], DType::F32, flows::flowtensor::Device::Cpu)
                    .unwrap(),
            );
            let params: Vec<Tensor> = dist.parameters().into_iter().map(|(_, p)| p).collect();
            group.bench_function(format!("{kind}_D{d}"), |b| {
                b.iter(|| {
                    flows::flowtensor::in_pool(|| {
                        let loss = dist
                            .log_prob(&x)
                            .unwrap()
                            .mean_all()
                            .unwrap()
                            .neg()
                            .unwrap();
                        let grads = loss.backward_grads().unwrap();
                        black_box(params.iter().filter_map(|p| grads.get(p)).count());
                        bench_sync()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, vector_flows);
criterion_main!(benches);
