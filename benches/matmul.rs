//! GEMM throughput: flowtensor's matmul against calling matrixmultiply directly.
//!
//! `matmul/sgemm_1024` is the engine's f32 1024x1024 product;
//! `matmul/matrixmultiply_direct_1024` is the same product through
//! `matrixmultiply::sgemm` on preallocated buffers, the ceiling it is held to.
//! Throughput is reported in elements = floating-point operations (2 n^3).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flows::flowtensor::{DType, Device, Generator};
use std::hint::black_box;

// The training binaries' allocator (see `flowtrain::allocator`).
flows::flowtrain::training_allocator!();

const N: usize = 1024;

fn matmul(c: &mut Criterion) {
    flows::flowtrain::allocator::keep_freed_memory();
    let mut group = c.benchmark_group("matmul");
    group.throughput(Throughput::Elements(2 * (N * N * N) as u64));
    group.sample_size(20);

    let mut gen = Generator::new(0);
    let a = gen.randn(&[N, N], DType::F32, Device::Cpu).unwrap();
    let b = gen.randn(&[N, N], DType::F32, Device::Cpu).unwrap();
    group.bench_function("sgemm_1024", |bench| {
        bench.iter(|| black_box(a.matmul(&b).unwrap()))
    });

    let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let mut cv = vec![0.0f32; N * N];
    group.bench_function("matrixmultiply_direct_1024", |bench| {
        bench.iter(|| {
            // SAFETY: three distinct N x N row-major buffers.
            unsafe {
                matrixmultiply::sgemm(
                    N,
                    N,
                    N,
                    1.0,
                    av.as_ptr(),
                    N as isize,
                    1,
                    bv.as_ptr(),
                    N as isize,
                    1,
                    0.0,
                    cv.as_mut_ptr(),
                    N as isize,
                    1,
                );
            }
            black_box(&cv);
        })
    });
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
