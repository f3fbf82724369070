//! Graph normalizing flows: densities `p(X | A)` of node features
//! `X (N, V, C)` given a graph `A`, from per-node layers, graph affine
//! couplings with message passing and, optionally, the graph convolution
//! exponential as the mixing layer (Hoogeboom, Garcia Satorras, Tomczak and
//! Welling, "The Convolution Exponential and Generalized Sylvester Flows",
//! 2020, section 5.3).
//!
//! Every layer maps node `v`'s features from node `v`'s features and from
//! `A_norm` (the symmetric normalised adjacency), so relabelling the nodes
//! (`X -> P X`, `A -> P A P^T`) permutes the output the same way and leaves
//! each log-determinant unchanged: with the standard normal base, which is
//! invariant too, `log p(X | A)` does not depend on the node order.

use crate::base::{standard_normal_log_density, sum_per_sample};
use crate::flow::{layers_buffers, layers_parameters, Flow};
use crate::layers::{Graph, GraphConvExp, GraphCoupling};
use crate::vector::{ActNorm as VectorActNorm, InvertibleLinear, ReversePermutation};
use flowtensor::conv_exp::Terms;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// A flow on `(N, D)` vectors applied to every node of `(N, V, D)` node
/// features, as if each node were a sample (so an ActNorm inside normalises
/// each feature over all nodes of the batch):
///
/// - forward: `z[n, v] = f(x[n, v])`;
/// - inverse: `x[n, v] = f^{-1}(z[n, v])`;
/// - log-det: `sum_v log |det df/dx (x[n, v])|` per sample.
///
/// Parameters and buffers: the inner flow's.
pub struct NodeWise {
    inner: Box<dyn Flow>,
}

impl NodeWise {
    pub fn new(inner: Box<dyn Flow>) -> Self {
        NodeWise { inner }
    }

    /// `f` applied to the rows of `x` reshaped to `(N V, D)`, and the
    /// per-row log-dets summed per sample.
    fn map(
        &self,
        x: &Tensor,
        f: impl Fn(&dyn Flow, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        if x.rank() != 3 {
            return Err(Error::shape(
                self.inner.name(),
                &[x.shape()],
                "node features must be (batch, nodes, features)",
            ));
        }
        let s = x.shape().to_vec();
        let rows = x.contiguous()?.reshape(&[s[0] * s[1], s[2]])?;
        let (z, logdet) = f(self.inner.as_ref(), &rows)?;
        let per_sample = logdet.reshape(&[s[0], s[1]])?.sum(&[1], false)?;
        Ok((z.reshape(&s)?, per_sample))
    }
}

impl Flow for NodeWise {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.map(x, |f, rows| f.forward(rows))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.map(z, |f, rows| f.inverse_with_logdet(rows))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.parameters()
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.inner.buffers()
    }

    fn set_training(&self, training: bool) {
        self.inner.set_training(training);
    }
}

/// The mixing layer between the couplings of a [`GraphFlow`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GraphMixing {
    /// No learned mixing: the features of every node reversed (so that
    /// every feature is transformed by every other coupling).
    Reverse,
    /// A learned invertible `C x C` map per node (LU-parametrised, started
    /// at a random rotation): Glow's 1x1 convolution on graphs.
    OneByOne,
    /// The 1x1 map followed by the graph convolution exponential
    /// ([`GraphConvExp`]), which mixes features across neighbouring nodes.
    ConvExp(Terms),
}

/// The sizes of a [`GraphFlow`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphFlowConfig {
    /// Features per node `C` (at least 2).
    pub channels: usize,
    /// Flow steps `K`.
    pub steps: usize,
    /// Hidden units per node of the couplings' graph networks.
    pub hidden: usize,
    pub mixing: GraphMixing,
}

/// One step: ActNorm, mixing, graph coupling.
struct GraphStep {
    actnorm: NodeWise,
    mixing: NodeWise,
    convexp: Option<GraphConvExp>,
    coupling: GraphCoupling,
}

