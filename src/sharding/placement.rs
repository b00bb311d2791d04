//! Which group owns each partition: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018). Every group has
//! [`POINTS_PER_GROUP`] points on a 64-bit ring and every partition one; a partition prefers the
//! group whose point follows its own clockwise, but no group may hold more than its capacity,
//! ⌈factor · partitions / groups⌉, so a partition whose preferred groups are full walks on.
//!
//! The table is computed once and then only changed, never recomputed from scratch (another
//! machine, another version, another order of events would give another table and move data for
//! nothing). A change moves as few partitions as it can, and never between two groups that both
//! stay: a new group takes its fair share, each partition from the group holding it, those
//! closest to the new group's points first; a group that leaves hands each of its partitions to
//! the first group clockwise with room.
//!
//! Pure functions of their inputs, integers only: the directory replicates the resulting table,
//! and every replica of the directory must compute the same one.

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::partition::PartitionId;
use super::GroupId;

/// Points per group on the ring: enough that a partition's preferred group is close to uniform.
pub const POINTS_PER_GROUP: u32 = 64;

/// The seed of the ring's hash (placement is internal to the directory, unlike the key hash).
const RING_SEED: u64 = 0x5241_5645_4c00_0002;

/// How far above the average a group's load may go, as a fraction ≥ 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadFactor {
    numerator: u32,
    denominator: u32,
}

impl LoadFactor {
    /// 1.25, the paper's example and Ravel's default.
    pub const DEFAULT: LoadFactor = LoadFactor {
        numerator: 5,
        denominator: 4,
    };

    /// `numerator / denominator`, which must be at least 1 (below, the partitions do not fit).
    pub fn new(numerator: u32, denominator: u32) -> Result<Self, String> {
        if denominator == 0 || numerator < denominator {
            return Err(format!(
                "the load factor {numerator}/{denominator} must be at least 1"
            ));
        }
        Ok(LoadFactor {
            numerator,
            denominator,
        })
    }
}

/// The most partitions any one of `groups` groups may hold: ⌈factor · partitions / groups⌉.
pub fn capacity(partitions: u32, groups: usize, factor: LoadFactor) -> u32 {
    assert!(groups > 0, "capacity of no group");
    let scaled = u64::from(partitions) * u64::from(factor.numerator);
    let shares = groups as u64 * u64::from(factor.denominator);
    u32::try_from(scaled.div_ceil(shares))
        .expect("at most the number of partitions, times the factor")
}

/// Places partitions on groups; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub factor: LoadFactor,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            factor: LoadFactor::DEFAULT,
        }
    }
}

impl Placement {
    /// The first table: each partition, in order, to the first group clockwise from it with
    /// room.
    pub fn initial(&self, partitions: u32, groups: &BTreeSet<GroupId>) -> Vec<GroupId> {
        assert!(!groups.is_empty(), "partitions need a group");
        let ring = Ring::new(groups);
        let cap = capacity(partitions, groups.len(), self.factor);
        let mut loads: BTreeMap<GroupId, u32> = groups.iter().map(|&group| (group, 0)).collect();
        (0..partitions)
            .map(|partition| {
                let owner = ring
                    .preference(partition)
                    .find(|group| loads[group] < cap)
                    .expect("the groups' capacities hold every partition");
                *loads.get_mut(&owner).expect("a group") += 1;
                owner
            })
            .collect()
    }

    /// The table once `new` joins `groups` (which own `owners`): `new` takes its fair share,
    /// ⌊partitions / groups⌋, and whatever the others hold beyond the new capacity; every
    /// moved partition moves to `new`, except an excess beyond what `new` itself may hold
    /// (possible only with about as few partitions as groups), which goes to groups with room.
    pub fn add_group(
        &self,
        owners: &[GroupId],
        groups: &BTreeSet<GroupId>,
        new: GroupId,
    ) -> Vec<GroupId> {
        assert!(!groups.contains(&new), "group {new} is already placed");
        assert!(
            owners.iter().all(|owner| groups.contains(owner)),
            "every owner is one of the groups"
        );
        let partitions = owners.len() as u32;
        let count = groups.len() + 1;
        let cap = capacity(partitions, count, self.factor);
        let share = partitions / count as u32;
        let distance_to_new = Ring::new(&BTreeSet::from([new]));
        let mut owners = owners.to_vec();
        let mut loads = loads(&owners, groups);
        // Closest to the new group's points first, ties by partition.
        let mut by_closeness: Vec<PartitionId> = (0..partitions).collect();
        by_closeness
            .sort_by_key(|&partition| (distance_to_new.distance(partition, new), partition));
        // Groups beyond the new capacity give up their excess: to the new group while it has
        // room, then (when several groups are over, with few partitions per group) each to the
        // first group clockwise from it with room. Someone has room: the capacities of all the
        // groups, the new one included, hold every partition.
        let ring = Ring::new(groups);
        let mut new_load = 0;
        for &partition in &by_closeness {
            let owner = owners[partition as usize];
            if loads[&owner] <= cap {
                continue;
            }
            *loads.get_mut(&owner).expect("a group") -= 1;
            if new_load < cap {
                owners[partition as usize] = new;
                new_load += 1;
            } else {
                let taker = ring
                    .preference(partition)
                    .find(|group| loads[group] < cap)
                    .expect("the groups' capacities hold every partition");
                *loads.get_mut(&taker).expect("a group") += 1;
                owners[partition as usize] = taker;
            }
        }
        // Then the new group takes its share from those above it.
        for &partition in &by_closeness {
            if new_load >= share {
                break;
            }
            let owner = owners[partition as usize];
            if owner != new && loads[&owner] > share {
                *loads.get_mut(&owner).expect("a group") -= 1;
                owners[partition as usize] = new;
                new_load += 1;
            }
        }
        owners
    }

