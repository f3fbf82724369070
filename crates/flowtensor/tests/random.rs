//! The Philox4x32-10 generator: known answers, reproducibility, distributions.

use flowtensor::random::philox4x32_10;
use flowtensor::{DType, Device, Generator, GeneratorState};

#[test]
fn philox_known_answer_vectors() {
    // Random123's tests/kat_vectors, the three "philox4x32 10" lines.
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn same_seed_same_values_and_state_resumes() {
    let draw = |g: &mut Generator| {
        g.randn(&[1000], DType::F64, Device::Cpu)
            .unwrap()
            .to_vec::<f64>()
            .unwrap()
    };
    let (mut a, mut b) = (Generator::new(7), Generator::new(7));
    assert_eq!(draw(&mut a), draw(&mut b));
    let saved = a.state();
    let next = draw(&mut a);
    let mut resumed = Generator::from_state(GeneratorState { ..saved });
    assert_eq!(draw(&mut resumed), next);
    assert_ne!(draw(&mut Generator::new(8)), draw(&mut Generator::new(7)));
}

#[test]
fn values_do_not_depend_on_how_the_tensor_is_split() {
    // The large draw is generated in parallel, the two halves sequentially.
    let n = 3 * flowtensor::PAR_THRESHOLD;
    let whole = Generator::new(3)
        .uniform(&[n], 0.0, 1.0, DType::F64, Device::Cpu)
        .unwrap();
    let mut g = Generator::new(3);
    let first = g
        .uniform(&[n / 2], 0.0, 1.0, DType::F64, Device::Cpu)
        .unwrap();
    let second = g
        .uniform(&[n - n / 2], 0.0, 1.0, DType::F64, Device::Cpu)
        .unwrap();
    let mut halves = first.to_vec::<f64>().unwrap();
    halves.extend(second.to_vec::<f64>().unwrap());
    assert_eq!(whole.to_vec::<f64>().unwrap(), halves);
}

#[test]
fn f32_draws_are_the_f64_draws_rounded() {
    let a = Generator::new(5)
        .randn(&[64], DType::F64, Device::Cpu)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let b = Generator::new(5)
        .randn(&[64], DType::F32, Device::Cpu)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| *x as f32 == *y));
}

#[test]
fn distributions_have_the_right_moments() {
    let n = 200_000;
    let z = Generator::new(11)
        .normal(&[n], 2.0, 3.0, DType::F64, Device::Cpu)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    // standard errors: 3/sqrt(n) = 0.0067 for the mean, about 0.03 for the variance
    assert!((mean - 2.0).abs() < 0.03, "mean {mean}");
    assert!((var - 9.0).abs() < 0.15, "variance {var}");
    let u = Generator::new(12)
        .uniform(&[n], -1.0, 3.0, DType::F64, Device::Cpu)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
    let mean = u.iter().sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.02, "uniform mean {mean}");
}

#[test]
fn permutation_is_a_permutation() {
    let mut p = Generator::new(2).permutation(100);
    assert_ne!(p, (0..100).collect::<Vec<_>>());
    p.sort_unstable();
    assert_eq!(p, (0..100).collect::<Vec<_>>());
}
