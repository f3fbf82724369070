//! The primitive operation kinds that backends implement.

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Log1p,
    Sqrt,
    Abs,
    Square,
    Tanh,
    Sigmoid,
    LogSigmoid,
    Softplus,
    Relu,
    Silu,
    /// `x^p` for a real exponent `p`.
    Powf(f64),
    /// `x * mul + add` (the ops with scalars).
    Affine {
        mul: f64,
        add: f64,
    },
    /// `min(max(x, lo), hi)`.
    Clamp {
        lo: f64,
        hi: f64,
    },
}

/// Elementwise functions of two tensors of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Comparisons, producing masks of 1 (true) and 0 (false) in the operands' dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Folds over chosen dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}
