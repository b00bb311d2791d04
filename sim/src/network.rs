//! The simulated network between cores: directed links that can be cut, and per-message loss,
//! delay (hence reordering), duplication and stragglers. Decides the fate of a message; the world
//! schedules it.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::NodeId;

#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub loss_rate: f64,
    pub duplicate_rate: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    /// The share of messages held far longer than the rest (behind a retransmission, a paused
    /// process, a rerouted link), so that they arrive after an election moved on: a vote granted
    /// in an earlier term, an append from a deposed leader.
    pub straggler_rate: f64,
}

/// How late a straggler arrives: past one election timeout (150-300 ms), often past several.
const STRAGGLER_DELAY_US: RangeInclusive<u64> = 100_000..=1_500_000;

#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
    /// Cut links, `(from, to)`: nothing passes in that direction.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Stragglers draw from a generator of their own, so that a seed without them follows the
    /// same schedule as before they existed.
    stragglers: ChaCha8Rng,
}

impl Network {
    /// `stragglers` decides which messages straggle and how late they arrive.
    pub fn new(config: NetworkConfig, stragglers: ChaCha8Rng) -> Self {
        Network {
            config,
            cut: BTreeSet::new(),
            stragglers,
        }
    }

    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Separates `group` from everyone else in both directions.
    pub fn isolate(&mut self, group: &[NodeId], all: &[NodeId]) {
        for &inside in group {
            for &outside in all.iter().filter(|id| !group.contains(id)) {
                self.cut(inside, outside);
                self.cut(outside, inside);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn cut_links(&self) -> usize {
        self.cut.len()
    }

    /// The delays after which copies of a message arrive: none if it is lost or the link is cut,
    /// two if it is duplicated.
    pub fn route(&mut self, from: NodeId, to: NodeId, rng: &mut ChaCha8Rng) -> Vec<u64> {
        if self.is_cut(from, to) || rng.random_bool(self.config.loss_rate) {
            return Vec::new();
        }
        let mut delays = vec![self.delay(rng)];
        if rng.random_bool(self.config.duplicate_rate) {
            delays.push(self.delay(rng));
        }
        if self.config.straggler_rate > 0.0
            && self.stragglers.random_bool(self.config.straggler_rate)
        {
            delays[0] = self.stragglers.random_range(STRAGGLER_DELAY_US);
        }
        delays
    }

    pub fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        rng.random_range(self.config.delay_min_us..=self.config.delay_max_us)
    }
}
