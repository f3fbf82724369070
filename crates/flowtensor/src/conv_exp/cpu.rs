//! CPU kernels of the convolution exponential, image by image.
//!
//! Every image's series is independent, so images are spread over rayon and
//! each runs its whole series in per-thread buffers: the running term, the
//! next one and the partial sum of a flow-sized image (tens of KiB) stay in
//! cache, where a term-by-term pass over the whole batch would stream every
//! term through memory several times and allocate a batch-sized tensor for
//! each. 3x3 kernels use the direct kernel ([`ImageConv3x3`]), other odd
//! sizes the general convolution on one image. With fewer images than
//! threads, images run one after another and the convolution inside each
//! is parallel.

use super::{SeriesGeom, Stop};
use crate::conv::cpu::{conv_bwd_data, conv_bwd_weight, conv_fwd, Epilogue};
use crate::conv::{weight_grad_into, ConvGeom, DirectConv, ImageConv3x3, PerThread, Threads};
use rayon::prelude::*;

/// How the images of a series share the threads.
fn threads(sg: &SeriesGeom) -> Threads {
    Threads::for_batch(sg.n, sg.image() * sg.c * sg.k * sg.k)
}

/// `M` or its adjoint `M^T` on one image.
#[derive(Clone)]
enum SameConv<'a, T> {
    Direct(ImageConv3x3<T>),
    General {
        kernel: &'a [T],
        geom: ConvGeom,
        adjoint: bool,
    },
}

impl<'a, T: DirectConv> SameConv<'a, T> {
    fn new(kernel: &'a [T], sg: &SeriesGeom, adjoint: bool) -> Self {
        let (c, size) = (sg.c, (sg.h, sg.w));
        match (sg.k, adjoint) {
            (3, false) => SameConv::Direct(ImageConv3x3::new(kernel, c, c, size)),
            (3, true) => SameConv::Direct(ImageConv3x3::adjoint(kernel, c, c, size)),
            _ => SameConv::General {
                kernel,
                geom: sg.conv(1),
                adjoint,
            },
        }
    }

    /// `dst = M src` (or `M^T src`) for one image.
    fn apply(&mut self, src: &[T], dst: &mut [T], parallel: bool) {
        match self {
            SameConv::Direct(conv) => conv.apply(src, dst, parallel),
            SameConv::General {
                kernel,
                geom,
                adjoint,
            } => {
                let out = if *adjoint {
                    conv_bwd_data(src, kernel, geom)
                } else {
                    conv_fwd(src, kernel, geom, Epilogue::NONE)
                };
                dst.copy_from_slice(&out);
            }
        }
    }
}

/// `1 / i` in `T`.
fn inverse_of<T: DirectConv>(i: usize) -> T {
    T::from_f64(1.0 / i as f64)
}

/// `max |v|` (NaN when any entry is NaN, so a diverging series never stops early).
fn largest_abs<T: DirectConv>(v: &[T]) -> f64 {
    v.iter()
        .fold(T::zero(), |m, &x| {
            if x.abs() > m || x.is_nan() {
                x.abs()
            } else {
                m
            }
        })
        .to_f64()
}

/// The forward's per-thread state: `M` and two term buffers.
#[derive(Clone)]
struct Terms<'a, T> {
    conv: SameConv<'a, T>,
    u: Vec<T>,
    next: Vec<T>,
}

impl<'a, T: DirectConv> Terms<'a, T> {
    fn new(kernel: &'a [T], sg: &SeriesGeom) -> Self {
        Terms {
            conv: SameConv::new(kernel, sg, false),
            u: vec![T::zero(); sg.image()],
            next: vec![T::zero(); sg.image()],
        }
    }

    /// Adds `u_1 + ... + u_n` (`u_0 = x`, `u_i = M u_{i-1} / i`) to `y`,
    /// which holds `x`; returns `n`.
    fn sum_into(&mut self, x: &[T], y: &mut [T], stop: Stop, parallel: bool) -> usize {
        for i in 1..=stop.max {
            let source = if i == 1 { x } else { &self.u };
            self.conv.apply(source, &mut self.next, parallel);
            let scale = inverse_of::<T>(i);
            for (t, s) in self.next.iter_mut().zip(y.iter_mut()) {
                *t = *t * scale;
                *s = *s + *t;
            }
            std::mem::swap(&mut self.u, &mut self.next);
            if stop.tol.is_some_and(|tol| largest_abs(&self.u) < tol) {
                return i;
            }
        }
        stop.max
    }
}

/// `y = sum_{i=0}^{n_b} M^i x_b / i!` for every image `b` of `x` (contiguous
/// `(n, c, h, w)`), with `kernel` contiguous `(c, c, k, k)`; returns `y` and
/// the terms `n_b` each image used.
pub(crate) fn series_forward<T: DirectConv>(
    x: &[T],
    kernel: &[T],
    sg: &SeriesGeom,
    stop: Stop,
) -> (Vec<T>, Vec<usize>) {
    let img = sg.image();
    let mut y = x.to_vec();
    let mut counts = vec![0; sg.n];
    if img == 0 {
        return (y, counts);
    }
    let prepared = Terms::new(kernel, sg);
    let image = |terms: &mut Terms<T>, b: usize, yb: &mut [T], inside: bool| {
        terms.sum_into(&x[b * img..][..img], yb, stop, inside)
    };
    match threads(sg) {
        Threads::OverImages => {
            let states = PerThread::new(&prepared);
            y.par_chunks_mut(img)
                .zip(counts.par_iter_mut())
                .enumerate()
                .for_each(|(b, (yb, nb))| *nb = states.with(|t| image(t, b, yb, false)));
        }
        threads => {
            let mut terms = prepared;
            let inside = threads == Threads::InsideImages;
            for (b, (yb, nb)) in y.chunks_mut(img).zip(counts.iter_mut()).enumerate() {
                *nb = image(&mut terms, b, yb, inside);
            }
        }
    }
    (y, counts)
}

