//! Peak heap memory of a forward and backward through the convolution
//! exponential: the custom op (which keeps only its inputs between forward
//! and backward) against autodiff through the unrolled series (which keeps
//! every term). Its own test binary, so the counting allocator sees only
//! this test.

use flowtensor::conv_exp::{conv_exp, conv_exp_series_autodiff, Terms};
use flowtensor::{DType, Device, Generator, Result, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated beyond what was live before `f` ran, and `f`'s result.
fn peak_of<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let r = f();
    (PEAK.load(Ordering::SeqCst) - before, r)
}

/// `layers` convolution exponentials in a row, then the gradients of the
/// sum of squares for the input and every kernel.
fn forward_backward(
    x: &Tensor,
    kernels: &[Tensor],
    terms: usize,
    custom: bool,
) -> Result<Vec<Tensor>> {
    let mut y = x.clone();
    for k in kernels {
        y = if custom {
            conv_exp(&y, k, Terms::Fixed(terms))?.0
        } else {
            conv_exp_series_autodiff(&y, k, terms)?
        };
    }
    let grads = y.square()?.sum_all()?.backward_grads()?;
    Ok(std::iter::once(x)
        .chain(kernels)
        .map(|t| grads.get(t).expect("a gradient").clone())
        .collect())
}

#[test]
fn the_custom_backward_peaks_lower_than_unrolled_autodiff() -> Result<()> {
    let (n, c, h, terms) = (16, 12, 16, 6);
    let image_bytes = (n * c * h * h * 8) as f64;
    let mut gen = Generator::new(0);
    let x = gen
        .randn(&[n, c, h, h], DType::F64, Device::Cpu)?
        .as_variable();
    for layers in [1, 4] {
        let kernels = (0..layers)
            .map(|_| {
                let k = gen.randn(&[c, c, 3, 3], DType::F64, Device::Cpu)?;
                Ok(k.div_scalar((9 * c) as f64)?.as_variable())
            })
            .collect::<Result<Vec<_>>>()?;
        let (custom_peak, custom) = peak_of(|| forward_backward(&x, &kernels, terms, true));
        let (unrolled_peak, unrolled) = peak_of(|| forward_backward(&x, &kernels, terms, false));
        let (custom, unrolled) = (custom?, unrolled?);
        for (a, b) in custom.iter().zip(&unrolled) {
            let largest = |t: Tensor| -> Result<f64> {
                Ok(t.to_vec_f64()?.iter().fold(0.0, |m, v| m.max(v.abs())))
            };
            let (diff, scale) = (largest(a.sub(b)?)?, largest(b.clone())?);
            assert!(diff <= 1e-10 * (1.0 + scale), "gradients differ by {diff}");
        }
        eprintln!(
            "{layers} layer(s) of conv_exp, x {:?} f64, {terms} terms: peak {:.2} MiB ({:.1} inputs) \
             with the custom backward, {:.2} MiB ({:.1} inputs) with autodiff through the unrolled series",
            x.shape(),
            custom_peak as f64 / (1 << 20) as f64,
            custom_peak as f64 / image_bytes,
            unrolled_peak as f64 / (1 << 20) as f64,
            unrolled_peak as f64 / image_bytes,
        );
        assert!(
            (custom_peak as f64) < 0.6 * unrolled_peak as f64,
            "custom {custom_peak} bytes vs unrolled {unrolled_peak} bytes"
        );
    }
    Ok(())
}