impl GraphStep {
    fn layers(&self) -> Vec<(&'static str, &dyn Flow)> {
        let mut all: Vec<(&'static str, &dyn Flow)> =
            vec![("actnorm", &self.actnorm), ("mixing", &self.mixing)];
        if let Some(convexp) = &self.convexp {
            all.push(("convexp", convexp));
        }
        all.push(("coupling", &self.coupling));
        all
    }
}

/// A graph normalizing flow on node features `X (N, V, C)` given a graph:
/// `K` steps of
///
/// ```text
/// ActNorm (per feature, over all nodes)  ->  mixing ([`GraphMixing`])  ->  GraphCoupling
/// ```
///
/// - forward: `z = f_K(...f_1(x))`, each `f_k` the step above, on the graph
///   of the last [`GraphFlow::set_adjacency`];
/// - inverse: the steps' inverses in reverse order;
/// - log-det: the sum of the layers' log-dets per sample (ActNorm `V sum(s)`,
///   the 1x1 map `V log |det W|`, the convolution exponential `trace(M)`,
///   the coupling `sum log scale`).
///
/// [`GraphFlow::log_prob`] adds the standard normal base over all `V C`
/// values. Variable-sized graphs are batched as their disjoint union: one
/// sample of `sum_i V_i` nodes with a block-diagonal adjacency, whose
/// log-likelihood is the sum of the graphs' (no layer passes information
/// between unconnected components, and the ActNorm statistics are fixed
/// after initialisation).
///
/// Parameters and buffers: `steps.{k}.{actnorm|mixing|convexp|coupling}.*`.
pub struct GraphFlow {
    config: GraphFlowConfig,
    dtype: DType,
    device: Device,
    steps: Vec<GraphStep>,
}

const GF: &str = "GraphFlow";

impl GraphFlow {
    /// A flow of `config`; weights drawn from `gen` step by step (mixing,
    /// convolution exponential, coupling). Until [`GraphFlow::set_adjacency`]
    /// the graph is a single node.
    pub fn new(
        config: GraphFlowConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let c = config.channels;
        if c < 2 || config.hidden == 0 {
            return Err(Error::invalid(
                GF,
                format!(
                    "needs at least 2 features per node and 1 hidden unit, got {c} and {}",
                    config.hidden
                ),
            ));
        }
        let placeholder = Tensor::zeros(&[1, 1], dtype, device)?;
        let mut steps = Vec::with_capacity(config.steps);
        for _ in 0..config.steps {
            let actnorm = NodeWise::new(Box::new(VectorActNorm::new(c, dtype, device)?));
            let mixing: Box<dyn Flow> = match config.mixing {
                GraphMixing::Reverse => Box::new(ReversePermutation::new(c)?),
                GraphMixing::OneByOne | GraphMixing::ConvExp(_) => {
                    Box::new(InvertibleLinear::new(c, dtype, device, gen)?)
                }
            };
            let convexp = match config.mixing {
                GraphMixing::ConvExp(terms) => Some(GraphConvExp::new(
                    c,
                    &placeholder,
                    terms,
                    dtype,
                    device,
                    gen,
                )?),
                _ => None,
            };
            let coupling = GraphCoupling::new(c, config.hidden, &placeholder, dtype, device, gen)?;
            steps.push(GraphStep {
                actnorm,
                mixing: NodeWise::new(mixing),
                convexp,
                coupling,
            });
        }
        Ok(GraphFlow {
            config,
            dtype,
            device,
            steps,
        })
    }

    pub fn config(&self) -> GraphFlowConfig {
        self.config
    }

    /// Sets the graph of every graph layer: `(V, V)` shared by the batch or
    /// `(N, V, V)` per sample (symmetric 0/1, no self loops).
    /// The adjacency is validated and normalised once for all layers.
    pub fn set_adjacency(&self, adjacency: &Tensor) -> Result<()> {
        let graph = Graph::new(GF, &adjacency.to_dtype(self.dtype)?.to_device(self.device)?)?;
        for step in &self.steps {
            if let Some(convexp) = &step.convexp {
                convexp.set_graph(graph.clone())?;
            }
            step.coupling.set_graph(graph.clone())?;
        }
        Ok(())
    }

    /// `log p(x | A) = log N(f(x); 0, I) + log |det df/dx|` per sample, for
    /// node features `x (N, V, C)` on the graph `adjacency`.
    pub fn log_prob(&self, x: &Tensor, adjacency: &Tensor) -> Result<Tensor> {
        self.set_adjacency(adjacency)?;
        let (z, logdet) = self.forward(x)?;
        sum_per_sample(&standard_normal_log_density(&z)?)?.add(&logdet)
    }

    /// `n` samples of the features of a graph of `nodes` nodes: `z ~ N(0,
    /// t^2 I)` of shape `(n, nodes, C)`, mapped by the inverse on `adjacency`.
    pub fn sample(
        &self,
        adjacency: &Tensor,
        n: usize,
        nodes: usize,
        temperature: f64,
        gen: &mut Generator,
    ) -> Result<Tensor> {
        self.set_adjacency(adjacency)?;
        let shape = [n, nodes, self.config.channels];
        let z = gen.normal(&shape, 0.0, temperature, self.dtype, self.device)?;
        self.inverse(&z)
    }

    fn named_layers(&self) -> Vec<(String, &dyn Flow)> {
        let mut all = Vec::new();
        for (k, step) in self.steps.iter().enumerate() {
            for (name, layer) in step.layers() {
                all.push((format!("steps.{k}.{name}"), layer));
            }
        }
        all
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.rank() != 3 || x.shape()[2] != self.config.channels {
            return Err(Error::shape(
                GF,
                &[x.shape()],
                format!(
                    "expected node features (batch, nodes, {})",
                    self.config.channels
                ),
            ));
        }
        Ok(())
    }
}

impl Flow for GraphFlow {
    fn name(&self) -> &'static str {
        GF
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let mut h = x.clone();
        let mut total = Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device())?;
        for (_, layer) in self.named_layers() {
            let (next, logdet) = layer.forward(&h)?;
            total = total.add(&logdet)?;
            h = next;
        }
        Ok((h, total))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let mut h = z.clone();
        for (_, layer) in self.named_layers().into_iter().rev() {
            h = layer.inverse(&h)?;
        }
        Ok(h)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let mut h = z.clone();
        let mut total = Tensor::zeros(&[z.shape()[0]], z.dtype(), z.device())?;
        for (_, layer) in self.named_layers().into_iter().rev() {
            let (next, logdet) = layer.inverse_with_logdet(&h)?;
            total = total.add(&logdet)?;
            h = next;
        }
        Ok((h, total))
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
