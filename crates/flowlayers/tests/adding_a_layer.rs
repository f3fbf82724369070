//! The worked example of README's "Adding a layer": a new layer in one file
//! and one test.

use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::{parameter, Flow};
use flowtensor::{DType, Device, Result, Tensor};

/// Leaky-ReLU flow with a learned negative slope `a = exp(log_a)`:
/// - forward: `z = x` where `x > 0`, `a x` elsewhere;
/// - inverse: `x = z` where `z > 0`, `z / a` elsewhere;
/// - log-det: `log a` times the number of negative entries of the sample.
struct LeakyRelu {
    log_a: Tensor,
}

impl LeakyRelu {
    fn new(dtype: DType) -> Result<Self> {
        Ok(LeakyRelu {
            log_a: parameter(Tensor::full(-1.0, &[], dtype, Device::Cpu)?)?,
        })
    }
}

impl Flow for LeakyRelu {
    fn name(&self) -> &'static str {
        "LeakyRelu"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let positive = x.gt_scalar(0.0)?;
        let z = positive.where_cond(x, &x.mul(&self.log_a.exp()?)?)?;
        let negatives = positive.affine(-1.0, 1.0)?;
        let dims: Vec<usize> = (1..x.rank()).collect();
        Ok((z, negatives.sum(&dims, false)?.mul(&self.log_a)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        z.gt_scalar(0.0)?
            .where_cond(z, &z.mul(&self.log_a.neg()?.exp()?)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("log_a".into(), self.log_a.clone())]
    }
}

#[test]
fn the_new_layer_passes_every_layer_check() {
    let layer = LeakyRelu::new(DType::F64).unwrap();
    check_flow(&layer, &[3, 2, 2, 2], &FlowCheck::default()).unwrap();
}
