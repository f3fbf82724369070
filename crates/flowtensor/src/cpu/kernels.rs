//! Strided elementwise and reduction kernels, generic over the element type.
//!
//! Every kernel reads any layout (strided, broadcast, flipped) and writes a
//! fresh contiguous buffer. Work is split over rayon only when the tensor has
//! at least [`PAR_THRESHOLD`] elements, so small tensors pay no scheduling cost.

use crate::layout::{lockstep_rows, Layout, RowCursor, Rows};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Tensors with at least this many elements are processed in parallel (with
/// the workers polling inside [`crate::in_pool`], splitting pays from here).
pub const PAR_THRESHOLD: usize = 1 << 14;

/// Smallest number of rows a rayon task takes, so short rows are batched.
pub(super) fn min_rows_per_task(row_len: usize) -> usize {
    (4096 / row_len.max(1)).max(1)
}

#[inline]
fn at(base: isize, k: usize, stride: isize) -> usize {
    (base + k as isize * stride) as usize
}

/// A buffer of `n` elements written row by row: `fill(r, row)` must write
/// every element of row `r` (rows of `row_len`, the last one possibly
/// shorter); rows are filled in parallel from [`PAR_THRESHOLD`] elements.
/// The buffer is not zeroed first (it would be written twice).
pub(crate) fn filled_rows<U, F>(n: usize, row_len: usize, fill: F) -> Vec<U>
where
    U: Copy + Send,
    F: Fn((usize, &mut [MaybeUninit<U>])) + Sync + Send,
{
    let mut out: Vec<U> = Vec::with_capacity(n);
    if n > 0 {
        let spare = &mut out.spare_capacity_mut()[..n];
        if n >= PAR_THRESHOLD {
            spare
                .par_chunks_mut(row_len)
                .with_min_len(min_rows_per_task(row_len))
                .enumerate()
                .for_each(fill);
        } else {
            spare.chunks_mut(row_len).enumerate().for_each(fill);
        }
        // SAFETY: `fill` wrote all `n` elements (its contract).
        unsafe { out.set_len(n) };
    }
    out
}

/// A buffer of `n` elements written by `fill(index, piece)` on consecutive
/// pieces of `piece_len` (the last one possibly shorter), in parallel when
/// `parallel`; `fill` must write every element of its piece.
pub(crate) fn written_pieces<T, F>(n: usize, piece_len: usize, parallel: bool, fill: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
{
    let mut out: Vec<T> = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let spare = &mut out.spare_capacity_mut()[..n];
    let fill = |(index, piece): (usize, &mut [MaybeUninit<T>])| fill(index, piece);
    if parallel {
        spare
            .par_chunks_mut(piece_len.max(1))
            .enumerate()
            .for_each(fill);
    } else {
        spare
            .chunks_mut(piece_len.max(1))
            .enumerate()
            .for_each(fill);
    }
    // SAFETY: `fill` wrote every element of every piece (its contract).
    unsafe { out.set_len(n) };
    out
}

/// Like [`written_pieces`] for a `fill` that needs initialised pieces: each
/// is zeroed first by the thread that fills it, while the piece is in its
/// cache (a zeroed allocation would write the whole buffer to memory once
/// more before the kernel writes it again).
pub(crate) fn zeroed_pieces<T, F>(n: usize, piece_len: usize, parallel: bool, fill: F) -> Vec<T>
where
    T: crate::Element,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    written_pieces(n, piece_len, parallel, |index, piece| {
        piece.fill(MaybeUninit::new(T::zero()));
        // SAFETY: every element of the piece was just written.
        fill(index, unsafe { assume_init_mut(piece) })
    })
}

/// `piece` as initialised values.
///
/// # Safety
/// Every element of `piece` must have been written.
pub(crate) unsafe fn assume_init_mut<T>(piece: &mut [MaybeUninit<T>]) -> &mut [T] {
    &mut *(piece as *mut [MaybeUninit<T>] as *mut [T])
}

/// Elements per piece of a contiguous elementwise op.
const PIECE: usize = 4096;

/// A loop to compile once per instruction set by [`vectorized`]. `run`
/// must be `#[inline(always)]`, so that its body is compiled inside each
/// instruction set's function rather than called from it.
pub(crate) trait Loop {
    fn run(self);
}

/// Runs `body` compiled for the widest vector instructions this CPU has
/// (AVX-512 or AVX2, chosen at run time), so that its loop vectorizes with
/// them; the baseline build otherwise only has SSE2. The kernels use no
/// fused multiply-add, so results are the same bits on every instruction set.
#[inline(always)]
pub(crate) fn vectorized<L: Loop>(body: L) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::conv::simd::{isa, Isa};
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<L: Loop>(body: L) {
            body.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<L: Loop>(body: L) {
            body.run()
        }
        // SAFETY: `isa` reported the instructions each function is compiled for.
        match isa() {
            Isa::Avx512 => unsafe { avx512(body) },
            Isa::Avx2 => unsafe { avx2(body) },
            Isa::Baseline => body.run(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    body.run()
}

/// `out[i] = f(x[i])`.
struct MapLoop<'a, T, U, F> {
    out: &'a mut [MaybeUninit<U>],
    x: &'a [T],
    f: &'a F,
}

impl<T: Copy, U, F: Fn(T) -> U> Loop for MapLoop<'_, T, U, F> {
    #[inline(always)]
    fn run(self) {
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            o.write((self.f)(x));
        }
    }
}

