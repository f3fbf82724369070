//! flowlayers: invertible layers with exact log-determinants, built on flowtensor.

pub use flowtensor;
