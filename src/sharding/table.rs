//! The partition table the directory replicates: each partition's owning group and its epoch.
//! The epoch grows every time a partition changes owner, so a request or a message that names
//! an older epoch is recognized as stale wherever it arrives.

use super::partition::PartitionId;
use super::GroupId;

#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PartitionTable {
    owners: Vec<GroupId>,
    epochs: Vec<u64>,
}

impl PartitionTable {
    /// A first table, every partition at epoch 1.
    pub fn new(owners: Vec<GroupId>) -> Self {
        let epochs = vec![1; owners.len()];
        PartitionTable { owners, epochs }
    }

    pub fn partitions(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn owners(&self) -> &[GroupId] {
        &self.owners
    }

    /// The owner of `partition` and its epoch.
    pub fn owner(&self, partition: PartitionId) -> Option<(GroupId, u64)> {
        let at = partition as usize;
        Some((*self.owners.get(at)?, self.epochs[at]))
    }

    /// Takes `owners` as the new table: every partition whose owner changed moves to the next
    /// epoch. Returns the partitions that moved.
    pub fn change_to(&mut self, owners: Vec<GroupId>) -> Vec<PartitionId> {
        assert_eq!(
            owners.len(),
            self.owners.len(),
            "the number of partitions is fixed"
        );
        let mut moved = Vec::new();
        for (partition, owner) in owners.into_iter().enumerate() {
            if self.owners[partition] != owner {
                self.owners[partition] = owner;
                self.epochs[partition] += 1;
                moved.push(partition as PartitionId);
            }
        }
        moved
    }

    /// `partition` moved to `group` at `epoch` (a move's commit point), which must be later
    /// than the epoch it had.
    pub fn move_to(&mut self, partition: PartitionId, group: GroupId, epoch: u64) {
        let at = partition as usize;
        assert!(
            epoch > self.epochs[at],
            "partition {partition} moves to epoch {epoch}, not after {}",
            self.epochs[at]
        );
        self.owners[at] = group;
        self.epochs[at] = epoch;
    }

    /// Partitions per group.
    pub fn load(&self, group: GroupId) -> usize {
        self.owners.iter().filter(|&&owner| owner == group).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_that_changes_owner_moves_to_the_next_epoch_and_no_other_does() {
        let mut table = PartitionTable::new(vec![1, 1, 2, 2]);
        assert_eq!(table.owner(2), Some((2, 1)));
        let moved = table.change_to(vec![1, 3, 2, 3]);
        assert_eq!(moved, vec![1, 3]);
        assert_eq!(table.owner(0), Some((1, 1)));
        assert_eq!(table.owner(1), Some((3, 2)));
        assert_eq!(table.owner(3), Some((3, 2)));
        assert_eq!(table.owner(4), None);
        assert_eq!(table.load(3), 2);
    }
}
