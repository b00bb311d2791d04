//! What every step and every run is checked against, beyond each group's Raft invariants.

use super::*;
use ravel::kv::shard::Holding;

impl ShardedWorld {
    /// After healing: every group started, its leader known to a majority of the admin at the
    /// term it leads in, every move carried out (the table is where the directory aims it),
    /// and some writes completed.
    pub(super) fn live(&self) -> bool {
        if !self.faults_over || self.completed_after_heal < 10 {
            return false;
        }
        let groups = self.options.groups + usize::from(self.adds_group);
        if self.started_groups.len() < groups {
            return false;
        }
        let current: BTreeMap<GroupId, (NodeId, u64)> = self
            .data
            .iter()
            .filter(|(_, host)| host.is_leader())
            .map(|(&id, host)| (self.group_of[&id], (id, host.term())))
            .collect();
        let knowing = self
            .admins
            .iter()
            .filter_map(|host| host.replica.as_ref())
            .filter(|replica| {
                let moves = replica.state().moves();
                moves.runs().next().is_none() && moves.target().is_none()
            })
            .filter(|replica| {
                self.started_groups.iter().all(|group| {
                    let info = replica.state().groups().get(group);
                    current.get(group).is_some_and(|&(leader, term)| {
                        info.is_some_and(|info| {
                            info.leader == Some(leader) && info.leader_term == term
                        })
                    })
                })
            })
            .count();
        let retired = self.retires.is_none() || self.retired;
        knowing >= 2 && retired && self.groups_hold_their_share()
    }

    /// Every started group's most advanced replica holds exactly the partitions the table of the
    /// most advanced admin replica gives it (claimed, and moved in and out as the table says).
    fn groups_hold_their_share(&self) -> bool {
        self.share_mismatch().is_none()
    }

    /// The first group whose holdings differ from what the table gives it, and how.
    pub(super) fn share_mismatch(&self) -> Option<String> {
        let table = self
            .admins
            .iter()
            .filter_map(|host| host.replica.as_ref())
            .max_by_key(|replica| replica.state().applied_index())
            .and_then(|replica| replica.state().table().cloned())?;
        for &group in &self.started_groups {
            let freshest = self
                .data
                .iter()
                .filter(|(id, _)| self.group_of.get(id) == Some(&group))
                .filter_map(|(_, host)| host.replica.as_ref())
                .max_by_key(|replica| replica.state().applied_index());
            let held = freshest
                .and_then(|replica| replica.state().shard())
                .map(|shard| shard.serving())
                .unwrap_or_default();
            let given: BTreeMap<u32, u64> = (0..table.partitions())
                .filter_map(|partition| {
                    let (owner, epoch) = table.owner(partition)?;
                    (owner == group).then_some((partition, epoch))
                })
                .collect();
            if held != given {
                return Some(format!(
                    "group {group} holds {held:?} but the table gives it {given:?}"
                ));
            }
            // Held, but refusing writes: a partition must not stay frozen once no move is
            // under way (a late freeze of an attempt rolled back, say).
            let frozen: Vec<u32> = freshest
                .and_then(|replica| replica.state().shard())
                .map(|shard| {
                    shard
                        .holdings()
                        .iter()
                        .filter(|(_, holding)| matches!(holding, Holding::Frozen { .. }))
                        .map(|(&partition, _)| partition)
                        .collect()
                })
                .unwrap_or_default();
            if !frozen.is_empty() {
                return Some(format!(
                    "group {group} holds partitions {frozen:?} frozen, refusing their writes"
                ));
            }
        }
        None
    }

    /// Each admin replica's moves under way: how many, and the first few (a failure message
    /// stays readable however many piled up).
    pub(super) fn admin_view_of_moves(&self) -> Vec<(NodeId, usize, Vec<ravel::directory::Move>)> {
        self.admins
            .iter()
            .filter_map(|host| host.replica.as_ref().map(|replica| (host.id, replica)))
            .map(|(id, replica)| {
                let moves = replica.state().moves();
                (
                    id,
                    moves.runs().count(),
                    moves.runs().take(8).copied().collect(),
                )
            })
            .collect()
    }

    pub(super) fn admin_view_of_leaders(&self) -> Vec<(NodeId, LeaderRecords)> {
        self.admins
            .iter()
            .filter_map(|host| host.replica.as_ref().map(|replica| (host.id, replica)))
            .map(|(id, replica)| {
                let groups = replica
                    .state()
                    .groups()
                    .iter()
                    .map(|(&group, info)| (group, info.leader, info.leader_term))
                    .collect();
                (id, groups)
            })
            .collect()
    }

