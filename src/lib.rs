//! Umbrella crate: re-exports the engine, the layers and the trainer so that
//! the workspace-level `tests/` and `benches/` can use all three.

pub use flowlayers;
pub use flowtensor;
pub use flowtrain;
