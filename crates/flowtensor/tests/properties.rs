//! Property tests of broadcasting, views, copying ops, reductions and batched
//! matmul against a naive reference: a row-major `Vec<f64>` plus a shape whose
//! ops loop over multi-indices (nothing in the reference calls flowtensor).
//!
//! Inputs are usually handed to flowtensor as non-contiguous tensors (see
//! [`scrambled`]): cut out of a larger buffer that is stored flipped and
//! permuted, so they carry offsets and negative and permuted strides.

use flowtensor::{Device, PadMode, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

type TestResult = Result<(), TestCaseError>;

// ---------------------------------------------------------------------------
// The naive reference
// ---------------------------------------------------------------------------

/// A row-major array of f64.
#[derive(Clone, Debug, PartialEq)]
struct Naive {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// Every multi-index of `shape`, in row-major order.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let count: usize = shape.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0; shape.len()];
    for _ in 0..count {
        out.push(idx.clone());
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The row-major position of `idx` in an array of `shape`.
fn flat_index(shape: &[usize], idx: &[usize]) -> usize {
    assert_eq!(shape.len(), idx.len(), "index {idx:?} for shape {shape:?}");
    idx.iter().zip(shape).fold(0, |flat, (&i, &d)| {
        assert!(i < d, "index {idx:?} out of range for shape {shape:?}");
        flat * d + i
    })
}

/// The numpy broadcast of two shapes, `None` when they do not broadcast.
fn naive_broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Naive {
    fn new(shape: &[usize], data: Vec<f64>) -> Naive {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Naive {
            shape: shape.to_vec(),
            data,
        }
    }

    /// The array of `shape` holding `f(idx)` at each multi-index `idx`.
    fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> Naive {
        let data = indices(shape).iter().map(|idx| f(idx)).collect();
        Naive::new(shape, data)
    }

    fn rank(&self) -> usize {
        self.shape.len()
    }

    fn at(&self, idx: &[usize]) -> f64 {
        self.data[flat_index(&self.shape, idx)]
    }

    fn map(&self, f: impl Fn(f64) -> f64) -> Naive {
        Naive::new(&self.shape, self.data.iter().map(|&x| f(x)).collect())
    }

    /// A contiguous flowtensor copy.
    fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.data.clone(), &self.shape, Device::Cpu).unwrap()
    }

    fn permute(&self, dims: &[usize]) -> Naive {
        let shape: Vec<usize> = dims.iter().map(|&d| self.shape[d]).collect();
        Naive::from_fn(&shape, |idx| {
            let mut src = vec![0; dims.len()];
            for (&d, &i) in dims.iter().zip(idx) {
                src[d] = i;
            }
            self.at(&src)
        })
    }

    fn transpose(&self, d0: usize, d1: usize) -> Naive {
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(d0, d1);
        self.permute(&dims)
    }

    fn narrow(&self, dim: usize, start: usize, len: usize) -> Naive {
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Naive::from_fn(&shape, |idx| {
            let mut src = idx.to_vec();
            src[dim] += start;
            self.at(&src)
        })
    }

    fn flip(&self, dims: &[usize]) -> Naive {
        Naive::from_fn(&self.shape, |idx| {
            let mut src = idx.to_vec();
            for &d in dims {
                src[d] = self.shape[d] - 1 - idx[d];
            }
            self.at(&src)
        })
    }

    fn broadcast_to(&self, shape: &[usize]) -> Naive {
        let lead = shape.len() - self.rank();
        Naive::from_fn(shape, |idx| {
            let src: Vec<usize> = idx[lead..]
                .iter()
                .zip(&self.shape)
                .map(|(&i, &d)| if d == 1 { 0 } else { i })
                .collect();
            self.at(&src)
        })
    }

    fn reshape(&self, shape: &[usize]) -> Naive {
        Naive::new(shape, self.data.clone())
    }

    /// `f(a, b)` elementwise after numpy broadcasting; `None` for incompatible shapes.
    fn zip(&self, other: &Naive, f: impl Fn(f64, f64) -> f64) -> Option<Naive> {
        let shape = naive_broadcast_shape(&self.shape, &other.shape)?;
        let (a, b) = (self.broadcast_to(&shape), other.broadcast_to(&shape));
        Some(Naive::from_fn(&shape, |idx| f(a.at(idx), b.at(idx))))
    }

    fn cat(parts: &[Naive], dim: usize) -> Naive {
        let mut shape = parts[0].shape.clone();
        shape[dim] = parts.iter().map(|p| p.shape[dim]).sum();
        Naive::from_fn(&shape, |idx| {
            let mut src = idx.to_vec();
            for part in parts {
                if src[dim] < part.shape[dim] {
                    return part.at(&src);
                }
                src[dim] -= part.shape[dim];
            }
            unreachable!("index {idx:?} past the concatenation")
        })
    }

    fn stack(parts: &[Naive], dim: usize) -> Naive {
        let mut shape = parts[0].shape.clone();
        shape.insert(dim, parts.len());
        Naive::from_fn(&shape, |idx| {
            let mut src = idx.to_vec();
            let part = src.remove(dim);
            parts[part].at(&src)
        })
    }

    /// Padded on the last `pads.len()` dimensions.
    fn pad(&self, pads: &[(usize, usize)], mode: PadMode) -> Naive {
        let first = self.rank() - pads.len();
        let mut shape = self.shape.clone();
        for (d, &(before, after)) in (first..).zip(pads) {
            shape[d] += before + after;
        }
        Naive::from_fn(&shape, |idx| {
            let mut src = idx.to_vec();
            for (d, &(before, _)) in (first..).zip(pads) {
                let size = self.shape[d] as isize;
                let i = idx[d] as isize - before as isize;
                src[d] = match mode {
                    PadMode::Zero if !(0..size).contains(&i) => return 0.0,
                    PadMode::Zero => i as usize,
                    PadMode::Circular => i.rem_euclid(size) as usize,
                };
            }
            self.at(&src)
        })
    }

    fn index_select(&self, dim: usize, idx: &[usize]) -> Naive {
        let mut shape = self.shape.clone();
        shape[dim] = idx.len();
        Naive::from_fn(&shape, |out| {
            let mut src = out.to_vec();
            src[dim] = idx[out[dim]];
            self.at(&src)
        })
    }

    /// `fold` over `dims` starting from `init`, the reduced dims kept with
    /// size 1 when `keepdim`.
    fn reduce(
        &self,
        dims: &[usize],
        keepdim: bool,
        init: f64,
        fold: impl Fn(f64, f64) -> f64,
    ) -> Naive {
        let kept: Vec<usize> = (0..self.rank())
            .map(|d| if dims.contains(&d) { 1 } else { self.shape[d] })
            .collect();
        let mut acc = Naive::new(&kept, vec![init; kept.iter().product()]);
        for idx in indices(&self.shape) {
            let out: Vec<usize> = (0..self.rank())
                .map(|d| if dims.contains(&d) { 0 } else { idx[d] })
                .collect();
            let slot = flat_index(&kept, &out);
            acc.data[slot] = fold(acc.data[slot], self.at(&idx));
        }
        if keepdim {
            acc
        } else {
            let squeezed: Vec<usize> = (0..self.rank())
                .filter(|d| !dims.contains(d))
                .map(|d| self.shape[d])
                .collect();
            acc.reshape(&squeezed)
        }
    }

    fn sum(&self, dims: &[usize], keepdim: bool) -> Naive {
        self.reduce(dims, keepdim, 0.0, |acc, x| acc + x)
    }

    /// `(..., m, k) @ (..., k, n)` with broadcast batch dimensions, by the triple loop.
    fn matmul(&self, rhs: &Naive) -> Naive {
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k, n) = (self.shape[ra - 2], self.shape[ra - 1], rhs.shape[rb - 1]);
        assert_eq!(k, rhs.shape[rb - 2]);
        let batch = naive_broadcast_shape(&self.shape[..ra - 2], &rhs.shape[..rb - 2]).unwrap();
        let a = self.broadcast_to(&[batch.as_slice(), &[m, k]].concat());
        let b = rhs.broadcast_to(&[batch.as_slice(), &[k, n]].concat());
        Naive::from_fn(&[batch.as_slice(), &[m, n]].concat(), |idx| {
            let (bi, (i, j)) = (
                &idx[..batch.len()],
                (idx[batch.len()], idx[batch.len() + 1]),
            );
            (0..k)
                .map(|l| a.at(&[bi, &[i, l]].concat()) * b.at(&[bi, &[l, j]].concat()))
                .sum()
        })
    }
}

