//! Whether operations record the graph: on by default, off inside [`no_grad`].

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True when new operations are recorded for backward on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns graph recording off until dropped, then restores the previous mode.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NoGradGuard {
            previous: GRAD_ENABLED.with(|g| g.replace(false)),
        }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with recording on or off as `enabled` on this thread, then
/// restores the previous mode.
pub(crate) fn with_grad_mode<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    // The guard restores whichever mode it replaced.
    let _guard = NoGradGuard {
        previous: GRAD_ENABLED.with(|g| g.replace(enabled)),
    };
    f()
}

/// Runs `f` without recording operations for backward.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Runs `f` with recording on (inside [`no_grad`] too): for code that needs
/// a vector-Jacobian product during evaluation, such as a residual block's
/// log-det estimate.
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(true, f)
}
