//! conv2d and conv_transpose2d against naive loops, adjointness, gradients and errors.

use flowtensor::gradcheck::{check_gradients, GradCheck};
use flowtensor::{Conv2dParams, ConvTranspose2dParams, DType, Device, Generator, PadMode, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

fn dims4(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().unwrap()
}

/// Direct loop: y[n, o, p, q] = sum w[o, c, i, j] x[n, g*cg + c, p*s - pad + i*d, q*s - pad + j*d].
fn naive_conv2d(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Vec<f64> {
    let ([n, c, h, wd], [o, cg, kh, kw]) = (dims4(x), dims4(w));
    let (xv, wv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
    let og = o / p.groups;
    let ho = (h + 2 * p.padding.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
    let wo = (wd + 2 * p.padding.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
    let mut y = vec![0.0; n * o * ho * wo];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for pr in 0..ho {
                for q in 0..wo {
                    let mut s = 0.0;
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let r = (pr * p.stride.0 + i * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let col = (q * p.stride.1 + j * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                let (r, col) = match p.padding_mode {
                                    PadMode::Circular => {
                                        (r.rem_euclid(h as isize), col.rem_euclid(wd as isize))
                                    }
                                    PadMode::Zero => (r, col),
                                };
                                if r < 0 || col < 0 || r >= h as isize || col >= wd as isize {
                                    continue;
                                }
                                let xi =
                                    ((b * c + grp * cg + ci) * h + r as usize) * wd + col as usize;
                                s += wv[((oc * cg + ci) * kh + i) * kw + j] * xv[xi];
                            }
                        }
                    }
                    y[((b * o + oc) * ho + pr) * wo + q] = s;
                }
            }
        }
    }
    y
}

/// Direct scatter loop of the transposed convolution.
fn naive_conv_transpose2d(x: &Tensor, w: &Tensor, p: &ConvTranspose2dParams) -> Vec<f64> {
    let ([n, cin, h, wd], [_, cog, kh, kw]) = (dims4(x), dims4(w));
    let (xv, wv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
    let cout = cog * p.groups;
    let cig = cin / p.groups;
    let ho =
        (h - 1) * p.stride.0 + p.dilation.0 * (kh - 1) + p.output_padding.0 + 1 - 2 * p.padding.0;
    let wo =
        (wd - 1) * p.stride.1 + p.dilation.1 * (kw - 1) + p.output_padding.1 + 1 - 2 * p.padding.1;
    let mut y = vec![0.0; n * cout * ho * wo];
    for b in 0..n {
        for ci in 0..cin {
            let grp = ci / cig;
            for r in 0..h {
                for q in 0..wd {
                    let v = xv[((b * cin + ci) * h + r) * wd + q];
                    for co in 0..cog {
                        for i in 0..kh {
                            for j in 0..kw {
                                let orow = (r * p.stride.0 + i * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let ocol = (q * p.stride.1 + j * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                if orow < 0
                                    || ocol < 0
                                    || orow >= ho as isize
                                    || ocol >= wo as isize
                                {
                                    continue;
                                }
                                let yi = ((b * cout + grp * cog + co) * ho + orow as usize) * wo
                                    + ocol as usize;
                                y[yi] += v * wv[((ci * cog + co) * kh + i) * kw + j];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Agreement to `tol` relative to the largest magnitude of `want` (f32 sums
/// of hundreds of terms lose digits on elements that cancel).
fn assert_close_scaled(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol * scale,
        "{what}: largest error {worst} against scale {scale}"
    );
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

/// (input shape, weight shape, params): odd sizes, strides, paddings, dilations, groups.
fn conv_cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    let p = |stride, padding, dilation, groups, padding_mode| Conv2dParams {
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
    };
    use PadMode::{Circular, Zero};
    vec![
        ([2, 3, 5, 7], [4, 3, 3, 3], Conv2dParams::same(3)), // direct 3x3 kernel, odd sizes
        ([1, 5, 9, 20], [7, 5, 3, 3], Conv2dParams::same(3)), // 16 + tail columns, 7 output channels
        ([2, 3, 1, 17], [4, 3, 3, 3], Conv2dParams::same(3)), // one row: every vertical tap masked
        ([3, 4, 6, 6], [2, 4, 3, 3], Conv2dParams::same(3)),
        // with AVX-512 (8 f64 lanes): the channel-tiled kernel (few input
        // channels), and Winograd F(2x2, 3x3) from 16 input channels, with
        // one and three vectors of output channels, input channels padded
        // to the vector width, and odd sizes past the tiles
        ([1, 8, 4, 5], [8, 8, 3, 3], Conv2dParams::same(3)),
        ([1, 16, 3, 9], [24, 16, 3, 3], Conv2dParams::same(3)),
        ([1, 17, 3, 10], [40, 17, 3, 3], Conv2dParams::same(3)),
        // 7x7 images, with vectors of 8 f64 or 16 f32 positions: the
        // positions past each image's whole vectors gathered from groups of
        // images (of 2, the last of 1) for one product, 3x3 and 1x1
        ([9, 4, 7, 7], [64, 4, 3, 3], Conv2dParams::same(3)),
        ([9, 12, 7, 7], [16, 12, 1, 1], Conv2dParams::default()),
        ([9, 3, 2, 3], [16, 3, 3, 3], Conv2dParams::same(3)), // images smaller than a vector
        ([2, 3, 5, 4], [6, 3, 1, 1], Conv2dParams::default()), // pointwise, masked tail
        ([2, 7, 4, 6], [9, 7, 1, 1], Conv2dParams::default()), // pointwise, whole vectors, edge tiles
        (
            [2, 4, 7, 5],
            [6, 2, 3, 2],
            p((1, 1), (1, 0), (1, 1), 2, Zero),
        ),
        (
            [2, 3, 9, 8],
            [4, 3, 3, 3],
            p((2, 3), (1, 2), (1, 1), 1, Zero),
        ),
        (
            [1, 2, 11, 9],
            [3, 2, 3, 3],
            p((1, 2), (2, 2), (2, 3), 1, Zero),
        ),
        (
            [2, 6, 7, 7],
            [6, 1, 5, 5],
            p((2, 2), (2, 2), (1, 1), 6, Zero),
        ), // depthwise
        (
            [2, 3, 5, 6],
            [4, 3, 3, 3],
            p((1, 1), (1, 1), (1, 1), 1, Circular),
        ),
        (
            [1, 4, 6, 5],
            [4, 2, 5, 3],
            p((2, 1), (2, 1), (1, 1), 2, Circular),
        ),
        (
            [2, 3, 4, 4],
            [2, 3, 4, 4],
            p((1, 1), (0, 0), (1, 1), 1, Zero),
        ), // kernel = image
        (
            [1, 2, 8, 3],
            [3, 2, 1, 1],
            p((3, 2), (1, 1), (1, 1), 1, Zero),
        ), // strided 1x1 with padding
        (
            [1, 1, 1, 1],
            [2, 1, 3, 3],
            p((1, 1), (2, 2), (2, 2), 1, Zero),
        ), // taps whose every source lies in the padding (only the centre reads x)
    ]
}

#[test]
fn conv2d_matches_naive_loop() {
    for (seed, (xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let (x, w) = (randn(&xs, seed as u64), randn(&ws, 100 + seed as u64));
        let y = x.conv2d(&w, None, &p).unwrap();
        assert_close(
            &y.to_vec::<f64>().unwrap(),
            &naive_conv2d(&x, &w, &p),
            1e-12,
            &format!("{xs:?} {ws:?} {p:?}"),
        );
    }
}

#[test]
fn conv2d_bias_and_strided_inputs() {
    let x = randn(&[2, 7, 6, 3], 1); // viewed as (2, 3, 7, 6) below
    let w = randn(&[4, 3, 3, 3], 2);
    let b = randn(&[4], 3);
    let xv = x.permute(&[0, 3, 1, 2]).unwrap();
    let y = xv.conv2d(&w, Some(&b), &Conv2dParams::same(3)).unwrap();
    let mut want = naive_conv2d(&xv.contiguous().unwrap(), &w, &Conv2dParams::same(3));
    let bv = b.to_vec::<f64>().unwrap();
    for (i, v) in want.iter_mut().enumerate() {
        *v += bv[i / 42 % 4];
    }
    assert_close(
        &y.to_vec::<f64>().unwrap(),
        &want,
        1e-12,
        "bias + permuted input",
    );
}

#[test]
fn fused_bias_and_relu_equal_the_separate_ops() {
    // every path of the forward kernels (3x3 direct, Winograd, GEMM, 1x1),
    // in f64 and f32, with and without a bias
    let mut cases = conv_cases();
    cases.extend([
        ([2, 16, 6, 9], [16, 16, 3, 3], Conv2dParams::same(3)),
        ([2, 32, 7, 7], [64, 32, 3, 3], Conv2dParams::same(3)),
        ([3, 64, 14, 14], [64, 64, 1, 1], Conv2dParams::default()),
    ]);
    for (seed, (xs, ws, p)) in cases.into_iter().enumerate() {
        let (x, w, b) = (
            randn(&xs, seed as u64),
            randn(&ws, 100 + seed as u64),
            randn(&[ws[0]], 200 + seed as u64),
        );
        for dtype in [DType::F64, DType::F32] {
            let [x, w, b] = [&x, &w, &b].map(|t| t.to_dtype(dtype).unwrap());
            for bias in [Some(&b), None] {
                let plain = x.conv2d(&w, None, &p).unwrap();
                let biased = match bias {
                    Some(b) => plain.add(&b.reshape(&[1, ws[0], 1, 1]).unwrap()).unwrap(),
                    None => plain,
                };
                let what = format!("{xs:?} {ws:?} {p:?} {dtype:?} bias {}", bias.is_some());
                let fused = x.conv2d(&w, bias, &p).unwrap();
                assert_eq!(
                    fused.to_vec_f64().unwrap(),
                    biased.to_vec_f64().unwrap(),
                    "{what}"
                );
                let fused_relu = x.conv2d_relu(&w, bias, &p).unwrap();
                let relu = biased.relu().unwrap();
                assert_eq!(
                    fused_relu.to_vec_f64().unwrap(),
                    relu.to_vec_f64().unwrap(),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn conv2d_relu_gradients() {
    for (seed, (xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let o = ws[0];
        // random pre-activations lie far from ReLU's kink compared with the step
        check_gradients(
            |t| t[0].conv2d_relu(&t[1], Some(&t[2]), &p),
            &[
                randn(&xs, seed as u64),
                randn(&ws, 400 + seed as u64),
                randn(&[o], 500 + seed as u64),
            ],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{xs:?} {ws:?} {p:?}: {e}"));
        check_gradients(
            |t| t[0].conv2d_relu(&t[1], None, &p),
            &[randn(&xs, seed as u64), randn(&ws, 400 + seed as u64)],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("no bias {xs:?} {ws:?} {p:?}: {e}"));
    }
}

#[test]
fn fused_bias_with_a_wrong_shape_is_an_error() {
    let (x, w) = (randn(&[2, 3, 5, 5], 1), randn(&[4, 3, 3, 3], 2));
    let err = x
        .conv2d_relu(&w, Some(&randn(&[3], 3)), &Conv2dParams::same(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d_relu") && err.contains("bias must have shape [4]"),
        "{err}"
    );
    let f32_bias = randn(&[4], 3).to_dtype(DType::F32).unwrap();
    assert!(x
        .conv2d(&w, Some(&f32_bias), &Conv2dParams::same(3))
        .is_err());
}

fn transpose_cases() -> Vec<([usize; 4], [usize; 4], ConvTranspose2dParams)> {
    let p = |stride, padding, output_padding, dilation, groups| ConvTranspose2dParams {
        stride,
        padding,
        output_padding,
        dilation,
        groups,
    };
    vec![
        (
            [2, 4, 5, 7],
            [4, 3, 3, 3],
            p((1, 1), (1, 1), (0, 0), (1, 1), 1),
        ), // direct 3x3 kernel
        (
            [2, 3, 4, 5],
            [3, 2, 3, 3],
            p((2, 2), (1, 0), (1, 1), (1, 1), 1),
        ),
        (
            [1, 4, 3, 6],
            [4, 3, 2, 3],
            p((3, 1), (0, 1), (2, 0), (1, 2), 2),
        ),
        (
            [2, 2, 5, 5],
            [2, 5, 1, 1],
            p((1, 1), (0, 0), (0, 0), (1, 1), 1),
        ),
        (
            [1, 1, 1, 1],
            [1, 2, 3, 3],
            p((1, 1), (2, 2), (0, 0), (2, 2), 1),
        ), // taps that land wholly in the cropped border
    ]
}

#[test]
fn conv_transpose2d_matches_naive_loop() {
    for (seed, (xs, ws, p)) in transpose_cases().into_iter().enumerate() {
        let (x, w) = (randn(&xs, seed as u64), randn(&ws, 50 + seed as u64));
        let y = x.conv_transpose2d(&w, None, &p).unwrap();
        assert_close(
            &y.to_vec::<f64>().unwrap(),
            &naive_conv_transpose2d(&x, &w, &p),
            1e-12,
            &format!("{xs:?} {ws:?} {p:?}"),
        );
    }
}

#[test]
fn conv_transpose2d_is_the_adjoint_of_conv2d() {
    // <conv(x), y> = <x, conv^T(y)> for every zero-padded case
    for (seed, (xs, ws, p)) in conv_cases()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.2.padding_mode == PadMode::Zero)
    {
        let (x, w) = (randn(&xs, seed as u64), randn(&ws, 200 + seed as u64));
        let y = x.conv2d(&w, None, &p).unwrap();
        let r = randn(y.shape(), 300 + seed as u64);
        let tp = ConvTranspose2dParams {
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            groups: p.groups,
            output_padding: (
                (xs[2] + 2 * p.padding.0 - p.dilation.0 * (ws[2] - 1) - 1) % p.stride.0,
                (xs[3] + 2 * p.padding.1 - p.dilation.1 * (ws[3] - 1) - 1) % p.stride.1,
            ),
        };
        let back = r.conv_transpose2d(&w, None, &tp).unwrap();
        assert_eq!(back.shape(), x.shape(), "{xs:?} {ws:?} {p:?}");
        let lhs = y.mul(&r).unwrap().sum_all().unwrap().to_scalar().unwrap();
        let rhs = x
            .mul(&back)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()),
            "{xs:?} {ws:?} {p:?}: {lhs} vs {rhs}"
        );
    }
}

#[test]
fn conv2d_gradients() {
    for (seed, (xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let o = ws[0];
        check_gradients(
            |t| t[0].conv2d(&t[1], Some(&t[2]), &p),
            &[
                randn(&xs, seed as u64),
                randn(&ws, 400 + seed as u64),
                randn(&[o], 500 + seed as u64),
            ],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{xs:?} {ws:?} {p:?}: {e}"));
    }
}

#[test]
fn conv2d_gradients_through_non_contiguous_operands() {
    check_gradients(
        |t| {
            t[0].permute(&[0, 3, 1, 2])?
                .conv2d(&t[1].flip(&[2, 3])?, None, &Conv2dParams::same(3))
        },
        &[randn(&[2, 5, 4, 3], 1), randn(&[2, 3, 3, 3], 2)],
        GradCheck::default(),
    )
    .unwrap();
}

#[test]
fn conv_transpose2d_gradients() {
    for (seed, (xs, ws, p)) in transpose_cases().into_iter().enumerate() {
        let cout = ws[1] * p.groups;
        check_gradients(
            |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), &p),
            &[
                randn(&xs, seed as u64),
                randn(&ws, 600 + seed as u64),
                randn(&[cout], 700 + seed as u64),
            ],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{xs:?} {ws:?} {p:?}: {e}"));
    }
}

#[test]
fn f32_kernels_agree_with_f64() {
    // Covers the 3x3 kernels (position tiles with tails, channel tiles with
    // one to four vectors and widths past the tile), the GEMM path and the
    // 1x1 weight-gradient tiles (masked tails, edge tiles, whole vectors).
    for (xs, ws, p) in [
        ([2, 12, 16, 27], [12, 12, 3, 3], Conv2dParams::same(3)),
        ([2, 12, 5, 32], [12, 12, 3, 3], Conv2dParams::same(3)),
        ([2, 16, 6, 9], [16, 16, 3, 3], Conv2dParams::same(3)),
        ([2, 3, 7, 10], [32, 3, 3, 3], Conv2dParams::same(3)),
        ([2, 48, 8, 8], [48, 48, 3, 3], Conv2dParams::same(3)),
        ([2, 32, 7, 7], [64, 32, 3, 3], Conv2dParams::same(3)),
        ([2, 20, 7, 14], [64, 20, 3, 3], Conv2dParams::same(3)),
        ([1, 4, 14, 13], [64, 4, 3, 3], Conv2dParams::same(3)),
        ([2, 64, 7, 7], [8, 64, 3, 3], Conv2dParams::same(3)), // masked tiles of the image
        ([3, 2, 2, 3], [5, 2, 3, 3], Conv2dParams::same(3)),   // one partial vector
        ([3, 64, 14, 14], [64, 64, 1, 1], Conv2dParams::default()),
        ([2, 9, 7, 7], [5, 9, 1, 1], Conv2dParams::default()),
        ([9, 4, 7, 7], [64, 4, 3, 3], Conv2dParams::same(3)), // ragged tails, 3x3
        ([9, 64, 7, 7], [64, 64, 1, 1], Conv2dParams::default()), // and 1x1
        ([2, 7, 4, 8], [13, 7, 1, 1], Conv2dParams::default()),
        (
            [3, 5, 6, 9],
            [4, 5, 3, 3],
            Conv2dParams {
                stride: (2, 1),
                ..Conv2dParams::same(3)
            },
        ),
    ] {
        let (x, w) = (randn(&xs, 1), randn(&ws, 2));
        let y64 = x.conv2d(&w, None, &p).unwrap();
        let y32 = x
            .to_dtype(DType::F32)
            .unwrap()
            .conv2d(&w.to_dtype(DType::F32).unwrap(), None, &p)
            .unwrap();
        let what = format!("{xs:?} {ws:?}");
        assert_close_scaled(
            &y32.to_vec_f64().unwrap(),
            &y64.to_vec::<f64>().unwrap(),
            1e-5,
            &what,
        );
        // and the two gradients
        let grads = |dtype| {
            let (xv, wv) = (
                x.to_dtype(dtype).unwrap().as_variable(),
                w.to_dtype(dtype).unwrap().as_variable(),
            );
            let g = xv
                .conv2d(&wv, None, &p)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward_grads()
                .unwrap();
            (
                g.get(&xv).unwrap().to_vec_f64().unwrap(),
                g.get(&wv).unwrap().to_vec_f64().unwrap(),
            )
        };
        let ((gx64, gw64), (gx32, gw32)) = (grads(DType::F64), grads(DType::F32));
        assert_close_scaled(&gx32, &gx64, 1e-5, &format!("input gradient {what}"));
        assert_close_scaled(&gw32, &gw64, 1e-5, &format!("weight gradient {what}"));
    }
}

/// `dw[o, c, i, j] = sum_{n, r, q} g[n, o, r, q] x[n, c, r + i - 1, q + j - 1]`:
/// the weight gradient of a 3x3 same convolution for the output gradient `g`.
fn naive_weight_grad_3x3(x: &[f64], g: &[f64], [n, c, h, w]: [usize; 4], o: usize) -> Vec<f64> {
    let mut dw = vec![0.0; o * c * 9];
    for (img, oc, ch, i, j) in (0..n).flat_map(|img| {
        (0..o).flat_map(move |oc| {
            (0..c).flat_map(move |ch| {
                (0..3).flat_map(move |i| (0..3).map(move |j| (img, oc, ch, i, j)))
            })
        })
    }) {
        let mut sum = 0.0;
        for r in 0..h {
            for q in 0..w {
                let (sr, sq) = (r + i, q + j);
                if sr >= 1 && sr <= h && sq >= 1 && sq <= w {
                    sum += g[((img * o + oc) * h + r) * w + q]
                        * x[((img * c + ch) * h + sr - 1) * w + sq - 1];
                }
            }
        }
        dw[((oc * c + ch) * 3 + i) * 3 + j] += sum;
    }
    dw
}

#[test]
fn the_3x3_weight_gradient_of_a_batch_in_many_chunks_of_images() {
    // Batches that the direct kernels sum in several chunks of images (their
    // accumulators carried from chunk to chunk), in f64 and f32: vectors
    // along positions (the first three) and along output channels.
    for (xs, o) in [
        ([7, 12, 16, 16], 12),
        ([9, 3, 14, 14], 64),
        ([11, 64, 7, 7], 8),
        ([5, 16, 32, 32], 40),
    ] {
        let (x, g) = (randn(&xs, 3), randn(&[xs[0], o, xs[2], xs[3]], 4));
        let w = randn(&[o, xs[1], 3, 3], 5);
        let want = naive_weight_grad_3x3(
            &x.to_vec::<f64>().unwrap(),
            &g.to_vec::<f64>().unwrap(),
            xs,
            o,
        );
        for dtype in [DType::F64, DType::F32] {
            let wv = w.to_dtype(dtype).unwrap().as_variable();
            let y = x
                .to_dtype(dtype)
                .unwrap()
                .conv2d(&wv, None, &Conv2dParams::same(3))
                .unwrap();
            let grads =
                flowtensor::grad(&[y], &[wv], &[g.to_dtype(dtype).unwrap()], false).unwrap();
            let got = grads[0].as_ref().unwrap().to_vec_f64().unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close_scaled(&got, &want, tol, &format!("{xs:?} -> {o} {dtype:?}"));
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op_and_shapes() {
    let x = randn(&[2, 3, 5, 5], 1);
    let msg = |r: flowtensor::Result<Tensor>| r.unwrap_err().to_string();
    let same = Conv2dParams::same(3);
    let m = msg(x.conv2d(&randn(&[4, 2, 3, 3], 2), None, &same));
    assert!(
        m.contains("conv2d") && m.contains("[2, 3, 5, 5]") && m.contains("[4, 2, 3, 3]"),
        "{m}"
    );
    let m = msg(x.conv2d(&randn(&[4, 3, 7, 7], 2), None, &Conv2dParams::default()));
    assert!(m.contains("conv2d") && m.contains("[4, 3, 7, 7]"), "{m}");
    let m = msg(x.conv2d(&randn(&[4, 3, 3, 3], 2), Some(&randn(&[3], 3)), &same));
    assert!(m.contains("conv2d") && m.contains("[3]"), "{m}");
    let m = msg(x.conv2d(
        &randn(&[4, 1, 3, 3], 2),
        None,
        &Conv2dParams { groups: 2, ..same },
    ));
    assert!(m.contains("conv2d") && m.contains("groups"), "{m}");
    let m = msg(randn(&[3, 5, 5], 1).conv2d(&randn(&[4, 3, 3, 3], 2), None, &same));
    assert!(m.contains("conv2d") && m.contains("[3, 5, 5]"), "{m}");
    let m = msg(x.conv2d(
        &randn(&[4, 3, 3, 3], 2),
        None,
        &Conv2dParams {
            stride: (0, 1),
            ..same
        },
    ));
    assert!(m.contains("conv2d"), "{m}");
    let m = msg(x.conv_transpose2d(
        &randn(&[4, 3, 3, 3], 2),
        None,
        &ConvTranspose2dParams::default(),
    ));
    assert!(
        m.contains("conv_transpose2d") && m.contains("[4, 3, 3, 3]"),
        "{m}"
    );
    let bad_output_padding = ConvTranspose2dParams {
        output_padding: (1, 0),
        ..Default::default()
    };
    let m = msg(x.conv_transpose2d(&randn(&[3, 3, 3, 3], 2), None, &bad_output_padding));
    assert!(
        m.contains("conv_transpose2d") && m.contains("output_padding"),
        "{m}"
    );
    let f32w = Tensor::zeros(&[4, 3, 3, 3], DType::F32, Device::Cpu).unwrap();
    assert!(msg(x.conv2d(&f32w, None, &same)).contains("dtype"));
}
