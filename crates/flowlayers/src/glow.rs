//! Glow's multi-scale architecture (Kingma and Dhariwal, "Glow: Generative
//! Flow with Invertible 1x1 Convolutions", 2018) as one bijection from images
//! to a flat latent, with the mixing layer pluggable.

use crate::flow::{layers_buffers, layers_parameters, Flow};
use crate::layers::conditioner::{DenseNetConfig, GlowNetStyle};
use crate::layers::coupling::{Coupling, CouplingKind, ScaleFn};
use crate::layers::split::SplitPrior;
use crate::layers::squeeze::Squeeze;
use crate::layers::ActNorm;
use flowtensor::{profile, DType, Device, Error, Generator, Result, Tensor};
use std::sync::Arc;

/// Builds a layer of one step for the per-sample shape `(C, H, W)` it will
/// see (an invertible 1x1 convolution, a permutation, a convolution
/// exponential, a Sylvester flow, ...). The closure fixes the layer's dtype
/// and device, which must match the ones given to [`Glow::new`].
pub type LayerFactory =
    Arc<dyn Fn([usize; 3], &mut Generator) -> Result<Box<dyn Flow>> + Send + Sync>;

/// The factory of every step's mixing layer.
pub type MixingFactory = LayerFactory;

/// The network inside each coupling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionerKind {
    /// [`crate::layers::conditioner::GlowNet`] with [`GlowConfig::hidden`]
    /// channels, in the given form. With [`GlowNetStyle::Original`] the
    /// split priors' convolutions see Glow's edge channel too.
    GlowNet(GlowNetStyle),
    /// [`crate::layers::conditioner::DenseNet`] with these sizes
    /// ([`GlowConfig::hidden`] is unused).
    DenseNet(DenseNetConfig),
}

/// The hyper-parameters of a [`Glow`].
#[derive(Clone)]
pub struct GlowConfig {
    /// Number of levels `L` (each starts with a squeeze).
    pub levels: usize,
    /// Flow steps `K` per level.
    pub steps: usize,
    /// Hidden channels of the [`ConditionerKind::GlowNet`] conditioner.
    pub hidden: usize,
    pub coupling: CouplingKind,
    pub conditioner: ConditionerKind,
    /// `true`: Glow's learned conditional prior on the factored-out channels
    /// ([`SplitPrior`]); `false`: they are factored out unchanged, so the
    /// base's `N(0, I)` is their prior (RealNVP's multi-scale split).
    pub split_prior: bool,
    /// The mixing layer of every step; `None`: steps without one (the
    /// residual flows' ActNorm -> residual block).
    pub mixing: Option<MixingFactory>,
    /// When set, the layer that replaces the coupling at the end of every
    /// step (e.g. a generalized Sylvester flow); `coupling`, `conditioner`
    /// and `hidden` are then unused. Its parameters are named `transform.*`.
    pub transform: Option<LayerFactory>,
}

impl GlowConfig {
    /// Glow's choices: affine couplings with `sigmoid(h + 2)` scales, the
    /// three-layer conditioner of `hidden` channels and learned split priors.
    pub fn new(levels: usize, steps: usize, hidden: usize, mixing: MixingFactory) -> Self {
        GlowConfig {
            levels,
            steps,
            hidden,
            coupling: CouplingKind::Affine(ScaleFn::Sigmoid2),
            conditioner: ConditionerKind::GlowNet(GlowNetStyle::Biased),
            split_prior: true,
            mixing: Some(mixing),
            transform: None,
        }
    }
}

/// One flow step: ActNorm, then mixing, then a coupling (or the layer of
/// [`GlowConfig::transform`]).
struct Step {
    actnorm: ActNorm,
    mixing: Option<Box<dyn Flow>>,
    /// `"coupling"` or `"transform"`.
    transform_name: &'static str,
    transform: Box<dyn Flow>,
}

