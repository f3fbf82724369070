//! Graph normalizing flows: the layer checks for every mixing, the density's
//! invariance to the node order, disjoint unions as batches, and errors.

use flowlayers::flowtensor::conv_exp::Terms;
use flowlayers::testing::{check_flow, perturb_parameters, FlowCheck};
use flowlayers::vector::{ActNorm as VectorActNorm, InvertibleLinear};
use flowlayers::{Flow, GraphFlow, GraphFlowConfig, GraphMixing, NodeWise};
use flowtensor::{DType, Device, Generator, Tensor};

const MIXINGS: [GraphMixing; 3] = [
    GraphMixing::Reverse,
    GraphMixing::OneByOne,
    GraphMixing::ConvExp(Terms::Fixed(30)),
];

/// The adjacency `(V, V)` of `edges`, as f64.
fn adjacency(nodes: usize, edges: &[(usize, usize)]) -> Tensor {
    let mut a = vec![0.0; nodes * nodes];
    for &(i, j) in edges {
        a[i * nodes + j] = 1.0;
        a[j * nodes + i] = 1.0;
    }
    Tensor::from_vec(a, &[nodes, nodes], Device::Cpu).unwrap()
}

/// A ring of `n` nodes with one chord (and so nodes of degree 2 and 3).
fn ring_with_chord(n: usize) -> Tensor {
    let mut edges: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    edges.push((0, n / 2));
    adjacency(n, &edges)
}

fn flow(channels: usize, mixing: GraphMixing, seed: u64) -> GraphFlow {
    let config = GraphFlowConfig {
        channels,
        steps: 2,
        hidden: 6,
        mixing,
    };
    GraphFlow::new(config, DType::F64, Device::Cpu, &mut Generator::new(seed)).unwrap()
}

#[test]
fn every_mixing_passes_the_layer_checks() {
    for mixing in MIXINGS {
        for (channels, nodes) in [(2, 5), (3, 4)] {
            let model = flow(channels, mixing, 1);
            model.set_adjacency(&ring_with_chord(nodes)).unwrap();
            let report = check_flow(&model, &[2, nodes, channels], &FlowCheck::default())
                .unwrap_or_else(|e| panic!("{mixing:?} with {channels} channels: {e}"));
            assert!(report.parameters > 0);
        }
        // one graph per sample
        let model = flow(2, mixing, 2);
        let graphs =
            Tensor::stack(&[&ring_with_chord(4), &adjacency(4, &[(0, 1), (2, 3)])], 0).unwrap();
        model.set_adjacency(&graphs).unwrap();
        check_flow(&model, &[2, 4, 2], &FlowCheck::default())
            .unwrap_or_else(|e| panic!("{mixing:?} on per-sample graphs: {e}"));
    }
}

#[test]
fn node_wise_layers_pass_the_layer_checks() {
    let mut gen = Generator::new(3);
    let layers: Vec<Box<dyn Flow>> = vec![
        Box::new(VectorActNorm::new(3, DType::F64, Device::Cpu).unwrap()),
        Box::new(InvertibleLinear::new(3, DType::F64, Device::Cpu, &mut gen).unwrap()),
    ];
    for layer in layers {
        let node_wise = NodeWise::new(layer);
        check_flow(&node_wise, &[2, 4, 3], &FlowCheck::default()).unwrap();
    }
}

/// `(P x, P A P^T)` for the permutation `perm` (`new node i = old node perm[i]`).
fn relabel(x: &Tensor, a: &Tensor, perm: &[usize]) -> (Tensor, Tensor) {
    let (n, v, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (xs, avals) = (x.to_vec::<f64>().unwrap(), a.to_vec::<f64>().unwrap());
    let mut px = vec![0.0; xs.len()];
    for s in 0..n {
        for (i, &p) in perm.iter().enumerate() {
            for k in 0..c {
                px[(s * v + i) * c + k] = xs[(s * v + p) * c + k];
            }
        }
    }
    let mut pa = vec![0.0; v * v];
    for i in 0..v {
        for j in 0..v {
            pa[i * v + j] = avals[perm[i] * v + perm[j]];
        }
    }
    (
        Tensor::from_vec(px, &[n, v, c], Device::Cpu).unwrap(),
        Tensor::from_vec(pa, &[v, v], Device::Cpu).unwrap(),
    )
}

#[test]
fn the_log_likelihood_does_not_depend_on_the_node_order() {
    let edges = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 0),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 4),
        (1, 5),
    ];
    let a = adjacency(7, &edges);
    for mixing in MIXINGS {
        let model = flow(2, mixing, 4);
        let mut gen = Generator::new(5);
        let x = gen.randn(&[3, 7, 2], DType::F64, Device::Cpu).unwrap();
        model.log_prob(&x, &a).unwrap(); // ActNorm's initialisation
        perturb_parameters(&model, 0.2, &mut gen).unwrap();
        model.set_training(false);
        let before = model.log_prob(&x, &a).unwrap().to_vec::<f64>().unwrap();
        for perm in [[6, 5, 4, 3, 2, 1, 0], [3, 0, 6, 1, 5, 2, 4]] {
            let (px, pa) = relabel(&x, &a, &perm);
            let after = model.log_prob(&px, &pa).unwrap().to_vec::<f64>().unwrap();
            for (b, p) in before.iter().zip(&after) {
                assert!((b - p).abs() < 1e-10, "{mixing:?} {perm:?}: {b} vs {p}");
            }
            // and the latent is permuted the same way (equivariance)
            model.set_adjacency(&a).unwrap();
            let z = model.forward(&x).unwrap().0;
            model.set_adjacency(&pa).unwrap();
            let pz = model.forward(&px).unwrap().0;
            let (want, _) = relabel(&z, &a, &perm);
            let diff = pz
                .sub(&want)
                .unwrap()
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(diff < 1e-10, "{mixing:?}: {diff}");
        }
        // the couplings pass messages along the edges: another graph on
        // the same features is another density
        let other = model
            .log_prob(&x, &adjacency(7, &edges[..4]))
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        assert_ne!(before, other, "{mixing:?}");
    }
}