    /// The directory's invariants on admin replica `index`, as it stands now.
    pub(super) fn check_admin(&mut self, index: usize) {
        let host = &self.admins[index];
        let Some(replica) = host.replica.as_ref() else {
            return;
        };
        let directory = replica.state();
        if let Err(violation) = check_directory(directory) {
            return self.fail(format!("admin n{}: {violation}", host.id));
        }
        let mut violation = None;
        for (&group, info) in directory.groups() {
            let key = (host.id, host.incarnation, group);
            let seen = self.admin_terms.entry(key).or_insert(0);
            if info.leader_term < *seen {
                violation = Some(format!(
                    "admin n{} recorded group {group}'s leader term going back from {} to {}",
                    host.id, seen, info.leader_term
                ));
            }
            *seen = info.leader_term;
            if let Some(leader) = info.leader {
                if !self.led.contains(&(group, leader, info.leader_term)) {
                    violation = Some(format!(
                        "admin n{} records node {leader} as group {group}'s leader in term {}, \
                         which it never was",
                        host.id, info.leader_term
                    ));
                }
            }
        }
        if let Some(violation) = violation {
            self.fail(violation);
        }
    }

    /// At the end: every key a data replica holds belongs to a partition its group owns; no
    /// partition is served by two groups at one epoch; and every group's most advanced replica
    /// holds exactly the partitions the table gives it, at the table's epochs.
    pub(super) fn check_ownership(&mut self) {
        let mut violation = self.share_mismatch();
        let mut servers: BTreeMap<(u32, u64), GroupId> = BTreeMap::new();
        for (id, host) in &self.data {
            let Some(replica) = host.replica.as_ref() else {
                continue;
            };
            let group = self.group_of[id];
            let serving = replica.state().shard().map(|shard| shard.serving());
            for (&partition, &epoch) in serving.iter().flatten() {
                let first = *servers.entry((partition, epoch)).or_insert(group);
                if first != group {
                    violation = Some(format!(
                        "partition {partition} is served at epoch {epoch} by group {first} and by \
                         group {group} (n{id})"
                    ));
                }
            }
            for key in 0..self.options.keys {
                let key = format!("k{key}");
                // Held while served, moving out, or coming in; never once gone or never had.
                let holding = replica.state().shard().and_then(|shard| {
                    let partition = partition_of(key.as_bytes(), shard.partitions());
                    shard.holdings().get(&partition).copied()
                });
                let may_hold = matches!(
                    holding,
                    Some(
                        Holding::Serving { .. } | Holding::Frozen { .. } | Holding::Incoming { .. }
                    )
                );
                if replica.state().get(key.as_bytes()).is_some() && !may_hold {
                    violation = Some(format!(
                        "n{id} of group {} holds key {key}, which its group does not own",
                        self.group_of[id]
                    ));
                }
            }
        }
        if let Some(violation) = violation {
            self.fail(violation);
        }
    }
}

/// One admin replica's record of each group's leader: (group, leader, its term).
pub(super) type LeaderRecords = Vec<(GroupId, Option<NodeId>, u64)>;

/// The directory's own invariants: every server in exactly one group, no group over the target
/// size, every partition owned by a group that exists.
pub fn check_directory(directory: &Directory) -> Result<(), Violation> {
    let size = directory.settings().group_size as usize;
    let mut seen = BTreeSet::new();
    for (&group, info) in directory.groups() {
        if info.members.len() > size {
            return Err(format!(
                "group {group} has {} members, more than {size}",
                info.members.len()
            ));
        }
        for member in &info.members {
            if !seen.insert(*member) {
                return Err(format!("server {member} is in two groups"));
            }
            match directory.servers().get(member) {
                Some(server) if server.group == group => {}
                other => {
                    return Err(format!(
                        "group {group} lists server {member}, whose record is {other:?}"
                    ))
                }
            }
        }
    }
    if seen.len() != directory.servers().len() {
        return Err("a server is in no group".to_string());
    }
    if let Some(table) = directory.table() {
        directory.moves().check(table)?;
        for partition in 0..table.partitions() {
            let owner = table.owner(partition).map(|(group, _)| group);
            if !owner.is_some_and(|group| directory.groups().contains_key(&group)) {
                return Err(format!("partition {partition} is owned by {owner:?}"));
            }
        }
    }
    Ok(())
}
