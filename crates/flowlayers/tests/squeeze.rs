//! Squeeze: the layer checks, Glow's channel ordering, and its errors.

use flowlayers::layers::squeeze::Squeeze;
use flowlayers::testing::{check_flow, FlowCheck};
use flowlayers::Flow;
use flowtensor::{DType, Device, Generator, Tensor};

#[test]
fn squeeze_passes_the_layer_checks() {
    let report = check_flow(&Squeeze::new(), &[2, 3, 4, 6], &FlowCheck::default()).unwrap();
    assert_eq!(report.parameters, 0);
    assert_eq!(report.max_inverse_error, 0.0);
}

#[test]
fn squeeze_uses_glows_ordering() {
    let (n, c, h, w) = (2, 3, 4, 6);
    let values: Vec<f64> = (0..n * c * h * w).map(|v| v as f64).collect();
    let x = Tensor::from_vec(values.clone(), &[n, c, h, w], Device::Cpu).unwrap();
    let (z, logdet) = Squeeze::new().forward(&x).unwrap();
    assert_eq!(z.shape(), [n, 4 * c, h / 2, w / 2]);
    assert_eq!(logdet.to_vec::<f64>().unwrap(), vec![0.0; n]);
    let z = z.to_vec::<f64>().unwrap();
    let (h2, w2) = (h / 2, w / 2);
    for b in 0..n {
        for ch in 0..c {
            for i in 0..2 {
                for j in 0..2 {
                    for y in 0..h2 {
                        for xx in 0..w2 {
                            let out = ((b * 4 * c + 4 * ch + 2 * i + j) * h2 + y) * w2 + xx;
                            let src = ((b * c + ch) * h + 2 * y + i) * w + 2 * xx + j;
                            assert_eq!(z[out], values[src], "channel {ch} offset ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn squeeze_in_f32_round_trips_exactly() {
    let x = Generator::new(4)
        .randn(&[1, 2, 2, 4], DType::F32, Device::Cpu)
        .unwrap();
    let layer = Squeeze::new();
    let (z, _) = layer.forward(&x).unwrap();
    let (back, logdet) = layer.inverse_with_logdet(&z).unwrap();
    assert_eq!(back.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert_eq!(logdet.to_vec::<f32>().unwrap(), vec![0.0]);
}

#[test]
fn odd_sizes_and_wrong_ranks_name_the_layer_and_shape() {
    let mut gen = Generator::new(1);
    for shape in [[2, 3, 5, 4].as_slice(), &[2, 3, 4, 3], &[2, 3, 4]] {
        let x = gen.randn(shape, DType::F64, Device::Cpu).unwrap();
        let msg = Squeeze::new().forward(&x).unwrap_err().to_string();
        let shape_text = format!("{shape:?}");
        assert!(
            msg.contains("Squeeze") && msg.contains(&shape_text),
            "{msg}"
        );
    }
    let z = gen.randn(&[2, 6, 2, 2], DType::F64, Device::Cpu).unwrap();
    let msg = Squeeze::new().inverse(&z).unwrap_err().to_string();
    assert!(
        msg.contains("Squeeze") && msg.contains("[2, 6, 2, 2]"),
        "{msg}"
    );
}
