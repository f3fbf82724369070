//! Invertible periodic convolutions (Hoogeboom, van den Berg and Welling,
//! "Emerging Convolutions for Generative Normalizing Flows", 2019): a
//! convolution with circular padding is diagonalised by the 2-D DFT, one
//! `C x C` complex matrix per frequency.

use crate::flow::{parameter, Flow};
use crate::layers::spectral_norm::{check_image, check_image_size};
use flowtensor::fft::{half_spectrum_weights, irfft2_weighted, rfft2, ComplexTensor};
use flowtensor::{Conv2dParams, DType, Device, Error, Generator, PadMode, Result, Tensor};

const NAME: &str = "PeriodicConv";

/// The convolution `z = K (*) x` with circular padding (`conv2d` with
/// [`PadMode::Circular`]) and a `(C, C, k, k)` kernel, `k` odd, on `H x W`
/// images with `H, W >= k`.
///
/// With `G` the kernel placed on an `H x W` grid so that circular
/// convolution with it is that cross-correlation
/// (`G[o, c, (r - a) mod H, (r - b) mod W] = K[o, c, a, b]`, `r = k / 2`)
/// and `W_uv = DFT2(G)[:, :, u, v]` the `C x C` complex matrix at frequency
/// `(u, v)`, the DFT of the output is `Z_uv = W_uv X_uv`, so
///
/// ```text
/// log |det dz/dx| = sum_{u < H, v < W} log |det W_uv|,
/// ```
///
/// computed from the real-input half spectrum `v <= W / 2` by conjugate
/// symmetry (`W_{-u,-v} = conj(W_uv)` has the same `|det|`): the columns
/// `v = 0` and, for even `W`, `v = W / 2` hold every frequency of their own
/// conjugate pairs and count once; every other column stands for itself and
/// its mirror `W - v` and counts twice. Inverse: `X_uv = W_uv^{-1} Z_uv` per
/// frequency, as `E(W_uv)^{-1}` ([`ComplexTensor::real_embedding`], real
/// `2C x 2C`) times the stacked real and imaginary parts of `Z_uv` in one
/// batched product (cheaper than a solve per frequency with `N` right-hand
/// sides), then the inverse real DFT.
/// Everything is differentiable.
///
/// Parameter `kernel`, initialised to the identity (centre tap) plus
/// `0.01 randn`.
pub struct PeriodicConv {
    channels: usize,
    height: usize,
    width: usize,
    kernel_size: usize,
    kernel: Tensor,
    /// The count of each half-spectrum frequency, `(H, W / 2 + 1)`.
    multiplicity: Tensor,
}

