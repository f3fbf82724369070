//! Composition: a sequence of flows and the inverse of a flow.

use crate::flow::{prefixed, Flow};
use flowtensor::{profile, Result, Tensor};

/// `f_n o ... o f_1`: forward applies the layers in order and sums their
/// log-determinants; inverse applies their inverses in reverse order.
pub struct Sequential {
    layers: Vec<Box<dyn Flow>>,
}

impl Sequential {
    pub fn new(layers: Vec<Box<dyn Flow>>) -> Self {
        Sequential { layers }
    }

    pub fn layers(&self) -> &[Box<dyn Flow>] {
        &self.layers
    }
}

impl Flow for Sequential {
    fn name(&self) -> &'static str {
        "Sequential"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let mut total: Option<Tensor> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let name = format_args!("{i}:{}", layer.name());
            let (next, logdet) = profile::scope(name, || layer.forward(&h))?;
            total = Some(match total {
                Some(t) => t.add(&logdet)?,
                None => logdet,
            });
            h = next;
        }
        let total = match total {
            Some(t) => t,
            None => Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device())?,
        };
        Ok((h, total))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.layers
            .iter()
            .rev()
            .try_fold(z.clone(), |h, layer| layer.inverse(&h))
    }

    /// The layers' inverses in reverse order, summing their own inverse
    /// log-determinants (no forward pass over the result).
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = z.clone();
        let mut total = Tensor::zeros(&[z.shape()[0]], z.dtype(), z.device())?;
        for layer in self.layers.iter().rev() {
            let (prev, logdet) = layer.inverse_with_logdet(&h)?;
            total = total.add(&logdet)?;
            h = prev;
        }
        Ok((h, total))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let named = self.layers.iter().enumerate();
        named
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.parameters()))
            .collect()
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let named = self.layers.iter().enumerate();
        named
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.buffers()))
            .collect()
    }

    fn set_training(&self, training: bool) {
        self.layers.iter().for_each(|l| l.set_training(training));
    }
}

/// The inverse of a flow: forward is the wrapped flow's inverse (with its
/// log-determinant), inverse is its forward.
pub struct Inverse(pub Box<dyn Flow>);

impl Flow for Inverse {
    fn name(&self) -> &'static str {
        "Inverse"
    }
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.inverse_with_logdet(x)
    }
    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(z)?.0)
    }
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.forward(z)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.0.parameters()
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.0.buffers()
    }
    fn set_training(&self, training: bool) {
        self.0.set_training(training)
    }
}