/// `out[i] = f(x[i], y[i])`.
struct ZipLoop<'a, T, F> {
    out: &'a mut [MaybeUninit<T>],
    x: &'a [T],
    y: &'a [T],
    f: &'a F,
}

impl<T: Copy, F: Fn(T, T) -> T> Loop for ZipLoop<'_, T, F> {
    #[inline(always)]
    fn run(self) {
        for (o, (&x, &y)) in self.out.iter_mut().zip(self.x.iter().zip(self.y)) {
            o.write((self.f)(x, y));
        }
    }
}

/// `out[i] = f(x[i], y[i], z[i])`.
struct Zip3Loop<'a, T, F> {
    out: &'a mut [MaybeUninit<T>],
    operands: [&'a [T]; 3],
    f: &'a F,
}

impl<T: Copy, F: Fn(T, T, T) -> T> Loop for Zip3Loop<'_, T, F> {
    #[inline(always)]
    fn run(self) {
        let [x, y, z] = self.operands;
        for (o, ((&x, &y), &z)) in self.out.iter_mut().zip(x.iter().zip(y).zip(z)) {
            o.write((self.f)(x, y, z));
        }
    }
}

/// `out[i] = f(x[i])`, vectorized. A function of its own, so that `out` is
/// known not to alias `f`'s captures: their loads leave the loop.
#[inline]
fn write_map<T: Copy, U, F: Fn(T) -> U>(out: &mut [MaybeUninit<U>], x: &[T], f: &F) {
    vectorized(MapLoop { out, x, f })
}

/// `out[i] = f(x[i], y[i])`, like [`write_map`].
#[inline]
fn write_zip<T: Copy, F: Fn(T, T) -> T>(out: &mut [MaybeUninit<T>], x: &[T], y: &[T], f: &F) {
    vectorized(ZipLoop { out, x, y, f })
}

/// Rows of unit stride at least this long are processed in place; shorter
/// or strided rows are first gathered into contiguous blocks of [`BLOCK`]
/// elements, so that the op itself always runs in a vectorized loop.
const LONG_ROW: usize = 32;

/// Elements per gathered block.
const BLOCK: usize = 1024;

/// Copies the elements `start..start + out.len()` (in row-major order) of
/// the layout walked by `rows` into `out`, and returns them.
fn gather_block<'a, T: Copy>(
    src: &[T],
    rows: &Rows,
    start: usize,
    out: &'a mut [MaybeUninit<T>],
) -> &'a [T] {
    let mut cursor = RowCursor::new(rows, start / rows.len);
    let mut k = start % rows.len;
    let mut i = 0;
    while i < out.len() {
        let n = (rows.len - k).min(out.len() - i);
        let base = cursor.base() + k as isize * rows.stride;
        let dst = &mut out[i..i + n];
        match rows.stride {
            1 => dst
                .iter_mut()
                .zip(&src[base as usize..][..n])
                .for_each(|(o, &x)| {
                    o.write(x);
                }),
            0 => dst.iter_mut().for_each(|o| {
                o.write(src[base as usize]);
            }),
            stride => dst.iter_mut().enumerate().for_each(|(k, o)| {
                o.write(src[at(base, k, stride)]);
            }),
        }
        i += n;
        k = 0;
        cursor.advance();
    }
    // SAFETY: the loop wrote every element of `out`.
    unsafe { &*(out as *const [MaybeUninit<T>] as *const [T]) }
}

