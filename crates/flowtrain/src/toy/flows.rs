//! The flows of the toy runs, built from flowlayers' vector layers. The
//! flow maps data `x` to the latent `z` (the density direction); sampling
//! runs its inverse.
//!
//! | `--flow` | one of the `K` steps |
//! |---|---|
//! | `planar` | [`Planar`] |
//! | `radial` | [`Radial`] |
//! | `realnvp` | [`VectorActNorm`], [`AffineCoupling`] (masks alternate between steps) |
//! | `maf` | [`VectorActNorm`], [`MaskedAutoregressive`], [`ReversePermutation`] (not after the last) |
//! | `nsf-ar` | [`VectorActNorm`], [`SplineAutoregressive`], [`ReversePermutation`] (not after the last) |
//! | `nsf-c` | [`VectorActNorm`], [`SplineCoupling`] (masks alternate between steps) |
//!
//! ActNorm opens every step, as in Glow (nflows and zuko have it as an
//! option, or batch normalisation instead); its data-dependent
//! initialisation standardises each step's input, which also keeps the
//! splines' inputs inside their bound `[-B, B]`. Affine layers bound their
//! log-scales to `(-2, 2)` ([`ScaleFn::ExpTanh`]); conditioners are ReLU
//! MLPs / MADEs with a zero output layer, so every step starts as the
//! identity after its ActNorm.

use super::config::{FlowKind, ToyConfig};
use crate::error::{Result, TrainError};
use flowlayers::layers::ScaleFn;
use flowlayers::vector::{SplineAutoregressive, SplineConfig, SplineCoupling};
use flowlayers::{
    Activation, AffineCoupling, CouplingMask, Flow, MadeOrder, MaskedAutoregressive, NetConfig,
    Planar, Radial, ReversePermutation, Sequential, VectorActNorm,
};
use flowtensor::{DType, Device, Generator};

/// The flow of `config` on `dim` features, its parameters drawn from `gen`.
pub fn build_flow(
    config: &ToyConfig,
    dim: usize,
    dtype: DType,
    device: Device,
    gen: &mut Generator,
) -> Result<Sequential> {
    let kind = config.flow;
    if dim < 2 && matches!(kind, FlowKind::Realnvp | FlowKind::NsfC) {
        return Err(TrainError::Config(format!(
            "--flow {} is a coupling flow and needs at least 2 features, the data has {dim}; \
             for 1-D data use nsf-ar, planar, radial or maf",
            kind.name()
        )));
    }
    let net = NetConfig {
        hidden_features: config.hidden,
        hidden_layers: config.hidden_layers,
        activation: Activation::Relu,
        context_features: 0,
    };
    let spline = SplineConfig {
        bins: config.spline_bins,
        bound: config.spline_bound,
        ..SplineConfig::default()
    };
    let k = config.layers();
    let mut layers: Vec<Box<dyn Flow>> = Vec::new();
    for step in 0..k {
        let mask = if step % 2 == 0 {
            CouplingMask::alternating(dim)
        } else {
            CouplingMask::alternating(dim).flipped()
        };
        let last = step + 1 == k;
        match kind {
            FlowKind::Planar => layers.push(Box::new(Planar::new(dim, dtype, device, gen)?)),
            FlowKind::Radial => layers.push(Box::new(Radial::new(dim, dtype, device, gen)?)),
            FlowKind::Realnvp => {
                layers.push(Box::new(VectorActNorm::new(dim, dtype, device)?));
                layers.push(Box::new(AffineCoupling::new(
                    mask,
                    ScaleFn::ExpTanh,
                    net,
                    dtype,
                    device,
                    gen,
                )?));
            }
            FlowKind::NsfC => {
                layers.push(Box::new(VectorActNorm::new(dim, dtype, device)?));
                layers.push(Box::new(SplineCoupling::new(
                    mask, spline, net, dtype, device, gen,
                )?));
            }
            FlowKind::Maf | FlowKind::NsfAr => {
                layers.push(Box::new(VectorActNorm::new(dim, dtype, device)?));
                if kind == FlowKind::Maf {
                    layers.push(Box::new(MaskedAutoregressive::new(
                        dim,
                        MadeOrder::Natural,
                        ScaleFn::ExpTanh,
                        net,
                        dtype,
                        device,
                        gen,
                    )?));
                } else {
                    layers.push(Box::new(SplineAutoregressive::new(
                        dim,
                        MadeOrder::Natural,
                        spline,
                        net,
                        dtype,
                        device,
                        gen,
                    )?));
                }
                if !last && dim > 1 {
                    layers.push(Box::new(ReversePermutation::new(dim)?));
                }
            }
        }
    }
    Ok(Sequential::new(layers))
}

/// The number of trainable values of `flow`.
pub fn parameter_count(flow: &dyn Flow) -> usize {
    flow.parameters().iter().map(|(_, t)| t.elem_count()).sum()
}

/// A note about a flow that cannot do better than a Gaussian on `dim`
/// features (an affine MAF on 1-D data: with one feature its MADE has no
/// inputs to condition on, so every step is a learned affine map).
pub fn limitation(kind: FlowKind, dim: usize) -> Option<String> {
    (kind == FlowKind::Maf && dim == 1).then(|| {
        "maf on 1-D data: with a single feature each MADE sees no inputs, so every step is a \
         constant affine map and the model is a Gaussian; use nsf-ar, planar or radial for a \
         1-D density"
            .to_string()
    })
}
