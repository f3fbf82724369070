//! The graph convolution exponential (Hoogeboom, Garcia Satorras, Tomczak and
//! Welling, "The Convolution Exponential and Generalized Sylvester Flows",
//! 2020, graph normalizing flows) and an affine coupling on node features.
//!
//! Node features are `X (N, V, C)`: `N` samples, `V` nodes, `C` channels, one
//! row vector per node. A graph is a symmetric 0/1 adjacency `A (V, V)` with
//! no self loops, shared by the batch, or one per sample `(N, V, V)`. It is
//! normalised as
//!
//! ```text
//! A_norm = D^{-1/2} A D^{-1/2},   D = diag(deg),  deg_i = sum_j A_ij,
//! ```
//!
//! with `D^{-1/2}_ii = 0` for an isolated node (`deg_i = 0`), whose row and
//! column of `A_norm` are then zero.
//!
//! The linear map of [`GraphConvExp`] is
//!
//! ```text
//! M(X) = A_norm X W1 + X W0          (W0, W1 learned C x C matrices).
//! ```
//!
//! Vectorising `X` row-major (`vec(X)[v C + c] = X[v, c]`), `vec(A X W) =
//! (A ⊗ W^T) vec(X)`, so
//!
//! ```text
//! M = I_V ⊗ W0^T + A_norm ⊗ W1^T,
//! trace(M) = tr(I_V) tr(W0) + tr(A_norm) tr(W1) = V tr(W0) + tr(A_norm) tr(W1),
//! ```
//!
//! and `tr(A_norm) = sum_i A_ii / deg_i = 0` because `A` has no self loops:
//! the per-sample log-determinant of `exp(M)` is `log |det exp(M)| = trace(M)
//! = V tr(W0)` (the code computes the general formula, whose second term is
//! then exactly zero). `exp(M)` is applied by the power series
//! `X + M X / 1! + M (M X) / 2! + ...` ([`Terms`]), and its inverse is
//! `exp(-M)`, the same series with `(W0, W1)` negated.

use crate::base::sum_per_sample;
use crate::flow::{parameter, prefixed, Flow};
use crate::layers::coupling::ScaleFn;
use flowtensor::conv_exp::Terms;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// A validated, normalised graph: `A_norm` as `(V, V)` (shared) or
/// `(B, V, V)` (one per sample), with `tr(A_norm)` per graph.
#[derive(Clone)]
pub struct Graph {
    nodes: usize,
    batch: Option<usize>,
    norm: Tensor,
    trace: Vec<f64>,
}

impl Graph {
    /// Validates `adjacency` (`(V, V)` or `(B, V, V)`, symmetric, entries 0
    /// or 1, zero diagonal) and normalises it as `D^{-1/2} A D^{-1/2}` (rows
    /// and columns of isolated nodes zero). `layer` names the errors. The
    /// result has the adjacency's dtype and device; it is a constant (no
    /// gradient flows into the graph).
    pub fn new(layer: &'static str, adjacency: &Tensor) -> Result<Self> {
        let s = adjacency.shape();
        let (batch, v) = match s.len() {
            2 if s[0] == s[1] => (None, s[0]),
            3 if s[1] == s[2] => (Some(s[0]), s[1]),
            _ => {
                return Err(Error::shape(
                    layer,
                    &[s],
                    "the adjacency must be square: (V, V) shared or (B, V, V) per sample",
                ))
            }
        };
        if v == 0 {
            return Err(Error::shape(layer, &[s], "the graph needs at least 1 node"));
        }
        let a = adjacency.detach().to_vec_f64()?;
        let graphs = batch.unwrap_or(1);
        let mut norm = vec![0.0; a.len()];
        let mut trace = Vec::with_capacity(graphs);
        for g in 0..graphs {
            let a = &a[g * v * v..(g + 1) * v * v];
            for i in 0..v {
                for j in 0..v {
                    let x = a[i * v + j];
                    if x != 0.0 && x != 1.0 {
                        return Err(Error::shape(
                            layer,
                            &[s],
                            format!("adjacency entry ({i}, {j}) of graph {g} is {x}, not 0 or 1"),
                        ));
                    }
                    if x != a[j * v + i] {
                        return Err(Error::shape(
                            layer,
                            &[s],
                            format!("adjacency of graph {g} is not symmetric at ({i}, {j})"),
                        ));
                    }
                }
                if a[i * v + i] != 0.0 {
                    return Err(Error::shape(
                        layer,
                        &[s],
                        format!("adjacency of graph {g} has a self loop at node {i}"),
                    ));
                }
            }
            let inv_sqrt: Vec<f64> = (0..v)
                .map(|i| {
                    let deg: f64 = a[i * v..(i + 1) * v].iter().sum();
                    if deg > 0.0 {
                        1.0 / deg.sqrt()
                    } else {
                        0.0
                    }
                })
                .collect();
            let out = &mut norm[g * v * v..(g + 1) * v * v];
            let mut tr = 0.0;
            for i in 0..v {
                for j in 0..v {
                    out[i * v + j] = inv_sqrt[i] * a[i * v + j] * inv_sqrt[j];
                }
                tr += out[i * v + i];
            }
            trace.push(tr);
        }
        let norm = Tensor::from_vec(norm, s, Device::Cpu)?
            .to_dtype(adjacency.dtype())?
            .to_device(adjacency.device())?;
        Ok(Graph {
            nodes: v,
            batch,
            norm,
            trace,
        })
    }