#[test]
fn a_disjoint_union_scores_the_sum_of_its_graphs() {
    let (a1, a2) = (ring_with_chord(5), adjacency(3, &[(0, 1), (1, 2)]));
    let mut union = vec![0.0; 64];
    for (i, v) in a1.to_vec::<f64>().unwrap().into_iter().enumerate() {
        union[(i / 5) * 8 + i % 5] = v;
    }
    for (i, v) in a2.to_vec::<f64>().unwrap().into_iter().enumerate() {
        union[(5 + i / 3) * 8 + 5 + i % 3] = v;
    }
    let union = Tensor::from_vec(union, &[8, 8], Device::Cpu).unwrap();
    for mixing in MIXINGS {
        let model = flow(2, mixing, 6);
        let mut gen = Generator::new(7);
        let x = gen.randn(&[1, 8, 2], DType::F64, Device::Cpu).unwrap();
        model.log_prob(&x, &union).unwrap();
        perturb_parameters(&model, 0.2, &mut gen).unwrap();
        model.set_training(false);
        let whole = model.log_prob(&x, &union).unwrap().to_scalar().unwrap();
        let first = model.log_prob(&x.narrow(1, 0, 5).unwrap(), &a1).unwrap();
        let second = model.log_prob(&x.narrow(1, 5, 3).unwrap(), &a2).unwrap();
        let parts = first.to_scalar().unwrap() + second.to_scalar().unwrap();
        assert!(
            (whole - parts).abs() < 1e-10,
            "{mixing:?}: {whole} vs {parts}"
        );
    }
}

#[test]
fn samples_have_the_graphs_shape_and_errors_name_the_shapes() {
    let model = flow(2, GraphMixing::ConvExp(Terms::Fixed(30)), 8);
    let a = ring_with_chord(6);
    let x = Generator::new(9)
        .randn(&[4, 6, 2], DType::F64, Device::Cpu)
        .unwrap();
    model.log_prob(&x, &a).unwrap();
    let samples = model.sample(&a, 3, 6, 0.8, &mut Generator::new(1)).unwrap();
    assert_eq!(samples.shape(), [3, 6, 2]);
    assert!(samples
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    let msg = model
        .log_prob(
            &Tensor::zeros(&[1, 6, 3], DType::F64, Device::Cpu).unwrap(),
            &a,
        )
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("GraphFlow") && msg.contains("[1, 6, 3]"),
        "{msg}"
    );
    let msg = model
        .log_prob(
            &Tensor::zeros(&[1, 5, 2], DType::F64, Device::Cpu).unwrap(),
            &a,
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nodes"), "{msg}");
    // a graph normalised in another dtype is refused by name
    let layer = flowlayers::layers::GraphConvExp::new(
        2,
        &a,
        Terms::Fixed(4),
        DType::F64,
        Device::Cpu,
        &mut Generator::new(2),
    )
    .unwrap();
    let f32_graph =
        flowlayers::layers::Graph::new("test", &a.to_dtype(DType::F32).unwrap()).unwrap();
    let msg = layer.set_graph(f32_graph).unwrap_err().to_string();
    assert!(msg.contains("GraphConvExp") && msg.contains("F32"), "{msg}");
    let config = GraphFlowConfig {
        channels: 1,
        steps: 1,
        hidden: 4,
        mixing: GraphMixing::Reverse,
    };
    assert!(GraphFlow::new(config, DType::F64, Device::Cpu, &mut Generator::new(0)).is_err());
}
