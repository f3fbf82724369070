//! Emerging convolutions (Hoogeboom, van den Berg and Welling, "Emerging
//! Convolutions for Generative Normalizing Flows", 2019): two
//! autoregressive 3x3 convolutions whose composition has the receptive field
//! of a full 3x3 convolution, with an exact log-determinant and an inverse
//! by back-substitution.

use crate::flow::{parameter, Flow};
use crate::layers::spectral_norm::{check_image, check_image_size};
use flowtensor::{Conv2dParams, DType, Device, Generator, Result, Tensor};

const NAME: &str = "EmergingConv";

/// The mask of the first convolution, `(C, C, 3, 3)`: the upper-left 2x2
/// quadrant of taps (offsets `(-1, -1), (-1, 0), (0, -1), (0, 0)`, all at
/// raster-earlier pixels or the centre), with the centre tap lower
/// triangular in the channels (`c' <= c`). The second convolution's mask is
/// this one rotated by 180 degrees in space with the channel order reversed:
/// the lower-right quadrant and an upper triangular centre.
pub fn quadrant_mask(channels: usize, dtype: DType, device: Device) -> Result<Tensor> {
    let c = channels;
    let mut m = vec![0.0f64; c * c * 9];
    for o in 0..c {
        for i in 0..c {
            for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                if (a, b) != (1, 1) || i <= o {
                    m[((o * c + i) * 3 + a) * 3 + b] = 1.0;
                }
            }
        }
    }
    Tensor::from_vec(m, &[c, c, 3, 3], Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// The emerging convolution: two masked 3x3 same convolutions,
/// `z = K2 * (K1 * x)`.
///
/// - `K1 = W1 .* m`, `m` the upper-left quadrant mask of [`quadrant_mask`]
///   (lower-triangular centre), and `K2 = W2 .* m'`, `m'` its 180-degree
///   rotation with reversed channels (lower-right quadrant, upper-triangular
///   centre); parameters `w1`, `w2` `(C, C, 3, 3)`, buffers `mask1`, `mask2`.
///   The two quadrants compose to a full 3x3 receptive field.
/// - Each convolution's Jacobian is triangular (in raster order for `K1`,
///   the reverse for `K2`) with the centre diagonal `K[c, c, 1, 1]` at every
///   pixel, so
///
///   ```text
///   log |det dz/dx| = H W sum_c (log |K1[c, c, 1, 1]| + log |K2[c, c, 1, 1]|).
///   ```
///
/// - Inverse: `y = K2^{-1} z` by back-substitution in reverse raster order
///   (the rotated problem of `K1`'s kind), then `x = K1^{-1} y` in raster
///   order, pixel by pixel and channel by channel, in f64
///   ([`flowtensor::Tensor::quadrant_solve`]: on the CPU, vectorised over
///   the images of a batch, or over the pixels of an anti-diagonal when the
///   batch is too small to fill the vector lanes, reading the flipped views
///   in place; on CUDA, one block per image sweeping the wavefronts). Not
///   differentiable.
///
/// Initialised near the identity: `W = I (centre) + 0.01 randn`.
pub struct EmergingConv {
    channels: usize,
    height: usize,
    width: usize,
    w1: Tensor,
    w2: Tensor,
    mask1: Tensor,
    mask2: Tensor,
}

impl EmergingConv {
    /// A layer over `channels` channels of `(height, width)` images; `w1`
    /// then `w2` drawn from `gen`.
    pub fn new(
        channels: usize,
        (height, width): (usize, usize),
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        let identity = Tensor::eye(channels, DType::F64, Device::Cpu)?
            .reshape(&[channels, channels, 1, 1])?
            .pad(&[(1, 1), (1, 1)], flowtensor::PadMode::Zero)?;
        let mut draw = || -> Result<Tensor> {
            let w = gen
                .randn(&[channels, channels, 3, 3], DType::F64, Device::Cpu)?
                .mul_scalar(0.01)?
                .add(&identity)?;
            parameter(w.to_dtype(dtype)?.to_device(device)?)
        };
        let (w1, w2) = (draw()?, draw()?);
        let mask1 = quadrant_mask(channels, dtype, device)?;
        let mask2 = mask1.flip(&[0, 1, 2, 3])?.contiguous()?;
        Ok(EmergingConv {
            channels,
            height,
            width,
            w1,
            w2,
            mask1,
            mask2,
        })
    }

    /// The masked kernels `(K1, K2)`.
    pub fn kernels(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.w1.mul(&self.mask1)?, self.w2.mul(&self.mask2)?))
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(
            NAME,
            x,
            self.channels,
            (self.height, self.width),
            self.w1.dtype(),
        )
    }

    /// `x` from `z = K2 * (K1 * x)`: two triangular (quadrant) solves in
    /// f64 on the detached kernels.
    fn solve(&self, z: &Tensor, k1: &Tensor, k2: &Tensor) -> Result<Tensor> {
        let f64s = |t: &Tensor| t.detach().to_dtype(DType::F64);
        // K2 is K1's kind on images rotated by 180 degrees with reversed
        // channels: its kernel flipped in all four dimensions
        let all = [0, 1, 2, 3];
        let image = [1, 2, 3];
        let y = f64s(z)?
            .flip(&image)?
            .quadrant_solve(&f64s(k2)?.flip(&all)?)?
            .flip(&image)?;
        y.quadrant_solve(&f64s(k1)?)?.to_dtype(z.dtype())
    }

    /// The log-determinant of both convolutions for each of `n` samples.
    fn logdet(&self, k1: &Tensor, k2: &Tensor, n: usize) -> Result<Tensor> {
        let logdet = self.centre_logdet(k1)?.add(&self.centre_logdet(k2)?)?;
        logdet.broadcast_as(&[n])?.contiguous()
    }

    /// `H W sum_c log |K[c, c, 1, 1]|` of one masked kernel, a scalar.
    fn centre_logdet(&self, kernel: &Tensor) -> Result<Tensor> {
        let c = self.channels;
        let eye = Tensor::eye(c, kernel.dtype(), kernel.device())?;
        kernel
            .narrow(2, 1, 1)?
            .narrow(3, 1, 1)?
            .reshape(&[c, c])?
            .mul(&eye)?
            .sum(&[1], false)?
            .abs()?
            .log()?
            .sum_all()?
            .mul_scalar((self.height * self.width) as f64)
    }
}

impl Flow for EmergingConv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let (k1, k2) = self.kernels()?;
        let same = Conv2dParams::same(3);
        let z = x.conv2d(&k1, None, &same)?.conv2d(&k2, None, &same)?;
        Ok((z, self.logdet(&k1, &k2, x.shape()[0])?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let (k1, k2) = self.kernels()?;
        self.solve(z, &k1, &k2)
    }

    /// The inverse and minus the forward's log-determinant, which does not
    /// depend on the input (no forward pass over the result).
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let (k1, k2) = self.kernels()?;
        let logdet = self.logdet(&k1, &k2, z.shape()[0])?.neg()?;
        Ok((self.solve(z, &k1, &k2)?, logdet))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("w1".into(), self.w1.clone()),
            ("w2".into(), self.w2.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("mask1".into(), self.mask1.clone()),
            ("mask2".into(), self.mask2.clone()),
        ]
    }
}
