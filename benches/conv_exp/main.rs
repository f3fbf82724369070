//! The convolution exponential `exp(M) x` (`flowtensor::conv_exp`) on the
//! shapes of the peer benchmark (`../shared/peers/torch_micro.py`): f32,
//! 3x3 kernel `randn / (9 C)`, stride 1, zero padding 1.
//!
//! - `convexp_fwd/B{n}_C{c}_H{h}_T{t}`: the forward with `t` terms.
//! - `convexp_fwdbwd/B64_C12_H16_T6`: forward, then the gradients of
//!   `sum(y^2)` for the input and the kernel.
//! - `convexp_terms/B64_C12_H16_T{t}`, `t = 1..=20`: the forward's time
//!   against its number of terms.
//!
//! After the groups, the terms-vs-accuracy sweep ([`accuracy`]) writes
//! `convexp_accuracy.csv` and `convexp_accuracy.svg` ([`plot`]) next to
//! criterion's reports (`target/criterion/`), with the timings of
//! `convexp_terms` (empty where that group was filtered out and never ran).
//!
//! `FLOWS_BENCH_DEVICE=cuda:0` runs the groups on the CUDA backend (each
//! timed iteration ends with a device synchronisation).

mod accuracy;
mod plot;

use criterion::Criterion;
use flows::flowtensor::conv_exp::{conv_exp, Terms};
use flows::flowtensor::{DType, Device, Generator, Tensor};
use flows::{bench_sync, on_bench_device};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

// The training binaries' allocator (see `flowtrain::allocator`).
flows::flowtrain::training_allocator!();

const SHAPES: [(usize, usize, usize); 3] = [(64, 12, 16), (64, 48, 8), (16, 12, 32)];

fn inputs(n: usize, c: usize, h: usize) -> (Tensor, Tensor) {
    let mut gen = Generator::new(0);
    let x = gen.randn(&[n, c, h, h], DType::F32, Device::Cpu).unwrap();
    let k = gen.randn(&[c, c, 3, 3], DType::F32, Device::Cpu).unwrap();
    let k = k.div_scalar((c * 9) as f64).unwrap();
    (on_bench_device(x), on_bench_device(k))
}

fn forward(x: &Tensor, k: &Tensor, terms: usize) -> Tensor {
    conv_exp(x, k, Terms::Fixed(terms)).unwrap().0
}

fn convexp(crit: &mut Criterion) {
    let mut fwd = crit.benchmark_group("convexp_fwd");
    for (n, c, h) in SHAPES {
        let (x, k) = inputs(n, c, h);
        for t in [6, 10] {
            fwd.bench_function(format!("B{n}_C{c}_H{h}_T{t}"), |b| {
                b.iter(|| {
                    black_box(forward(&x, &k, t));
                    bench_sync()
                })
            });
        }
    }
    fwd.finish();

    let mut fwdbwd = crit.benchmark_group("convexp_fwdbwd");
    let (x, k) = inputs(64, 12, 16);
    let (x, k) = (x.as_variable(), k.as_variable());
    fwdbwd.bench_function("B64_C12_H16_T6", |b| {
        b.iter(|| {
            let loss = forward(&x, &k, 6).square().unwrap().sum_all().unwrap();
            black_box(loss.backward_grads().unwrap());
            bench_sync()
        })
    });
    fwdbwd.finish();

    let mut terms = crit.benchmark_group("convexp_terms");
    terms
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (n, c, h) = accuracy::BENCH;
    let (x, k) = inputs(n, c, h);
    for t in accuracy::TERMS {
        terms.bench_function(accuracy::terms_case(t), |b| {
            b.iter(|| black_box(forward(&x, &k, t)))
        });
    }
    terms.finish();
}

/// criterion's output folder: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    PathBuf::from(target).join("criterion")
}

fn main() {
    flows::flowtrain::allocator::keep_freed_memory();
    let mut crit = Criterion::default().configure_from_args();
    convexp(&mut crit);
    crit.final_summary();

    let dir = criterion_dir();
    let rows = accuracy::sweep(&dir).expect("the accuracy sweep");
    std::fs::create_dir_all(&dir).expect("criterion's folder");
    let csv = dir.join("convexp_accuracy.csv");
    std::fs::write(&csv, accuracy::to_csv(&rows)).expect("writing the CSV");
    let svg = dir.join("convexp_accuracy.svg");
    plot::plot(&rows, &svg).expect("drawing the plot");
    println!("accuracy sweep: {} and {}", csv.display(), svg.display());
}