    /// The table once `gone` leaves `groups`: each of its partitions, in order, to the first
    /// remaining group clockwise with room; no other partition moves.
    pub fn remove_group(
        &self,
        owners: &[GroupId],
        groups: &BTreeSet<GroupId>,
        gone: GroupId,
    ) -> Vec<GroupId> {
        assert!(groups.contains(&gone), "group {gone} is not placed");
        let staying: BTreeSet<GroupId> = groups.iter().copied().filter(|&g| g != gone).collect();
        assert!(!staying.is_empty(), "the last group cannot leave");
        let partitions = owners.len() as u32;
        let cap = capacity(partitions, staying.len(), self.factor);
        let ring = Ring::new(&staying);
        let mut owners = owners.to_vec();
        let mut loads = loads(&owners, &staying);
        for partition in 0..partitions {
            if owners[partition as usize] != gone {
                continue;
            }
            let owner = ring
                .preference(partition)
                .find(|group| loads[group] < cap)
                .expect("the remaining groups' capacities hold every partition");
            *loads.get_mut(&owner).expect("a group") += 1;
            owners[partition as usize] = owner;
        }
        owners
    }
}

/// Partitions per group (every group of `groups`, zero included; owners outside it ignored).
fn loads(owners: &[GroupId], groups: &BTreeSet<GroupId>) -> BTreeMap<GroupId, u32> {
    let mut loads: BTreeMap<GroupId, u32> = groups.iter().map(|&group| (group, 0)).collect();
    for owner in owners {
        if let Some(load) = loads.get_mut(owner) {
            *load += 1;
        }
    }
    loads
}

/// The groups' points on the ring, each group's sorted.
struct Ring {
    points: BTreeMap<GroupId, Vec<u64>>,
}

impl Ring {
    fn new(groups: &BTreeSet<GroupId>) -> Self {
        let points = groups
            .iter()
            .map(|&group| {
                let mut points: Vec<u64> = (0..POINTS_PER_GROUP)
                    .map(|point| {
                        let mut bytes = [0u8; 12];
                        bytes[..8].copy_from_slice(&group.to_le_bytes());
                        bytes[8..].copy_from_slice(&point.to_le_bytes());
                        xxh3_64_with_seed(&bytes, RING_SEED)
                    })
                    .collect();
                points.sort_unstable();
                (group, points)
            })
            .collect();
        Ring { points }
    }

    fn partition_point(partition: PartitionId) -> u64 {
        xxh3_64_with_seed(&partition.to_le_bytes(), RING_SEED ^ 1)
    }

    /// How far clockwise from `partition`'s point the nearest of `group`'s points lies.
    fn distance(&self, partition: PartitionId, group: GroupId) -> u64 {
        let from = Self::partition_point(partition);
        let points = &self.points[&group];
        let next = points
            .get(points.partition_point(|&point| point < from))
            .unwrap_or(&points[0]);
        next.wrapping_sub(from)
    }

    /// The groups in the order `partition` prefers them: nearest clockwise first.
    fn preference(&self, partition: PartitionId) -> impl Iterator<Item = GroupId> {
        let mut order: Vec<(u64, GroupId)> = self
            .points
            .keys()
            .map(|&group| (self.distance(partition, group), group))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, group)| group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load_of(owners: &[GroupId], group: GroupId) -> u32 {
        owners.iter().filter(|&&owner| owner == group).count() as u32
    }

