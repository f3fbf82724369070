//! An op-level profiler: time, calls and bytes allocated per storage
//! operation, split into forward and backward and grouped by the scopes
//! (layers) the program names.
//!
//! ```
//! use flowtensor::{profile, DType, Device, Generator};
//! let x = Generator::new(0).randn(&[64, 64], DType::F32, Device::Cpu).unwrap();
//! let session = profile::Session::start();
//! let _y = profile::scope("layer", || x.exp()).unwrap();
//! let report = session.finish();
//! assert!(report.entries.iter().any(|e| e.op == "unary:exp" && e.scope == "layer"));
//! print!("{}", report.table());
//! ```
//!
//! Every operation dispatched through [`crate::Storage`] is timed when a
//! session is running (one relaxed atomic load otherwise). Backward work is
//! attributed to the scope that was open when the forward op ran. On CUDA the
//! times are those of the launches (kernels run asynchronously) unless the
//! program synchronizes. The time outside ops (allocation of results is
//! inside; autograd bookkeeping, optimizer arithmetic on the host, Python-free
//! glue) is the session's wall time minus the time in ops.
//!
//! Setting `FLOWTENSOR_PROFILE=1` (or calling [`request`]) makes
//! [`if_requested`] start a session, which the training loops use to print
//! and save a profile (`cargo xtask profile`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which pass an op ran in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Forward,
    Backward,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
        }
    }
}

/// The totals of one (scope, phase, op) group.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileEntry {
    /// The scope path (`"level0/coupling"`), empty outside any scope.
    pub scope: String,
    pub phase: Phase,
    /// The storage operation and its kind, e.g. `"binary:mul"`, `"matmul"`.
    pub op: &'static str,
    pub calls: u64,
    pub time: Duration,
    /// Bytes of the results the calls allocated.
    pub bytes: u64,
}

/// What a finished [`Session`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Groups, the most expensive first.
    pub entries: Vec<ProfileEntry>,
    /// The session's wall time.
    pub wall: Duration,
}

#[derive(Default)]
struct Totals {
    calls: u64,
    time: Duration,
    bytes: u64,
}

