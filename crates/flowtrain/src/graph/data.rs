//! Graphs with node features: the built-in seeded generators (rings, grids,
//! ladders, two communities), the JSON lines reader for the user's own
//! graphs, and batches as disjoint unions.

use crate::error::{Result, TrainError};
use flowtensor::{DType, Device, Generator, Tensor};
use serde::Deserialize;
use std::path::Path;

/// A graph with `V` nodes, `D` features per node (row-major `V x D`) and
/// undirected edges `(i, j)`, `i < j`, each listed once.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSample {
    pub features: Vec<f64>,
    pub dim: usize,
    pub edges: Vec<(usize, usize)>,
}

impl GraphSample {
    pub fn nodes(&self) -> usize {
        self.features.len() / self.dim.max(1)
    }

    /// The features of node `v`.
    pub fn node(&self, v: usize) -> &[f64] {
        &self.features[v * self.dim..(v + 1) * self.dim]
    }

    /// The same graph with its nodes in another order: new node `i` is old
    /// node `order[i]` (a permutation of `0..V`).
    pub fn relabelled(&self, order: &[usize]) -> GraphSample {
        let mut new_of_old = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_of_old[old] = new;
        }
        let features = order
            .iter()
            .flat_map(|&old| self.node(old))
            .copied()
            .collect();
        let edges = self
            .edges
            .iter()
            .map(|&(i, j)| {
                let (a, b) = (new_of_old[i], new_of_old[j]);
                (a.min(b), a.max(b))
            })
            .collect();
        GraphSample {
            features,
            dim: self.dim,
            edges,
        }
    }
}

/// The built-in families: 2-D node positions with Gaussian noise (standard
/// deviation [`POSITION_NOISE`]), 8 to 32 nodes, the nodes in random order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFamily {
    /// A cycle of `V` nodes on the unit circle, equally spaced from a random angle.
    Rings,
    /// An `r x c` lattice (spacing 0.5, centred) with 4-neighbour edges.
    Grids,
    /// Two rails of `n` nodes 0.5 apart, rungs between them.
    Ladders,
    /// Two communities of 4 to 16 nodes around `(-1, 0)` and `(1, 0)`
    /// (spread 0.3): a cycle through each, other pairs inside a community
    /// joined with probability 0.3, and one edge between the communities.
    Communities,
}

/// The standard deviation of the noise on the built-in graphs' positions.
pub const POSITION_NOISE: f64 = 0.05;