// ---------------------------------------------------------------------------
// Random choices and strategies
// ---------------------------------------------------------------------------

/// Choices whose ranges depend on earlier ones (dims, starts, indices), drawn
/// in turn from proptest-generated indices (reused cyclically when a test
/// needs more) so that failing cases shrink.
#[derive(Clone, Debug)]
struct Choices {
    picks: Vec<Index>,
    next: usize,
}

impl Choices {
    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        let pick = &self.picks[self.next % self.picks.len()];
        self.next += 1;
        pick.index(n)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn flag(&mut self) -> bool {
        self.below(2) == 1
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// Distinct dimensions out of `0..rank`, in random order.
    fn dims(&mut self, rank: usize) -> Vec<usize> {
        let mut p = self.permutation(rank);
        p.truncate(self.below(rank + 1));
        p
    }
}

fn choices() -> impl Strategy<Value = Choices> {
    vec(any::<Index>(), 64).prop_map(|picks| Choices { picks, next: 0 })
}

/// Shapes with dimensions of size 1..=4.
fn shape(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    vec(1..=4usize, ranks)
}

/// An array of `shape` with values in -10..10.
fn naive_of(shape: Vec<usize>) -> impl Strategy<Value = Naive> {
    let count: usize = shape.iter().product();
    vec(-10.0..10.0f64, count).prop_map(move |data| Naive::new(&shape, data))
}

fn array(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Naive> {
    shape(ranks).prop_flat_map(naive_of)
}

/// `full` with some leading dimensions dropped and some others set to 1.
fn broadcastable_to(full: &[usize], c: &mut Choices) -> Vec<usize> {
    let drop = c.below(full.len() + 1);
    full[drop..]
        .iter()
        .map(|&d| if c.flag() { 1 } else { d })
        .collect()
}

/// Two shapes that broadcast together, each derived from a common full shape.
fn broadcast_shapes(
    ranks: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(ranks), choices()).prop_map(|(full, mut c)| {
        (
            broadcastable_to(&full, &mut c),
            broadcastable_to(&full, &mut c),
        )
    })
}

/// Two shapes that do not broadcast: aligned at the end, one dimension has
/// sizes that differ and are both above 1.
fn incompatible_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(1..=4), choices()).prop_map(|(mut a, mut c)| {
        let mut b = broadcastable_to(&a, &mut c);
        if b.is_empty() {
            b.push(1);
        }
        let pos = c.below(b.len());
        let (size_a, size_b) = (c.range(2, 4), c.range(2, 3));
        let size_b = if size_b >= size_a { size_b + 1 } else { size_b };
        let a_pos = a.len() - b.len() + pos;
        a[a_pos] = size_a;
        b[pos] = size_b;
        if c.flag() {
            (a, b)
        } else {
            (b, a)
        }
    })
}