/// The backward's per-thread state.
#[derive(Clone)]
struct Adjoint<'a, T> {
    conv: SameConv<'a, T>,
    adjoint: SameConv<'a, T>,
    /// `u_0, ..., u_{n-1}` of the current image, recomputed.
    us: Vec<T>,
    /// `a_1 / 1, ..., a_n / n`, the second operands of the weight gradient.
    scaled: Vec<T>,
    tmp: Vec<T>,
    /// The kernel gradient of the images done so far (empty when not wanted).
    dk: Vec<T>,
}

impl<'a, T: DirectConv> Adjoint<'a, T> {
    fn new(kernel: &'a [T], sg: &SeriesGeom, want_kernel: bool) -> Self {
        Adjoint {
            conv: SameConv::new(kernel, sg, false),
            adjoint: SameConv::new(kernel, sg, true),
            us: Vec::new(),
            scaled: Vec::new(),
            tmp: vec![T::zero(); sg.image()],
            dk: if want_kernel {
                vec![T::zero(); kernel.len()]
            } else {
                Vec::new()
            },
        }
    }

    /// Backward of one image's series of `n` terms: writes
    /// `dx = a_0` (with `a_n = g`, `a_{i-1} = g + M^T a_i / i`) and, when
    /// the kernel gradient is wanted, adds `sum_i W(u_{i-1}, a_i) / i` to it.
    fn image(&mut self, sg: &SeriesGeom, x: &[T], g: &[T], n: usize, dx: &mut [T], parallel: bool) {
        let img = sg.image();
        let want_kernel = !self.dk.is_empty() && n > 0;
        if want_kernel {
            self.us.resize(n * img, T::zero());
            self.scaled.resize(n * img, T::zero());
            self.us[..img].copy_from_slice(x);
            for i in 1..n {
                let (done, rest) = self.us.split_at_mut(i * img);
                let next = &mut rest[..img];
                self.conv.apply(&done[(i - 1) * img..], next, parallel);
                let scale = inverse_of::<T>(i);
                next.iter_mut().for_each(|v| *v = *v * scale);
            }
        }
        dx.copy_from_slice(g);
        for i in (1..=n).rev() {
            let scale = inverse_of::<T>(i);
            if want_kernel {
                let dst = &mut self.scaled[(i - 1) * img..][..img];
                dst.iter_mut()
                    .zip(dx.iter())
                    .for_each(|(d, &a)| *d = a * scale);
            }
            self.adjoint.apply(dx, &mut self.tmp, parallel);
            for ((a, &t), &gv) in dx.iter_mut().zip(&self.tmp).zip(g) {
                *a = gv + t * scale;
            }
        }
        if want_kernel {
            let geom = sg.conv(n);
            let dk = &mut self.dk;
            if sg.k == 3 {
                weight_grad_into(&self.us, &self.scaled, &geom, dk, parallel);
            } else {
                let part = conv_bwd_weight(&self.us, &self.scaled, &geom);
                dk.iter_mut().zip(&part).for_each(|(s, &v)| *s = *s + v);
            }
        }
    }
}

/// Gradients of [`series_forward`] for the output gradient `g`, given the
/// terms `counts[b]` each image used: `dx` always, `dkernel` when
/// `want_kernel`. Keeps per thread only one image's recomputed terms.
pub(crate) fn series_backward<T: DirectConv>(
    x: &[T],
    kernel: &[T],
    g: &[T],
    sg: &SeriesGeom,
    counts: &[usize],
    want_kernel: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let img = sg.image();
    let kernel_len = kernel.len();
    let mut dx = vec![T::zero(); x.len()];
    if img == 0 {
        return (dx, want_kernel.then(|| vec![T::zero(); kernel_len]));
    }
    let prepared = Adjoint::new(kernel, sg, want_kernel);
    let image = |state: &mut Adjoint<T>, b: usize, dxb: &mut [T], inside: bool| {
        let (xb, gb) = (&x[b * img..][..img], &g[b * img..][..img]);
        state.image(sg, xb, gb, counts[b], dxb, inside);
    };
    let dk = match threads(sg) {
        Threads::OverImages => {
            let states = PerThread::new(&prepared);
            if !want_kernel {
                dx.par_chunks_mut(img)
                    .enumerate()
                    .for_each(|(b, dxb)| states.with(|s| image(s, b, dxb, false)));
                return (dx, None);
            }
            // each image's kernel gradient in its own slot, summed in image
            // order afterwards, so the result does not depend on scheduling
            let mut per_image = vec![T::zero(); kernel_len * sg.n];
            dx.par_chunks_mut(img)
                .zip(per_image.par_chunks_mut(kernel_len))
                .enumerate()
                .for_each(|(b, (dxb, dkb))| {
                    states.with(|s| {
                        s.dk.fill(T::zero());
                        image(s, b, dxb, false);
                        dkb.copy_from_slice(&s.dk);
                    })
                });
            let mut dk = vec![T::zero(); kernel_len];
            for part in per_image.chunks(kernel_len) {
                dk.iter_mut().zip(part).for_each(|(s, &v)| *s = *s + v);
            }
            dk
        }
        threads => {
            let mut state = prepared;
            let inside = threads == Threads::InsideImages;
            for (b, dxb) in dx.chunks_mut(img).enumerate() {
                image(&mut state, b, dxb, inside);
            }
            state.dk
        }
    };
    (dx, want_kernel.then_some(dk))
}
