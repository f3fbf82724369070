//! Circular convolution three ways: conv2d with circular padding, the FFT
//! route (a complex C x C matrix per frequency), and the dense Jacobian.

use flowtensor::fft::{fft2, irfft2, rfft2, ComplexTensor};
use flowtensor::{Conv2dParams, DType, Device, Generator, PadMode, Result, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

/// The kernel as an `(o, c, h, w)` image whose circular convolution (not
/// correlation) with `x` is conv2d's circular cross-correlation:
/// tap `(i, j)` goes to `((p - i) mod h, (p - j) mod w)` with `p = k / 2`.
fn kernel_image(w: &Tensor, h: usize, wd: usize) -> Tensor {
    let [o, c, k, _]: [usize; 4] = w.shape().try_into().unwrap();
    let (wv, p) = (w.to_vec::<f64>().unwrap(), (k / 2) as isize);
    let mut img = vec![0.0; o * c * h * wd];
    for oc in 0..o * c {
        for i in 0..k {
            for j in 0..k {
                let r = (p - i as isize).rem_euclid(h as isize) as usize;
                let q = (p - j as isize).rem_euclid(wd as isize) as usize;
                img[(oc * h + r) * wd + q] += wv[(oc * k + i) * k + j];
            }
        }
    }
    Tensor::from_vec(img, &[o, c, h, wd], Device::Cpu).unwrap()
}

/// Moves complex dims `(a, b, h, f)` to `(h, f, a, b)`.
fn per_frequency(z: &ComplexTensor) -> Result<ComplexTensor> {
    ComplexTensor::new(z.as_tensor().permute(&[2, 3, 0, 1, 4])?)
}

fn circular(k: usize) -> Conv2dParams {
    Conv2dParams {
        padding: (k / 2, k / 2),
        padding_mode: PadMode::Circular,
        ..Default::default()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .max(&(0..a.rank()).collect::<Vec<_>>(), false)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn circular_conv2d_equals_the_fft_route_and_inverts_per_frequency() -> Result<()> {
    for (n, c, h, wd, k) in [(2, 3, 6, 5, 3), (1, 2, 5, 8, 3), (2, 2, 7, 7, 5)] {
        let x = randn(&[n, c, h, wd], 1);
        let w = randn(&[c, c, k, k], 2).mul_scalar(0.3)?.add(
            &Tensor::eye(c, DType::F64, Device::Cpu)?
                .reshape(&[c, c, 1, 1])?
                .pad(&[(k / 2, k / 2), (k / 2, k / 2)], PadMode::Zero)?,
        )?;
        let direct = x.conv2d(&w, None, &circular(k))?;

        // per frequency: Y(u) = K(u) X(u), with K(u) a c x c complex matrix
        let kf = per_frequency(&rfft2(&kernel_image(&w, h, wd))?)?; // (h, f, o, c)
        let xf = per_frequency(&rfft2(&x)?)?; // (h, f, n, c)
        let xf_cols = ComplexTensor::new(xf.as_tensor().permute(&[0, 1, 3, 2, 4])?)?; // (h, f, c, n)
        let yf = kf.matmul(&xf_cols)?; // (h, f, o, n)
        let y = irfft2(
            &ComplexTensor::new(yf.as_tensor().permute(&[3, 2, 0, 1, 4])?)?,
            wd,
        )?;
        assert!(
            max_abs_diff(&y, &direct) < 1e-10,
            "fft route differs for {:?}",
            (n, c, h, wd, k)
        );

        // inverse: solve per frequency and transform back
        let back = kf.solve(&yf)?; // (h, f, c, n)
        let x_back = irfft2(
            &ComplexTensor::new(back.as_tensor().permute(&[3, 2, 0, 1, 4])?)?,
            wd,
        )?;
        assert!(
            max_abs_diff(&x_back, &x) < 1e-9,
            "per-frequency solve does not invert"
        );
    }
    Ok(())
}

#[test]
fn log_abs_det_per_frequency_equals_the_dense_jacobian() -> Result<()> {
    let (c, h, wd, k) = (2, 4, 3, 3);
    let w = randn(&[c, c, k, k], 3);
    // dense Jacobian: the convolution of every one-hot image is a column
    let d = c * h * wd;
    let basis = Tensor::eye(d, DType::F64, Device::Cpu)?.reshape(&[d, c, h, wd])?;
    let jacobian = basis
        .conv2d(&w, None, &circular(k))?
        .reshape(&[d, d])?
        .transpose(0, 1)?;
    let (_, dense) = jacobian.slogdet()?;
    // all h x w frequencies of the complex spectrum
    let spectrum = per_frequency(&fft2(&ComplexTensor::from_real(&kernel_image(&w, h, wd))?)?)?;
    let per_freq = spectrum.log_abs_det()?.sum_all()?.to_scalar()?;
    let dense = dense.to_scalar()?;
    assert!(
        (per_freq - dense).abs() < 1e-9 * dense.abs().max(1.0),
        "{per_freq} vs {dense}"
    );
    Ok(())
}
