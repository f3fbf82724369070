//! Coupling layers on vectors (NICE, RealNVP) with an MLP conditioner.

use super::conditional::{without_context, ConditionalFlow};
use super::nn::{Activation, Mlp, MlpConfig};
use super::{check_context, check_vector, zero_logdet};
use crate::flow::{prefixed, Flow};
use crate::layers::ScaleFn;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// Which features a coupling transforms (`true`) and which pass unchanged
/// and condition the transformation (`false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouplingMask {
    transformed: Vec<bool>,
}

impl CouplingMask {
    /// The first `floor(D / 2)` features condition, the others are transformed.
    pub fn halves(features: usize) -> Self {
        CouplingMask {
            transformed: (0..features).map(|i| i >= features / 2).collect(),
        }
    }

    /// Even features condition, odd ones are transformed.
    pub fn alternating(features: usize) -> Self {
        CouplingMask {
            transformed: (0..features).map(|i| i % 2 == 1).collect(),
        }
    }

    /// `floor(D / 2)` conditioning features chosen uniformly at random by a
    /// generator with this seed; the others are transformed.
    pub fn random(features: usize, seed: u64) -> Self {
        let perm = Generator::new(seed).permutation(features);
        let mut transformed = vec![true; features];
        for &i in &perm[..features / 2] {
            transformed[i] = false;
        }
        CouplingMask { transformed }
    }

    /// The mask with `transformed[i]` saying whether feature `i` is transformed.
    pub fn from_transformed(transformed: Vec<bool>) -> Self {
        CouplingMask { transformed }
    }

    /// The complementary mask (the conditioning and transformed features swapped).
    pub fn flipped(&self) -> Self {
        CouplingMask {
            transformed: self.transformed.iter().map(|t| !t).collect(),
        }
    }

    pub fn features(&self) -> usize {
        self.transformed.len()
    }

    /// Whether each feature is transformed.
    pub fn transformed(&self) -> &[bool] {
        &self.transformed
    }

    /// The indices of the features that condition (pass unchanged), in order.
    pub fn conditioning_indices(&self) -> Vec<usize> {
        self.indices(false)
    }

    /// The indices of the transformed features, in order.
    pub fn transformed_indices(&self) -> Vec<usize> {
        self.indices(true)
    }

    /// For each feature, its position in `cat(x_I, x_T)` (the order in which
    /// couplings compute): `index_select(1, &restore)` undoes the split.
    pub(crate) fn restore(&self) -> Vec<usize> {
        let order = self.indices(false).into_iter().chain(self.indices(true));
        let mut restore = vec![0; self.features()];
        for (position, feature) in order.enumerate() {
            restore[feature] = position;
        }
        restore
    }

    /// The indices of the features with `transformed == which`.
    fn indices(&self, which: bool) -> Vec<usize> {
        (0..self.features())
            .filter(|&i| self.transformed[i] == which)
            .collect()
    }
}

/// The conditioner network of a vector coupling or MAF: hidden layers and
/// the context size. Its output layer starts at zero, so the layer starts at
/// the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Units per hidden layer.
    pub hidden_features: usize,
    /// Number of hidden layers.
    pub hidden_layers: usize,
    pub activation: Activation,
    /// `C`, the size of the context vector the layer is conditioned on (0: none).
    pub context_features: usize,
}

impl Default for NetConfig {
    /// 2 hidden layers of 64 units, ReLU, no context.
    fn default() -> Self {
        NetConfig {
            hidden_features: 64,
            hidden_layers: 2,
            activation: Activation::Relu,
            context_features: 0,
        }
    }
}

/// The shared machinery of [`AffineCoupling`] and [`AdditiveCoupling`].
struct Core {
    name: &'static str,
    features: usize,
    dtype: DType,
    identity: Vec<usize>,
    transformed: Vec<usize>,
    /// Feature `j` of `cat(x_I, x_T)` order is entry `restore[j]`.
    restore: Vec<usize>,
    net: Mlp,
    scale: Option<ScaleFn>,
    mask: CouplingMask,
}

impl Core {
    fn new(
        name: &'static str,
        mask: CouplingMask,
        scale: Option<ScaleFn>,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let (identity, transformed) = (mask.indices(false), mask.indices(true));
        if identity.is_empty() || transformed.is_empty() {
            return Err(Error::invalid(
                name,
                format!(
                    "the mask {:?} must leave at least one feature unchanged and transform at least one",
                    mask.transformed
                ),
            ));
        }
        let per_feature = if scale.is_some() { 2 } else { 1 };
        let config = MlpConfig {
            in_features: identity.len(),
            out_features: per_feature * transformed.len(),
            hidden_features: net.hidden_features,
            hidden_layers: net.hidden_layers,
            context_features: net.context_features,
            activation: net.activation,
            zero_output: true,
        };
        let restore = mask.restore();
        Ok(Core {
            name,
            features: mask.features(),
            dtype,
            identity,
            transformed,
            restore,
            net: Mlp::new(&config, dtype, device, gen)?,
            scale,
            mask,
        })
    }

    fn check(&self, x: &Tensor, context: Option<&Tensor>) -> Result<()> {
        check_vector(self.name, self.features, self.dtype, x)?;
        check_context(
            self.name,
            self.net.config().context_features,
            x.shape()[0],
            self.dtype,
            context,
        )
    }

