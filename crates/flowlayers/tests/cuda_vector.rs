//! Flows on vectors on `Device::Cuda(0)` against the CPU: the log-density,
//! its gradients for every parameter, and the inverse, for RealNVP, MAF and
//! both spline flows (the spline's bin search and gathers run on the device).
//! With a GPU this runs on it; without one on the CPU emulation when built
//! with `cuda-emu` (`.ci/cuda`), and is skipped (with the reason) otherwise.
//!
//! f64 models: every value within 1e-10 relative (the sums are short, and
//! the backends add in different orders).

use flowlayers::layers::ScaleFn;
use flowlayers::vector::{
    AffineCoupling, CouplingMask, MadeOrder, MaskedAutoregressive, NetConfig, SplineAutoregressive,
    SplineConfig, SplineCoupling,
};
use flowlayers::{Flow, FlowDistribution, Sequential, StandardNormal};
use flowtensor::{DType, Device, Generator, Tensor};

fn cuda() -> Option<Device> {
    match flowtensor::cuda::probe(0) {
        Ok(_) => Some(Device::Cuda(0)),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn model(kind: usize, d: usize, device: Device) -> FlowDistribution {
    let mut gen = Generator::new(7);
    let net = NetConfig {
        hidden_features: 16,
        hidden_layers: 2,
        ..NetConfig::default()
    };
    let spline = SplineConfig {
        bins: 5,
        bound: 2.0,
        ..SplineConfig::default()
    };
    let (dt, g) = (DType::F64, &mut gen);
    let layers: Vec<Box<dyn Flow>> = (0..2)
        .map(|l| -> Box<dyn Flow> {
            let mask = if l == 0 {
                CouplingMask::alternating(d)
            } else {
                CouplingMask::alternating(d).flipped()
            };
            match kind {
                0 => Box::new(
                    AffineCoupling::new(mask, ScaleFn::ExpTanh, net, dt, device, g).unwrap(),
                ),
                1 => Box::new(
                    MaskedAutoregressive::new(
                        d,
                        MadeOrder::Random(l as u64),
                        ScaleFn::ExpTanh,
                        net,
                        dt,
                        device,
                        g,
                    )
                    .unwrap(),
                ),
                2 => Box::new(SplineCoupling::new(mask, spline, net, dt, device, g).unwrap()),
                _ => Box::new(
                    SplineAutoregressive::new(d, MadeOrder::Natural, spline, net, dt, device, g)
                        .unwrap(),
                ),
            }
        })
        .collect();
    let flow = Sequential::new(layers);
    // the same perturbation on both devices (drawn on the CPU, then moved)
    let mut noise = Generator::new(8);
    for (_, p) in flow.parameters() {
        let delta = noise
            .randn(p.shape(), p.dtype(), Device::Cpu)
            .unwrap()
            .mul_scalar(0.3)
            .unwrap()
            .to_device(device)
            .unwrap();
        p.set_data(&p.detach().add(&delta).unwrap()).unwrap();
    }
    FlowDistribution::new(
        Box::new(flow),
        Box::new(StandardNormal::new(&[d], dt, device)),
    )
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    assert_eq!(g.len(), w.len(), "{what}");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= 1e-10 * b.abs().max(1.0),
            "{what}: element {i} is {a} on the device, {b} on the CPU"
        );
    }
}

#[test]
fn vector_flows_on_the_device_match_the_cpu() {
    let Some(device) = cuda() else { return };
    let d = 5;
    // values inside and outside the splines' bound
    let x = Generator::new(1)
        .randn(&[9, d], DType::F64, Device::Cpu)
        .unwrap()
        .mul_scalar(1.5)
        .unwrap();
    for kind in 0..4 {
        let (cpu, dev) = (model(kind, d, Device::Cpu), model(kind, d, device));
        let run = |m: &FlowDistribution, x: &Tensor| {
            let lp = m.log_prob(x).unwrap();
            let grads = lp.mean_all().unwrap().backward_grads().unwrap();
            let g: Vec<Tensor> = m
                .parameters()
                .iter()
                .map(|(_, p)| grads.get(p).unwrap().to_device(Device::Cpu).unwrap())
                .collect();
            (lp.to_device(Device::Cpu).unwrap(), g)
        };
        let (lp_cpu, g_cpu) = run(&cpu, &x);
        let (lp_dev, g_dev) = run(&dev, &x.to_device(device).unwrap());
        assert_close(&lp_dev, &lp_cpu, &format!("flow {kind}: log p"));
        for (i, (a, b)) in g_dev.iter().zip(&g_cpu).enumerate() {
            assert_close(a, b, &format!("flow {kind}: gradient {i}"));
        }
        let (z, _) = dev.flow.forward(&x.to_device(device).unwrap()).unwrap();
        let back = dev.flow.inverse(&z).unwrap();
        assert_eq!(back.device(), device);
        assert_close(
            &back.to_device(Device::Cpu).unwrap(),
            &x,
            &format!("flow {kind}: inverse"),
        );
    }
}
