//! Linear algebra (being written).
