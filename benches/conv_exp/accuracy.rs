//! The terms-vs-accuracy sweep of the convolution exponential: for 1..=20
//! terms and kernels scaled to operator norms 0.5, 0.95 and 2, the relative
//! error of the truncated series against
//! (a) the exact `exp(M) x` from the dense matrix exponential on a small
//!     case (f64), and
//! (b) the converged f64 series at the benchmark size `B64_C12_H16`, for
//!     the f32 series the benchmark times and for the f64 series,
//! next to the time per forward measured by the `convexp_terms` group.

use flows::flowtensor::conv_exp::{conv_exp, conv_exp_dense_matrix, Terms};
use flows::flowtensor::{
    Conv2dParams, ConvTranspose2dParams, DType, Device, Generator, Result, Tensor,
};
use std::path::Path;

/// Operator norms of the swept kernels.
pub const NORMS: [f64; 3] = [0.5, 0.95, 2.0];
/// The swept numbers of terms.
pub const TERMS: std::ops::RangeInclusive<usize> = 1..=20;
/// The benchmark size of part (b) and of the timings: batch, channels, size.
pub const BENCH: (usize, usize, usize) = (64, 12, 16);

/// One row of the sweep.
pub struct Row {
    pub terms: usize,
    pub norm: f64,
    /// Median time per f32 forward at the benchmark size, when measured.
    pub time_ms: Option<f64>,
    pub dense_f64: f64,
    pub series_f32: f64,
    pub series_f64: f64,
}

/// `||a - b|| / ||b||` over all entries.
fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?;
    let num = a.sub(b)?.square()?.sum_all()?.sqrt()?.to_scalar()?;
    Ok(num / b.square()?.sum_all()?.sqrt()?.to_scalar()?)
}

/// The operator 2-norm of the same-padded convolution with `kernel` on
/// `h x w` images, by 300 power-iteration steps on `M^T M`.
fn operator_norm(kernel: &Tensor, h: usize, w: usize) -> Result<f64> {
    let c = kernel.shape()[1];
    let mut u = Generator::new(1).randn(&[1, c, h, w], DType::F64, Device::Cpu)?;
    let adjoint = ConvTranspose2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let mut sigma = 0.0;
    for _ in 0..300 {
        let v = u.conv2d(kernel, None, &Conv2dParams::same(3))?;
        sigma = v.square()?.sum_all()?.sqrt()?.to_scalar()?
            / u.square()?.sum_all()?.sqrt()?.to_scalar()?;
        let back = v.conv_transpose2d(kernel, None, &adjoint)?;
        u = back.div_scalar(back.square()?.sum_all()?.sqrt()?.to_scalar()?)?;
    }
    Ok(sigma)
}

/// A `(c, c, 3, 3)` f64 kernel whose convolution on `h x w` images has
/// operator norm `norm`.
fn kernel_with_norm(c: usize, (h, w): (usize, usize), norm: f64, seed: u64) -> Result<Tensor> {
    let k = Generator::new(seed).randn(&[c, c, 3, 3], DType::F64, Device::Cpu)?;
    let sigma = operator_norm(&k, h, w)?;
    k.mul_scalar(norm / sigma)
}

/// The median time per call of `convexp_terms/{case}` from criterion's
/// estimates under `criterion_dir`, in ms.
fn measured_ms(criterion_dir: &Path, case: &str) -> Option<f64> {
    let file = criterion_dir
        .join("convexp_terms")
        .join(case)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e6)
}

/// The case name of the timing of `terms` terms.
pub fn terms_case(terms: usize) -> String {
    let (n, c, h) = BENCH;
    format!("B{n}_C{c}_H{h}_T{terms}")
}

/// Every row of the sweep, with the timings read from `criterion_dir`.
pub fn sweep(criterion_dir: &Path) -> Result<Vec<Row>> {
    let (n, c, h) = BENCH;
    let small = (2usize, 4usize, 6usize);
    let x_small = Generator::new(10).randn(
        &[small.0, small.1, small.2, small.2],
        DType::F64,
        Device::Cpu,
    )?;
    let x = Generator::new(11).randn(&[n, c, h, h], DType::F64, Device::Cpu)?;
    let x32 = x.to_dtype(DType::F32)?;
    let mut rows = Vec::new();
    for (i, &norm) in NORMS.iter().enumerate() {
        // (a) the dense matrix exponential on the small case
        let k_small = kernel_with_norm(small.1, (small.2, small.2), norm, 20 + i as u64)?;
        let d = small.1 * small.2 * small.2;
        let expm = conv_exp_dense_matrix(&k_small, small.2, small.2)?.matrix_exp()?;
        let exact = x_small
            .reshape(&[small.0, d])?
            .matmul(&expm.transpose(0, 1)?)?
            .reshape(x_small.shape())?;
        // (b) the converged series at the benchmark size: 2^60 / 60! < 1e-63
        let k = kernel_with_norm(c, (h, h), norm, 30 + i as u64)?;
        let converged = conv_exp(&x, &k, Terms::Fixed(60))?.0;
        let k32 = k.to_dtype(DType::F32)?;
        for terms in TERMS {
            let fixed = Terms::Fixed(terms);
            rows.push(Row {
                terms,
                norm,
                time_ms: measured_ms(criterion_dir, &terms_case(terms)),
                dense_f64: relative_error(&conv_exp(&x_small, &k_small, fixed)?.0, &exact)?,
                series_f32: relative_error(&conv_exp(&x32, &k32, fixed)?.0, &converged)?,
                series_f64: relative_error(&conv_exp(&x, &k, fixed)?.0, &converged)?,
            });
        }
    }
    Ok(rows)
}

/// The rows as CSV, one line each after a header.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from("terms,operator_norm,time_ms_f32_B64_C12_H16,rel_err_dense_f64,rel_err_series_f32,rel_err_series_f64\n");
    for r in rows {
        let time = r.time_ms.map(|t| format!("{t:.4}")).unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{:.3e},{:.3e},{:.3e}\n",
            r.terms, r.norm, time, r.dense_f64, r.series_f32, r.series_f64
        ));
    }
    out
}
