//! Which partitions of a sharded store a data group serves, in the group's own replicated state:
//! every replica of the group knows the same, at the same log index, so a write is refused by
//! every replica alike when it applies — not only when it was proposed — if its key's partition
//! is not (or no longer) the group's. A group of a plain cluster has no shard and serves every
//! key.
//!
//! A group takes its partitions of the first partition table (epoch 1) from the admin by a
//! `Claim` in its own log. Later epochs come only from moving a partition between groups
//! (issue 20's protocol), never from a claim: a claim for a partition the group has held at
//! any epoch is ignored, so a late claim cannot bring back a partition that moved away.

use std::collections::BTreeMap;

use crate::sharding::{partition_of, PartitionId};

/// A partition's epoch: 1 for the first table, one more at each move.
pub type Epoch = u64;

/// A request for a key this group does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOwned {
    pub partition: PartitionId,
    /// The epoch at which this group last held the partition; 0 if it never did.
    pub epoch: Epoch,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Shard {
    /// Partitions of the whole key space (the admin's setting).
    partitions: u32,
    /// The partitions this group serves, with the epoch it serves each at.
    serving: BTreeMap<PartitionId, Epoch>,
}

impl Shard {
    pub fn new(partitions: u32) -> Self {
        assert!(partitions > 0, "a key space of at least one partition");
        Shard {
            partitions,
            serving: BTreeMap::new(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn serving(&self) -> &BTreeMap<PartitionId, Epoch> {
        &self.serving
    }

    /// Takes `claimed` at epoch 1, except partitions out of range or held before; returns how
    /// many it took.
    pub fn claim(&mut self, claimed: &[PartitionId]) -> usize {
        let mut taken = 0;
        for &partition in claimed {
            if partition < self.partitions && !self.serving.contains_key(&partition) {
                self.serving.insert(partition, 1);
                taken += 1;
            }
        }
        taken
    }

    /// Whether this group serves `key`.
    pub fn check(&self, key: &[u8]) -> Result<(), NotOwned> {
        let partition = partition_of(key, self.partitions);
        match self.serving.get(&partition) {
            Some(_) => Ok(()),
            None => Err(NotOwned {
                partition,
                epoch: 0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_serves_only_what_it_claimed_and_a_claim_is_taken_once() {
        let mut shard = Shard::new(8);
        let key_of = |wanted: PartitionId| {
            (0..10_000)
                .map(|i| format!("key-{i}").into_bytes())
                .find(|key| partition_of(key, 8) == wanted)
                .expect("some key hashes there")
        };
        assert_eq!(
            shard.check(&key_of(3)),
            Err(NotOwned {
                partition: 3,
                epoch: 0
            })
        );
        assert_eq!(shard.claim(&[3, 5, 99]), 2, "99 is out of range");
        assert_eq!(shard.claim(&[3]), 0, "taken already");
        assert_eq!(shard.check(&key_of(3)), Ok(()));
        assert_eq!(shard.check(&key_of(5)), Ok(()));
        assert!(shard.check(&key_of(4)).is_err());
        assert_eq!(
            shard.serving().iter().collect::<Vec<_>>(),
            vec![(&3, &1), (&5, &1)]
        );
    }
}
