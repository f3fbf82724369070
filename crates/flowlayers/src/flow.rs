//! The [`Flow`] trait: an invertible map with an exact log-determinant.

use flowtensor::{Result, Tensor};

/// An invertible layer `z = f(x)` on batches (the first dimension is the batch).
///
/// Parameters are leaf variables (see [`flowtensor::Tensor::as_variable`]);
/// optimizers update them in place with `set_data`, so layers take `&self`
/// everywhere and keep mutable state (data-dependent initialisation,
/// training mode) in tensors or atomics.
pub trait Flow: Send + Sync {
    /// The layer's name, used in errors.
    fn name(&self) -> &'static str;

    /// `z = f(x)` and `log |det df/dx|` per sample (shape `[batch]`).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// `x = f^{-1}(z)`.
    fn inverse(&self, z: &Tensor) -> Result<Tensor>;

    /// `x = f^{-1}(z)` and `log |det d f^{-1}/dz|` per sample. The default runs
    /// the forward on the result; layers override it where the inverse's
    /// log-determinant is cheaper.
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.inverse(z)?;
        let (_, logdet) = self.forward(&x)?;
        Ok((x, logdet.neg()?))
    }

    /// Trainable parameters by name.
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-trainable state saved with the parameters (initialisation flags,
    /// fixed permutations, power-iteration vectors), by name.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Switches between training and evaluation behaviour (default: none).
    fn set_training(&self, _training: bool) {}
}

/// Prefixes every name with `prefix.`.
pub fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

/// The parameters of every layer of `layers`, each prefixed with its layer's name.
pub(crate) fn layers_parameters(layers: &[(String, &dyn Flow)]) -> Vec<(String, Tensor)> {
    let each = layers
        .iter()
        .map(|(name, layer)| prefixed(name, layer.parameters()));
    each.flatten().collect()
}

/// The buffers of every layer of `layers`, each prefixed with its layer's name.
pub(crate) fn layers_buffers(layers: &[(String, &dyn Flow)]) -> Vec<(String, Tensor)> {
    let each = layers
        .iter()
        .map(|(name, layer)| prefixed(name, layer.buffers()));
    each.flatten().collect()
}

/// A fresh leaf variable holding a copy of `t`'s values (never sharing its storage).
pub fn parameter(t: Tensor) -> Result<Tensor> {
    Ok(t.copy()?.as_variable())
}