/// An uninitialised block buffer.
fn block<T>() -> [MaybeUninit<T>; BLOCK] {
    [const { MaybeUninit::uninit() }; BLOCK]
}

/// `out[i] = f(src[i])` over the elements of `layout` in row-major order.
pub fn map<T, U, F>(src: &[T], layout: &Layout, f: F) -> Vec<U>
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    F: Fn(T) -> U + Sync + Send,
{
    map_blocks(src, layout, |out, x| write_map(out, x, &f))
}

/// Like [`map`], with `g(out, x)` writing `out[i] = f(x[i])` for whole
/// contiguous blocks (so that `g` can hold its own vectorized loop).
pub fn map_blocks<T, U, G>(src: &[T], layout: &Layout, g: G) -> Vec<U>
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    G: Fn(&mut [MaybeUninit<U>], &[T]) + Sync + Send,
{
    let n = layout.elem_count();
    if let Some(range) = layout.contiguous_range() {
        let s = &src[range];
        return filled_rows(n, PIECE, |(r, chunk)| {
            g(chunk, &s[r * PIECE..][..chunk.len()])
        });
    }
    let rows = Rows::new(layout);
    if rows.len >= LONG_ROW && matches!(rows.stride, 0 | 1) {
        let piece = row_piece(rows.len, n);
        return filled_rows(n, piece, |(k, chunk)| {
            let (r, offset) = ((k * piece) / rows.len, (k * piece) % rows.len);
            let base = (rows.base(r) + offset as isize * rows.stride) as usize;
            if rows.stride == 1 {
                g(chunk, &src[base..][..chunk.len()])
            } else {
                g(&mut chunk[..1], &src[base..=base]);
                // SAFETY: `g` wrote the first element.
                let v = unsafe { chunk[0].assume_init() };
                chunk[1..].iter_mut().for_each(|o| {
                    o.write(v);
                });
            }
        });
    }
    filled_rows(n, BLOCK, |(b, chunk)| {
        let mut buf = block();
        g(
            chunk,
            gather_block(src, &rows, b * BLOCK, &mut buf[..chunk.len()]),
        )
    })
}

/// The piece length for rows of `len` elements out of `n`: the row, or, for
/// one long row (a whole tensor broadcast from or to a scalar), a
/// [`PIECE`], so that it is split over threads and its pieces stay in cache.
fn row_piece(len: usize, n: usize) -> usize {
    if len == n && len > PIECE {
        PIECE
    } else {
        len
    }
}

/// `out[i] = f(a[i], b[i])` for two layouts of the same shape.
pub fn zip_map<T, F>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T) -> T + Sync + Send,
{
    let n = la.elem_count();
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        return filled_rows(n, PIECE, |(r, chunk)| {
            write_zip(chunk, &a[r * PIECE..], &b[r * PIECE..], &f)
        });
    }
    let rows = lockstep_rows(&[la, lb]);
    let (ra, rb) = (&rows[0], &rows[1]);
    let unit = |s: isize| matches!(s, 0 | 1);
    if ra.len >= LONG_ROW && unit(ra.stride) && unit(rb.stride) {
        let piece = row_piece(ra.len, n);
        return filled_rows(n, piece, |(k, chunk)| {
            let (r, offset) = ((k * piece) / ra.len, (k * piece) % ra.len);
            let at = |row: &Rows| (row.base(r) + offset as isize * row.stride) as usize;
            let (ba, bb) = (at(ra), at(rb));
            let n = chunk.len();
            match (ra.stride, rb.stride) {
                (1, 1) => write_zip(chunk, &a[ba..][..n], &b[bb..][..n], &f),
                (1, _) => {
                    let y = b[bb];
                    write_map(chunk, &a[ba..][..n], &|x| f(x, y))
                }
                (_, 1) => {
                    let x = a[ba];
                    write_map(chunk, &b[bb..][..n], &|y| f(x, y))
                }
                _ => {
                    let v = f(a[ba], b[bb]);
                    chunk.iter_mut().for_each(|o| {
                        o.write(v);
                    });
                }
            }
        });
    }
    filled_rows(n, BLOCK, |(k, chunk)| {
        let (mut buf_a, mut buf_b) = (block(), block());
        let x = gather_block(a, ra, k * BLOCK, &mut buf_a[..chunk.len()]);
        let y = gather_block(b, rb, k * BLOCK, &mut buf_b[..chunk.len()]);
        write_zip(chunk, x, y, &f)
    })
}

