//! GraphConvExp and GraphCoupling: the layer checks (inverse, log-det against
//! the dense Jacobian, gradients), the closed-form log-det, node-permutation
//! equivariance, per-sample graphs, and errors.

use flowlayers::flowtensor::conv_exp::Terms;
use flowlayers::layers::{Graph, GraphConvExp, GraphCoupling};
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::{Flow, Sequential};
use flowtensor::{DType, Device, Generator, Tensor};

const V: usize = 5;
const C: usize = 4;

/// A symmetric 0/1 adjacency without self loops on `v` nodes: a path
/// `0 - 1 - ... - (v-2)` plus the chord `0 - 2`, and node `v - 1` isolated.
fn adjacency(v: usize) -> Tensor {
    let mut a = vec![0.0f64; v * v];
    let mut link = |i: usize, j: usize| {
        a[i * v + j] = 1.0;
        a[j * v + i] = 1.0;
    };
    for i in 0..v - 2 {
        link(i, i + 1);
    }
    link(0, 2);
    Tensor::from_vec(a, &[v, v], Device::Cpu).unwrap()
}

/// A second graph on `v` nodes: a cycle.
fn cycle(v: usize) -> Tensor {
    let mut a = vec![0.0f64; v * v];
    for i in 0..v {
        let j = (i + 1) % v;
        a[i * v + j] = 1.0;
        a[j * v + i] = 1.0;
    }
    Tensor::from_vec(a, &[v, v], Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .unwrap()
        .to_vec_f64()
        .unwrap()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

fn conv_exp(adj: &Tensor, terms: Terms, seed: u64) -> GraphConvExp {
    let mut gen = Generator::new(seed);
    GraphConvExp::new(C, adj, terms, DType::F64, Device::Cpu, &mut gen).unwrap()
}

fn coupling(adj: &Tensor, seed: u64) -> GraphCoupling {
    let mut gen = Generator::new(seed);
    GraphCoupling::new(C, 8, adj, DType::F64, Device::Cpu, &mut gen).unwrap()
}

#[test]
fn normalized_adjacency_is_symmetric_with_zero_rows_for_isolated_nodes() {
    let g = Graph::new("test", &adjacency(V)).unwrap();
    let n = g.normalized().to_vec_f64().unwrap();
    // degrees: node 0: {1, 2}, node 1: {0, 2}, node 2: {1, 3, 0}, node 3: {2}, node 4: {}.
    let deg = [2.0f64, 2.0, 3.0, 1.0, 0.0];
    for i in 0..V {
        for j in 0..V {
            assert_eq!(n[i * V + j], n[j * V + i]);
        }
        assert_eq!(n[i * V + i], 0.0);
        assert_eq!(n[(V - 1) * V + i], 0.0);
    }
    assert!((n[2] - 1.0 / (deg[0] * deg[2]).sqrt()).abs() < 1e-15);
    assert_eq!(g.traces(), &[0.0]);
}

#[test]
fn graph_conv_exp_passes_the_layer_checks() {
    for (terms, seed) in [
        (Terms::Fixed(30), 0u64),
        (
            Terms::Adaptive {
                tol: 1e-15,
                max: 60,
            },
            1,
        ),
    ] {
        let layer = conv_exp(&adjacency(V), terms, seed);
        let report = check_flow(&layer, &[2, V, C], &FlowCheck::default()).unwrap();
        assert_eq!(report.parameters, 3);
        assert!(layer.last_terms_used() > 0);
        if let Terms::Adaptive { max, .. } = terms {
            assert!(layer.last_terms_used() < max, "{}", layer.last_terms_used());
        }
    }
}

#[test]
fn graph_conv_exp_logdet_is_v_times_trace_w0() {
    let layer = conv_exp(&adjacency(V), Terms::Fixed(30), 3);
    let x = Generator::new(4)
        .randn(&[3, V, C], DType::F64, Device::Cpu)
        .unwrap();
    let (_, logdet) = layer.forward(&x).unwrap();
    let params = layer.parameters();
    let w0 = params[0].1.to_vec_f64().unwrap();
    let tr: f64 = (0..C).map(|c| w0[c * C + c]).sum();
    for ld in logdet.to_vec_f64().unwrap() {
        assert!(
            (ld - V as f64 * tr).abs() < 1e-14,
            "{ld} vs {}",
            V as f64 * tr
        );
    }
}

#[test]
fn graph_coupling_passes_the_layer_checks_and_starts_as_identity() {
    let layer = coupling(&adjacency(V), 0);
    let x = Generator::new(5)
        .randn(&[2, V, C], DType::F64, Device::Cpu)
        .unwrap();
    let (z, logdet) = layer.forward(&x).unwrap();
    assert_eq!(max_diff(&z, &x), 0.0);
    assert_eq!(logdet.to_vec_f64().unwrap(), vec![0.0, 0.0]);
    check_flow(&layer, &[2, V, C], &FlowCheck::default()).unwrap();
}

#[test]
fn sequential_graph_flow_passes_the_layer_checks() {
    let adj = adjacency(V);
    let flow = Sequential::new(vec![
        Box::new(coupling(&adj, 0)),
        Box::new(conv_exp(&adj, Terms::Fixed(30), 1)),
        Box::new(coupling(&adj, 2)),
        Box::new(conv_exp(
            &adj,
            Terms::Adaptive {
                tol: 1e-15,
                max: 60,
            },
            3,
        )),
    ]);
    check_flow(&flow, &[2, V, C], &FlowCheck::default()).unwrap();
}

#[test]
fn per_sample_graphs_pass_the_layer_checks_and_match_shared_graphs() {
    let (a, b) = (adjacency(V), cycle(V));
    let batch = Tensor::stack(&[&a, &b], 0).unwrap();
    let layer = conv_exp(&batch, Terms::Fixed(30), 6);
    check_flow(&layer, &[2, V, C], &FlowCheck::default()).unwrap();
    let coup = coupling(&batch, 7);
    check_flow(&coup, &[2, V, C], &FlowCheck::default()).unwrap();

    // Sample i of a per-sample batch equals the layer with graph i shared.
    let x = Generator::new(8)
        .randn(&[2, V, C], DType::F64, Device::Cpu)
        .unwrap();
    let (z, _) = layer.forward(&x).unwrap();
    for (i, g) in [a, b].iter().enumerate() {
        layer.with_adjacency(g).unwrap();
        let (zi, _) = layer.forward(&x.narrow(0, i, 1).unwrap()).unwrap();
        assert!(max_diff(&zi, &z.narrow(0, i, 1).unwrap()) < 1e-14);
    }
}

/// `t` with its node axes permuted: `out[.., k, ..] = t[.., perm[k], ..]`.
fn permute_nodes(t: &Tensor, dims: &[usize], perm: &[usize]) -> Tensor {
    let mut t = t.clone();
    for &d in dims {
        t = t.index_select(d, perm).unwrap();
    }
    t.contiguous().unwrap()
}

#[test]
fn layers_are_node_permutation_equivariant() {
    let perm = [3usize, 0, 4, 2, 1];
    let adj = adjacency(V);
    let adj_p = permute_nodes(&adj, &[0, 1], &perm);
    let x = Generator::new(9)
        .randn(&[2, V, C], DType::F64, Device::Cpu)
        .unwrap();
    let x_p = permute_nodes(&x, &[1], &perm);
    let flows: Vec<(Box<dyn Flow>, Box<dyn Flow>)> = vec![
        (
            Box::new(conv_exp(&adj, Terms::Fixed(30), 10)),
            Box::new(conv_exp(&adj_p, Terms::Fixed(30), 10)),
        ),
        (Box::new(coupling(&adj, 11)), Box::new(coupling(&adj_p, 11))),
    ];
    for (f, f_p) in &flows {
        // Give the zero-initialised output layers non-trivial, equal values.
        let mut gen = Generator::new(12);
        for ((_, p), (_, q)) in f.parameters().iter().zip(f_p.parameters()) {
            let noise = gen.randn(p.shape(), DType::F64, Device::Cpu).unwrap();
            let v = p.add(&noise.mul_scalar(0.1).unwrap()).unwrap();
            p.set_data(&v).unwrap();
            q.set_data(&v).unwrap();
        }
        let (z, ld) = f.forward(&x).unwrap();
        let (z_p, ld_p) = f_p.forward(&x_p).unwrap();
        assert!(max_diff(&permute_nodes(&z, &[1], &perm), &z_p) < 1e-12);
        assert!(max_diff(&ld, &ld_p) < 1e-12);
        let back = f_p.inverse(&z_p).unwrap();
        assert!(max_diff(&back, &x_p) < 1e-10);
    }
}

fn error_text<T>(r: flowtensor::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_layer_and_shapes() {
    let adj = adjacency(V);
    let layer = conv_exp(&adj, Terms::Fixed(10), 0);
    let coup = coupling(&adj, 0);
    let zeros = |s: &[usize]| Tensor::zeros(s, DType::F64, Device::Cpu).unwrap();

    // Wrong number of nodes.
    let e = error_text(layer.forward(&zeros(&[2, V + 1, C])));
    assert!(e.contains("GraphConvExp") && e.contains("6"), "{e}");
    let e = error_text(coup.forward(&zeros(&[2, V + 1, C])));
    assert!(e.contains("GraphCoupling") && e.contains("5 nodes"), "{e}");
    // Wrong number of channels.
    let e = error_text(layer.inverse(&zeros(&[2, V, C + 1])));
    assert!(
        e.contains("GraphConvExp") && e.contains("4 channels"),
        "{e}"
    );
    // Wrong rank.
    let e = error_text(layer.forward(&zeros(&[2, V * C])));
    assert!(e.contains("GraphConvExp") && e.contains("20"), "{e}");
    // Non-square adjacency.
    let mut gen = Generator::new(0);
    let e = error_text(GraphConvExp::new(
        C,
        &zeros(&[V, V + 1]),
        Terms::Fixed(5),
        DType::F64,
        Device::Cpu,
        &mut gen,
    ));
    assert!(
        e.contains("GraphConvExp") && e.contains("square") && e.contains("6"),
        "{e}"
    );
    let e = error_text(coup.with_adjacency(&zeros(&[2, V, V + 1])));
    assert!(e.contains("GraphCoupling") && e.contains("square"), "{e}");
    // Per-sample graphs need a matching batch.
    let batch = Tensor::stack(&[&adj, &adj, &adj], 0).unwrap();
    layer.with_adjacency(&batch).unwrap();
    let e = error_text(layer.forward(&zeros(&[2, V, C])));
    assert!(
        e.contains("GraphConvExp") && e.contains("(3, 5 nodes"),
        "{e}"
    );
    // Not symmetric, self loops, non-binary entries.
    let mut a = vec![0.0f64; V * V];
    a[1] = 1.0;
    let asym = Tensor::from_vec(a.clone(), &[V, V], Device::Cpu).unwrap();
    assert!(error_text(layer.with_adjacency(&asym)).contains("symmetric"));
    a[1] = 0.0;
    a[0] = 1.0;
    let looped = Tensor::from_vec(a.clone(), &[V, V], Device::Cpu).unwrap();
    assert!(error_text(layer.with_adjacency(&looped)).contains("self loop"));
    a[0] = 0.0;
    a[1] = 0.5;
    a[V] = 0.5;
    let weighted = Tensor::from_vec(a, &[V, V], Device::Cpu).unwrap();
    assert!(error_text(layer.with_adjacency(&weighted)).contains("not 0 or 1"));
    // Bad configuration.
    let e = error_text(GraphConvExp::new(
        C,
        &adj,
        Terms::Adaptive { tol: -1.0, max: 5 },
        DType::F64,
        Device::Cpu,
        &mut gen,
    ));
    assert!(e.contains("GraphConvExp") && e.contains("tolerance"), "{e}");
    let e = error_text(GraphCoupling::new(
        1,
        8,
        &adj,
        DType::F64,
        Device::Cpu,
        &mut gen,
    ));
    assert!(
        e.contains("GraphCoupling") && e.contains("2 channels"),
        "{e}"
    );
}

/// `exp(K)` of a dense row-major `(d, d)` matrix by its Taylor series.
fn dense_expm(k: &[f64], d: usize) -> Vec<f64> {
    let mut sum = vec![0.0; d * d];
    let mut term = vec![0.0; d * d];
    for i in 0..d {
        sum[i * d + i] = 1.0;
        term[i * d + i] = 1.0;
    }
    for n in 1..60 {
        let mut next = vec![0.0; d * d];
        for i in 0..d {
            for l in 0..d {
                let kil = k[i * d + l];
                for j in 0..d {
                    next[i * d + j] += kil * term[l * d + j] / n as f64;
                }
            }
        }
        term = next;
        for (s, t) in sum.iter_mut().zip(&term) {
            *s += t;
        }
    }
    sum
}

#[test]
fn jacobian_is_the_exponential_of_the_kronecker_form() {
    // M = I_V ⊗ W0^T + A_norm ⊗ W1^T on vec(X) (row-major, index v C + c):
    // K[(v, c), (u, e)] = delta_vu W0[e, c] + A_norm[v, u] W1[e, c].
    let adj = adjacency(V);
    let layer = conv_exp(&adj, Terms::Fixed(40), 13);
    let mut gen = Generator::new(14);
    for (_, p) in layer.parameters() {
        let noise = gen.randn(p.shape(), DType::F64, Device::Cpu).unwrap();
        p.set_data(&p.add(&noise.mul_scalar(0.2).unwrap()).unwrap())
            .unwrap();
    }
    let params = layer.parameters();
    let w0 = params[0].1.to_vec_f64().unwrap();
    let w1 = params[1].1.to_vec_f64().unwrap();
    let an = Graph::new("test", &adj)
        .unwrap()
        .normalized()
        .to_vec_f64()
        .unwrap();
    let d = V * C;
    let mut k = vec![0.0; d * d];
    for v in 0..V {
        for c in 0..C {
            for u in 0..V {
                for e in 0..C {
                    let id = if u == v { w0[e * C + c] } else { 0.0 };
                    k[(v * C + c) * d + u * C + e] = id + an[v * V + u] * w1[e * C + c];
                }
            }
        }
    }
    let want = dense_expm(&k, d);
    let x = Generator::new(15)
        .randn(&[1, V, C], DType::F64, Device::Cpu)
        .unwrap();
    let jac = flowlayers::testing::jacobian(&layer, &x)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let err = jac
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-12, "{err}");
    // trace(K) = V tr(W0) = the layer's log-det.
    let trace: f64 = (0..d).map(|i| k[i * d + i]).sum();
    let (_, ld) = layer.forward(&x).unwrap();
    assert!((ld.to_vec_f64().unwrap()[0] - trace).abs() < 1e-13);
}
