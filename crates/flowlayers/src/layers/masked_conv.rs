//! Autoregressive (masked) convolutions, MADE-style, for conditioners whose
//! Jacobian must be triangular.
//!
//! Pixels are ordered in raster order and, within a pixel, channels by a
//! *degree*: the input's channel `c` has degree `c`, and hidden units get
//! degrees spread over the same range. A weight from input unit `i` to
//! output unit `o` at tap `(a, b)` of a `k x k` kernel is kept iff the tap
//! is a strictly earlier pixel (`a < k/2`, or `a = k/2` and `b < k/2`), or
//! it is the centre tap and `deg(o) >= deg(i)` (`deg(o) > deg(i)` for a
//! *strict* layer). A stack of non-strict layers followed by one strict
//! layer is strictly autoregressive: output `(c, p)` depends only on
//! earlier pixels and on the channels `c' < c` of pixel `p`.

use crate::flow::{parameter, prefixed};
use crate::layers::spectral_norm::SpectralNorm;
use flowtensor::{Conv2dParams, DType, Device, Error, Generator, Result, Tensor};

/// Degrees of `units` hidden units for `channels` input channels:
/// `j * channels / units`, so every degree in `0..channels` is used when
/// `units >= channels`.
pub fn hidden_degrees(units: usize, channels: usize) -> Vec<usize> {
    (0..units).map(|j| j * channels / units.max(1)).collect()
}

/// The `(out, in, k, k)` mask of a masked convolution between units of the
/// given degrees (see the module documentation).
pub fn autoregressive_mask(
    in_degrees: &[usize],
    out_degrees: &[usize],
    k: usize,
    strict: bool,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    let (ni, no, centre) = (in_degrees.len(), out_degrees.len(), k / 2);
    let mut m = vec![0.0f64; no * ni * k * k];
    for (o, &dout) in out_degrees.iter().enumerate() {
        for (i, &din) in in_degrees.iter().enumerate() {
            for a in 0..k {
                for b in 0..k {
                    let earlier = a < centre || (a == centre && b < centre);
                    let at_centre = a == centre && b == centre;
                    let channel_ok = if strict { dout > din } else { dout >= din };
                    if earlier || (at_centre && channel_ok) {
                        m[((o * ni + i) * k + a) * k + b] = 1.0;
                    }
                }
            }
        }
    }
    Tensor::from_vec(m, &[no, ni, k, k], Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// A masked `k x k` same convolution with a bias, its masked kernel
/// spectrally normalised ([`SpectralNorm`] with bound `coeff`):
/// `y = conv(x, W_hat) + b` with `W_hat = (W .* mask) / max(1, sigma / coeff)`.
///
/// Parameters `weight (out, in, k, k)` and `bias (out)`; buffers `mask` and
/// the spectral normalisation's `spectral_norm.u`, `spectral_norm.sigma`.
pub struct MaskedConv {
    weight: Tensor,
    bias: Tensor,
    mask: Tensor,
    kernel_size: usize,
    spectral_norm: SpectralNorm,
}

/// The shape and options of a [`MaskedConv`].
#[derive(Clone, Debug)]
pub struct MaskedConvSpec<'a> {
    pub in_degrees: &'a [usize],
    pub out_degrees: &'a [usize],
    /// The odd kernel size `k`.
    pub kernel_size: usize,
    pub strict: bool,
    /// The image size the spectral normalisation's vector is shaped for.
    pub size: (usize, usize),
    /// The bound on the operator norm.
    pub coeff: f64,
    /// The weight is `init_scale * randn / sqrt(in k k)` (0: zeros).
    pub init_scale: f64,
}

impl MaskedConv {
    /// A masked convolution drawn from `gen` (weight, then the
    /// normalisation's vector); the bias starts at zero.
    pub fn new(
        spec: &MaskedConvSpec,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let (ni, no, k) = (
            spec.in_degrees.len(),
            spec.out_degrees.len(),
            spec.kernel_size,
        );
        if k.is_multiple_of(2) || ni == 0 || no == 0 {
            return Err(Error::invalid(
                "MaskedConv",
                format!(
                    "needs an odd kernel size and units on both sides, got k = {k}, {ni} -> {no}"
                ),
            ));
        }
        let weight = gen
            .randn(&[no, ni, k, k], DType::F64, Device::Cpu)?
            .mul_scalar(spec.init_scale / ((ni * k * k) as f64).sqrt())?
            .to_dtype(dtype)?
            .to_device(device)?;
        let mask = autoregressive_mask(
            spec.in_degrees,
            spec.out_degrees,
            k,
            spec.strict,
            dtype,
            device,
        )?;
        let spectral_norm =
            SpectralNorm::new((no, ni), k, spec.size, spec.coeff, dtype, device, gen)?;
        Ok(MaskedConv {
            weight: parameter(weight)?,
            bias: parameter(Tensor::zeros(&[no], dtype, device)?)?,
            mask,
            kernel_size: k,
            spectral_norm,
        })
    }

    /// `conv(x, W_hat) + b`; one power-iteration step first when `step`.
    pub fn forward(&self, x: &Tensor, step: bool) -> Result<Tensor> {
        let masked = self.weight.mul(&self.mask)?;
        let kernel = self.spectral_norm.normalize(&masked, step)?;
        x.conv2d(
            &kernel,
            Some(&self.bias),
            &Conv2dParams::same(self.kernel_size),
        )
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// `weight` and `bias`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }

    /// `mask` and the normalisation's buffers.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = vec![("mask".to_string(), self.mask.clone())];
        buffers.extend(prefixed("spectral_norm", self.spectral_norm.buffers()));
        buffers
    }
}