    /// The number of nodes `V`.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// `Some(B)` for a per-sample batch of graphs, `None` for a shared one.
    pub fn batch(&self) -> Option<usize> {
        self.batch
    }

    /// `A_norm`, `(V, V)` or `(B, V, V)`.
    pub fn normalized(&self) -> Tensor {
        self.norm.clone()
    }

    /// `tr(A_norm)` per graph (0 for graphs without self loops).
    pub fn traces(&self) -> &[f64] {
        &self.trace
    }

    /// An error naming `layer` unless the graph has `like`'s dtype and device.
    fn check_placement(&self, layer: &'static str, like: &Tensor) -> Result<()> {
        let norm = &self.norm;
        if norm.dtype() != like.dtype() || norm.device() != like.device() {
            return Err(Error::invalid(
                layer,
                format!(
                    "the graph is {:?} on {}, the layer {:?} on {}",
                    norm.dtype(),
                    norm.device(),
                    like.dtype(),
                    like.device()
                ),
            ));
        }
        Ok(())
    }

    /// `A_norm U` for `U (N, V, K)` (batched, broadcasting matmul).
    fn propagate(&self, u: &Tensor) -> Result<Tensor> {
        self.norm.matmul(u)
    }

    /// Checks `x (N, V, channels)` against this graph.
    fn check(&self, layer: &'static str, x: &Tensor, channels: usize) -> Result<()> {
        let s = x.shape();
        let ok = s.len() == 3
            && s[1] == self.nodes
            && s[2] == channels
            && self.batch.is_none_or(|b| b == s[0]);
        if !ok {
            let batch = match self.batch {
                Some(b) => b.to_string(),
                None => "batch".to_string(),
            };
            return Err(Error::shape(
                layer,
                &[s, self.norm.shape()],
                format!(
                    "expected node features ({batch}, {} nodes, {channels} channels)",
                    self.nodes
                ),
            ));
        }
        Ok(())
    }
}

/// Largest `|u|` over all entries.
fn max_abs(u: &Tensor) -> Result<f64> {
    Ok(u.detach()
        .to_vec_f64()?
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs())))
}

/// The graph convolution exponential `Z = exp(M) X + b` on node features
/// `X (N, V, C)`, with `M(X) = A_norm X W1 + X W0` (see the module
/// documentation for `A_norm` and the Kronecker form).
///
/// - forward: `Z = sum_{i=0}^{n} U_i + b` with `U_0 = X`, `U_i = M(U_{i-1}) / i`
///   (`n` from [`Terms`]: fixed, or adaptive until `max |U_i| < tol`; see
///   [`GraphConvExp::last_terms_used`]); `b` is the parameter `bias` `(1, 1, C)`,
///   added after the exponential;
/// - log-det per sample: `trace(M) = V tr(W0) + tr(A_norm) tr(W1)`, i.e.
///   `V tr(W0)` for graphs without self loops; exact for `exp(M)` (the
///   truncated series approaches it as the number of terms grows);
/// - inverse: `X = exp(-M)(Z - b)`, the same series with `W0, W1` negated.
///
/// `W0` (`w0`) and `W1` (`w1`) are initialised as `randn * 0.1 / C` and the
/// bias at zero: `||M||_2 <= ||W0||_2 + ||A_norm||_2 ||W1||_2` with
/// `||A_norm||_2 <= 1`, so the series starts well inside its fast-convergence
/// regime. No spectral normalisation is applied; use enough terms (or an
/// adaptive tolerance) if the weights grow in training.
///
/// The graph is given at construction (shared `(V, V)` or per-sample
/// `(B, V, V)`) and may be replaced with [`GraphConvExp::with_adjacency`]
/// (e.g. for each batch of per-sample graphs); the number of nodes may change
/// but the channels may not. Parameters: `w0`, `w1`, `bias`.
pub struct GraphConvExp {
    channels: usize,
    terms: Terms,
    graph: RwLock<Graph>,
    w0: Tensor,
    w1: Tensor,
    bias: Tensor,
    terms_used: AtomicUsize,
}

