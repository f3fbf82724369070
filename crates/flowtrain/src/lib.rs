//! flowtrain: training, evaluation and sampling of flows built with flowlayers.

pub use flowlayers;
