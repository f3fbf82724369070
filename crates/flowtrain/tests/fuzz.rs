//! Fuzz tests on every CI run: thousands of mutated IDX, CIFAR-10 and
//! checkpoint files and random configurations through the entry points of
//! `flowtrain::fuzzing` (the same ones the cargo-fuzz targets call). Each
//! case must return without panicking (proptest fails on a panic), without
//! allocating more than [`CAP`] bytes at once (a counting allocator), and
//! without hanging (a watchdog aborts the process after [`HANG`]).

use flowtrain::data::mnist::encode_idx;
use flowtrain::{fuzzing, TrainConfig, Trainer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The most bytes a case may hold at once beyond what was live before it.
const CAP: usize = 128 << 20;
/// The memory limit the runs plan with during the cases.
const PLAN_LIMIT: u64 = 64 << 20;
/// A case running longer than this is a hang.
const HANG: Duration = Duration::from_secs(120);

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One suite at a time (the counters are global), with the watchdog running.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = CASE_START.load(Ordering::Relaxed);
            if started != 0 && epoch_millis().saturating_sub(started) > HANG.as_millis() as u64 {
                eprintln!("a fuzz case has run for more than {HANG:?}: a hang");
                std::process::abort();
            }
        });
    });
    flowtrain::limits::set_memory_limit(Some(PLAN_LIMIT));
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

static CASE_START: AtomicU64 = AtomicU64::new(0);