impl GraphFamily {
    pub const ALL: [GraphFamily; 4] = [
        GraphFamily::Rings,
        GraphFamily::Grids,
        GraphFamily::Ladders,
        GraphFamily::Communities,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GraphFamily::Rings => "rings",
            GraphFamily::Grids => "grids",
            GraphFamily::Ladders => "ladders",
            GraphFamily::Communities => "communities",
        }
    }

    pub fn parse(name: &str) -> Option<GraphFamily> {
        GraphFamily::ALL.into_iter().find(|f| f.name() == name)
    }

    /// `count` graphs drawn from `seed` (the same seed, the same graphs).
    pub fn generate(self, count: usize, seed: u64) -> Result<Vec<GraphSample>> {
        let mut rng = HostRng::new(seed);
        (0..count).map(|_| self.one(&mut rng)).collect()
    }

    fn one(self, rng: &mut HostRng) -> Result<GraphSample> {
        let (positions, edges) = match self {
            GraphFamily::Rings => {
                let v = rng.between(8, 32)?;
                let start = rng.uniform()? * std::f64::consts::TAU;
                let positions = (0..v)
                    .map(|i| {
                        let angle = start + std::f64::consts::TAU * i as f64 / v as f64;
                        [angle.cos(), angle.sin()]
                    })
                    .collect();
                (positions, (0..v).map(|i| (i, (i + 1) % v)).collect())
            }
            GraphFamily::Grids => {
                let (rows, cols) = loop {
                    let (r, c) = (rng.between(2, 5)?, rng.between(2, 8)?);
                    if (8..=32).contains(&(r * c)) {
                        break (r, c);
                    }
                };
                let at = |r: usize, c: usize| r * cols + c;
                let mut edges = Vec::new();
                for r in 0..rows {
                    for c in 0..cols {
                        if c + 1 < cols {
                            edges.push((at(r, c), at(r, c + 1)));
                        }
                        if r + 1 < rows {
                            edges.push((at(r, c), at(r + 1, c)));
                        }
                    }
                }
                let positions = (0..rows * cols)
                    .map(|i| lattice_point(i / cols, i % cols, rows, cols))
                    .collect();
                (positions, edges)
            }
            GraphFamily::Ladders => {
                let n = rng.between(4, 16)?;
                let mut edges: Vec<(usize, usize)> = (0..n).map(|i| (i, n + i)).collect();
                for i in 0..n - 1 {
                    edges.push((i, i + 1));
                    edges.push((n + i, n + i + 1));
                }
                let positions = (0..2 * n)
                    .map(|i| lattice_point(i / n, i % n, 2, n))
                    .collect();
                (positions, edges)
            }
            GraphFamily::Communities => {
                let sizes = [rng.between(4, 16)?, rng.between(4, 16)?];
                let mut positions = Vec::new();
                let mut edges = Vec::new();
                let mut first = 0;
                for (k, &size) in sizes.iter().enumerate() {
                    let centre = if k == 0 { -1.0 } else { 1.0 };
                    for _ in 0..size {
                        let (dx, dy) = (rng.normal()?, rng.normal()?);
                        positions.push([centre + 0.3 * dx, 0.3 * dy]);
                    }
                    for i in 0..size {
                        for j in i + 1..size {
                            if j == i + 1 || (i == 0 && j == size - 1) || rng.uniform()? < 0.3 {
                                edges.push((first + i, first + j));
                            }
                        }
                    }
                    first += size;
                }
                let (a, b) = (rng.below(sizes[0])?, sizes[0] + rng.below(sizes[1])?);
                edges.push((a, b));
                (positions, edges)
            }
        };
        let mut features = Vec::with_capacity(2 * positions.len());
        for [x, y] in positions {
            features.push(x + POSITION_NOISE * rng.normal()?);
            features.push(y + POSITION_NOISE * rng.normal()?);
        }
        let graph = GraphSample {
            features,
            dim: 2,
            edges,
        };
        let order = rng.permutation(graph.nodes());
        Ok(graph.relabelled(&order))
    }
}

/// Node `(r, c)` of an `rows x cols` lattice of spacing 0.5, centred on 0.
fn lattice_point(r: usize, c: usize, rows: usize, cols: usize) -> [f64; 2] {
    let centre = |i: usize, n: usize| 0.5 * (i as f64 - (n as f64 - 1.0) / 2.0);
    [centre(c, cols), centre(r, rows)]
}

/// Host-side draws from a [`Generator`], in blocks.
struct HostRng {
    gen: Generator,
    uniforms: Vec<f64>,
    normals: Vec<f64>,
}

const BLOCK: usize = 4096;

impl HostRng {
    fn new(seed: u64) -> Self {
        HostRng {
            gen: Generator::new(seed),
            uniforms: Vec::new(),
            normals: Vec::new(),
        }
    }

    /// Uniform on `[0, 1)`.
    fn uniform(&mut self) -> Result<f64> {
        if self.uniforms.is_empty() {
            self.uniforms = self
                .gen
                .uniform(&[BLOCK], 0.0, 1.0, DType::F64, Device::Cpu)?
                .to_vec_f64()?;
        }
        Ok(self.uniforms.pop().unwrap_or(0.0))
    }

    /// Standard normal.
    fn normal(&mut self) -> Result<f64> {
        if self.normals.is_empty() {
            self.normals = self
                .gen
                .randn(&[BLOCK], DType::F64, Device::Cpu)?
                .to_vec_f64()?;
        }
        Ok(self.normals.pop().unwrap_or(0.0))
    }

    /// Uniform on `0..n`.
    fn below(&mut self, n: usize) -> Result<usize> {
        Ok(((self.uniform()? * n as f64) as usize).min(n - 1))
    }

