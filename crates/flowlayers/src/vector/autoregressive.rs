//! The masked autoregressive flow (MAF).

use super::conditional::{without_context, ConditionalFlow};
use super::coupling::NetConfig;
use super::nn::{Made, MadeConfig, MadeOrder};
use super::{check_context, check_vector};
use crate::flow::{prefixed, Flow};
use crate::layers::ScaleFn;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "MaskedAutoregressive";

/// Affine masked autoregressive flow (Papamakarios, Pavlakou and Murray,
/// "Masked Autoregressive Flow for Density Estimation", 2017) on `(N, D)`,
/// the density direction as in nflows: a [`Made`] with 2 outputs per
/// feature (`P = 2`: the shift `t_i`, then the raw scale `s_i`;
/// zero-initialised output layer, so the layer starts at the identity)
/// gives, for each feature `i`, parameters that depend only on the features
/// before `i` in the [`MadeOrder`] (and on the context `c`):
///
/// - forward (one MADE pass): `z_i = x_i exp(l_i) + t_i`, with
///   `l = scale.log_scale(s)` bounded ([`ScaleFn`]);
/// - log-det: `sum_i l_i` (the Jacobian is triangular in the order);
/// - inverse (`D` MADE passes, all on the device): start from `x = 0` and
///   repeat `x = (z - t(x)) exp(-l(x))`; after pass `k` the first `k`
///   features in the order are exact, so `D` passes give `x` exactly, and
///   the last pass's `l` the inverse log-det `-sum_i l_i`.
///
/// The inverse autoregressive flow (IAF, Kingma et al. 2016) is
/// `Inverse(Box::new(maf))`: sampling in one pass, the density in `D`.
/// Parameters `made.layer{l}.weight`, `made.layer{l}.bias` (and
/// `made.context.*`); buffers `made.layer{l}.mask`.
pub struct MaskedAutoregressive {
    features: usize,
    dtype: DType,
    made: Made,
    scale: ScaleFn,
}

impl MaskedAutoregressive {
    /// A MAF on `features` features in the given order, with a MADE of
    /// `net.hidden_layers` hidden layers of `net.hidden_features` units,
    /// conditioned on `net.context_features` context features (0: none).
    pub fn new(
        features: usize,
        order: MadeOrder,
        scale: ScaleFn,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let config = MadeConfig {
            features,
            hidden_features: net.hidden_features,
            hidden_layers: net.hidden_layers,
            params_per_feature: 2,
            context_features: net.context_features,
            order,
            activation: net.activation,
            zero_output: true,
        };
        Ok(MaskedAutoregressive {
            features,
            dtype,
            made: Made::new(&config, dtype, device, gen)?,
            scale,
        })
    }

    /// The conditioner.
    pub fn made(&self) -> &Made {
        &self.made
    }

    fn check(&self, x: &Tensor, context: Option<&Tensor>) -> Result<()> {
        check_vector(NAME, self.features, self.dtype, x)?;
        check_context(
            NAME,
            self.made.config().context_features,
            x.shape()[0],
            self.dtype,
            context,
        )
    }

    /// The shift and log-scale `(N, D)` given `x`.
    fn params(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let mut params = self.made.forward_by_param(x, context)?.into_iter();
        let missing = || Error::invalid(NAME, "its MADE gives fewer than 2 parameters");
        let shift = params.next().ok_or_else(missing)?;
        let raw = params.next().ok_or_else(missing)?;
        Ok((shift, self.scale.log_scale(&raw)?))
    }
}

impl ConditionalFlow for MaskedAutoregressive {
    fn context_features(&self) -> usize {
        self.made.config().context_features
    }

    fn forward_given(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x, context)?;
        let (shift, log_scale) = self.params(x, context)?;
        let z = x.mul(&log_scale.exp()?)?.add(&shift)?;
        Ok((z, log_scale.sum(&[1], false)?))
    }

    fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.inverse_with_logdet_given(z, context)?.0)
    }

    fn inverse_with_logdet_given(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.check(z, context)?;
        let (shift, mut log_scale) = self.params(&z.zeros_like()?, context)?;
        let mut x = z.sub(&shift)?.mul(&log_scale.neg()?.exp()?)?;
        for _ in 1..self.features {
            let (shift, s) = self.params(&x, context)?;
            x = z.sub(&shift)?.mul(&s.neg()?.exp()?)?;
            log_scale = s;
        }
        let logdet = log_scale.sum(&[1], false)?.neg()?;
        Ok((x, logdet))
    }
}

impl Flow for MaskedAutoregressive {
    fn name(&self) -> &'static str {
        NAME
    }
    without_context!();
    fn parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("made", self.made.parameters())
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("made", self.made.buffers())
    }
}
