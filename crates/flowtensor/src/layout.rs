//! Shapes, strides and offsets: how a tensor's elements sit in its storage.
//!
//! Views (reshape of contiguous data, permute, narrow, broadcast, flip) only
//! build a new [`Layout`] over the same storage. Strides are in elements and may
//! be zero (broadcast) or negative (flip).

use crate::{Error, Result};

/// Shape, strides (in elements) and the offset of the first element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<isize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d as isize;
    }
    strides
}

/// The numpy broadcast of two shapes (aligned at the trailing dimension).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    &[a, b],
                    format!("dimension {i} of the broadcast has sizes {da} and {db}"),
                ))
            }
        };
    }
    Ok(out)
}

/// Checks that `dim` indexes a dimension of `shape`.
pub fn check_dim(op: &'static str, dim: usize, shape: &[usize]) -> Result<()> {
    if dim < shape.len() {
        Ok(())
    } else {
        Err(Error::Dim {
            op,
            dim,
            shape: shape.to_vec(),
        })
    }
}

/// Checks a list of distinct, in-range dimensions.
pub fn check_dims(op: &'static str, dims: &[usize], shape: &[usize]) -> Result<()> {
    for (i, &d) in dims.iter().enumerate() {
        check_dim(op, d, shape)?;
        if dims[..i].contains(&d) {
            return Err(Error::invalid(
                op,
                format!("dimension {d} is listed twice in {dims:?}"),
            ));
        }
    }
    Ok(())
}

impl Layout {
    /// The row-major layout of `shape` starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from its parts; the caller guarantees every element is in bounds.
    pub(crate) fn from_parts(shape: Vec<usize>, strides: Vec<isize>, offset: usize) -> Self {
        Layout {
            shape,
            strides,
            offset,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn strides(&self) -> &[isize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are stored row-major and without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1isize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d as isize;
        }
        true
    }

    /// The storage range `start..start + elem_count` when the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.elem_count())
    }

