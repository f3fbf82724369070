//! The allocator of the training binaries (`cargo xtask`, `flowtrain`).
//!
//! A training step allocates and frees tensors of a few hundred kilobytes to
//! megabytes by the hundred. With the system allocator (and with mimalloc's
//! defaults) freed memory goes back to the OS and comes back as fresh pages
//! that the kernel must fault in and zero, which took about 14% of a
//! `glow-mnist-ref` step. The binaries therefore use mimalloc and ask it to
//! keep freed memory (`mi_option_purge_delay = -1`), and so do the criterion
//! benches, so that they time the kernels rather than page faults.

/// mimalloc, for `#[global_allocator]` in a binary.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay`: entry 15 of the option enum in `mimalloc.h` (v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS. Call it first in
/// `main` of a binary whose global allocator is [`MiMalloc`].
pub fn keep_freed_memory() {
    // SAFETY: setting an option is a plain store into mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Makes [`MiMalloc`] the global allocator of the binary or bench it is
/// used in (at its crate root); call [`keep_freed_memory`] first at run time.
#[macro_export]
macro_rules! training_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;
    };
}