    /// The shift `(N, D_T)` and log-scale (affine only) for the conditioning part.
    fn params(&self, x1: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let h = self.net.forward(x1, context)?;
        let d2 = self.transformed.len();
        let shift = h.narrow(1, 0, d2)?;
        let log_scale = match self.scale {
            Some(scale) => Some(scale.log_scale(&h.narrow(1, d2, d2)?)?),
            None => None,
        };
        Ok((shift, log_scale))
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x, context)?;
        let x1 = x.index_select(1, &self.identity)?;
        let x2 = x.index_select(1, &self.transformed)?;
        let (shift, log_scale) = self.params(&x1, context)?;
        let (z2, logdet) = match log_scale {
            Some(s) => (x2.mul(&s.exp()?)?.add(&shift)?, s.sum(&[1], false)?),
            None => (x2.add(&shift)?, zero_logdet(x)?),
        };
        let z = Tensor::cat(&[&x1, &z2], 1)?.index_select(1, &self.restore)?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(z, context)?;
        let z1 = z.index_select(1, &self.identity)?;
        let z2 = z.index_select(1, &self.transformed)?;
        let (shift, log_scale) = self.params(&z1, context)?;
        let (x2, logdet) = match log_scale {
            Some(s) => (
                z2.sub(&shift)?.mul(&s.neg()?.exp()?)?,
                s.sum(&[1], false)?.neg()?,
            ),
            None => (z2.sub(&shift)?, zero_logdet(z)?),
        };
        let x = Tensor::cat(&[&z1, &x2], 1)?.index_select(1, &self.restore)?;
        Ok((x, logdet))
    }
}

/// Affine coupling on `(N, D)` (Dinh, Sohl-Dickstein and Bengio, "Density
/// estimation using Real NVP", 2017), with a [`CouplingMask`] splitting the
/// features into a conditioning part `x_I` and a transformed part `x_T`, and
/// an [`Mlp`] conditioner `h = net(x_I; c)` (`2 D_T` outputs: the shift `t`
/// then the raw scale `s`, zero-initialised output layer):
///
/// - forward: `z_I = x_I`, `z_T = x_T exp(l) + t` with the bounded
///   `l = scale.log_scale(s)` ([`ScaleFn`]; `ExpTanh` keeps `l` in `(-2, 2)`
///   and starts at the identity);
/// - inverse: `x_T = (z_T - t) exp(-l)`, `t`, `l` from `net(z_I; c)`;
/// - log-det: `sum(l)` per sample.
///
/// Parameters `net.layer{l}.weight`, `net.layer{l}.bias`.
pub struct AffineCoupling(Core);

impl AffineCoupling {
    /// An affine coupling on `mask.features()` features; `net.context_features
    /// > 0` makes it conditional ([`ConditionalFlow`]).
    pub fn new(
        mask: CouplingMask,
        scale: ScaleFn,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Core::new("AffineCoupling", mask, Some(scale), net, dtype, device, gen).map(AffineCoupling)
    }

    pub fn mask(&self) -> &CouplingMask {
        &self.0.mask
    }

    pub fn net(&self) -> &Mlp {
        &self.0.net
    }
}

/// Additive coupling on `(N, D)` (Dinh, Krueger and Bengio, "NICE", 2015):
/// with the split and conditioner of [`AffineCoupling`] (`D_T` outputs, the
/// shift `t`):
///
/// - forward: `z_I = x_I`, `z_T = x_T + t(x_I; c)`;
/// - inverse: `x_T = z_T - t(z_I; c)`;
/// - log-det: 0 (volume preserving).
///
/// Parameters `net.layer{l}.weight`, `net.layer{l}.bias`.
pub struct AdditiveCoupling(Core);

impl AdditiveCoupling {
    /// An additive coupling on `mask.features()` features; `net.context_features
    /// > 0` makes it conditional ([`ConditionalFlow`]).
    pub fn new(
        mask: CouplingMask,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Core::new("AdditiveCoupling", mask, None, net, dtype, device, gen).map(AdditiveCoupling)
    }

    pub fn mask(&self) -> &CouplingMask {
        &self.0.mask
    }

    pub fn net(&self) -> &Mlp {
        &self.0.net
    }
}

macro_rules! coupling_flow {
    ($layer:ident) => {
        impl ConditionalFlow for $layer {
            fn context_features(&self) -> usize {
                self.0.net.config().context_features
            }
            fn forward_given(
                &self,
                x: &Tensor,
                context: Option<&Tensor>,
            ) -> Result<(Tensor, Tensor)> {
                self.0.forward(x, context)
            }
            fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
                Ok(self.0.inverse(z, context)?.0)
            }
            fn inverse_with_logdet_given(
                &self,
                z: &Tensor,
                context: Option<&Tensor>,
            ) -> Result<(Tensor, Tensor)> {
                self.0.inverse(z, context)
            }
        }

        impl Flow for $layer {
            fn name(&self) -> &'static str {
                self.0.name
            }
            without_context!();
            fn parameters(&self) -> Vec<(String, Tensor)> {
                prefixed("net", self.0.net.parameters())
            }
        }
    };
}

coupling_flow!(AffineCoupling);
coupling_flow!(AdditiveCoupling);