/// `out[i] = f(a[i], b[i], c[i])` for three layouts of the same shape.
pub fn zip3_map<T, F>(a: (&[T], &Layout), b: (&[T], &Layout), c: (&[T], &Layout), f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T, T) -> T + Sync + Send,
{
    let n = a.1.elem_count();
    let rows = lockstep_rows(&[a.1, b.1, c.1]);
    filled_rows(n, BLOCK, |(k, chunk)| {
        let mut bufs = [block(), block(), block()];
        let [buf_a, buf_b, buf_c] = &mut bufs;
        let x = gather_block(a.0, &rows[0], k * BLOCK, &mut buf_a[..chunk.len()]);
        let y = gather_block(b.0, &rows[1], k * BLOCK, &mut buf_b[..chunk.len()]);
        let z = gather_block(c.0, &rows[2], k * BLOCK, &mut buf_c[..chunk.len()]);
        vectorized(Zip3Loop {
            out: chunk,
            operands: [x, y, z],
            f: &f,
        })
    })
}

/// Folds one strided run of `len` elements into `acc`. Unit-stride runs are
/// folded in 16 interleaved lanes (combined with `fold` at the end), which
/// breaks the dependency chain and lets the compiler vectorize.
#[inline]
fn fold_run<T: Copy, F: Fn(T, T) -> T>(
    src: &[T],
    base: isize,
    len: usize,
    stride: isize,
    init: T,
    acc: T,
    fold: &F,
) -> T {
    const LANES: usize = 16;
    if stride != 1 || len < 2 * LANES {
        return (0..len).fold(acc, |a, k| fold(a, src[at(base, k, stride)]));
    }
    let run = &src[base as usize..][..len];
    let mut lanes = [init; LANES];
    let mut chunks = run.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = fold(*l, x);
        }
    }
    let acc = chunks.remainder().iter().fold(acc, |a, &x| fold(a, x));
    lanes.into_iter().fold(acc, fold)
}

/// `acc[j] = fold(acc[j], row[j])`.
struct FoldRowLoop<'a, T, F> {
    acc: &'a mut [T],
    row: &'a [T],
    fold: &'a F,
}

impl<T: Copy, F: Fn(T, T) -> T> Loop for FoldRowLoop<'_, T, F> {
    #[inline(always)]
    fn run(self) {
        for (a, &x) in self.acc.iter_mut().zip(self.row) {
            *a = (self.fold)(*a, x);
        }
    }
}

/// Rows per piece of [`reduce_leading`].
const FOLD_PIECE_ROWS: usize = 256;

/// Folds a contiguous `(rows, cols)` matrix over its rows (the reduction of
/// leading dimensions, such as a bias gradient over the batch): whole rows
/// are folded into a row of accumulators, vectorized across columns. Pieces
/// of [`FOLD_PIECE_ROWS`] rows are folded in parallel and their results
/// joined in order, so the result does not depend on the thread count.
fn reduce_leading<T, F>(src: &[T], rows: usize, cols: usize, init: T, fold: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T) -> T + Sync + Send,
{
    let fold_piece = |piece: &[T]| -> Vec<T> {
        let mut acc = vec![init; cols];
        for row in piece.chunks_exact(cols) {
            vectorized(FoldRowLoop {
                acc: &mut acc,
                row,
                fold: &fold,
            });
        }
        acc
    };
    if rows == 0 || src.len() < PAR_THRESHOLD || rows <= FOLD_PIECE_ROWS {
        return fold_piece(src);
    }
    let partials: Vec<Vec<T>> = src
        .par_chunks(FOLD_PIECE_ROWS * cols)
        .map(fold_piece)
        .collect();
    partials
        .into_iter()
        .reduce(|mut acc, p| {
            vectorized(FoldRowLoop {
                acc: &mut acc,
                row: &p,
                fold: &fold,
            });
            acc
        })
        .unwrap_or_else(|| vec![init; cols])
}

