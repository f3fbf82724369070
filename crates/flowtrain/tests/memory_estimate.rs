//! The memory estimate of `flowtrain::limits` against the model it
//! describes: its parameter count against the built model's, and its step
//! memory against the peak a counting allocator measures in a real step.

use flowtrain::config::{CouplingNet, Dequantize, Mixing, ModelType};
use flowtrain::{limits, TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn base() -> TrainConfig {
    TrainConfig {
        n_subflows: 2,
        hidden_channels: 48,
        batch_size: 32,
        init_batch_size: 32,
        steps: 1,
        eval_limit: Some(8),
        samples: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn the_estimate_bounds_the_model_and_a_step() {
    let configs = [
        base(),
        TrainConfig {
            mixing: Mixing::ConvExp,
            ..base()
        },
        TrainConfig {
            mixing: Mixing::Emerging,
            ..base()
        },
        TrainConfig {
            mixing: Mixing::Woodbury,
            woodbury_rank: 8,
            ..base()
        },
        TrainConfig {
            model_type: ModelType::Sylvester,
            ..base()
        },
        TrainConfig {
            model_type: ModelType::ResidualFlow,
            ..base()
        },
        TrainConfig {
            densenet_depth: 3,
            densenet_growth: 16,
            use_gated_conv: true,
            ..base()
        },
        TrainConfig {
            densenet_depth: 2,
            n_intermediate_channels: 24,
            ..base()
        },
        TrainConfig {
            dequantize: Dequantize::Flow,
            use_splitprior: false,
            n_levels: 3,
            ..base()
        },
        TrainConfig {
            batch_size: 128,
            hidden_channels: 16,
            ..base()
        },
        TrainConfig {
            coupling_net: CouplingNet::Glow,
            ..base()
        },
    ];
    for config in configs {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::new(config.clone(), dir.path()).unwrap();
        trainer.progress = false;
        let estimate = limits::estimate(&config, [1, 16, 16], 4096 + 512);
        let params: usize = trainer
            .model
            .parameters()
            .iter()
            .map(|(_, p)| p.elem_count())
            .sum();
        let buffers: usize = trainer
            .model
            .buffers()
            .iter()
            .map(|(_, p)| p.elem_count())
            .sum();
        let ratio = estimate.parameters as f64 / params as f64;
        assert!(
            (0.95..=1.25).contains(&ratio),
            "{config:?}: estimated {} parameters, the model has {params}",
            estimate.parameters
        );
        assert!(
            estimate.buffer_values as usize >= buffers,
            "{config:?}: estimated {} buffer values, the model has {buffers}",
            estimate.buffer_values
        );
        // one training step (the first also initialises ActNorm)
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        trainer.train_until(1).unwrap();
        let step = PEAK.load(Ordering::Relaxed) - before;
        let ratio = estimate.step_bytes as f64 / step as f64;
        eprintln!(
            "{:?} {:?} depth {} dequant {:?} batch {}: step peak {step}, estimate {} ({ratio:.2}x)",
            config.model_type,
            config.mixing,
            config.densenet_depth,
            config.dequantize,
            config.batch_size,
            estimate.step_bytes
        );
        assert!(
            (1.0..=3.0).contains(&ratio),
            "{config:?}: a step held {step} bytes, the estimate is {}",
            estimate.step_bytes
        );
    }
}
