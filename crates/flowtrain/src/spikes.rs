//! Loss spikes: steps whose training bpd jumps far above the recent
//! typical value, reported in `metrics.jsonl` and `metrics.json`.
//!
//! A step is part of a spike when its bpd exceeds the median of the previous
//! [`WINDOW`] steps by more than `max(MIN_SIZE, 6 sigma)`, with `sigma` the
//! robust spread of that window (1.4826 times its median absolute
//! deviation). Consecutive spiking steps are one spike: its first step, its
//! peak, the baseline it rose from and how many steps it lasted. The window
//! holds only non-spiking steps, so a long spike does not become the norm.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Steps of the baseline window.
pub const WINDOW: usize = 50;
/// The smallest rise (bpd) that counts as a spike.
pub const MIN_SIZE: f64 = 0.5;

/// One loss spike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossSpike {
    /// Its first step.
    pub step: u64,
    /// Steps it lasted.
    pub steps: u64,
    /// The highest training bpd in it.
    pub peak_bpd: f64,
    /// The median bpd of the window before it.
    pub baseline_bpd: f64,
    /// `peak_bpd - baseline_bpd`.
    pub size: f64,
}

/// The detector's state, fed one step at a time.
#[derive(Clone, Debug, Default)]
pub struct SpikeDetector {
    window: VecDeque<f64>,
    spikes: Vec<LossSpike>,
    /// Whether the last step was part of the last spike.
    in_spike: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl SpikeDetector {
    /// The detector after the steps of `curve` (`(step, bpd)` in order).
    pub fn from_curve(curve: &[(u64, f64)]) -> Self {
        let mut d = SpikeDetector::default();
        for &(step, bpd) in curve {
            d.observe(step, bpd);
        }
        d
    }

    /// Feeds one step; returns the spike when this step starts one.
    pub fn observe(&mut self, step: u64, bpd: f64) -> Option<LossSpike> {
        if self.window.len() == WINDOW {
            let mut values: Vec<f64> = self.window.iter().copied().collect();
            let baseline = median(&mut values);
            let mut deviations: Vec<f64> = values.iter().map(|v| (v - baseline).abs()).collect();
            let sigma = 1.4826 * median(&mut deviations);
            if bpd - baseline > MIN_SIZE.max(6.0 * sigma) {
                match self.spikes.last_mut().filter(|_| self.in_spike) {
                    Some(spike) => {
                        spike.steps += 1;
                        if bpd > spike.peak_bpd {
                            spike.peak_bpd = bpd;
                            spike.size = bpd - spike.baseline_bpd;
                        }
                        return None;
                    }
                    None => {
                        self.in_spike = true;
                        let spike = LossSpike {
                            step,
                            steps: 1,
                            peak_bpd: bpd,
                            baseline_bpd: baseline,
                            size: bpd - baseline,
                        };
                        self.spikes.push(spike.clone());
                        return Some(spike);
                    }
                }
            }
        }
        self.in_spike = false;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(bpd);
        None
    }

    /// Every spike so far.
    pub fn spikes(&self) -> &[LossSpike] {
        &self.spikes
    }
}