const GCE: &str = "GraphConvExp";

impl GraphConvExp {
    /// A layer over `channels` channels for the graph `adjacency`, summing
    /// `terms` of the series in forward and inverse; `w0` then `w1` are drawn
    /// from `gen`. Errors (naming `GraphConvExp`) for an invalid adjacency,
    /// zero channels or a negative/NaN adaptive tolerance.
    pub fn new(
        channels: usize,
        adjacency: &Tensor,
        terms: Terms,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid(GCE, "needs at least 1 channel"));
        }
        if let Terms::Adaptive { tol, .. } = terms {
            if tol.is_nan() || tol < 0.0 {
                return Err(Error::invalid(
                    GCE,
                    format!("the adaptive tolerance must be non-negative, got {tol}"),
                ));
            }
        }
        let graph = Graph::new(GCE, &adjacency.to_dtype(dtype)?.to_device(device)?)?;
        let mut weight = || -> Result<Tensor> {
            let w = gen
                .randn(&[channels, channels], DType::F64, Device::Cpu)?
                .mul_scalar(0.1 / channels as f64)?
                .to_dtype(dtype)?
                .to_device(device)?;
            parameter(w)
        };
        let w0 = weight()?;
        let w1 = weight()?;
        Ok(GraphConvExp {
            channels,
            terms,
            graph: RwLock::new(graph),
            w0,
            w1,
            bias: parameter(Tensor::zeros(&[1, 1, channels], dtype, device)?)?,
            terms_used: AtomicUsize::new(0),
        })
    }

    /// Replaces the graph (shared `(V, V)` or per-sample `(B, V, V)`); the
    /// parameters are unchanged. Errors as [`GraphConvExp::new`].
    pub fn with_adjacency(&self, adjacency: &Tensor) -> Result<()> {
        let graph = Graph::new(
            GCE,
            &adjacency
                .to_dtype(self.w0.dtype())?
                .to_device(self.w0.device())?,
        )?;
        self.set_graph(graph)
    }

    /// Replaces the graph with an already normalised one (of the layer's
    /// dtype and device), e.g. one shared by every layer of a flow.
    pub fn set_graph(&self, graph: Graph) -> Result<()> {
        graph.check_placement(GCE, &self.w0)?;
        *self
            .graph
            .write()
            .map_err(|_| Error::invalid(GCE, "graph lock poisoned"))? = graph;
        Ok(())
    }

    /// The current graph.
    pub fn graph(&self) -> Result<Graph> {
        Ok(self
            .graph
            .read()
            .map_err(|_| Error::invalid(GCE, "graph lock poisoned"))?
            .clone())
    }

    /// The number of series terms (after the identity) the last forward or
    /// inverse used.
    pub fn last_terms_used(&self) -> usize {
        self.terms_used.load(Ordering::Relaxed)
    }

    /// `M(U) = A_norm U W1 + U W0`.
    fn apply_m(graph: &Graph, u: &Tensor, w0: &Tensor, w1: &Tensor) -> Result<Tensor> {
        graph.propagate(u)?.matmul(w1)?.add(&u.matmul(w0)?)
    }

    /// `sum_{i=0}^{n} U_i` with `U_0 = x`, `U_i = M(U_{i-1}) / i`; records `n`.
    fn series(&self, graph: &Graph, x: &Tensor, w0: &Tensor, w1: &Tensor) -> Result<Tensor> {
        let (max, tol) = match self.terms {
            Terms::Fixed(n) => (n, None),
            Terms::Adaptive { tol, max } => (max, Some(tol)),
        };
        let mut sum = x.clone();
        let mut u = x.clone();
        let mut used = max;
        for i in 1..=max {
            u = Self::apply_m(graph, &u, w0, w1)?.div_scalar(i as f64)?;
            sum = sum.add(&u)?;
            if let Some(tol) = tol {
                if max_abs(&u)? < tol {
                    used = i;
                    break;
                }
            }
        }
        self.terms_used.store(used, Ordering::Relaxed);
        Ok(sum)
    }

    /// `trace(M) = V tr(W0) + tr(A_norm) tr(W1)` per sample, shape `[N]`.
    fn logdet(&self, graph: &Graph, batch: usize) -> Result<Tensor> {
        let eye = Tensor::eye(self.channels, self.w0.dtype(), self.w0.device())?;
        let tr0 = self.w0.mul(&eye)?.sum_all()?;
        let tr1 = self.w1.mul(&eye)?.sum_all()?;
        let base = tr0.mul_scalar(graph.nodes as f64)?;
        let traces: Vec<f64> = match graph.batch {
            Some(_) => graph.trace.clone(),
            None => vec![graph.trace[0]; batch],
        };
        let traces = Tensor::from_vec(traces, &[batch], Device::Cpu)?
            .to_dtype(self.w0.dtype())?
            .to_device(self.w0.device())?;
        traces.mul(&tr1)?.add(&base)
    }
}