/// `a` as a tensor that usually does not own its storage in row-major order:
/// cut out of a larger buffer (filled elsewhere with a junk value that no
/// test input contains) that is stored flipped and permuted. The result reads
/// back as `a`.
fn scrambled(a: &Naive, c: &mut Choices) -> Tensor {
    const JUNK: f64 = 1.0e6;
    let rank = a.rank();
    let margins: Vec<usize> = (0..rank).map(|_| c.below(2)).collect();
    let big_shape: Vec<usize> = (0..rank)
        .map(|d| a.shape[d] + margins[d] + c.below(2))
        .collect();
    let big = Naive::from_fn(&big_shape, |idx| {
        let inner: Option<Vec<usize>> = (0..rank)
            .map(|d| idx[d].checked_sub(margins[d]).filter(|&i| i < a.shape[d]))
            .collect();
        inner.map_or(JUNK, |i| a.at(&i))
    });
    let (flips, perm) = (c.dims(rank), c.permutation(rank));
    let mut inverse = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    let stored = big.flip(&flips).permute(&perm).tensor();
    let mut t = stored.permute(&inverse).unwrap().flip(&flips).unwrap();
    for (d, &margin) in margins.iter().enumerate() {
        t = t.narrow(d, margin, a.shape[d]).unwrap();
    }
    t
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

/// `t` holds exactly `want`, read directly and through `contiguous()`.
fn assert_exact(t: &Tensor, want: &Naive, context: &dyn std::fmt::Debug) -> TestResult {
    prop_assert_eq!(t.shape(), want.shape.as_slice(), "shape; {:?}", context);
    prop_assert_eq!(
        t.to_vec::<f64>().unwrap(),
        want.data.clone(),
        "values; {:?}",
        context
    );
    let c = t.contiguous().unwrap();
    prop_assert!(
        c.is_contiguous(),
        "contiguous() is not contiguous; {:?}",
        context
    );
    prop_assert_eq!(
        c.shape(),
        want.shape.as_slice(),
        "contiguous shape; {:?}",
        context
    );
    prop_assert_eq!(
        c.to_vec::<f64>().unwrap(),
        want.data.clone(),
        "contiguous values; {:?}",
        context
    );
    Ok(())
}

/// `t` matches `want` within `rel` times `scale` (the same fold over |terms|).
fn assert_close(
    t: &Tensor,
    want: &Naive,
    scale: &Naive,
    rel: f64,
    context: &dyn std::fmt::Debug,
) -> TestResult {
    prop_assert_eq!(t.shape(), want.shape.as_slice(), "shape; {:?}", context);
    let got = t.to_vec::<f64>().unwrap();
    for ((&g, &w), &s) in got.iter().zip(&want.data).zip(&scale.data) {
        prop_assert!(
            (g - w).abs() <= rel * s,
            "got {} want {} (scale {}); {:?}",
            g,
            w,
            s,
            context
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// View ops
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum ViewKind {
    Permute,
    Transpose,
    Narrow,
    Flip,
    Broadcast,
    Reshape,
}

const VIEW_KINDS: [ViewKind; 6] = [
    ViewKind::Permute,
    ViewKind::Transpose,
    ViewKind::Narrow,
    ViewKind::Flip,
    ViewKind::Broadcast,
    ViewKind::Reshape,
];

/// One view op with its arguments resolved against a shape.
#[derive(Clone, Debug)]
enum View {
    Permute(Vec<usize>),
    Transpose(usize, usize),
    Narrow {
        dim: usize,
        start: usize,
        len: usize,
    },
    Flip(Vec<usize>),
    Broadcast(Vec<usize>),
    Reshape(Vec<usize>),
}

/// A random shape with as many elements as `shape` (ranks 0..=4).
fn reshaped(shape: &[usize], c: &mut Choices) -> Vec<usize> {
    let mut left: usize = shape.iter().product();
    if left == 1 && c.flag() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for _ in 1..c.range(1, 4) {
        let divisors: Vec<usize> = (1..=left).filter(|&d| left / d * d == left).collect();
        let d = divisors[c.below(divisors.len())];
        out.push(d);
        left /= d;
    }
    out.push(left);
    out
}

impl View {
    /// A random op of `kind` valid for `shape`; ops that need a dimension
    /// become the empty permutation on rank 0.
    fn random(kind: ViewKind, shape: &[usize], c: &mut Choices) -> View {
        let rank = shape.len();
        match kind {
            ViewKind::Transpose | ViewKind::Narrow if rank == 0 => View::Permute(Vec::new()),
            ViewKind::Permute => View::Permute(c.permutation(rank)),
            ViewKind::Transpose => View::Transpose(c.below(rank), c.below(rank)),
            ViewKind::Narrow => {
                let dim = c.below(rank);
                let start = c.below(shape[dim]);
                let len = c.range(1, shape[dim] - start);
                View::Narrow { dim, start, len }
            }
            ViewKind::Flip => View::Flip(c.dims(rank)),
            ViewKind::Broadcast => {
                // new leading dims, up to rank 6 in all
                let lead = c.below(1 + 2.min(6usize.saturating_sub(rank)));
                let mut target: Vec<usize> = (0..lead).map(|_| c.range(1, 3)).collect();
                target.extend(
                    shape
                        .iter()
                        .map(|&d| if d == 1 { c.range(1, 3) } else { d }),
                );
                View::Broadcast(target)
            }
            ViewKind::Reshape => View::Reshape(reshaped(shape, c)),
        }
    }

    fn apply(&self, t: &Tensor) -> flowtensor::Result<Tensor> {
        match self {
            View::Permute(dims) => t.permute(dims),
            View::Transpose(d0, d1) => t.transpose(*d0, *d1),
            View::Narrow { dim, start, len } => t.narrow(*dim, *start, *len),
            View::Flip(dims) => t.flip(dims),
            View::Broadcast(shape) => t.broadcast_as(shape),
            View::Reshape(shape) => t.reshape(shape),
        }
    }

    fn apply_naive(&self, a: &Naive) -> Naive {
        match self {
            View::Permute(dims) => a.permute(dims),
            View::Transpose(d0, d1) => a.transpose(*d0, *d1),
            View::Narrow { dim, start, len } => a.narrow(*dim, *start, *len),
            View::Flip(dims) => a.flip(dims),
            View::Broadcast(shape) => a.broadcast_to(shape),
            View::Reshape(shape) => a.reshape(shape),
        }
    }
}

/// Applies random views of `kinds` in sequence to a scrambled `a` and compares
/// every intermediate result with the reference.
fn check_views(a: &Naive, kinds: &[ViewKind], c: &mut Choices) -> TestResult {
    let mut t = scrambled(a, c);
    let mut want = a.clone();
    let mut applied = Vec::new();
    for &kind in kinds {
        let view = View::random(kind, &want.shape, c);
        t = view.apply(&t).unwrap();
        want = view.apply_naive(&want);
        applied.push(view);
        assert_exact(&t, &want, &(&a.shape, &applied))?;
    }
    Ok(())
}

/// A binary op under test: its name, the tensor op and its scalar meaning.
type BinaryCase = (
    &'static str,
    fn(&Tensor, &Tensor) -> flowtensor::Result<Tensor>,
    fn(f64, f64) -> f64,
);
const BINARY: [BinaryCase; 4] = [
    ("add", Tensor::add, |x, y| x + y),
    ("sub", Tensor::sub, |x, y| x - y),
    ("mul", Tensor::mul, |x, y| x * y),
    ("div", Tensor::div, |x, y| x / y),
];

/// A piece size per `n`-way chunk of `size`: ceil(size / n) each, the last smaller.
fn chunk_sizes(size: usize, n: usize) -> Vec<usize> {
    let step = size.div_ceil(n);
    let mut sizes = Vec::new();
    let mut left = size;
    while left > 0 {
        sizes.push(step.min(left));
        left -= step.min(left);
    }
    sizes
}

/// Checks pieces of `a` along `dim` against consecutive narrows of the reference.
fn check_pieces(pieces: &[Tensor], a: &Naive, dim: usize, sizes: &[usize]) -> TestResult {
    prop_assert_eq!(
        pieces.len(),
        sizes.len(),
        "piece count for sizes {:?}",
        sizes
    );
    let mut start = 0;
    for (piece, &len) in pieces.iter().zip(sizes) {
        assert_exact(piece, &a.narrow(dim, start, len), &(dim, start, len))?;
        start += len;
    }
    Ok(())
}

fn cat_parts() -> impl Strategy<Value = (Vec<Naive>, usize)> {
    (shape(1..=4), 1..=4usize, choices()).prop_flat_map(|(base, count, mut c)| {
        let dim = c.below(base.len());
        let parts: Vec<_> = (0..count)
            .map(|_| {
                let mut s = base.clone();
                s[dim] = c.range(1, 4);
                naive_of(s)
            })
            .collect();
        (parts, Just(dim))
    })
}

fn stack_parts() -> impl Strategy<Value = Vec<Naive>> {
    (shape(0..=3), 1..=4usize).prop_flat_map(|(s, count)| vec(naive_of(s), count))
}

fn matmul_operands() -> impl Strategy<Value = (Naive, Naive)> {
    (broadcast_shapes(0..=3), 1..=4usize, 1..=4usize, 1..=4usize).prop_flat_map(
        |((ba, bb), m, k, n)| {
            (
                naive_of([ba.as_slice(), &[m, k]].concat()),
                naive_of([bb.as_slice(), &[k, n]].concat()),
            )
        },
    )
}

/// A matmul operand: contiguous, stored transposed and viewed back, or scrambled.
fn operand(a: &Naive, c: &mut Choices) -> Tensor {
    let r = a.rank();
    match c.below(3) {
        0 => a.tensor(),
        1 => a
            .transpose(r - 2, r - 1)
            .tensor()
            .transpose(r - 2, r - 1)
            .unwrap(),
        _ => scrambled(a, c),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn binary_ops_broadcast_like_numpy(
        (a, b) in broadcast_shapes(0..=4).prop_flat_map(|(sa, sb)| (naive_of(sa), naive_of(sb))),
        mut c in choices(),
    ) {
        // divisors at least 0.5 away from zero
        let b = b.map(|x| x + 0.5 * x.signum());
        let (ta, tb) = (scrambled(&a, &mut c), scrambled(&b, &mut c));
        for (name, op, f) in BINARY {
            let want = a.zip(&b, f).unwrap();
            assert_exact(&op(&ta, &tb).unwrap(), &want, &(name, &a.shape, &b.shape))?;
        }
    }

    #[test]
    fn binary_ops_reject_incompatible_shapes((sa, sb) in incompatible_shapes()) {
        prop_assert!(naive_broadcast_shape(&sa, &sb).is_none());
        let ones = |s: &[usize]| Naive::new(s, vec![1.0; s.iter().product()]).tensor();
        let (ta, tb) = (ones(&sa), ones(&sb));
        for (name, op, _) in BINARY {
            let msg = match op(&ta, &tb) {
                Ok(t) => return Err(TestCaseError::fail(format!("{name} {sa:?} {sb:?} gave {t:?}"))),
                Err(e) => e.to_string(),
            };
            for part in [name.to_string(), format!("{sa:?}"), format!("{sb:?}")] {
                prop_assert!(msg.contains(&part), "{:?} lacks {:?}", msg, part);
            }
        }
    }

    #[test]
    fn scrambled_layouts_read_back_in_order(a in array(0..=4), mut c in choices()) {
        assert_exact(&scrambled(&a, &mut c), &a, &a.shape)?;
    }

    #[test]
    fn permute_matches_reference(a in array(0..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Permute], &mut c)?;
    }

    #[test]
    fn transpose_matches_reference(a in array(1..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Transpose], &mut c)?;
    }

    #[test]
    fn narrow_matches_reference(a in array(1..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Narrow], &mut c)?;
    }

    #[test]
    fn flip_matches_reference(a in array(0..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Flip], &mut c)?;
    }

    #[test]
    fn broadcast_as_matches_reference(a in array(0..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Broadcast], &mut c)?;
    }

    #[test]
    fn reshape_matches_reference(a in array(0..=4), mut c in choices()) {
        check_views(&a, &[ViewKind::Reshape], &mut c)?;
    }

    #[test]
    fn views_of_views_match_reference(
        a in array(0..=4),
        kinds in vec(select(VIEW_KINDS.to_vec()), 2..=3),
        mut c in choices(),
    ) {
        check_views(&a, &kinds, &mut c)?;
    }

    #[test]
    fn cat_matches_reference((parts, dim) in cat_parts(), mut c in choices()) {
        let tensors: Vec<Tensor> = parts.iter().map(|p| scrambled(p, &mut c)).collect();
        let got = Tensor::cat(&tensors.iter().collect::<Vec<_>>(), dim).unwrap();
        assert_exact(&got, &Naive::cat(&parts, dim), &dim)?;
    }

    #[test]
    fn stack_matches_reference(parts in stack_parts(), mut c in choices()) {
        let dim = c.below(parts[0].rank() + 1);
        let tensors: Vec<Tensor> = parts.iter().map(|p| scrambled(p, &mut c)).collect();
        let got = Tensor::stack(&tensors.iter().collect::<Vec<_>>(), dim).unwrap();
        assert_exact(&got, &Naive::stack(&parts, dim), &dim)?;
    }

    #[test]
    fn split_matches_reference(a in array(1..=4), mut c in choices()) {
        let dim = c.below(a.rank());
        // 1..=4 consecutive pieces, empty ones included
        let mut cuts: Vec<usize> = (1..c.range(1, 4)).map(|_| c.range(0, a.shape[dim])).collect();
        cuts.extend([0, a.shape[dim]]);
        cuts.sort_unstable();
        let sizes: Vec<usize> = cuts.windows(2).map(|w| w[1] - w[0]).collect();
        let pieces = scrambled(&a, &mut c).split(&sizes, dim).unwrap();
        check_pieces(&pieces, &a, dim, &sizes)?;
    }

    #[test]
    fn chunk_matches_reference(a in array(1..=4), n in 1..=5usize, mut c in choices()) {
        let dim = c.below(a.rank());
        let pieces = scrambled(&a, &mut c).chunk(n, dim).unwrap();
        check_pieces(&pieces, &a, dim, &chunk_sizes(a.shape[dim], n))?;
    }

    #[test]
    fn pad_matches_reference(a in array(0..=4), circular in any::<bool>(), mut c in choices()) {
        let (mode, limit) = if circular { (PadMode::Circular, None) } else { (PadMode::Zero, Some(3)) };
        let first = a.rank() - c.below(a.rank() + 1);
        let pads: Vec<(usize, usize)> = a.shape[first..]
            .iter()
            .map(|&size| {
                let max = limit.unwrap_or(size);
                (c.below(max + 1), c.below(max + 1))
            })
            .collect();
        let got = scrambled(&a, &mut c).pad(&pads, mode).unwrap();
        assert_exact(&got, &a.pad(&pads, mode), &(mode, &pads))?;
    }

    #[test]
    fn index_select_matches_reference(a in array(1..=4), mut c in choices()) {
        let dim = c.below(a.rank());
        let idx: Vec<usize> = (0..c.range(0, 6)).map(|_| c.below(a.shape[dim])).collect();
        let got = scrambled(&a, &mut c).index_select(dim, &idx).unwrap();
        assert_exact(&got, &a.index_select(dim, &idx), &(dim, &idx))?;
    }

    #[test]
    fn reductions_match_reference(a in array(0..=4), keepdim in any::<bool>(), mut c in choices()) {
        let t = scrambled(&a, &mut c);
        let dims = c.dims(a.rank());
        let context = (&a.shape, &dims, keepdim);
        let scale = a.map(f64::abs).sum(&dims, keepdim);
        assert_close(&t.sum(&dims, keepdim).unwrap(), &a.sum(&dims, keepdim), &scale, 1e-12, &context)?;
        let count = dims.iter().map(|&d| a.shape[d]).product::<usize>() as f64;
        let mean = a.sum(&dims, keepdim).map(|x| x / count);
        let mean_scale = scale.map(|x| x / count);
        assert_close(&t.mean(&dims, keepdim).unwrap(), &mean, &mean_scale, 1e-12, &context)?;
        let max = a.reduce(&dims, keepdim, f64::NEG_INFINITY, f64::max);
        assert_exact(&t.max(&dims, keepdim).unwrap(), &max, &context)?;
        let min = a.reduce(&dims, keepdim, f64::INFINITY, f64::min);
        assert_exact(&t.min(&dims, keepdim).unwrap(), &min, &context)?;
    }

    #[test]
    fn batched_matmul_matches_triple_loop((a, b) in matmul_operands(), mut c in choices()) {
        let got = operand(&a, &mut c).matmul(&operand(&b, &mut c)).unwrap();
        let scale = a.map(f64::abs).matmul(&b.map(f64::abs));
        assert_close(&got, &a.matmul(&b), &scale, 1e-12, &(&a.shape, &b.shape))?;
    }
}