fn epoch_millis() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Runs one case under the allocation cap and the watchdog.
fn case(input: &[u8], entry: fn(&[u8]) -> flowtrain::Result<()>) -> Result<(), TestCaseError> {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    CASE_START.store(epoch_millis(), Ordering::Relaxed);
    let _ = entry(input);
    CASE_START.store(0, Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    prop_assert!(
        peak <= CAP,
        "a case held {peak} bytes at once (cap {CAP}); input of {} bytes",
        input.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

/// A value a mutated size field likes to take.
fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(255),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(0xffff_ffff),
        Just(100_000),
        any::<u32>(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize, usize),
    BigEndian(usize, u32),
    LittleEndian64(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64, 1usize..64)
            .prop_map(|(i, len, n)| Mutation::Repeat(i, len, n)),
        (0usize..16, interesting_u32()).prop_map(|(i, v)| Mutation::BigEndian(i * 4, v)),
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(100_000_001),
            any::<u64>(),
            0u64..4096
        ]
        .prop_map(|v| Mutation::LittleEndian64(0, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match m {
            Mutation::FlipBit(i, b) => {
                if let Some(v) = bytes.get_mut(i % n) {
                    *v ^= 1 << b;
                }
            }
            Mutation::SetByte(i, v) => {
                if let Some(x) = bytes.get_mut(i % n) {
                    *x = *v;
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Repeat(i, len, times) => {
                let at = i % n;
                let end = (at + len).min(bytes.len());
                let piece: Vec<u8> = bytes.get(at..end).unwrap_or_default().to_vec();
                for _ in 0..*times {
                    bytes.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::BigEndian(i, v) => {
                if i + 4 <= bytes.len() {
                    bytes[*i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            Mutation::LittleEndian64(i, v) => {
                if i + 8 <= bytes.len() {
                    bytes[*i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    bytes
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Runs `cases` mutated versions of the `seeds` through `entry`.
fn fuzz_files(seeds: Vec<Vec<u8>>, cases: u32, entry: fn(&[u8]) -> flowtrain::Result<()>) {
    let _guard = exclusive();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..5),
    );
    runner
        .run(&strategy, |(seed, mutations)| {
            case(&apply(seed, &mutations), entry)
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// The suites
// ---------------------------------------------------------------------------

fn idx_seeds() -> Vec<Vec<u8>> {
    let images: Vec<u8> = (0..5 * 28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let small = encode_idx(&[3, 4, 2], &[9; 24]);
    let labels = encode_idx(&[5], &[1, 2, 3, 4, 5]);
    let full = encode_idx(&[5, 28, 28], &images);
    // a stream that inflates far beyond its header's size
    let bomb = gz(&[encode_idx(&[2, 2, 2], &[0; 8]), vec![0; 8 << 20]].concat());
    vec![
        small.clone(),
        labels.clone(),
        full.clone(),
        gz(&small),
        gz(&labels),
        gz(&full),
        bomb,
        encode_idx(&[0, 28, 28], &[]),
    ]
}

#[test]
fn mutated_idx_files_never_panic_or_overallocate() {
    fuzz_files(idx_seeds(), 3000, fuzzing::idx);
}

#[test]
fn an_idx_gzip_bomb_stops_at_the_size_its_header_implies() {
    let _guard = exclusive();
    // 1 GiB of zeros after a header that promises 8 bytes: read, it would
    // take a gigabyte and seconds; capped, it stops after 9 bytes
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&encode_idx(&[2, 2, 2], &[0; 8])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    std::fs::write(&path, &bomb).unwrap();
    drop(bomb);
    let peak_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(peak_before, Ordering::Relaxed);
    let msg =
        flowtrain::data::mnist::read_idx(&path, 3, &mut flowtrain::limits::MemoryBudget::new())
            .unwrap_err()
            .to_string();
    let peak = PEAK.load(Ordering::Relaxed) - peak_before;
    assert!(
        msg.contains("too long") && msg.contains("need 8 data bytes"),
        "{msg}"
    );
    assert!(peak < 4 << 20, "reading the bomb held {peak} bytes");
    // a header that implies more than the memory limit is refused before reading
    let huge = gz(&[0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28]);
    std::fs::write(&path, huge).unwrap();
    let msg =
        flowtrain::data::mnist::read_idx(&path, 3, &mut flowtrain::limits::MemoryBudget::new())
            .unwrap_err()
            .to_string();
    assert!(msg.contains("memory limit"), "{msg}");
}

#[test]
fn mutated_cifar_batches_never_panic_or_overallocate() {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let seeds = vec![
        record(3),
        [record(1), record(9)].concat(),
        [record(0), record(2), record(5)].concat(),
    ];
    fuzz_files(seeds, 1000, fuzzing::cifar);
}

/// The checkpoint of a 2-step run of `config`.
fn checkpoint_of(config: TrainConfig) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config, dir.path()).unwrap();
    trainer.progress = false;
    trainer.train_until(2).unwrap();
    trainer.save_checkpoint().unwrap();
    std::fs::read(dir.path().join(flowtrain::train::CHECKPOINT)).unwrap()
}

fn tiny() -> TrainConfig {
    TrainConfig {
        n_levels: 2,
        n_subflows: 1,
        hidden_channels: 4,
        batch_size: 4,
        init_batch_size: 4,
        steps: 2,
        eval_every: 2,
        checkpoint_every: 2,
        eval_limit: Some(4),
        samples: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn mutated_checkpoints_never_panic_or_overallocate() {
    let seeds = {
        let _guard = exclusive();
        vec![
            checkpoint_of(tiny()),
            checkpoint_of(TrainConfig {
                mixing: flowtrain::config::Mixing::ConvExp,
                polyak: Some(0.9),
                ..tiny()
            }),
        ]
    };
    fuzz_files(seeds, 400, fuzzing::checkpoint);
}

/// A TOML value of any type, extreme ones included.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(2),
            Just(3),
            Just(7),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(1 << 31),
            Just(100_000),
            -10i64..100
        ]
        .prop_map(|v| v.to_string()),
        prop_oneof![
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("1e308".to_string()),
            Just("-1.0".to_string()),
            Just("0.0".to_string()),
            (0.0f64..2.0).prop_map(|v| format!("{v:.3}")),
        ],
        prop_oneof![
            Just("true"),
            Just("false"),
            Just("\"convexp\""),
            Just("\"1x1\""),
            Just("\"emerging\""),
            Just("\"woodbury\""),
            Just("\"sylvester\""),
            Just("\"residual_flow\""),
            Just("\"coupling_flow\""),
            Just("\"flow\""),
            Just("\"glow\""),
            Just("\"uniform\""),
            Just("\"mnist\""),
            Just("\"shapes16\""),
            Just("\"/nonexistent\""),
            Just("[1, 2]"),
            Just("{ kind = \"adam\", beta1 = 0.9, beta2 = 1.5, eps = 0.0 }"),
            Just("{ kind = \"sgd\", momentum = nan }"),
        ]
        .prop_map(str::to_string),
    ]
}

const KEYS: [&str; 35] = [
    "dataset",
    "data_dir",
    "n_bits",
    "dequantize",
    "hflip",
    "model_type",
    "mixing",
    "n_levels",
    "n_subflows",
    "hidden_channels",
    "coupling_net",
    "densenet_depth",
    "densenet_growth",
    "n_intermediate_channels",
    "use_gated_conv",
    "use_splitprior",
    "convexp_terms",
    "convexp_eval_terms",
    "woodbury_rank",
    "optimizer",
    "lr",
    "warmup_steps",
    "lr_decay",
    "max_grad_norm",
    "polyak",
    "batch_size",
    "steps",
    "epochs",
    "init_batch_size",
    "seed",
    "eval_every",
    "eval_batch_size",
    "eval_limit",
    "iw_samples",
    "samples",
];

#[test]
fn random_configurations_never_panic_or_overallocate() {
    let _guard = exclusive();
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    let doc = proptest::collection::vec(
        (
            prop_oneof![
                9 => proptest::sample::select(KEYS.to_vec()).prop_map(str::to_string),
                1 => "[a-z_]{1,12}",
            ],
            toml_value(),
        ),
        0..8,
    )
    .prop_map(|pairs| {
        let mut seen = std::collections::HashSet::new();
        pairs
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect::<String>()
    });
    runner
        .run(&doc, |text| case(text.as_bytes(), fuzzing::config))
        .unwrap();
    // small configurations are built and trained one step
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let small = (
        proptest::sample::select(vec!["1x1", "convexp", "emerging", "woodbury"]),
        proptest::sample::select(vec!["coupling_flow", "sylvester", "residual_flow"]),
        (1usize..=3, 1usize..=2, 1usize..=12, 0usize..=2, 1usize..=8),
        (1u32..=8, any::<bool>(), any::<bool>(), 1usize..=20),
    )
        .prop_map(
            |(mixing, model, (levels, steps, hidden, depth, growth), (bits, split, flow, rank))| {
                format!(
                    "mixing = \"{mixing}\"\nmodel_type = \"{model}\"\nn_levels = {levels}\nn_subflows = {steps}\nhidden_channels = {hidden}\ndensenet_depth = {depth}\ndensenet_growth = {growth}\nn_bits = {bits}\nuse_splitprior = {split}\ndequantize = \"{}\"\nwoodbury_rank = {rank}\n",
                    if flow { "flow" } else { "uniform" }
                )
            },
        );
    runner
        .run(&small, |text| case(text.as_bytes(), fuzzing::config))
        .unwrap();
}

#[test]
fn batches_of_any_set_size_and_step_never_panic() {
    proptest!(Config { cases: 2000, failure_persistence: None, ..Config::default() },
    |(seed in any::<u64>(), step in any::<u64>(), batch in 0usize..300, n in 0usize..200)| {
        let indices = flowtrain::batch::step_indices(seed, step, batch, n);
        prop_assert!(indices.iter().all(|&i| i < n));
        prop_assert_eq!(indices.len(), if n == 0 { 0 } else { batch });
    });
}
