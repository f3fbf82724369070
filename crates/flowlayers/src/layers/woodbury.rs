//! Woodbury transformations (Lu and Huang, "Woodbury Transformations for
//! Deep Generative Flows", 2020): identity plus a low-rank update along one
//! axis of the image, with the log-determinant from Sylvester's identity and
//! the inverse from Woodbury's.

use crate::flow::{parameter, Flow};
use crate::layers::spectral_norm::{check_image, check_image_size};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "Woodbury";

/// The axis a [`Woodbury`] transform acts along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WoodburyAxis {
    /// The `C` channels at each pixel.
    Channel,
    /// The `H W` pixels of each channel (the spatial transform).
    Spatial,
    /// The `H` rows of each (channel, column): the memory-efficient variant's.
    Height,
    /// The `W` columns of each (channel, row).
    Width,
}

/// `z = (I + U V) x` along one axis of `x (N, C, H, W)`: with `A` the
/// axis' length and `x` seen as `(N, A, R)` (the axis first, the other two
/// flattened into `R`), `z_n = x_n + U (V x_n)` for `U` `(A, d)` and `V`
/// `(d, A)` (parameters `u`, `v`).
///
/// - log-det per sample, by Sylvester's identity
///   `det(I_A + U V) = det(I_d + V U)`, once per column of `R`:
///
///   ```text
///   log |det dz/dx| = R log |det(I_d + V U)|;
///   ```
///
/// - inverse by Woodbury's identity,
///   `x = z - U (I_d + V U)^{-1} V z` (one `d x d` solve).
///
/// The rank `d` is at most `A` (beyond it `U V` gains no rank).
/// `Channel` then `Spatial` is Lu and Huang's Woodbury transformation;
/// `Channel`, `Height`, `Width` their memory-efficient one. `U` and `V`
/// start at `0.05 randn` (zero would leave both without gradient).
pub struct Woodbury {
    axis: WoodburyAxis,
    channels: usize,
    height: usize,
    width: usize,
    u: Tensor,
    v: Tensor,
}

impl Woodbury {
    /// A rank-`rank` transform along `axis` of `(channels, height, width)`
    /// images, `U` then `V` drawn from `gen`.
    pub fn new(
        axis: WoodburyAxis,
        channels: usize,
        (height, width): (usize, usize),
        rank: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        let a = Self::axis_len(axis, (channels, height, width));
        if rank == 0 || rank > a {
            return Err(Error::invalid(
                NAME,
                format!(
                    "the rank must be in 1..={a} (the length of the {axis:?} axis of ({channels}, {height}, {width}) images; a larger rank adds parameters, not expressiveness), got {rank}"
                ),
            ));
        }
        let mut draw = |shape: &[usize]| -> Result<Tensor> {
            let t = gen
                .randn(shape, DType::F64, Device::Cpu)?
                .mul_scalar(0.05)?;
            parameter(t.to_dtype(dtype)?.to_device(device)?)
        };
        let u = draw(&[a, rank])?;
        let v = draw(&[rank, a])?;
        Ok(Woodbury {
            axis,
            channels,
            height,
            width,
            u,
            v,
        })
    }

    fn axis_len(axis: WoodburyAxis, (c, h, w): (usize, usize, usize)) -> usize {
        match axis {
            WoodburyAxis::Channel => c,
            WoodburyAxis::Spatial => h * w,
            WoodburyAxis::Height => h,
            WoodburyAxis::Width => w,
        }
    }

    /// The axis the transform acts along.
    pub fn axis(&self) -> WoodburyAxis {
        self.axis
    }

    /// `x (N, C, H, W)` as `(N, A, R)`.
    fn axis_first_layout(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = (x.shape()[0], self.channels, self.height, self.width);
        match self.axis {
            WoodburyAxis::Channel => x.reshape(&[n, c, h * w]),
            WoodburyAxis::Spatial => x.reshape(&[n, c, h * w])?.transpose(1, 2),
            WoodburyAxis::Height => x.permute(&[0, 2, 1, 3])?.reshape(&[n, h, c * w]),
            WoodburyAxis::Width => x.permute(&[0, 3, 1, 2])?.reshape(&[n, w, c * h]),
        }
    }

    /// `columns log |det(I + V U)|` (the matrix lemma) for each of `n`
    /// samples, `columns` the per-sample columns of the axis-first layout
    /// (the sample's values over the mixed axis's length, `U`'s rows).
    fn logdet(&self, n: usize) -> Result<Tensor> {
        let columns = self.channels * self.height * self.width / self.u.shape()[0];
        let (_, logdet) = self.capacitance()?.slogdet()?;
        logdet
            .mul_scalar(columns as f64)?
            .broadcast_as(&[n])?
            .contiguous()
    }

    /// The inverse of [`Self::axis_first_layout`].
    fn restore_layout(&self, y: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = (y.shape()[0], self.channels, self.height, self.width);
        match self.axis {
            WoodburyAxis::Channel => y.reshape(&[n, c, h, w]),
            WoodburyAxis::Spatial => y.transpose(1, 2)?.contiguous()?.reshape(&[n, c, h, w]),
            WoodburyAxis::Height => y
                .reshape(&[n, h, c, w])?
                .permute(&[0, 2, 1, 3])?
                .contiguous(),
            WoodburyAxis::Width => y
                .reshape(&[n, w, c, h])?
                .permute(&[0, 2, 3, 1])?
                .contiguous(),
        }
    }

    /// `I_d + V U`.
    fn capacitance(&self) -> Result<Tensor> {
        let d = self.u.shape()[1];
        Tensor::eye(d, self.u.dtype(), self.u.device())?.add(&self.v.matmul(&self.u)?)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(
            NAME,
            x,
            self.channels,
            (self.height, self.width),
            self.u.dtype(),
        )
    }
}

impl Flow for Woodbury {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let xa = self.axis_first_layout(x)?;
        let za = xa.add(&self.u.matmul(&self.v.matmul(&xa)?)?)?;
        Ok((self.restore_layout(&za)?, self.logdet(x.shape()[0])?))
    }

    /// The inverse and minus the forward's log-determinant, which does not
    /// depend on the input (no forward pass over the result).
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.inverse(z)?;
        Ok((x, self.logdet(z.shape()[0])?.neg()?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let za = self.axis_first_layout(z)?;
        let correction = self
            .u
            .matmul(&self.capacitance()?.solve(&self.v.matmul(&za)?)?)?;
        self.restore_layout(&za.sub(&correction)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("u".into(), self.u.clone()), ("v".into(), self.v.clone())]
    }
}
