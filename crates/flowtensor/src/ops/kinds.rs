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
    /// `a` where `b > 0`, 0 elsewhere (the gradient of ReLU in one pass).
    WherePositive,
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

impl UnaryOp {
    /// The profiler's name for the op (`"unary:exp"`).
    pub fn profile_name(&self) -> &'static str {
        match self {
            UnaryOp::Neg => "unary:neg",
            UnaryOp::Exp => "unary:exp",
            UnaryOp::Log => "unary:log",
            UnaryOp::Log1p => "unary:log1p",
            UnaryOp::Sqrt => "unary:sqrt",
            UnaryOp::Abs => "unary:abs",
            UnaryOp::Square => "unary:square",
            UnaryOp::Tanh => "unary:tanh",
            UnaryOp::Sigmoid => "unary:sigmoid",
            UnaryOp::LogSigmoid => "unary:log_sigmoid",
            UnaryOp::Softplus => "unary:softplus",
            UnaryOp::Relu => "unary:relu",
            UnaryOp::Silu => "unary:silu",
            UnaryOp::Powf(_) => "unary:powf",
            UnaryOp::Affine { .. } => "unary:affine",
            UnaryOp::Clamp { .. } => "unary:clamp",
        }
    }
}

impl BinaryOp {
    /// The profiler's name for the op (`"binary:mul"`).
    pub fn profile_name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "binary:add",
            BinaryOp::Sub => "binary:sub",
            BinaryOp::Mul => "binary:mul",
            BinaryOp::Div => "binary:div",
            BinaryOp::WherePositive => "binary:where_positive",
        }
    }
}

impl CmpOp {
    /// The profiler's name for the op (`"cmp:gt"`).
    pub fn profile_name(&self) -> &'static str {
        match self {
            CmpOp::Eq => "cmp:eq",
            CmpOp::Ne => "cmp:ne",
            CmpOp::Lt => "cmp:lt",
            CmpOp::Le => "cmp:le",
            CmpOp::Gt => "cmp:gt",
            CmpOp::Ge => "cmp:ge",
        }
    }
}

impl ReduceOp {
    /// The profiler's name for the op (`"reduce:sum"`).
    pub fn profile_name(&self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce:sum",
            ReduceOp::Max => "reduce:max",
            ReduceOp::Min => "reduce:min",
        }
    }
}
