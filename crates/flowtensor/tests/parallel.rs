//! The parallel paths (tensors above the rayon threshold, threaded and
//! batch-parallel GEMM) against naive loops over the contiguous data.

use flowtensor::{DType, Device, Generator, Tensor, PAR_THRESHOLD};

const SHAPE: [usize; 3] = [40, 48, 36];

fn big() -> (Tensor, Vec<f64>) {
    assert!(SHAPE.iter().product::<usize>() > 2 * PAR_THRESHOLD);
    let x = Generator::new(1)
        .randn(&SHAPE, DType::F64, Device::Cpu)
        .unwrap();
    let v = x.to_vec::<f64>().unwrap();
    (x, v)
}

fn at(v: &[f64], i: usize, j: usize, k: usize) -> f64 {
    v[(i * SHAPE[1] + j) * SHAPE[2] + k]
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn elementwise_on_large_strided_views() {
    let (x, v) = big();
    // permuted to (k, i, j), flipped along the new first dim
    let got = x
        .permute(&[2, 0, 1])
        .unwrap()
        .flip(&[0])
        .unwrap()
        .tanh()
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let mut want = Vec::new();
    for k in (0..SHAPE[2]).rev() {
        for i in 0..SHAPE[0] {
            for j in 0..SHAPE[1] {
                want.push(at(&v, i, j, k).tanh());
            }
        }
    }
    close(&got, &want, 1e-15);
    // broadcast binary: x (i, j, k) + row (k)
    let row = Generator::new(2)
        .randn(&[SHAPE[2]], DType::F64, Device::Cpu)
        .unwrap();
    let r = row.to_vec::<f64>().unwrap();
    let got = x
        .transpose(0, 1)
        .unwrap()
        .mul(&row)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let mut want = Vec::new();
    for j in 0..SHAPE[1] {
        for i in 0..SHAPE[0] {
            for (k, rk) in r.iter().enumerate() {
                want.push(at(&v, i, j, k) * rk);
            }
        }
    }
    close(&got, &want, 1e-15);
}

#[test]
fn reductions_on_large_tensors() {
    let (x, v) = big();
    let sum_over = |dims: &[usize]| x.sum(dims, false).unwrap().to_vec::<f64>().unwrap();
    let mut by_j = vec![0.0; SHAPE[1]];
    let mut by_ik = vec![0.0; SHAPE[0] * SHAPE[2]];
    let mut total = 0.0;
    let mut max_k = vec![f64::NEG_INFINITY; SHAPE[0] * SHAPE[1]];
    for i in 0..SHAPE[0] {
        for j in 0..SHAPE[1] {
            for k in 0..SHAPE[2] {
                let e = at(&v, i, j, k);
                by_j[j] += e;
                by_ik[i * SHAPE[2] + k] += e;
                total += e;
                max_k[i * SHAPE[1] + j] = max_k[i * SHAPE[1] + j].max(e);
            }
        }
    }
    close(&sum_over(&[0, 2]), &by_j, 1e-12);
    close(&sum_over(&[1]), &by_ik, 1e-12);
    close(
        &[x.sum_all().unwrap().to_scalar().unwrap()],
        &[total],
        1e-12,
    );
    close(
        &x.max(&[2], false).unwrap().to_vec::<f64>().unwrap(),
        &max_k,
        0.0,
    );
}

fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

#[test]
fn gemm_paths() {
    let mut g = Generator::new(4);
    // large product: threaded inside matrixmultiply
    let (m, k, n) = (150, 160, 170);
    let a = g.randn(&[m, k], DType::F64, Device::Cpu).unwrap();
    let b = g.randn(&[k, n], DType::F64, Device::Cpu).unwrap();
    let want = naive_matmul(&a.to_vec().unwrap(), &b.to_vec().unwrap(), m, k, n);
    close(
        &a.matmul(&b).unwrap().to_vec::<f64>().unwrap(),
        &want,
        1e-12,
    );
    // many small products: spread over the batch with rayon
    let (batch, m, k, n) = (64, 5, 6, 7);
    let a = g.randn(&[batch, m, k], DType::F64, Device::Cpu).unwrap();
    let b = g.randn(&[batch, k, n], DType::F64, Device::Cpu).unwrap();
    let (av, bv) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    let got = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
    for i in 0..batch {
        let want = naive_matmul(
            &av[i * m * k..][..m * k],
            &bv[i * k * n..][..k * n],
            m,
            k,
            n,
        );
        close(&got[i * m * n..][..m * n], &want, 1e-12);
    }
    // f32 agrees with f64
    let got32 = a
        .to_dtype(DType::F32)
        .unwrap()
        .matmul(&b.to_dtype(DType::F32).unwrap())
        .unwrap();
    close(&got32.to_vec_f64().unwrap(), &got, 1e-5);
}

/// Single products with a small right operand (the layers on vectors) take
/// the register-tiled kernel: row counts off the tile and block sizes,
/// column counts below, at and between register widths, operands stored
/// transposed, and the rows split over rayon or not.
#[test]
fn tiled_gemm_on_tall_products() {
    let mut g = Generator::new(5);
    for &(m, k, n) in &[
        (1027, 37, 70),
        (1024, 64, 64),
        (1031, 64, 2),
        (9, 3, 17),
        (64, 1024, 64),
        (3, 1, 33),
    ] {
        let a = g.randn(&[m, k], DType::F64, Device::Cpu).unwrap();
        let b = g.randn(&[k, n], DType::F64, Device::Cpu).unwrap();
        let want = naive_matmul(&a.to_vec().unwrap(), &b.to_vec().unwrap(), m, k, n);
        // the same values stored transposed and viewed back
        let at = a.transpose(0, 1).unwrap().contiguous().unwrap();
        let bt = b.transpose(0, 1).unwrap().contiguous().unwrap();
        let (a_view, b_view) = (at.transpose(0, 1).unwrap(), bt.transpose(0, 1).unwrap());
        // with a bias: the tiled kernel adds it per block of rows
        let bias = g.randn(&[n], DType::F64, Device::Cpu).unwrap();
        let bias_v = bias.to_vec::<f64>().unwrap();
        let with_bias: Vec<f64> = (0..m * n).map(|i| want[i] + bias_v[i % n]).collect();
        let got = a
            .matmul_bias(&b_view, &bias)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        close(&got, &with_bias, 1e-12);
        for (x, y) in [(&a, &b), (&a_view, &b), (&a, &b_view), (&a_view, &b_view)] {
            let got = x.matmul(y).unwrap().to_vec::<f64>().unwrap();
            close(&got, &want, 1e-12);
            let x32 = x.to_dtype(DType::F32).unwrap();
            let got32 = x32.matmul(&y.to_dtype(DType::F32).unwrap()).unwrap();
            close(
                &got32.to_vec_f64().unwrap(),
                &want,
                1e-4 * (k as f64).sqrt(),
            );
        }
    }
}

/// Short rows (the spline's `(N, D, K) - (N, D, 1)`), three-operand ops on
/// views and f32 elementary functions on strided views go through gathered
/// blocks; reductions over leading dims through row accumulation.
#[test]
fn short_rows_gathered_blocks_and_leading_reductions() {
    let (x, v) = big();
    // (i, j, k) - (i, j, 1): rows of one broadcast element
    let first = x.narrow(2, 0, 1).unwrap();
    let got = x.sub(&first).unwrap().to_vec::<f64>().unwrap();
    let mut want = Vec::new();
    for i in 0..SHAPE[0] {
        for j in 0..SHAPE[1] {
            for k in 0..SHAPE[2] {
                want.push(at(&v, i, j, k) - at(&v, i, j, 0));
            }
        }
    }
    close(&got, &want, 0.0);
    // where(x > 0, x^T-view, -x) on a permuted view: rows of stride != 1
    let view = x.permute(&[1, 0, 2]).unwrap();
    let got = view
        .gt_scalar(0.0)
        .unwrap()
        .where_cond(&view, &view.neg().unwrap())
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let mut want = Vec::new();
    for j in 0..SHAPE[1] {
        for i in 0..SHAPE[0] {
            for k in 0..SHAPE[2] {
                want.push(at(&v, i, j, k).abs());
            }
        }
    }
    close(&got, &want, 0.0);
    // f32 exp on a narrowed, transposed view, against f64
    let x32 = x.to_dtype(DType::F32).unwrap();
    let got = x32
        .narrow(2, 3, 5)
        .unwrap()
        .transpose(0, 2)
        .unwrap()
        .exp()
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let mut want = Vec::new();
    for k in 3..8 {
        for j in 0..SHAPE[1] {
            for i in 0..SHAPE[0] {
                want.push((at(&v, i, j, k) as f32 as f64).exp());
            }
        }
    }
    let got: Vec<f64> = got.into_iter().map(f64::from).collect();
    close(&got, &want, 1.2e-7);
    // sum and max over the leading dims (i) and (i, j)
    let flat = x.reshape(&[SHAPE[0] * SHAPE[1], SHAPE[2]]).unwrap();
    for (dims, rows) in [
        (&[0usize][..], SHAPE[0]),
        (&[0, 1][..], SHAPE[0] * SHAPE[1]),
    ] {
        let cols = v.len() / rows;
        let sum = x.sum(dims, false).unwrap().to_vec::<f64>().unwrap();
        let max = x.max(dims, false).unwrap().to_vec::<f64>().unwrap();
        let (mut want_sum, mut want_max) = (vec![0.0; cols], vec![f64::NEG_INFINITY; cols]);
        for r in 0..rows {
            for c in 0..cols {
                want_sum[c] += v[r * cols + c];
                want_max[c] = want_max[c].max(v[r * cols + c]);
            }
        }
        close(&sum, &want_sum, 1e-12);
        close(&max, &want_max, 0.0);
    }
    let sum = flat.sum(&[0], true).unwrap();
    assert_eq!(sum.shape(), &[1, SHAPE[2]]);
}

/// Parallel kernels, nested `in_pool` calls and concurrent callers, in pools
/// of 2 to 4 workers: every result matches the one computed outside, and
/// nothing hangs (the pollers `in_pool` starts never hold a kernel back).
#[test]
fn in_pool_with_polling_workers() {
    let (x, _) = big();
    let expected = x.exp().unwrap().sum_all().unwrap().to_scalar().unwrap();
    let work = {
        let x = x.clone();
        move || {
            for _ in 0..10 {
                let inner = flowtensor::in_pool(|| {
                    let y = x.exp()?;
                    flowtensor::in_pool(|| y.sum_all()?.to_scalar())
                })
                .unwrap();
                assert_eq!(inner, expected);
            }
        }
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let run = work.clone();
    std::thread::spawn(move || {
        for threads in 2..=4 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(&run);
        }
        // callers on several threads at once, on the global pool
        let callers: Vec<_> = (0..3).map(|_| std::thread::spawn(run.clone())).collect();
        callers.into_iter().for_each(|c| c.join().unwrap());
        sender.send(()).unwrap();
    });
    receiver
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("in_pool hung or panicked");
    work();
}