type Key = (Arc<str>, Phase, &'static str);

static RUNNING: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<Key, Totals>>> = Mutex::new(None);

thread_local! {
    static PHASE: Cell<Phase> = const { Cell::new(Phase::Forward) };
    static SCOPE: RefCell<Arc<str>> = RefCell::new(Arc::from(""));
}

/// Whether a session is running.
pub fn is_running() -> bool {
    RUNNING.load(Ordering::Relaxed)
}

/// A running profile; only one at a time (a second start resets the totals).
pub struct Session {
    started: Instant,
}

impl Session {
    /// Starts timing every op (on every thread) from now.
    pub fn start() -> Session {
        *lock() = Some(HashMap::new());
        RUNNING.store(true, Ordering::Relaxed);
        Session {
            started: Instant::now(),
        }
    }

    /// Stops timing and returns the totals.
    pub fn finish(self) -> Profile {
        let wall = self.started.elapsed();
        RUNNING.store(false, Ordering::Relaxed);
        let totals = lock().take().unwrap_or_default();
        let mut entries: Vec<ProfileEntry> = totals
            .into_iter()
            .map(|((scope, phase, op), t)| ProfileEntry {
                scope: scope.to_string(),
                phase,
                op,
                calls: t.calls,
                time: t.time,
                bytes: t.bytes,
            })
            .collect();
        entries.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| (&a.scope, a.phase, a.op).cmp(&(&b.scope, b.phase, b.op)))
        });
        Profile { entries, wall }
    }
}

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the programs that profile on request (the training loops) to do so,
/// as `FLOWTENSOR_PROFILE=1` does.
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// A session when [`request`] was called or the environment variable
/// `FLOWTENSOR_PROFILE` is set to something other than `0` or empty.
pub fn if_requested() -> Option<Session> {
    let env = std::env::var("FLOWTENSOR_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
    (env || REQUESTED.load(Ordering::Relaxed)).then(Session::start)
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<Key, Totals>>> {
    TOTALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` inside the scope `name` (nested scopes join with `/`). Ops
/// recorded by `f`, and later their backward, are attributed to it.
/// `name` is formatted only while a session runs.
pub fn scope<R>(name: impl std::fmt::Display, f: impl FnOnce() -> R) -> R {
    if !is_running() {
        return f();
    }
    let outer = current_scope();
    let inner: Arc<str> = if outer.is_empty() {
        Arc::from(name.to_string())
    } else {
        Arc::from(format!("{outer}/{name}"))
    };
    with_scope(inner, Phase::Forward, f)
}

/// The scope open on this thread and the phase it runs in.
pub(crate) fn context() -> (Arc<str>, Phase) {
    (current_scope(), PHASE.with(Cell::get))
}

/// The scope open on this thread.
pub(crate) fn current_scope() -> Arc<str> {
    SCOPE.with(|s| s.borrow().clone())
}

/// Runs `f` with `scope` open and `phase` set on this thread.
pub(crate) fn with_scope<R>(scope: Arc<str>, phase: Phase, f: impl FnOnce() -> R) -> R {
    struct Restore(Arc<str>, Phase);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|s| *s.borrow_mut() = self.0.clone());
            PHASE.with(|p| p.set(self.1));
        }
    }
    let previous = SCOPE.with(|s| std::mem::replace(&mut *s.borrow_mut(), scope));
    let _restore = Restore(previous, PHASE.with(|p| p.replace(phase)));
    f()
}

/// The bytes a storage operation's result holds.
pub(crate) trait Allocated {
    fn allocated(&self) -> usize;
}

impl Allocated for () {
    fn allocated(&self) -> usize {
        0
    }
}

impl<A: Allocated, B> Allocated for (A, B) {
    fn allocated(&self) -> usize {
        self.0.allocated()
    }
}

/// Runs the storage operation `f`, adding its time and result size to `op`'s
/// totals when a session is running.
pub(crate) fn timed<T: Allocated>(
    op: &'static str,
    f: impl FnOnce() -> crate::Result<T>,
) -> crate::Result<T> {
    if !is_running() {
        return f();
    }
    let started = Instant::now();
    let out = f()?;
    let time = started.elapsed();
    let key = (current_scope(), PHASE.with(Cell::get), op);
    if let Some(totals) = lock().as_mut() {
        let t = totals.entry(key).or_default();
        t.calls += 1;
        t.time += time;
        t.bytes += out.allocated() as u64;
    }
    Ok(out)
}

impl Profile {
    /// The time spent in ops.
    pub fn op_time(&self) -> Duration {
        self.entries.iter().map(|e| e.time).sum()
    }

    /// The wall time not spent in ops (autograd bookkeeping, host-side
    /// arithmetic, waiting).
    pub fn outside_ops(&self) -> Duration {
        self.wall.saturating_sub(self.op_time())
    }

    /// Totals merged over scopes: one row per (phase, op).
    pub fn by_op(&self) -> Vec<ProfileEntry> {
        self.merged(|e| (String::new(), e.phase, e.op))
    }

    /// Totals merged over ops: one row per (scope, phase), `op` empty.
    pub fn by_scope(&self) -> Vec<ProfileEntry> {
        self.merged(|e| (e.scope.clone(), e.phase, ""))
    }

    fn merged(
        &self,
        key: impl Fn(&ProfileEntry) -> (String, Phase, &'static str),
    ) -> Vec<ProfileEntry> {
        let mut rows: Vec<ProfileEntry> = Vec::new();
        let mut at: HashMap<(String, Phase, &'static str), usize> = HashMap::new();
        for e in &self.entries {
            let k = key(e);
            let i = *at.entry(k.clone()).or_insert_with(|| {
                rows.push(ProfileEntry {
                    scope: k.0,
                    phase: k.1,
                    op: k.2,
                    calls: 0,
                    time: Duration::ZERO,
                    bytes: 0,
                });
                rows.len() - 1
            });
            rows[i].calls += e.calls;
            rows[i].time += e.time;
            rows[i].bytes += e.bytes;
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.time));
        rows
    }

    /// A plain-text report: time per op kind (forward and backward), per
    /// scope, and the share outside ops.
    pub fn table(&self) -> String {
        let wall = self.wall.as_secs_f64().max(1e-12);
        let mut s = String::new();
        let _ = writeln!(s, "wall {:.3} s", self.wall.as_secs_f64());
        let row = |s: &mut String, name: &str, phase: &str, e: &ProfileEntry| {
            let _ = writeln!(
                s,
                "{:<34} {:<9} {:>9} {:>11.3} {:>6.1}% {:>11.1}",
                name,
                phase,
                e.calls,
                e.time.as_secs_f64() * 1e3,
                100.0 * e.time.as_secs_f64() / wall,
                e.bytes as f64 / 1e6
            );
        };
        let header = |s: &mut String, first: &str| {
            let _ = writeln!(
                s,
                "{:<34} {:<9} {:>9} {:>11} {:>7} {:>11}",
                first, "phase", "calls", "ms", "share", "MB alloc"
            );
        };
        header(&mut s, "op");
        for e in self.by_op() {
            row(&mut s, e.op, e.phase.name(), &e);
        }
        let outside = self.outside_ops();
        let _ = writeln!(
            s,
            "{:<34} {:<9} {:>9} {:>11.3} {:>6.1}%",
            "(outside ops)",
            "",
            "",
            outside.as_secs_f64() * 1e3,
            100.0 * outside.as_secs_f64() / wall
        );
        if self.entries.iter().any(|e| !e.scope.is_empty()) {
            let _ = writeln!(s);
            header(&mut s, "scope");
            for e in self.by_scope() {
                let name = if e.scope.is_empty() {
                    "(no scope)"
                } else {
                    &e.scope
                };
                row(&mut s, name, e.phase.name(), &e);
            }
        }
        s
    }
}