    fn check_bounded(owners: &[GroupId], groups: &BTreeSet<GroupId>, placement: &Placement) {
        let cap = capacity(owners.len() as u32, groups.len(), placement.factor);
        for owner in owners {
            assert!(
                groups.contains(owner),
                "partition owned by {owner}, not a group"
            );
        }
        for &group in groups {
            let load = load_of(owners, group);
            assert!(load <= cap, "group {group} holds {load} > capacity {cap}");
        }
    }

    #[test]
    fn capacity_is_the_ceiling_of_the_factor_times_the_average() {
        assert_eq!(capacity(271, 1, LoadFactor::DEFAULT), 339);
        assert_eq!(capacity(271, 2, LoadFactor::DEFAULT), 170);
        assert_eq!(capacity(271, 3, LoadFactor::DEFAULT), 113);
        assert_eq!(capacity(100, 4, LoadFactor::DEFAULT), 32);
        assert!(LoadFactor::new(3, 4).is_err());
        assert!(LoadFactor::new(1, 0).is_err());
    }

    #[test]
    fn a_first_table_spreads_partitions_within_the_bound() {
        let placement = Placement::default();
        let groups: BTreeSet<GroupId> = (1..=5).collect();
        let owners = placement.initial(271, &groups);
        check_bounded(&owners, &groups, &placement);
        for &group in &groups {
            assert!(
                load_of(&owners, group) >= 271 / 5 / 2,
                "group {group} is starved"
            );
        }
    }

    /// Found by the property below in CI: five partitions on five groups, then groups come and
    /// go until two groups hold two each while the new capacity is one. Their excess cannot all
    /// go to the new group.
    #[test]
    fn an_excess_beyond_the_new_groups_capacity_goes_to_groups_with_room() {
        let placement = Placement::default();
        let groups: BTreeSet<GroupId> = (1..=6).collect();
        let owners = vec![1, 1, 2, 2, 3];
        let after = placement.add_group(&owners, &groups, 7);
        let all: BTreeSet<GroupId> = (1..=7).collect();
        check_bounded(&after, &all, &placement);
        assert_eq!(
            load_of(&after, 7),
            1,
            "the new group takes what it may hold"
        );
        assert_eq!(
            owners.iter().zip(&after).filter(|(a, b)| a != b).count(),
            2,
            "only the two excess partitions move: {after:?}"
        );
    }

    #[derive(Clone, Debug)]
    enum Change {
        Add,
        /// Removes the group at this position among the current ones (modulo their number).
        Remove(usize),
    }

    proptest! {
        /// Whatever groups come and go: the bound holds, a new group gets its fair share and
        /// only it receives partitions, a leaving group's partitions alone move, and each move
        /// of a new group takes at most its capacity.
        #[test]
        fn changes_move_little_and_keep_the_bound(
            partitions in 1u32..700,
            first_groups in 1usize..6,
            changes in proptest::collection::vec(
                prop_oneof![Just(Change::Add), (0usize..16).prop_map(Change::Remove)],
                0..12,
            ),
        ) {
            let placement = Placement::default();
            let mut groups: BTreeSet<GroupId> = (1..=first_groups as GroupId).collect();
            let mut next: GroupId = first_groups as GroupId + 1;
            let mut owners = placement.initial(partitions, &groups);
            check_bounded(&owners, &groups, &placement);
            for change in changes {
                match change {
                    Change::Add => {
                        let new = next;
                        next += 1;
                        let after = placement.add_group(&owners, &groups, new);
                        groups.insert(new);
                        check_bounded(&after, &groups, &placement);
                        let new_is_full = load_of(&after, new)
                            == capacity(partitions, groups.len(), placement.factor);
                        for (before, after) in owners.iter().zip(&after) {
                            prop_assert!(
                                before == after || *after == new || new_is_full,
                                "moved {before} -> {after}"
                            );
                        }
                        let share = partitions / groups.len() as u32;
                        prop_assert!(load_of(&after, new) >= share);
                        // No group gives up partitions it needs for its own share.
                        for &group in groups.iter().filter(|&&group| group != new) {
                            let (was, is) = (load_of(&owners, group), load_of(&after, group));
                            prop_assert!(is >= was.min(share), "group {group}: {was} -> {is}");
                        }
                        owners = after;
                    }
                    Change::Remove(position) if groups.len() > 1 => {
                        let gone = *groups.iter().nth(position % groups.len()).unwrap();
                        let after = placement.remove_group(&owners, &groups, gone);
                        groups.remove(&gone);
                        check_bounded(&after, &groups, &placement);
                        for (before, after) in owners.iter().zip(&after) {
                            prop_assert!(before == after || *before == gone, "moved {before} -> {after}");
                        }
                        owners = after;
                    }
                    Change::Remove(_) => {}
                }
            }
        }
    }
}
