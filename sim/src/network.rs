//! The simulated network between cores: directed links that can be cut, and per-message loss,
//! delay (hence reordering) and duplication. Decides the fate of a message; the world schedules it.

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::NodeId;

#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub loss_rate: f64,
    pub duplicate_rate: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
}

#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
    /// Cut links, `(from, to)`: nothing passes in that direction.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(config: NetworkConfig) -> Self {
        Network {
            config,
            cut: BTreeSet::new(),
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
    pub fn route(&self, from: NodeId, to: NodeId, rng: &mut ChaCha8Rng) -> Vec<u64> {
        if self.is_cut(from, to) || rng.random_bool(self.config.loss_rate) {
            return Vec::new();
        }
        let mut delays = vec![self.delay(rng)];
        if rng.random_bool(self.config.duplicate_rate) {
            delays.push(self.delay(rng));
        }
        delays
    }

    pub fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        rng.random_range(self.config.delay_min_us..=self.config.delay_max_us)
    }
}
