//! Dequantisation: uniform, and variational with a conditional flow
//! (Ho et al., Flow++, 2019; the convolution-exponential paper's
//! `--dequantize_distribution flow`).

use flowlayers::base::{standard_normal_log_density, sum_per_sample};
use flowlayers::layers::{Conditioner, Conv2d, ZeroConv2d};
use flowlayers::prefixed;
use flowtensor::{DType, Device, Generator, Result, Tensor};

/// One conditional affine coupling of [`VariationalDequantizer`] with a
/// checkerboard mask.
struct MaskedCoupling {
    /// 1 on the pixels that pass unchanged, `(1, 1, H, W)`.
    mask: Tensor,
    hidden: Conv2d,
    out: ZeroConv2d,
}

/// `q(u | x)` on `[0, 1)^D`: the push-forward of `eps ~ N(0, I)` through
/// `K` conditional affine couplings and a sigmoid.
///
/// The context is `c = relu(conv3x3(relu(conv3x3(x / 2^n - 1/2))))` with
/// `hidden` channels. Coupling `k` keeps the pixels of one checkerboard
/// colour (`m = 1`, alternating with `k`) and maps the others:
/// `h' = m h + (1 - m) (h + t) sigmoid(s + 2)` with
/// `(t, s) = ZeroConv3x3(relu(conv3x3(cat(m h, c))))`; its log-det is
/// `sum (1 - m) log sigmoid(s + 2)`. Finally `u = sigmoid(h_K)`, with
/// log-det `sum log sigmoid(h_K) + log sigmoid(-h_K)`. So
/// `log q(u | x) = log N(eps) - sum of the log-dets`.
///
/// Parameters: `context.{0,1}.*`, `couplings.{k}.{hidden,out}.*`.
pub struct VariationalDequantizer {
    context: [Conv2d; 2],
    couplings: Vec<MaskedCoupling>,
    n_bits: u32,
}

impl VariationalDequantizer {
    /// A dequantiser for `(C, H, W)` images of `n_bits` bits, with `hidden`
    /// channels and `steps` couplings.
    pub fn new(
        [c, h, w]: [usize; 3],
        n_bits: u32,
        hidden: usize,
        steps: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let context = [
            Conv2d::new(c, hidden, 3, dtype, device, gen)?,
            Conv2d::new(hidden, hidden, 3, dtype, device, gen)?,
        ];
        let couplings = (0..steps)
            .map(|k| {
                let colour: Vec<f64> = (0..h * w)
                    .map(|i| f64::from(u8::from((i / w + i % w + k) % 2 == 0)))
                    .collect();
                Ok(MaskedCoupling {
                    mask: Tensor::from_vec(colour, &[1, 1, h, w], Device::Cpu)?
                        .to_dtype(dtype)?
                        .to_device(device)?,
                    hidden: Conv2d::new(c + hidden, hidden, 3, dtype, device, gen)?,
                    out: ZeroConv2d::new(hidden, 2 * c, dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VariationalDequantizer {
            context,
            couplings,
            n_bits,
        })
    }

    /// `(u, log q(u | x))` for integer-valued `x (N, C, H, W)`, one draw per image.
    pub fn sample(&self, x: &Tensor, gen: &mut Generator) -> Result<(Tensor, Tensor)> {
        let eps = self.noise(x.shape(), x, gen)?;
        self.transform(x, &eps)
    }

    /// The standard normal draw behind [`VariationalDequantizer::sample`],
    /// of `shape` with `like`'s dtype and device.
    pub fn noise(&self, shape: &[usize], like: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        gen.randn(shape, like.dtype(), like.device())
    }

    /// `(u, log q(u | x))` for the noise `eps` (same shape as `x`): the map
    /// that [`VariationalDequantizer::sample`] applies to its draw.
    pub fn transform(&self, x: &Tensor, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let scaled = x
            .div_scalar(f64::from(1u32 << self.n_bits))?
            .add_scalar(-0.5)?;
        let c = self.context[1].forward_relu(&self.context[0].forward_relu(&scaled)?)?;
        let dims: Vec<usize> = (1..x.rank()).collect();
        let mut log_q = sum_per_sample(&standard_normal_log_density(eps)?)?;
        let mut h = eps.clone();
        for coupling in &self.couplings {
            let kept = h.mul(&coupling.mask)?;
            let free = coupling.mask.affine(-1.0, 1.0)?;
            let net_in = Tensor::cat(&[&kept, &c], 1)?;
            let out = coupling
                .out
                .forward(&coupling.hidden.forward_relu(&net_in)?)?;
            let channels = x.shape()[1];
            let t = out.narrow(1, 0, channels)?;
            let log_scale = out
                .narrow(1, channels, channels)?
                .add_scalar(2.0)?
                .log_sigmoid()?;
            let moved = h.add(&t)?.mul(&log_scale.exp()?)?;
            h = kept.add(&moved.mul(&free)?)?;
            log_q = log_q.sub(&log_scale.mul(&free)?.sum(&dims, false)?)?;
        }
        let u = h.sigmoid()?;
        let log_jac = h.log_sigmoid()?.add(&h.neg()?.log_sigmoid()?)?;
        log_q = log_q.sub(&log_jac.sum(&dims, false)?)?;
        Ok((u, log_q))
    }

    /// Trainable parameters by name.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = Vec::new();
        for (i, conv) in self.context.iter().enumerate() {
            all.extend(prefixed(&format!("context.{i}"), conv.parameters()));
        }
        for (k, coupling) in self.couplings.iter().enumerate() {
            all.extend(prefixed(
                &format!("couplings.{k}.hidden"),
                coupling.hidden.parameters(),
            ));
            all.extend(prefixed(
                &format!("couplings.{k}.out"),
                coupling.out.parameters(),
            ));
        }
        all
    }
}

/// `u ~ U(0, 1)` of `shape`, with `like`'s dtype and device (log-density 0).
pub fn uniform_noise(shape: &[usize], like: &Tensor, gen: &mut Generator) -> Result<Tensor> {
    gen.uniform(shape, 0.0, 1.0, like.dtype(), like.device())
}
