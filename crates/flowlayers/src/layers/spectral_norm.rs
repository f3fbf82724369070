//! Spectral normalisation of a same-padded convolution operator or of a
//! linear map, and the image checks of the layers that use it.

use flowtensor::{
    no_grad, Conv2dParams, ConvTranspose2dParams, DType, Device, Error, Generator, Result, Tensor,
};
use std::sync::Mutex;

/// `t / max(||t||_2, 1e-30)` (all entries): the floor (representable in f32
/// too) keeps a zero vector finite.
fn normalized(t: &Tensor) -> Result<Tensor> {
    let norm = t.square()?.sum_all()?.sqrt()?.clamp(1e-30, f64::INFINITY)?;
    t.div(&norm)
}

/// Checks the sizes of a layer (or an operator) built for `(channels, height, width)` images.
pub(crate) fn check_image_size(
    layer: &'static str,
    channels: usize,
    (height, width): (usize, usize),
) -> Result<()> {
    if channels == 0 || height == 0 || width == 0 {
        return Err(Error::invalid(
            layer,
            format!("needs non-empty images, got C = {channels}, H = {height}, W = {width}"),
        ));
    }
    Ok(())
}

/// Checks that `x` is `(batch, channels, height, width)` of the layer's
/// `dtype` (dtypes never mix implicitly, also in directions that compute on
/// the host).
pub(crate) fn check_image(
    layer: &'static str,
    x: &Tensor,
    channels: usize,
    (height, width): (usize, usize),
    dtype: DType,
) -> Result<()> {
    if x.dtype() != dtype {
        return Err(Error::DTypeMismatch {
            op: layer,
            lhs: x.dtype(),
            rhs: dtype,
        });
    }
    let s = x.shape();
    if s.len() != 4 || s[1] != channels || s[2] != height || s[3] != width {
        return Err(Error::shape(
            layer,
            &[s],
            format!("expected (batch, {channels}, {height}, {width})"),
        ));
    }
    Ok(())
}

/// Spectral normalisation of a same-padded stride-1 convolution `M` with an
/// `(O, I, k, k)` kernel `K` (`k` odd), seen as a linear map from `(I, H, W)`
/// to `(O, H, W)` images (Miyato, Kataoka, Koyama and Yoshida, 2018, applied to the whole
/// convolution operator rather than to the reshaped kernel), or
/// ([`SpectralNorm::linear`]) of a linear layer `M u = u K^T` with an `(O,
/// I)` weight `K`.
///
/// Keeps a persistent unit vector `u` of shape `(1, I, H, W)` (`(1, I)` for
/// a linear layer; buffer `u`, drawn from a [`Generator`] and normalised).
/// One power-iteration step
/// ([`SpectralNorm::power_step`]) is
///
/// ```text
/// v = M u / ||M u||,        u <- M^T v / ||M^T v||,
/// ```
///
/// where `M^T` is `conv_transpose2d` with the same kernel and padding `k/2`
/// (the exact adjoint of `M`; `v K` for a linear layer). It runs without gradient: `u` is a constant.
/// The estimate of the largest singular value is
///
/// ```text
/// sigma(K) = ||M u||_2      (u the current, detached unit iterate),
/// ```
///
/// which is differentiable in `K` (as in Miyato et al.), a lower bound of
/// `||M||_2` for any unit `u`, and converges to it as `u` converges to the top
/// right singular vector. The normalised kernel is
///
/// ```text
/// K_hat = K / max(1, sigma(K) / coeff),
/// ```
///
/// so `||M_hat||_2 ~ min(sigma, coeff)` (`coeff = 0.95` in the convolution
/// exponential's default). The last `sigma` computed is kept as the buffer
/// `sigma`. A kernel times a fixed mask (the masked convolutions of
/// autoregressive conditioners) is normalised the same way: pass the
/// masked kernel.
///
/// When `u` moves ([`SpectralNorm::normalize`]):
/// - the first normalisation in any mode (the buffer `sigma` is still 0)
///   runs the power iteration until `sigma` changes by less than `1e-10`
///   relatively (at most [`CONVERGE_STEPS`] steps), so the bound holds from
///   the first use, also for a layer evaluated or inverted before any
///   training (as PyTorch's spectral norm iterates at registration);
/// - in training mode, every direction (forward, inverse, inverse with
///   log-det) takes one step per new kernel value: a step when the kernel
///   differs from the one of the previous step, none when it is the same
///   (the kernel of the previous step is known by a 64-bit hash of its
///   values, the buffer `kernel_hash`, so a resumed run steps exactly as an
///   uninterrupted one).
///   So a layer trained through its inverse (`Inverse(layer)`) keeps the
///   bound as one trained forward does, and a forward followed by an
///   inverse of the same parameters uses one normalised kernel;
/// - in evaluation mode `u` stays as it is, so the normalised kernel is a
///   deterministic function of `K`.
pub struct SpectralNorm {
    out_channels: usize,
    in_channels: usize,
    operator: Operator,
    coeff: f64,
    u: Tensor,
    sigma: Tensor,
    /// The hash of the kernel of the last step, as two 32-bit halves in an
    /// f64 CPU tensor (exact in any layer dtype); zeros before the first.
    kernel_hash: Tensor,
    /// Serialises the read-compare-step of `kernel_hash` and `u`.
    stepping: Mutex<()>,
}

