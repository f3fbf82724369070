//! The geometry of a 2-D convolution, shared by its three kernels.

/// A convolution mapping X-space `(n, c, h, w)` to Y-space `(n, o, ho, wo)`
/// with weights `(o, c / groups, kh, kw)` and zero padding:
/// `y[n, o, p, q] = sum_{c in group(o), i, j} w[o, c, i, j] x[n, c, p*sh - ph + i*dh, q*sw - pw + j*dw]`.
/// The transposed convolution is the adjoint map, from Y-space to X-space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub ho: usize,
    pub wo: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

/// Output size of a convolution along one axis, if positive.
pub(crate) fn conv_out_size(
    size: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> Option<usize> {
    let span = dil * (k - 1) + 1;
    (size + 2 * pad >= span).then(|| (size + 2 * pad - span) / stride + 1)
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of the im2col matrix: one per (input channel of a group, kernel tap).
    pub fn ckk(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    pub fn x_image(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn y_image(&self) -> usize {
        self.o * self.ho * self.wo
    }
    pub fn y_positions(&self) -> usize {
        self.ho * self.wo
    }
    /// Some size is zero: every sum of the convolution is empty (or there is
    /// nothing to compute), so each of its kernels returns zeros.
    pub fn is_empty(&self) -> bool {
        [self.n, self.c, self.h, self.w, self.o, self.ho, self.wo]
            .iter()
            .chain(&[self.kh, self.kw, self.groups])
            .any(|&d| d == 0)
    }
    /// A 1x1 convolution with stride 1 and no padding: a plain channel matmul.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }
    /// The shape flows use most: 3x3, stride 1, padding 1, no dilation, one group.
    pub fn is_3x3_same(&self) -> bool {
        self.kh == 3
            && self.kw == 3
            && self.stride == (1, 1)
            && self.padding == (1, 1)
            && self.dilation == (1, 1)
            && self.groups == 1
    }
}