/// Folds the elements of `layout` over `dims` (kept with size 1 in the output
/// shape): each output is `fold(init, x...)`, partial folds are joined with `fold`.
pub fn reduce<T, F>(src: &[T], layout: &Layout, dims: &[usize], init: T, fold: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T) -> T + Sync + Send,
{
    let (shape, strides) = (layout.shape(), layout.strides());
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let pick = |ds: &[usize]| -> (Vec<usize>, Vec<isize>) {
        (
            ds.iter().map(|&d| shape[d]).collect(),
            ds.iter().map(|&d| strides[d]).collect(),
        )
    };
    // leading dims reduced, at least a vector's width of trailing ones kept
    let leading = dims.iter().enumerate().all(|(i, &d)| i == d);
    let cols: usize = shape[dims.len().min(shape.len())..].iter().product();
    if let (true, true, Some(range)) = (leading, cols >= 16, layout.contiguous_range()) {
        let rows: usize = shape[..dims.len()].iter().product();
        return reduce_leading(&src[range], rows, cols, init, fold);
    }
    let (kshape, kstrides) = pick(&kept);
    let (rshape, rstrides) = pick(dims);
    let outer = Layout::from_parts(kshape, kstrides, layout.offset());
    let inner = Layout::from_parts(rshape, rstrides, 0);
    let outer_rows = Rows::elementwise(&outer);
    let inner_rows = Rows::new(&inner);
    let n_out = outer.elem_count();
    // Folds rows `range` of output `o`'s reduced elements.
    let fold_rows = |o: usize, range: std::ops::Range<usize>| -> T {
        let base = outer_rows.base(o);
        range.fold(init, |acc, r| {
            fold_run(
                src,
                base + inner_rows.base(r),
                inner_rows.len,
                inner_rows.stride,
                init,
                acc,
                &fold,
            )
        })
    };
    let work = layout.elem_count();
    if work < PAR_THRESHOLD {
        return (0..n_out)
            .map(|o| fold_rows(o, 0..inner_rows.count()))
            .collect();
    }
    if n_out >= rayon::current_num_threads() * 4 {
        return (0..n_out)
            .into_par_iter()
            .with_min_len((PAR_THRESHOLD / inner.elem_count().max(1)).max(1))
            .map(|o| fold_rows(o, 0..inner_rows.count()))
            .collect();
    }
    // Few outputs over many elements: split each output's elements into fixed
    // pieces (by rows when there are many, else pieces of its single long row),
    // fold the pieces in parallel and combine their results in order, so the
    // result does not depend on how rayon schedules the pieces.
    (0..n_out)
        .map(|o| {
            let partials: Vec<T> = if inner_rows.count() > 1 {
                let (rows, per) = (inner_rows.count(), min_rows_per_task(inner_rows.len));
                (0..rows.div_ceil(per))
                    .into_par_iter()
                    .map(|p| fold_rows(o, p * per..rows.min((p + 1) * per)))
                    .collect()
            } else {
                let base = outer_rows.base(o) + inner_rows.base(0);
                let piece = 8192;
                (0..inner_rows.len.div_ceil(piece))
                    .into_par_iter()
                    .map(|p| {
                        let len = piece.min(inner_rows.len - p * piece);
                        let start = base + (p * piece) as isize * inner_rows.stride;
                        fold_run(src, start, len, inner_rows.stride, init, init, &fold)
                    })
                    .collect()
            };
            partials.into_iter().fold(init, &fold)
        })
        .collect()
}