/// The linear map whose norm is bounded.
#[derive(Clone, Copy, Debug)]
enum Operator {
    /// A same-padded stride-1 `k x k` convolution on `(H, W)` images.
    Conv {
        kernel_size: usize,
        height: usize,
        width: usize,
    },
    /// A linear layer on vectors.
    Linear,
}

/// FNV-1a over the bit patterns of `values`, as two 32-bit halves.
fn fingerprint(values: &[f64]) -> [f64; 2] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for byte in v.to_bits().to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    [(h >> 32) as f64, (h & 0xffff_ffff) as f64]
}

/// The most power-iteration steps of the first normalisation.
pub const CONVERGE_STEPS: usize = 500;

impl SpectralNorm {
    /// Spectral normalisation for `(out, in, kernel_size, kernel_size)`
    /// kernels on `(height, width)` images with bound `coeff > 0`; `u` is a
    /// standard Gaussian `(1, in, H, W)` draw from `gen` (in f64, then cast),
    /// normalised to unit length. `sigma` starts at 0.
    pub fn new(
        (out_channels, in_channels): (usize, usize),
        kernel_size: usize,
        (height, width): (usize, usize),
        coeff: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(
            "SpectralNorm",
            in_channels.min(out_channels),
            (height, width),
        )?;
        if kernel_size.is_multiple_of(2) {
            return Err(Error::invalid(
                "SpectralNorm",
                format!("the kernel size k = {kernel_size} must be odd"),
            ));
        }
        let operator = Operator::Conv {
            kernel_size,
            height,
            width,
        };
        Self::build(
            (out_channels, in_channels),
            operator,
            coeff,
            dtype,
            device,
            gen,
        )
    }

