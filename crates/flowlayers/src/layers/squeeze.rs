//! Space-to-depth squeeze (RealNVP, Glow).

use crate::flow::Flow;
use flowtensor::{Error, Result, Tensor};

/// Glow's 2x2 squeeze: `(N, C, H, W) -> (N, 4C, H/2, W/2)`.
///
/// - forward: `z = x.reshape(N, C, H/2, 2, W/2, 2).permute(0, 1, 3, 5, 2, 4)
///   .reshape(N, 4C, H/2, W/2)`, so output channel `4c + 2i + j` holds the
///   pixels `(2h + i, 2w + j)` of input channel `c` (Glow's ordering);
/// - inverse: `x = z.reshape(N, C, 2, 2, H/2, W/2).permute(0, 1, 4, 2, 5, 3)
///   .reshape(N, C, H, W)`;
/// - log-det: `0` (a permutation of the coordinates).
///
/// The input must be 4-D with even height and width; the inverse needs a
/// channel count divisible by 4.
#[derive(Clone, Copy, Debug, Default)]
pub struct Squeeze;

impl Squeeze {
    pub fn new() -> Self {
        Squeeze
    }

    /// The forward's output shape for an input of shape `shape`
    /// (an error naming `Squeeze` unless 4-D with even height and width).
    pub fn output_shape(shape: &[usize]) -> Result<[usize; 4]> {
        match shape {
            &[n, c, h, w] if h.is_multiple_of(2) && w.is_multiple_of(2) => {
                Ok([n, 4 * c, h / 2, w / 2])
            }
            _ => Err(Error::shape(
                "Squeeze",
                &[shape],
                "expected (batch, channels, height, width) with even height and width",
            )),
        }
    }

    fn zero_logdet(t: &Tensor) -> Result<Tensor> {
        Tensor::zeros(&[t.shape()[0]], t.dtype(), t.device())
    }
}

impl Flow for Squeeze {
    fn name(&self) -> &'static str {
        "Squeeze"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let [n, c4, h2, w2] = Self::output_shape(x.shape())?;
        let c = c4 / 4;
        let z = x
            .reshape(&[n, c, h2, 2, w2, 2])?
            .permute(&[0, 1, 3, 5, 2, 4])?
            .reshape(&[n, c4, h2, w2])?;
        Ok((z, Self::zero_logdet(x)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        let &[n, c4, h2, w2] = z.shape() else {
            return Err(Error::shape(
                "Squeeze",
                &[z.shape()],
                "inverse expects (batch, 4 * channels, height / 2, width / 2)",
            ));
        };
        if !c4.is_multiple_of(4) {
            return Err(Error::shape(
                "Squeeze",
                &[z.shape()],
                "inverse expects a channel count divisible by 4",
            ));
        }
        let c = c4 / 4;
        z.reshape(&[n, c, 2, 2, h2, w2])?
            .permute(&[0, 1, 4, 2, 5, 3])?
            .reshape(&[n, c, 2 * h2, 2 * w2])
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.inverse(z)?, Self::zero_logdet(z)?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