impl Flow for GraphConvExp {
    fn name(&self) -> &'static str {
        GCE
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let graph = self.graph()?;
        graph.check(GCE, x, self.channels)?;
        let z = self
            .series(&graph, x, &self.w0, &self.w1)?
            .add(&self.bias)?;
        Ok((z, self.logdet(&graph, x.shape()[0])?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        let graph = self.graph()?;
        graph.check(GCE, z, self.channels)?;
        self.series(
            &graph,
            &z.sub(&self.bias)?,
            &self.w0.neg()?,
            &self.w1.neg()?,
        )
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.inverse(z)?;
        let graph = self.graph()?;
        Ok((x, self.logdet(&graph, z.shape()[0])?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("w0".into(), self.w0.clone()),
            ("w1".into(), self.w1.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

/// A per-node dense layer `U W + b` (`W (in, out)`, `b (1, 1, out)`).
struct NodeLinear {
    weight: Tensor,
    bias: Tensor,
}

impl NodeLinear {
    /// `W = randn * scale`, `b = 0`.
    fn new(
        inp: usize,
        out: usize,
        scale: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let w = gen
            .randn(&[inp, out], DType::F64, Device::Cpu)?
            .mul_scalar(scale)?
            .to_dtype(dtype)?
            .to_device(device)?;
        Ok(NodeLinear {
            weight: parameter(w)?,
            bias: parameter(Tensor::zeros(&[1, 1, out], dtype, device)?)?,
        })
    }

    fn forward(&self, u: &Tensor) -> Result<Tensor> {
        u.matmul(&self.weight)?.add(&self.bias)
    }

    fn parameters(&self, name: &str) -> Vec<(String, Tensor)> {
        prefixed(
            name,
            vec![
                ("weight".into(), self.weight.clone()),
                ("bias".into(), self.bias.clone()),
            ],
        )
    }
}

/// An affine coupling on node features `X (N, V, C)`: the first
/// `C1 = floor(C / 2)` channels `X1` pass unchanged and condition the other
/// `C2 = C - C1` channels `X2` through a graph network,
///
/// ```text
/// H0 = relu(X1 Win + bin)                                 (per node)
/// H1 = relu(A_norm H0 Wmsg + H0 Wself + bmsg)             (one message-passing step)
/// [T, S] = H1 Wout + bout                                 (2 C2 outputs, zero-initialised)
/// Z2 = (X2 + T) * exp(2 tanh(S / 2)),   Z = cat(X1, Z2)   (channels)
/// ```
///
/// log-det per sample `sum_{v, c} 2 tanh(S[v, c] / 2)`; inverse
/// `X2 = Z2 exp(-2 tanh(S / 2)) - T` (the conditioner sees `Z1 = X1`). The
/// last layer starts at zero, so the layer starts as the identity. Node
/// permutations commute with every step (per-node maps and `A_norm`), so the
/// layer is permutation equivariant. The graph is given and replaced as for
/// [`GraphConvExp`]. Parameters: `input.*`, `message.*`, `self_loop.weight`,
/// `output.*`.
pub struct GraphCoupling {
    channels: usize,
    graph: RwLock<Graph>,
    input: NodeLinear,
    message: NodeLinear,
    self_loop: Tensor,
    output: NodeLinear,
}

const GC: &str = "GraphCoupling";

impl GraphCoupling {
    /// `(C1, C2)`: the conditioning and the transformed channel counts.
    pub fn split_sizes(channels: usize) -> (usize, usize) {
        (channels / 2, channels - channels / 2)
    }

    /// A coupling over `channels >= 2` channels with `hidden` hidden units per
    /// node for the graph `adjacency`; hidden weights are `randn / sqrt(fan_in)`
    /// from `gen`, the output layer zero.
    pub fn new(
        channels: usize,
        hidden: usize,
        adjacency: &Tensor,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let (c1, c2) = Self::split_sizes(channels);
        if c1 == 0 || hidden == 0 {
            return Err(Error::invalid(
                GC,
                format!("needs at least 2 channels and 1 hidden unit, got {channels} and {hidden}"),
            ));
        }
        let graph = Graph::new(GC, &adjacency.to_dtype(dtype)?.to_device(device)?)?;
        let input = NodeLinear::new(c1, hidden, 1.0 / (c1 as f64).sqrt(), dtype, device, gen)?;
        let h = 1.0 / (hidden as f64).sqrt();
        let message = NodeLinear::new(hidden, hidden, h, dtype, device, gen)?;
        let self_loop = gen
            .randn(&[hidden, hidden], DType::F64, Device::Cpu)?
            .mul_scalar(h)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let output = NodeLinear::new(hidden, 2 * c2, 0.0, dtype, device, gen)?;
        Ok(GraphCoupling {
            channels,
            graph: RwLock::new(graph),
            input,
            message,
            self_loop: parameter(self_loop)?,
            output,
        })
    }

    /// Replaces the graph (shared `(V, V)` or per-sample `(B, V, V)`).
    pub fn with_adjacency(&self, adjacency: &Tensor) -> Result<()> {
        let graph = Graph::new(
            GC,
            &adjacency
                .to_dtype(self.self_loop.dtype())?
                .to_device(self.self_loop.device())?,
        )?;
        self.set_graph(graph)
    }

    /// Replaces the graph with an already normalised one (of the layer's
    /// dtype and device).
    pub fn set_graph(&self, graph: Graph) -> Result<()> {
        graph.check_placement(GC, &self.self_loop)?;
        *self
            .graph
            .write()
            .map_err(|_| Error::invalid(GC, "graph lock poisoned"))? = graph;
        Ok(())
    }

    fn graph(&self) -> Result<Graph> {
        Ok(self
            .graph
            .read()
            .map_err(|_| Error::invalid(GC, "graph lock poisoned"))?
            .clone())
    }

    /// `(X1, X2, T, log scale)` for `x (N, V, C)`.
    fn split_and_condition(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let graph = self.graph()?;
        graph.check(GC, x, self.channels)?;
        let (c1, c2) = Self::split_sizes(self.channels);
        let (x1, x2) = (x.narrow(2, 0, c1)?, x.narrow(2, c1, c2)?);
        let h0 = self.input.forward(&x1)?.relu()?;
        let h1 = self
            .message
            .forward(&graph.propagate(&h0)?)?
            .add(&h0.matmul(&self.self_loop)?)?
            .relu()?;
        let out = self.output.forward(&h1)?;
        let shift = out.narrow(2, 0, c2)?;
        let log_s = ScaleFn::ExpTanh.log_scale(&out.narrow(2, c2, c2)?)?;
        Ok((x1, x2, shift, log_s))
    }
}

impl Flow for GraphCoupling {
    fn name(&self) -> &'static str {
        GC
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x1, x2, shift, log_s) = self.split_and_condition(x)?;
        let z2 = x2.add(&shift)?.mul(&log_s.exp()?)?;
        Ok((Tensor::cat(&[&x1, &z2], 2)?, sum_per_sample(&log_s)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (z1, z2, shift, log_s) = self.split_and_condition(z)?;
        let x2 = z2.mul(&log_s.neg()?.exp()?)?.sub(&shift)?;
        Ok((Tensor::cat(&[&z1, &x2], 2)?, sum_per_sample(&log_s)?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = self.input.parameters("input");
        p.extend(self.message.parameters("message"));
        p.push(("self_loop.weight".into(), self.self_loop.clone()));
        p.extend(self.output.parameters("output"));
        p
    }
}