impl Step {
    fn layers(&self) -> Vec<(&'static str, &dyn Flow)> {
        let mixing = self.mixing.as_deref().map(|m| ("mixing", m));
        [
            Some(("actnorm", &self.actnorm as &dyn Flow)),
            mixing,
            Some((self.transform_name, self.transform.as_ref())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How a level ends.
enum LevelEnd {
    /// The last level: everything goes to the latent.
    Last,
    /// Half the channels factored out with a learned prior.
    Prior(SplitPrior),
    /// Half the channels factored out unchanged (kept, factored-out counts).
    Plain(usize, usize),
}

struct Level {
    steps: Vec<Step>,
    end: LevelEnd,
}

/// Glow's multi-scale flow as a bijection `(N, C, H, W) -> (N, D)`.
///
/// Level `l = 0..L` is a [`Squeeze`], `K` steps of [`ActNorm`] -> mixing
/// (unless [`GlowConfig::mixing`] is `None`) -> [`Coupling`] (or the
/// [`GlowConfig::transform`] layer), and, except after the last level, a
/// split of the channels into `h1` (kept, the first half) and `h2`
/// (factored out), through a [`SplitPrior`] (`z2 = (h2 - mean(h1)) /
/// std(h1)`) or unchanged (`z2 = h2`) per [`GlowConfig::split_prior`].
///
/// - forward: the latent is `cat(flat(z2_0), ..., flat(z2_{L-2}), flat(h_final))`
///   per sample (row-major flattening of each `(C, H, W)` piece), of size
///   `D = C H W` ([`Glow::latent_size`]);
/// - inverse: the pieces are cut back out and the levels undone in reverse;
/// - log-det: the sum of every layer's log-det, the split standardisations'
///   `-sum(log_std)` included.
///
/// So `FlowDistribution::new(Box::new(glow), Box::new(StandardNormal::new(&[D], ..)))`
/// has Glow's log-likelihood, and its `sample(n, t)` draws every level's
/// `z2` (and the top) from `N(0, t^2)`: Glow's temperature at every level.
///
/// Parameters and buffers are named `levels.{l}.steps.{k}.{actnorm|mixing|coupling}.*`
/// and `levels.{l}.split.*`, e.g. `levels.0.steps.1.coupling.net.0.weight`.
pub struct Glow {
    input_shape: [usize; 3],
    levels: Vec<Level>,
    /// Per-sample shape of each latent piece, in latent order.
    latent_shapes: Vec<[usize; 3]>,
}

impl Glow {
    /// A Glow for inputs of per-sample shape `input_shape = (C, H, W)`; `H`
    /// and `W` must be divisible by `2^L`. Initialisation draws from `gen`
    /// level by level, step by step (mixing, then coupling).
    pub fn new(
        config: GlowConfig,
        input_shape: [usize; 3],
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let [c, h, w] = input_shape;
        // 2^L, the factor by which the squeezes shrink the height and width
        let shrink = u32::try_from(config.levels)
            .ok()
            .and_then(|l| 1usize.checked_shl(l));
        let fits = shrink
            .is_some_and(|s| c > 0 && h > 0 && w > 0 && h.is_multiple_of(s) && w.is_multiple_of(s));
        if config.levels == 0 || !fits {
            return Err(Error::shape(
                "Glow",
                &[&input_shape],
                format!(
                    "{} levels: expected at least one level, channels, and a height and width divisible by 2^levels",
                    config.levels
                ),
            ));
        }
        let (mut c, mut h, mut w) = (c, h, w);
        let mut levels = Vec::with_capacity(config.levels);
        let mut latent_shapes = Vec::with_capacity(config.levels);
        for l in 0..config.levels {
            (c, h, w) = (4 * c, h / 2, w / 2);
            let mut steps = Vec::with_capacity(config.steps);
            for _ in 0..config.steps {
                let actnorm = ActNorm::new(c, dtype, device)?;
                let mixing = match &config.mixing {
                    Some(factory) => Some(factory([c, h, w], gen)?),
                    None => None,
                };
                let (transform_name, transform): (_, Box<dyn Flow>) = match &config.transform {
                    Some(factory) => ("transform", factory([c, h, w], gen)?),
                    None => (
                        "coupling",
                        Box::new(match config.conditioner {
                            ConditionerKind::GlowNet(style) => Coupling::glow_styled(
                                style,
                                c,
                                config.coupling,
                                config.hidden,
                                dtype,
                                device,
                                gen,
                            )?,
                            ConditionerKind::DenseNet(dense) => {
                                Coupling::densenet(c, config.coupling, dense, dtype, device, gen)?
                            }
                        }),
                    ),
                };
                steps.push(Step {
                    actnorm,
                    mixing,
                    transform_name,
                    transform,
                });
            }
            let end = if l + 1 == config.levels {
                LevelEnd::Last
            } else {
                let (c1, c2) = SplitPrior::split_sizes(c);
                latent_shapes.push([c2, h, w]);
                let edge = config.conditioner == ConditionerKind::GlowNet(GlowNetStyle::Original);
                let end = if config.split_prior && edge {
                    LevelEnd::Prior(SplitPrior::with_edge_channel(c, dtype, device)?)
                } else if config.split_prior {
                    LevelEnd::Prior(SplitPrior::new(c, dtype, device)?)
                } else {
                    LevelEnd::Plain(c1, c2)
                };
                c = c1;
                end
            };
            levels.push(Level { steps, end });
        }
        latent_shapes.push([c, h, w]);
        Ok(Glow {
            input_shape,
            levels,
            latent_shapes,
        })
    }

    /// `D`: values per sample of the latent (`C H W`).
    pub fn latent_size(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// The per-sample `(C, H, W)` of each latent piece, in latent order: the
    /// factored-out channels of each level but the last, then the top.
    pub fn latent_shapes(&self) -> &[[usize; 3]] {
        &self.latent_shapes
    }

    /// The per-sample input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.rank() != 4 || x.shape()[1..] != self.input_shape {
            let [c, h, w] = self.input_shape;
            return Err(Error::shape(
                "Glow",
                &[x.shape()],
                format!("expected (batch, {c}, {h}, {w})"),
            ));
        }
        Ok(())
    }

    /// The latent `(N, D)` cut into its pieces, each `(N, C, H, W)`.
    fn latent_pieces(&self, z: &Tensor) -> Result<Vec<Tensor>> {
        let d = self.latent_size();
        if z.rank() != 2 || z.shape()[1] != d {
            return Err(Error::shape(
                "Glow",
                &[z.shape()],
                format!("the latent must be (batch, {d})"),
            ));
        }
        let n = z.shape()[0];
        let mut start = 0;
        self.latent_shapes
            .iter()
            .map(|&[c, h, w]| {
                let piece = z.narrow(1, start, c * h * w)?.reshape(&[n, c, h, w]);
                start += c * h * w;
                piece
            })
            .collect()
    }

    /// The inverse, with the log-det when `with_logdet` (without it, layers
    /// whose inverse log-det is costly are spared computing it).
    fn invert(&self, z: &Tensor, with_logdet: bool) -> Result<(Tensor, Option<Tensor>)> {
        let mut pieces = self.latent_pieces(z)?;
        let mut next_piece = || {
            pieces
                .pop()
                .ok_or_else(|| Error::invalid("Glow", "internal: missing latent piece"))
        };
        let mut h = next_piece()?;
        let mut total = match with_logdet {
            true => Some(Tensor::zeros(&[z.shape()[0]], z.dtype(), z.device())?),
            false => None,
        };
        for level in self.levels.iter().rev() {
            match &level.end {
                LevelEnd::Last => {}
                LevelEnd::Prior(split) => {
                    let z2 = next_piece()?;
                    h = match &mut total {
                        Some(t) => {
                            let (merged, ld) = split.merge_with_logdet(&h, &z2)?;
                            *t = t.add(&ld)?;
                            merged
                        }
                        None => split.merge(&h, &z2)?,
                    };
                }
                LevelEnd::Plain(..) => h = Tensor::cat(&[&h, &next_piece()?], 1)?,
            }
            for step in level.steps.iter().rev() {
                for (_, layer) in step.layers().into_iter().rev() {
                    h = match &mut total {
                        Some(t) => {
                            let (x, ld) = layer.inverse_with_logdet(&h)?;
                            *t = t.add(&ld)?;
                            x
                        }
                        None => layer.inverse(&h)?,
                    };
                }
            }
            h = Squeeze.inverse(&h)?;
        }
        Ok((h, total))
    }

    /// Every named sub-layer, for parameters, buffers and training mode.
    fn named_layers(&self) -> Vec<(String, &dyn Flow)> {
        let mut all: Vec<(String, &dyn Flow)> = Vec::new();
        for (l, level) in self.levels.iter().enumerate() {
            for (k, step) in level.steps.iter().enumerate() {
                for (name, layer) in step.layers() {
                    all.push((format!("levels.{l}.steps.{k}.{name}"), layer));
                }
            }
            if let LevelEnd::Prior(split) = &level.end {
                all.push((format!("levels.{l}.split"), split));
            }
        }
        all
    }
}

impl Flow for Glow {
    fn name(&self) -> &'static str {
        "Glow"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(x)?;
        let n = x.shape()[0];
        let mut logdet = Tensor::zeros(&[n], x.dtype(), x.device())?;
        let mut pieces = Vec::with_capacity(self.latent_shapes.len());
        let mut h = x.clone();
        for (l, level) in self.levels.iter().enumerate() {
            h = Squeeze.forward(&h)?.0;
            for step in &level.steps {
                for (name, layer) in step.layers() {
                    let scope = format_args!("level{l}/{name}");
                    let (next, ld) = profile::scope(scope, || layer.forward(&h))?;
                    logdet = logdet.add(&ld)?;
                    h = next;
                }
            }
            match &level.end {
                LevelEnd::Last => {}
                LevelEnd::Prior(split) => {
                    let scope = format_args!("level{l}/split_prior");
                    let (h1, z2, ld) = profile::scope(scope, || split.split(&h))?;
                    logdet = logdet.add(&ld)?;
                    pieces.push(z2.reshape(&[n, z2.elem_count() / n.max(1)])?);
                    h = h1;
                }
                &LevelEnd::Plain(c1, c2) => {
                    let z2 = h.narrow(1, c1, c2)?;
                    pieces.push(z2.reshape(&[n, z2.elem_count() / n.max(1)])?);
                    h = h.narrow(1, 0, c1)?;
                }
            }
        }
        pieces.push(h.reshape(&[n, h.elem_count() / n.max(1)])?);
        let z = Tensor::cat(&pieces.iter().collect::<Vec<_>>(), 1)?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.invert(z, false)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, logdet) = self.invert(z, true)?;
        let logdet = logdet.ok_or_else(|| Error::invalid("Glow", "internal: no log-det"))?;
        Ok((x, logdet))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        layers_parameters(&self.named_layers())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        layers_buffers(&self.named_layers())
    }

    fn set_training(&self, training: bool) {
        for (_, layer) in self.named_layers() {
            layer.set_training(training);
        }
    }
}
