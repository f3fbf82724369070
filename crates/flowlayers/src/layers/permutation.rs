//! A fixed permutation of the channels (Glow's reverse and shuffle baselines).

use crate::flow::Flow;
use flowtensor::{Device, Error, Generator, Result, Tensor};

/// A fixed channel permutation `perm` of `0..C` (Glow, section 3.2 and its
/// ablation of 1x1 convolutions against reversing and shuffling).
///
/// On `x` of shape `(N, C, ...)` (images `(N, C, H, W)` or flat `(N, C)`):
/// - forward: `z[:, i] = x[:, perm[i]]`;
/// - inverse: `x[:, j] = z[:, inv[j]]` with `inv[perm[i]] = i`;
/// - log-det: 0 (the Jacobian is a permutation matrix, `|det| = 1`).
///
/// The permutation is the buffer `permutation`, its indices stored as floats
/// in an f64 CPU tensor of shape `(C,)` (whatever the input's dtype), and is
/// read from it on every call, so restoring the buffer from a checkpoint
/// restores the layer; a buffer that does not hold a permutation of `0..C`
/// is an error at the next call. No parameters.
pub struct Permutation {
    channels: usize,
    permutation: Tensor,
}

impl Permutation {
    /// `perm[i] = C - 1 - i`: the channel order reversed.
    pub fn reverse(channels: usize) -> Result<Self> {
        Self::from_indices(&(0..channels).rev().collect::<Vec<_>>())
    }

    /// A uniformly random permutation drawn from `gen`
    /// ([`Generator::permutation`]): the same seed gives the same permutation.
    pub fn shuffle(channels: usize, gen: &mut Generator) -> Result<Self> {
        Self::from_indices(&gen.permutation(channels))
    }

    /// The given permutation `perm` of `0..perm.len()` (`z[:, i] = x[:, perm[i]]`).
    pub fn from_indices(perm: &[usize]) -> Result<Self> {
        let channels = perm.len();
        if channels == 0 {
            return Err(Error::invalid("Permutation", "needs at least one channel"));
        }
        let as_floats: Vec<f64> = perm.iter().map(|&i| i as f64).collect();
        let layer = Permutation {
            channels,
            permutation: Tensor::from_vec(as_floats, &[channels], Device::Cpu)?,
        };
        layer.indices()?;
        Ok(layer)
    }

    /// The permutation `perm` read back from the buffer; an error unless it
    /// holds each of `0..C` exactly once.
    pub fn indices(&self) -> Result<Vec<usize>> {
        let values = self.permutation.to_vec_f64()?;
        let mut seen = vec![false; self.channels];
        let mut perm = Vec::with_capacity(values.len());
        for &v in &values {
            let i = v as usize;
            if v.fract() != 0.0 || v < 0.0 || i >= self.channels || seen[i] {
                return Err(Error::invalid(
                    "Permutation",
                    format!(
                        "the buffer {values:?} is not a permutation of 0..{}",
                        self.channels
                    ),
                ));
            }
            seen[i] = true;
            perm.push(i);
        }
        Ok(perm)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.rank() < 2 || x.shape()[1] != self.channels {
            return Err(Error::shape(
                "Permutation",
                &[x.shape()],
                format!("expected (batch, {}, ...)", self.channels),
            ));
        }
        Ok(())
    }

    /// Zero log-determinants for the batch of `x`.
    fn zero_logdet(x: &Tensor) -> Result<Tensor> {
        Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device())
    }
}

impl Flow for Permutation {
    fn name(&self) -> &'static str {
        "Permutation"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let z = x.index_select(1, &self.indices()?)?;
        Ok((z, Self::zero_logdet(x)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let mut inv = vec![0; self.channels];
        for (i, p) in self.indices()?.into_iter().enumerate() {
            inv[p] = i;
        }
        z.index_select(1, &inv)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.inverse(z)?, Self::zero_logdet(z)?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![("permutation".into(), self.permutation.clone())]
    }
}
