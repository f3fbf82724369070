//! Where the CPU kernels run: rayon's global pool.

use crate::autograd::{is_grad_enabled, with_grad_mode};
use crate::profile;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of the CPU kernels' worker pool (rayon's global
/// pool) and returns its result; on a pool thread already, runs it in place.
/// The grad mode and the profiler's scope carry over.
///
/// A parallel kernel called from a pool thread splits its work with the
/// other workers directly. Called from any other thread (a program's main
/// thread), each kernel is handed to the pool while the caller sleeps until
/// it is done: two context switches per kernel, which cost as much as the
/// work of a kernel on a batch of vectors. A training step, an evaluation
/// or a sampling pass run through this pay the hand-off once.
///
/// While `f` runs, the other workers stay awake between kernels (they poll
/// for work instead of sleeping, yielding the CPU to other processes), as
/// OpenMP's threads do between parallel regions: a step of small kernels
/// would otherwise pay a wake-up of the pool per kernel. A worker that finds
/// no work for 2 ms goes back to sleeping between kernels for the
/// rest of `f`, so call this per step of a loop (a training step, a batch
/// of an evaluation) as well as around the loop: on a pool thread it only
/// wakes the other workers.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return with_workers_awake(f);
    }
    let record = is_grad_enabled();
    let (scope, phase) = profile::context();
    rayon::scope(move |_| {
        profile::with_scope(scope, phase, || {
            with_grad_mode(record, || with_workers_awake(f))
        })
    })
}

/// Runs `f` on this pool thread with the other workers polling for work.
fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(move |s| {
        let caller = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            s.spawn(move |_| keep_awake(done, caller));
        }
        let _stop = StopOnDrop(done);
        f()
    })
}

/// Sets the flag that ends [`keep_awake`] when `f` returns or unwinds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

thread_local! {
    /// Whether this worker is already polling for `in_pool`.
    static AWAKE: Cell<bool> = const { Cell::new(false) };
}

/// Polls before a worker without work starts yielding the CPU between polls.
const POLLS_BEFORE_YIELD: u32 = 64;

/// How long a polling worker goes without work before it stops polling.
const IDLE_LIMIT: Duration = Duration::from_millis(2);

/// Runs the pool's pending jobs on this worker until `done`, or until it has
/// found none for `IDLE_LIMIT`. It returns at once on the thread running
/// `in_pool`'s closure and on a worker already polling. A worker that took
/// this job while it waited inside a kernel (whose rest `f` then waits for)
/// holds that kernel back for at most `IDLE_LIMIT`, never for good.
fn keep_awake(done: &AtomicBool, caller: Option<usize>) {
    if rayon::current_thread_index() == caller || AWAKE.get() {
        return;
    }
    AWAKE.set(true);
    let mut polls = 0u32;
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            polls = 0;
            idle_since = Instant::now();
        } else if polls < POLLS_BEFORE_YIELD {
            polls += 1;
            std::hint::spin_loop();
        } else if idle_since.elapsed() < IDLE_LIMIT {
            std::thread::yield_now();
        } else {
            break;
        }
    }
    AWAKE.set(false);
}