    /// Spectral normalisation for `(out, in)` weights of a linear layer
    /// `y = x K^T` with bound `coeff > 0`; `u` is a standard Gaussian `(1,
    /// in)` draw from `gen` (in f64, then cast), normalised to unit length.
    pub fn linear(
        (out_features, in_features): (usize, usize),
        coeff: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "SpectralNorm",
                format!("needs non-empty weights, got ({out_features}, {in_features})"),
            ));
        }
        let features = (out_features, in_features);
        Self::build(features, Operator::Linear, coeff, dtype, device, gen)
    }

    fn build(
        (out_channels, in_channels): (usize, usize),
        operator: Operator,
        coeff: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if coeff.is_nan() || coeff <= 0.0 {
            return Err(Error::invalid(
                "SpectralNorm",
                format!("the bound coeff must be positive, got {coeff}"),
            ));
        }
        let shape = match operator {
            Operator::Conv { height, width, .. } => vec![1, in_channels, height, width],
            Operator::Linear => vec![1, in_channels],
        };
        let u = gen.randn(&shape, DType::F64, Device::Cpu)?;
        let u = normalized(&u)?
            .to_dtype(dtype)?
            .to_device(device)?
            .contiguous()?
            .detach();
        Ok(SpectralNorm {
            out_channels,
            in_channels,
            operator,
            coeff,
            u,
            sigma: Tensor::zeros(&[], dtype, device)?,
            kernel_hash: Tensor::zeros(&[2], DType::F64, Device::Cpu)?,
            stepping: Mutex::new(()),
        })
    }

    /// The bound `coeff` on the normalised operator norm.
    pub fn coeff(&self) -> f64 {
        self.coeff
    }

    /// The current power-iteration vector `u` `(1, I, H, W)` or `(1, I)`
    /// (the buffer itself).
    pub fn vector(&self) -> Tensor {
        self.u.clone()
    }

    /// The last `sigma` estimate computed (0 before the first).
    pub fn last_sigma(&self) -> Result<f64> {
        self.sigma.to_scalar()
    }

    /// The buffers `u`, `sigma` and `kernel_hash`.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("u".into(), self.u.clone()),
            ("sigma".into(), self.sigma.clone()),
            ("kernel_hash".into(), self.kernel_hash.clone()),
        ]
    }

    fn check_kernel(&self, kernel: &Tensor) -> Result<()> {
        let (o, i) = (self.out_channels, self.in_channels);
        let (expected, what) = match self.operator {
            Operator::Conv { kernel_size: k, .. } => {
                (vec![o, i, k, k], format!("({o}, {i}, {k}, {k}) kernel"))
            }
            Operator::Linear => (vec![o, i], format!("({o}, {i}) weight")),
        };
        if kernel.shape() != expected {
            return Err(Error::shape(
                "SpectralNorm",
                &[kernel.shape()],
                format!("expected a {what}"),
            ));
        }
        Ok(())
    }

    /// `M u` for `u (N, I, H, W)` (or `(N, I)`).
    fn apply(&self, u: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        match self.operator {
            Operator::Conv { kernel_size, .. } => {
                u.conv2d(kernel, None, &Conv2dParams::same(kernel_size))
            }
            Operator::Linear => u.matmul(&kernel.transpose(0, 1)?),
        }
    }

    /// `M^T v`: the adjoint of [`Self::apply`] (same kernel, padding `k/2`).
    fn apply_adjoint(&self, v: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        match self.operator {
            Operator::Conv { kernel_size, .. } => {
                let p = kernel_size / 2;
                v.conv_transpose2d(
                    kernel,
                    None,
                    &ConvTranspose2dParams {
                        padding: (p, p),
                        ..Default::default()
                    },
                )
            }
            Operator::Linear => v.matmul(kernel),
        }
    }

    /// One power-iteration step `v = M u / ||M u||`, `u <- M^T v / ||M^T v||`,
    /// without gradient; updates the buffer `u` in place.
    pub fn power_step(&self, kernel: &Tensor) -> Result<()> {
        self.check_kernel(kernel)?;
        no_grad(|| {
            let kernel = kernel.detach();
            let v = normalized(&self.apply(&self.u, &kernel)?)?;
            let u = self.apply_adjoint(&v, &kernel)?;
            // a zero kernel (a zero-initialised layer) maps everything to 0:
            // keep the unit vector rather than losing it
            if u.square()?.sum_all()?.to_scalar()? > 0.0 {
                self.u.set_data(&normalized(&u)?.contiguous()?)?;
            }
            Ok(())
        })
    }

    /// `sigma(K) = ||M u||_2` with the stored (detached) `u`, a rank-0 tensor
    /// differentiable in `kernel`; also stored (detached) as the buffer
    /// `sigma`. The squared norm is floored at `1e-30` before the root, so a
    /// zero kernel has a finite (zero) gradient.
    pub fn sigma(&self, kernel: &Tensor) -> Result<Tensor> {
        self.check_kernel(kernel)?;
        let sigma = self
            .apply(&self.u.detach(), kernel)?
            .square()?
            .sum_all()?
            .clamp(1e-30, f64::INFINITY)?
            .sqrt()?;
        no_grad(|| self.sigma.set_data(&sigma.detach()))?;
        Ok(sigma)
    }

    /// Runs power-iteration steps until `||M u||` changes by less than
    /// `1e-10` relatively, at most [`CONVERGE_STEPS`].
    pub fn converge(&self, kernel: &Tensor) -> Result<()> {
        let estimate = || -> Result<f64> {
            no_grad(|| {
                self.apply(&self.u, &kernel.detach())?
                    .square()?
                    .sum_all()?
                    .sqrt()?
                    .to_scalar()
            })
        };
        let mut previous = estimate()?;
        for _ in 0..CONVERGE_STEPS {
            self.power_step(kernel)?;
            let sigma = estimate()?;
            let settled = (sigma - previous).abs() <= 1e-10 * sigma.abs();
            previous = sigma;
            if settled || sigma == 0.0 {
                break;
            }
        }
        Ok(())
    }

    /// `K_hat = K / max(1, sigma(K) / coeff)`, differentiable in `kernel`
    /// (through `sigma` too when the bound is active). The vector `u` moves
    /// first as the type's docs say: to convergence on the first use, by one
    /// step per new kernel when `training`, not at all otherwise.
    pub fn normalize(&self, kernel: &Tensor, training: bool) -> Result<Tensor> {
        self.check_kernel(kernel)?;
        let guard = self
            .stepping
            .lock()
            .map_err(|_| Error::invalid("SpectralNorm", "poisoned state"))?;
        let first = self.sigma.to_scalar()? == 0.0;
        if first || training {
            let hash = fingerprint(&kernel.to_vec_f64()?);
            if first {
                self.converge(kernel)?;
            } else if self.kernel_hash.to_vec_f64()? != hash {
                self.power_step(kernel)?;
            }
            self.kernel_hash
                .set_data(&Tensor::from_vec(hash.to_vec(), &[2], Device::Cpu)?)?;
        }
        drop(guard);
        let factor = self
            .sigma(kernel)?
            .div_scalar(self.coeff)?
            .clamp(1.0, f64::INFINITY)?;
        kernel.div(&factor)
    }
}