    /// Uniform on `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> Result<usize> {
        Ok(lo + self.below(hi - lo + 1)?)
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        self.gen.permutation(n)
    }
}

/// One line of a graph file.
#[derive(Deserialize)]
struct GraphLine {
    nodes: Vec<Vec<f64>>,
    edges: Vec<[usize; 2]>,
}

/// Reads a JSON lines file of graphs, one per line:
/// `{"nodes": [[x, y], ...], "edges": [[i, j], ...]}` (node features, the
/// same number `>= 2` on every node of the file; undirected edges between
/// node indices, each pair once or twice in either order). Blank lines are
/// skipped. A malformed line is an error naming the file and the line.
pub fn load_graphs(path: &Path) -> Result<Vec<GraphSample>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut graphs = Vec::new();
    let mut dim = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: String| TrainError::data(path, format!("line {}: {detail}", index + 1));
        let parsed: GraphLine = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e}; expected {{\"nodes\": [[x, y], ...], \"edges\": [[i, j], ...]}}"
            ))
        })?;
        let v = parsed.nodes.len();
        if v == 0 {
            return Err(bad("the graph has no nodes".into()));
        }
        let d = parsed.nodes[0].len();
        let want = *dim.get_or_insert(d);
        if want < 2 {
            return Err(bad(format!(
                "nodes have {want} feature(s); the graph flows need at least 2"
            )));
        }
        if let Some(n) = parsed.nodes.iter().position(|f| f.len() != want) {
            return Err(bad(format!(
                "node {n} has {} features, the file's nodes have {want}",
                parsed.nodes[n].len()
            )));
        }
        let mut edges = Vec::with_capacity(parsed.edges.len());
        for &[i, j] in &parsed.edges {
            if i >= v || j >= v {
                return Err(bad(format!("edge [{i}, {j}] names a node outside 0..{v}")));
            }
            if i == j {
                return Err(bad(format!("edge [{i}, {j}] is a self loop")));
            }
            let key = (i.min(j), i.max(j));
            if !edges.contains(&key) {
                edges.push(key);
            }
        }
        graphs.push(GraphSample {
            features: parsed.nodes.concat(),
            dim: want,
            edges,
        });
    }
    if graphs.is_empty() {
        return Err(TrainError::data(
            path,
            "no graphs (expected one JSON object per line)",
        ));
    }
    Ok(graphs)
}

/// Writes graphs in the format [`load_graphs`] reads.
pub fn graphs_to_json_lines(graphs: &[GraphSample]) -> String {
    let mut out = String::new();
    for g in graphs {
        let nodes: Vec<&[f64]> = (0..g.nodes()).map(|v| g.node(v)).collect();
        let edges: Vec<[usize; 2]> = g.edges.iter().map(|&(i, j)| [i, j]).collect();
        let line = serde_json::json!({ "nodes": nodes, "edges": edges });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Graphs batched as their disjoint union: node features `(1, sum V, D)`
/// and the block-diagonal adjacency `(sum V, sum V)`.
pub struct GraphBatch {
    pub features: Tensor,
    pub adjacency: Tensor,
    pub nodes: usize,
}

impl GraphBatch {
    pub fn new(graphs: &[&GraphSample], dtype: DType, device: Device) -> Result<GraphBatch> {
        let dim = graphs.first().map_or(2, |g| g.dim);
        let total: usize = graphs.iter().map(|g| g.nodes()).sum();
        let mut features = Vec::with_capacity(total * dim);
        let mut adjacency = vec![0.0; total * total];
        let mut first = 0;
        for g in graphs {
            features.extend_from_slice(&g.features);
            for &(i, j) in &g.edges {
                let (i, j) = (first + i, first + j);
                adjacency[i * total + j] = 1.0;
                adjacency[j * total + i] = 1.0;
            }
            first += g.nodes();
        }
        let place = |values: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_vec(values, shape, Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?)
        };
        Ok(GraphBatch {
            features: place(features, &[1, total, dim])?,
            adjacency: place(adjacency, &[total, total])?,
            nodes: total,
        })
    }
}