    /// The same elements (in row-major order) viewed with another shape of
    /// the same count, without copying: `None` when a run of dimensions
    /// that `shape` merges or splits is not contiguous within itself (a
    /// transpose, or a narrow inside the run), which needs a copy.
    pub(crate) fn reshaped(&self, shape: &[usize]) -> Option<Layout> {
        if shape.iter().product::<usize>() != self.elem_count() {
            return None;
        }
        let offset = self.offset;
        if self.elem_count() == 0 || self.is_contiguous() {
            let strides = contiguous_strides(shape);
            return Some(Layout {
                shape: shape.to_vec(),
                strides,
                offset,
            });
        }
        let old: Vec<(usize, isize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .collect();
        // size-1 dimensions take any stride
        let mut strides = vec![1isize; shape.len()];
        let (mut i, mut j) = (0, 0);
        while j < shape.len() {
            if shape[j] == 1 {
                j += 1;
                continue;
            }
            // the shortest runs old[i0..i], shape[j0..j] with equal products
            let (i0, j0) = (i, j);
            let (mut old_count, mut new_count) = (old[i].0, shape[j]);
            (i, j) = (i + 1, j + 1);
            while old_count != new_count {
                if old_count < new_count {
                    old_count *= old[i].0;
                    i += 1;
                } else {
                    new_count *= shape[j];
                    j += 1;
                }
            }
            let run = &old[i0..i];
            if run.windows(2).any(|w| w[0].1 != w[1].1 * w[1].0 as isize) {
                return None;
            }
            let mut stride = run[run.len() - 1].1;
            for k in (j0..j).rev() {
                strides[k] = stride;
                stride *= shape[k] as isize;
            }
        }
        Some(Layout {
            shape: shape.to_vec(),
            strides,
            offset,
        })
    }

    /// Dimensions reordered: dimension i of the result is dimension `dims[i]` here.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        if dims.len() != self.rank() {
            return Err(Error::shape(
                "permute",
                &[&self.shape],
                format!("permutation {dims:?} has the wrong length"),
            ));
        }
        check_dims("permute", dims, &self.shape)?;
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Elements `start..start + len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        check_dim("narrow", dim, &self.shape)?;
        if start + len > self.shape[dim] {
            return Err(Error::shape(
                "narrow",
                &[&self.shape],
                format!(
                    "range {start}..{} is outside dimension {dim} of size {}",
                    start + len,
                    self.shape[dim]
                ),
            ));
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        let offset = (self.offset as isize + start as isize * self.strides[dim]) as usize;
        Ok(Layout {
            shape,
            strides: self.strides.clone(),
            offset,
        })
    }

    /// Broadcast to `shape` (numpy rules: new leading dims, size-1 dims expand) with zero strides.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Layout> {
        let err = || {
            Error::shape(
                "broadcast_as",
                &[&self.shape, shape],
                "the source cannot be broadcast to the target",
            )
        };
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0isize; shape.len()];
        for (i, &target) in shape.iter().enumerate().skip(lead) {
            let src = self.shape[i - lead];
            if src == target {
                strides[i] = self.strides[i - lead];
            } else if src != 1 {
                return Err(err());
            }
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// The order of elements reversed along each of `dims`.
    pub fn flip(&self, dims: &[usize]) -> Result<Layout> {
        check_dims("flip", dims, &self.shape)?;
        let mut layout = self.clone();
        for &d in dims {
            if self.shape[d] > 0 {
                let last = (self.shape[d] - 1) as isize * self.strides[d];
                layout.offset = (layout.offset as isize + last) as usize;
            }
            layout.strides[d] = -self.strides[d];
        }
        Ok(layout)
    }
}

/// Row-wise traversal of a strided layout: a trailing run of dimensions stored
/// with one stride is the inner row, all others enumerate rows. Kernels use it to walk any
/// layout in row-major order with one division chain per row.
pub(crate) struct Rows {
    outer_shape: Vec<usize>,
    outer_strides: Vec<isize>,
    offset: usize,
    /// Length of one row.
    pub len: usize,
    /// Stride between consecutive elements of a row.
    pub stride: isize,
}

impl Rows {
    /// Walks `layout` with its longest trailing strided run as the row.
    pub fn new(layout: &Layout) -> Rows {
        Rows::split(layout, trailing_run_dims(layout))
    }

    /// Walks `layout` one element per row (rows enumerate every element).
    pub fn elementwise(layout: &Layout) -> Rows {
        Rows::split(layout, 0)
    }

    /// Walks `layout` with its trailing `k` dimensions as the row; they
    /// must form a single strided run (see [`lockstep_rows`]).
    fn split(layout: &Layout, k: usize) -> Rows {
        let rank = layout.rank();
        let (shape, strides) = (layout.shape(), layout.strides());
        let inner = rank - k..rank;
        let stride = inner
            .clone()
            .rev()
            .find(|&i| shape[i] != 1)
            .map_or(1, |i| strides[i]);
        Rows {
            outer_shape: shape[..rank - k].to_vec(),
            outer_strides: strides[..rank - k].to_vec(),
            offset: layout.offset,
            len: shape[inner].iter().product(),
            stride,
        }
    }

    /// Number of rows.
    pub fn count(&self) -> usize {
        self.outer_shape.iter().product()
    }

    /// Storage offset of the row at multi-index `index` over the outer dims.
    fn base_of(&self, index: &[usize]) -> isize {
        let steps = index.iter().zip(&self.outer_strides);
        self.offset as isize + steps.map(|(&i, &s)| i as isize * s).sum::<isize>()
    }

    /// Storage offset of the first element of row `row` (negative only for
    /// layouts with offset 0 and negative strides, used as relative offsets).
    pub fn base(&self, mut row: usize) -> isize {
        let mut off = self.offset as isize;
        for (&d, &s) in self.outer_shape.iter().zip(&self.outer_strides).rev() {
            off += (row % d) as isize * s;
            row /= d;
        }
        off
    }
}

/// Walks the bases of consecutive rows of a [`Rows`] from a given row, with
/// one carry per row instead of a division chain.
pub(crate) struct RowCursor<'a> {
    rows: &'a Rows,
    index: Vec<usize>,
    base: isize,
}

impl<'a> RowCursor<'a> {
    /// A cursor at row `row`.
    pub fn new(rows: &'a Rows, mut row: usize) -> RowCursor<'a> {
        let mut index = vec![0; rows.outer_shape.len()];
        for (i, &d) in index.iter_mut().zip(&rows.outer_shape).rev() {
            *i = row % d.max(1);
            row /= d.max(1);
        }
        RowCursor {
            base: rows.base_of(&index),
            rows,
            index,
        }
    }

    /// Storage offset of the current row's first element.
    pub fn base(&self) -> isize {
        self.base
    }

    /// Moves to the next row.
    pub fn advance(&mut self) {
        for ((i, &d), &s) in self
            .index
            .iter_mut()
            .zip(&self.rows.outer_shape)
            .zip(&self.rows.outer_strides)
            .rev()
        {
            *i += 1;
            self.base += s;
            if *i < d {
                return;
            }
            self.base -= d as isize * s;
            *i = 0;
        }
    }
}

/// Number of trailing dimensions of `layout` that form one strided run.
fn trailing_run_dims(layout: &Layout) -> usize {
    let mut k = 0;
    let mut next: Option<isize> = None;
    for (&d, &s) in layout.shape().iter().zip(layout.strides()).rev() {
        if d != 1 {
            if next.is_some_and(|n| n != s) {
                break;
            }
            next = Some(s * d as isize);
        }
        k += 1;
    }
    k
}

/// Row walkers for several layouts of one shape that visit the same elements
/// in lockstep: the row is the longest trailing run that every layout stores
/// with a single stride.
pub(crate) fn lockstep_rows(layouts: &[&Layout]) -> Vec<Rows> {
    let k = layouts
        .iter()
        .map(|l| trailing_run_dims(l))
        .min()
        .unwrap_or(0);
    layouts.iter().map(|l| Rows::split(l, k)).collect()
}

#[cfg(test)]
mod tests {
    use super::Layout;

    fn strides(l: Option<Layout>) -> Option<Vec<isize>> {
        l.map(|l| l.strides().to_vec())
    }

    #[test]
    fn reshape_is_a_view_where_the_strides_allow() {
        // a MADE's (N, D, 2) output narrowed to one parameter per feature,
        // then the size-1 dimension dropped
        let params = Layout::contiguous(&[4, 6, 2]).narrow(2, 1, 1).unwrap();
        assert_eq!(strides(params.reshaped(&[4, 6])), Some(vec![12, 2]));
        assert_eq!(params.reshaped(&[4, 6]).unwrap().offset(), 1);
        // splitting and merging whole rows of a narrow
        let rows = Layout::contiguous(&[8, 6]).narrow(1, 0, 4).unwrap();
        assert_eq!(strides(rows.reshaped(&[2, 4, 4])), Some(vec![24, 6, 1]));
        assert_eq!(strides(rows.reshaped(&[32])), None);
        // a transpose cannot merge, but may split the untouched dimension
        let t = Layout::contiguous(&[3, 4]).permute(&[1, 0]).unwrap();
        assert_eq!(strides(t.reshaped(&[12])), None);
        let t3 = Layout::contiguous(&[2, 3, 4]).permute(&[2, 0, 1]).unwrap();
        assert_eq!(strides(t3.reshaped(&[4, 6])), Some(vec![1, 4]));
        assert_eq!(strides(t3.reshaped(&[2, 2, 1, 6])), Some(vec![2, 1, 1, 4]));
        // broadcast dimensions keep stride 0 where they split
        let b = Layout::contiguous(&[1, 3]).broadcast_as(&[4, 3]).unwrap();
        assert_eq!(strides(b.reshaped(&[2, 2, 3])), Some(vec![0, 0, 1]));
        assert_eq!(strides(b.reshaped(&[12])), None);
        // element counts must agree
        assert!(rows.reshaped(&[5]).is_none());
    }
}
