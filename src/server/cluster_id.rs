//! The id of the cluster a node belongs to, shared by everything that stamps or checks it (the
//! peer service, the transport, the membership service). A new cluster draws one at random, so
//! that two clusters bootstrapped by accident never take each other's messages; a joining node
//! that was given none learns it from the first answer to its join request (0 until then).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ClusterId(Arc<AtomicU64>);

impl ClusterId {
    pub fn new(id: u64) -> Self {
        ClusterId(Arc::new(AtomicU64::new(id)))
    }

    /// The id, or 0 while a joining node has not learned it yet.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes `id` if none is known yet; whether it was taken.
    pub fn learn(&self, id: u64) -> bool {
        id != 0
            && self
                .0
                .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A cluster id for a new cluster: different across clusters started anywhere (the time, the
/// process and a counter, mixed by splitmix64); never 0, which means "not known yet".
pub fn new_cluster_id(now_nanos: u64) -> u64 {
    let mut z = now_nanos ^ u64::from(std::process::id()).rotate_left(32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_learned_once_and_never_zero() {
        let id = ClusterId::new(0);
        assert!(!id.learn(0));
        assert!(id.learn(7));
        assert!(!id.learn(8), "a known id is not replaced");
        assert_eq!(id.clone().get(), 7);
        assert_ne!(new_cluster_id(0), 0);
        assert_ne!(new_cluster_id(1), new_cluster_id(2));
    }
}