impl PeriodicConv {
    /// A layer over `channels` channels of `(height, width)` images with a
    /// `k x k` kernel (`k` odd, at most the image size), drawn from `gen`.
    pub fn new(
        channels: usize,
        (height, width): (usize, usize),
        k: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        if k.is_multiple_of(2) || k > height || k > width {
            return Err(Error::invalid(
                NAME,
                format!(
                    "needs an odd kernel size no larger than the {height} x {width} image, got {k}"
                ),
            ));
        }
        let identity = Tensor::eye(channels, DType::F64, Device::Cpu)?
            .reshape(&[channels, channels, 1, 1])?
            .pad(&[(k / 2, k / 2), (k / 2, k / 2)], PadMode::Zero)?;
        let kernel = gen
            .randn(&[channels, channels, k, k], DType::F64, Device::Cpu)?
            .mul_scalar(0.01)?
            .add(&identity)?;
        let f = width / 2 + 1;
        let mut counts = vec![2.0; height * f];
        for (i, v) in counts.iter_mut().enumerate() {
            let col = i % f;
            if col == 0 || (width.is_multiple_of(2) && col == width / 2) {
                *v = 1.0;
            }
        }
        Ok(PeriodicConv {
            channels,
            height,
            width,
            kernel_size: k,
            kernel: parameter(kernel.to_dtype(dtype)?.to_device(device)?)?,
            multiplicity: Tensor::from_vec(counts, &[height, f], Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?,
        })
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(
            NAME,
            x,
            self.channels,
            (self.height, self.width),
            self.kernel.dtype(),
        )
    }

    /// `W_uv` for the half spectrum, complex `(H, W / 2 + 1, C, C)`:
    /// the kernel rotated by 180 degrees in space, zero-padded to `H x W`
    /// and rolled by `-r` in both directions is `G`.
    fn spectrum(&self) -> Result<ComplexTensor> {
        let (h, w, r) = (self.height, self.width, self.kernel_size / 2);
        let k = self.kernel_size;
        let grid = self
            .kernel
            .flip(&[2, 3])?
            .pad(&[(0, h - k), (0, w - k)], PadMode::Zero)?;
        let roll = |size: usize| -> Vec<usize> { (0..size).map(|m| (m + r) % size).collect() };
        let g = grid.index_select(2, &roll(h))?.index_select(3, &roll(w))?;
        let spectrum = rfft2(&g)?; // (C, C, H, F)
        ComplexTensor::new(spectrum.as_tensor().permute(&[2, 3, 0, 1, 4])?)
    }
}

impl PeriodicConv {
    /// `sum_f m_f log |det K_f|` over the spectrum's frequencies (with their
    /// multiplicities), for each of `n` samples.
    fn logdet(&self, n: usize) -> Result<Tensor> {
        self.logdet_of(&self.spectrum()?, n)
    }

    /// [`Self::logdet`] of a computed spectrum.
    fn logdet_of(&self, spectrum: &ComplexTensor, n: usize) -> Result<Tensor> {
        let logdet = spectrum.log_abs_det()?.mul(&self.multiplicity)?.sum_all()?;
        logdet.broadcast_as(&[n])?.contiguous()
    }

    /// `x` from `z`: `X_uv = W_uv^{-1} Z_uv` through the real embeddings,
    /// `[Re X; Im X] = E(W_uv)^{-1} [Re Z; Im Z]`: the `2C x 2C` inverses
    /// (with the half spectrum's column weights of the inverse real DFT
    /// folded in) and one batched real product over the frequencies.
    fn solve(&self, spectrum: &ComplexTensor, z: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = (z.shape()[0], self.channels, self.height, self.width);
        let f = w / 2 + 1;
        let weights = Tensor::from_vec(half_spectrum_weights(w), &[f, 1, 1], Device::Cpu)?
            .to_dtype(z.dtype())?
            .to_device(z.device())?;
        let inverse = spectrum.real_embedding()?.inverse()?.mul(&weights)?;
        // (N, C, H, F, 2) -> (H, F, 2C, N), the product, and back
        let zf = rfft2(z)?;
        let stacked = zf
            .as_tensor()
            .permute(&[2, 3, 4, 1, 0])?
            .reshape(&[h, f, 2 * c, n])?;
        let xf = inverse
            .reshape(&[h, f, 2 * c, 2 * c])?
            .matmul(&stacked)?
            .reshape(&[h, f, 2, c, n])?
            .permute(&[4, 3, 0, 1, 2])?;
        irfft2_weighted(&ComplexTensor::new(xf)?, w)
    }
}

impl Flow for PeriodicConv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let r = self.kernel_size / 2;
        let circular = Conv2dParams {
            padding: (r, r),
            padding_mode: PadMode::Circular,
            ..Default::default()
        };
        let z = x.conv2d(&self.kernel, None, &circular)?;
        Ok((z, self.logdet(x.shape()[0])?))
    }

    /// The inverse and minus the forward's log-determinant, which does not
    /// depend on the input (no forward pass over the result), from one
    /// spectrum.
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let spectrum = self.spectrum()?;
        let x = self.solve(&spectrum, z)?;
        Ok((x, self.logdet_of(&spectrum, z.shape()[0])?.neg()?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        self.solve(&self.spectrum()?, z)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("kernel".into(), self.kernel.clone())]
    }
}
