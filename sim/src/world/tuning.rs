//! What varies between seeds in the cores' configuration.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::{Config, NodeId, ReadMode};

/// What varies between seeds in the cores' configuration.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub read_mode: ReadMode,
    pub entries_per_message_max: usize,
    pub inflight_messages_max: usize,
    /// 0: no snapshots in this seed.
    pub snapshot_interval_entries: u64,
    pub snapshot_trailing_entries: u64,
    pub snapshot_chunk_bytes_max: usize,
    /// Entries each node's log keeps behind a snapshot, for leaders to read back.
    pub log_retention_entries: usize,
}

impl Tuning {
    pub fn draw(read_mode: Option<ReadMode>, rng: &mut ChaCha8Rng) -> Self {
        // Drawn from a stream of its own, so that adding it left every other draw of a seed
        // as it was.
        let mut side = rng.clone();
        side.set_stream(1);
        Tuning {
            log_retention_entries: *[0, 20, 200].choose(&mut side).expect("non-empty"),
            read_mode: read_mode.unwrap_or(if rng.random_bool(0.5) {
                ReadMode::ReadIndex
            } else {
                ReadMode::Lease
            }),
            entries_per_message_max: *[1, 2, 8, 64].choose(rng).expect("non-empty"),
            inflight_messages_max: *[1, 4, 16].choose(rng).expect("non-empty"),
            snapshot_interval_entries: *[0, 10, 50].choose(rng).expect("non-empty"),
            snapshot_trailing_entries: *[0, 5, 50].choose(rng).expect("non-empty"),
            snapshot_chunk_bytes_max: *[16, 64, 4096].choose(rng).expect("non-empty"),
        }
    }
}

/// The core configuration every simulated node runs with: short timeouts so that a few simulated
/// seconds hold many elections, and small flow-control limits so that they are exercised.
pub fn sim_config(id: NodeId, ids: &[NodeId], tuning: &Tuning, seed: u64) -> Config {
    let mut config = Config::new(id, ids.iter().copied());
    config.election_timeout_min_ms = 150;
    config.election_timeout_max_ms = 300;
    config.heartbeat_interval_ms = 30;
    config.read_mode = tuning.read_mode;
    config.clock_drift_max_ppm = 20_000;
    config.entries_per_message_max = tuning.entries_per_message_max;
    config.bytes_per_message_max = 2048;
    config.inflight_messages_max = tuning.inflight_messages_max;
    config.snapshot_interval_entries = tuning.snapshot_interval_entries;
    config.snapshot_trailing_entries = tuning.snapshot_trailing_entries;
    config.snapshot_chunk_bytes_max = tuning.snapshot_chunk_bytes_max;
    config.uncommitted_entries_max = 256;
    config.release_batch_entries_min = 8;
    config.promotion_lag_max_entries = 10;
    config.seed = seed;
    config
}
