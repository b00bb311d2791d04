//! Moving partitions between groups, as the directory records it. The directory's log holds the
//! one commit point of every move: until `CommitMove` the source group owns the partition (at
//! its old epoch) and the move can be rolled back; from it on the destination does (at the
//! move's epoch) and the move can only go forward.
//!
//! When the partition table should change (a group was added), the directory keeps the table
//! it moves towards (`target`, computed once, by consistent hashing with bounded loads, from the
//! table as it stands) and starts moves towards it, a bounded number at a time, in partition
//! order. Each attempt gets an epoch no earlier attempt at that partition used, so every step a
//! group takes for it (`kv::shard`) names one attempt, and a step of an abandoned attempt is
//! refused wherever it arrives late.
//!
//! The admin's leader drives each move ([`Move`] says what is due next): the source freezes the
//! partition, the destination ingests it; then `CommitMove`; then the source drops it and the
//! destination serves it — in that order, so that no read is served by the source once the
//! destination takes writes; then `FinishMove`. Before the commit, `AbortMove` rolls it back;
//! the rolled-back attempt stays on record until its source unfroze and its destination
//! discarded what came in (`ForgetMove`), so that a leader that crashed in between leaves the
//! cleanup to the next one instead of a partition frozen for good.

use std::collections::{BTreeMap, VecDeque};

use crate::sharding::{GroupId, PartitionId, PartitionTable};

/// Moves in flight at once unless the operator set another limit: client traffic keeps most
/// of the machine.
pub const MOVES_IN_FLIGHT_DEFAULT: u32 = 4;
/// The highest limit an operator may set.
pub const MOVES_IN_FLIGHT_CEILING: u32 = 64;
/// Bytes per second all moves together ship, at most, unless the operator set another rate
/// (0: unlimited). A move's bytes go through the destination group's log (written, synced and
/// replicated), so they compete with client writes for the disk and the cores: on a 2-core
/// machine, moves at ~19 MB/s (unthrottled there) halve the other partitions' writes, at
/// 8 MiB/s they take ~45 % of them and keep each partition frozen 3x longer (see
/// `scripts/move-figures`). The default protects bigger machines' disks, as CockroachDB's
/// rebalancing rate does; an operator trades move time against client traffic with
/// `ravel move-rate`.
pub const MOVE_RATE_DEFAULT: u64 = 32 << 20;
/// The lowest rate an operator may set (other than 0, unlimited): slower, a chunk of a move
/// would wait longer than the admin waits for a stalled move, and every move be rolled back.
pub const MOVE_RATE_FLOOR: u64 = 1 << 20;
/// Moves remembered after they ended (finished or rolled back), the latest last: what `ravel
/// moves` shows as done. Bounded, so the directory does not grow with its history.
pub const MOVES_REMEMBERED: usize = 32;

/// How many moves the directory ever started, committed and rolled back (replicated, so every
/// admin replica and every later leader counts the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct MoveTotals {
    pub started: u64,
    pub committed: u64,
    pub rolled_back: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum MovePhase {
    /// The source freezes and exports, the destination ingests; the source still owns it.
    Copying,
    /// The destination owns it: the source drops it, then the destination serves it.
    Committed,
    /// Rolled back: the source unfreezes, the destination discards, then it is forgotten.
    RolledBack,
}

impl MovePhase {
    /// As `ravel groups`, the overview and the status page show it.
    pub fn name(self) -> &'static str {
        match self {
            MovePhase::Copying => "copying",
            MovePhase::Committed => "committed",
            MovePhase::RolledBack => "rolled-back",
        }
    }
}

/// One move in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Move {
    pub partition: PartitionId,
    pub from: GroupId,
    pub to: GroupId,
    /// The epoch the destination will own the partition at.
    pub epoch: u64,
    pub phase: MovePhase,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Moves {
    /// The owners the table moves towards; none once it got there.
    target: Option<Vec<GroupId>>,
    in_flight: BTreeMap<PartitionId, Move>,
    /// The latest epoch an attempt to move each partition used.
    attempted: BTreeMap<PartitionId, u64>,
    /// Attempts rolled back and not cleaned up yet, by partition and epoch.
    rolled_back: BTreeMap<(PartitionId, u64), Move>,
    /// Moves under way at once (in flight or being cleaned up), at most, as the operator set
    /// it (none: the default; 0: no new move starts, those in flight go on).
    limit: Option<u32>,
    /// Bytes per second moves ship, at most, as the operator set it (none: the default; 0:
    /// unlimited).
    rate: Option<u64>,
    totals: MoveTotals,
    /// The latest moves that ended: finished (phase `Committed`) or rolled back.
    ended: VecDeque<Move>,
}

/// What a move command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    Committed,
    Aborted,
    Finished,
    Forgotten,
    /// It had been done already (a retry): nothing changed.
    AlreadyDone,
    /// It names no move in flight in the right phase: nothing changed.
    Refused(String),
}

impl Moves {
    pub fn target(&self) -> Option<&[GroupId]> {
        self.target.as_deref()
    }

    /// Moves under way at once (in flight, or rolled back and being cleaned up), at most.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(MOVES_IN_FLIGHT_DEFAULT)
    }

    /// Sets how many moves may be in flight at once (moves beyond a lowered limit go on; a
    /// raised one starts more at once); refused above [`MOVES_IN_FLIGHT_CEILING`].
    pub fn set_limit(&mut self, table: &PartitionTable, limit: u32) -> Result<(), String> {
        if limit > MOVES_IN_FLIGHT_CEILING {
            return Err(format!(
                "at most {MOVES_IN_FLIGHT_CEILING} moves may be in flight, not {limit}"
            ));
        }
        self.limit = Some(limit);
        self.start(table);
        Ok(())
    }

    /// Bytes per second all moves together ship, at most (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.unwrap_or(MOVE_RATE_DEFAULT)
    }

    /// Sets the bytes per second all moves together ship (0: unlimited); refused below
    /// [`MOVE_RATE_FLOOR`].
    pub fn set_rate(&mut self, bytes_per_second: u64) -> Result<(), String> {
        if bytes_per_second != 0 && bytes_per_second < MOVE_RATE_FLOOR {
            return Err(format!(
                "moves need at least {MOVE_RATE_FLOOR} bytes per second (or 0, unlimited), not \
                 {bytes_per_second}"
            ));
        }
        self.rate = Some(bytes_per_second);
        Ok(())
    }

    pub fn in_flight(&self) -> &BTreeMap<PartitionId, Move> {
        &self.in_flight
    }

    pub fn totals(&self) -> MoveTotals {
        self.totals
    }

    /// The latest moves that ended, oldest first: finished ones in phase `Committed`, rolled
    /// back ones in phase `RolledBack`.
    pub fn ended(&self) -> impl Iterator<Item = &Move> {
        self.ended.iter()
    }

    fn remember(&mut self, ended: Move) {
        if self.ended.len() == MOVES_REMEMBERED {
            self.ended.pop_front();
        }
        self.ended.push_back(ended);
    }

    /// Every move the admin's leader has work for: those in flight and those rolled back but
    /// not cleaned up.
    pub fn runs(&self) -> impl Iterator<Item = &Move> {
        self.in_flight.values().chain(self.rolled_back.values())
    }

    /// Partitions whose owner in `table` is not yet the one the target gives them.
    pub fn pending(&self, table: &PartitionTable) -> usize {
        self.target.as_ref().map_or(0, |target| {
            target
                .iter()
                .zip(table.owners())
                .filter(|(wanted, owner)| wanted != owner)
                .count()
        })
    }

    /// Moves the table towards `target` from now on (replacing any earlier target; moves in
    /// flight go on).
    pub fn aim_at(&mut self, table: &PartitionTable, target: Vec<GroupId>) {
        assert_eq!(
            target.len(),
            table.partitions() as usize,
            "a target for every partition"
        );
        self.target = Some(target);
        self.start(table);
    }

    /// Moves under way: in flight, or rolled back and still being cleaned up at their groups.
    /// The operator's limit bounds them together, so that attempts that keep failing (a group
    /// unreachable, an admin too busy to take their steps) cannot pile up cleanups faster than
    /// they finish: each one is work for the admin's leader and for the groups.
    fn under_way(&self) -> usize {
        self.in_flight.len() + self.rolled_back.len()
    }

    /// Starts moves towards the target while there is room, in partition order.
    pub fn start(&mut self, table: &PartitionTable) {
        let Some(target) = &self.target else {
            return;
        };
        for partition in 0..table.partitions() {
            if self.under_way() >= self.limit() as usize {
                return;
            }
            let (owner, epoch) = table.owner(partition).expect("in range");
            let wanted = target[partition as usize];
            if owner == wanted || self.in_flight.contains_key(&partition) {
                continue;
            }
            let attempted = self.attempted.entry(partition).or_insert(epoch);
            *attempted = (*attempted).max(epoch) + 1;
            self.totals.started += 1;
            self.in_flight.insert(
                partition,
                Move {
                    partition,
                    from: owner,
                    to: wanted,
                    epoch: *attempted,
                    phase: MovePhase::Copying,
                },
            );
        }
        if self.in_flight.is_empty() && table.owners() == target.as_slice() {
            self.target = None;
        }
    }

    /// The commit point: the destination owns the partition at the move's epoch.
    pub fn commit(
        &mut self,
        table: &mut PartitionTable,
        partition: PartitionId,
        epoch: u64,
    ) -> MoveOutcome {
        match self.in_flight.get_mut(&partition) {
            Some(moving) if moving.epoch == epoch && moving.phase == MovePhase::Copying => {
                table.move_to(partition, moving.to, epoch);
                moving.phase = MovePhase::Committed;
                self.totals.committed += 1;
                MoveOutcome::Committed
            }
            Some(moving) if moving.epoch == epoch => MoveOutcome::AlreadyDone,
            other => refused("commit", partition, epoch, other.map(|moving| &*moving)),
        }
    }

    /// Rolls back a move not committed yet; the partition is attempted again at a new epoch
    /// as soon as there is room (the rolled-back attempt takes up a place until it is
    /// forgotten).
    pub fn abort(
        &mut self,
        table: &PartitionTable,
        partition: PartitionId,
        epoch: u64,
    ) -> MoveOutcome {
        match self.in_flight.get(&partition) {
            Some(moving) if moving.epoch == epoch && moving.phase == MovePhase::Copying => {
                let mut moving = self.in_flight.remove(&partition).expect("found");
                moving.phase = MovePhase::RolledBack;
                self.rolled_back.insert((partition, epoch), moving);
                self.totals.rolled_back += 1;
                self.remember(moving);
                self.start(table);
                MoveOutcome::Aborted
            }
            // A later attempt is in flight: this one was rolled back already.
            Some(moving) if moving.epoch > epoch => MoveOutcome::AlreadyDone,
            None if self
                .attempted
                .get(&partition)
                .is_some_and(|&at| at >= epoch) =>
            {
                MoveOutcome::AlreadyDone
            }
            other => refused("abort", partition, epoch, other),
        }
    }

    /// A committed move whose source dropped the partition and whose destination serves it.
    pub fn finish(
        &mut self,
        table: &PartitionTable,
        partition: PartitionId,
        epoch: u64,
    ) -> MoveOutcome {
        let outcome = match self.in_flight.get(&partition) {
            Some(moving) if moving.epoch == epoch && moving.phase == MovePhase::Committed => {
                let finished = self.in_flight.remove(&partition).expect("found");
                self.remember(finished);
                MoveOutcome::Finished
            }
            None if table.owner(partition).is_some_and(|(_, at)| at >= epoch) => {
                MoveOutcome::AlreadyDone
            }
            other => return refused("finish", partition, epoch, other),
        };
        self.start(table);
        outcome
    }

    /// A rolled-back attempt is cleaned up at both groups: nothing more to do for it (and its
    /// place goes to the next move).
    pub fn forget(
        &mut self,
        table: &PartitionTable,
        partition: PartitionId,
        epoch: u64,
    ) -> MoveOutcome {
        if self.rolled_back.remove(&(partition, epoch)).is_some() {
            self.start(table);
            MoveOutcome::Forgotten
        } else if self
            .attempted
            .get(&partition)
            .is_some_and(|&at| at >= epoch)
        {
            MoveOutcome::AlreadyDone
        } else {
            refused("forget", partition, epoch, None)
        }
    }

    /// The moves' invariants against the table: a copying move leaves its source the owner at
    /// an older epoch; a committed one made its destination the owner at its epoch; no more in
    /// flight than allowed.
    pub fn check(&self, table: &PartitionTable) -> Result<(), String> {
        if self.in_flight.len() > MOVES_IN_FLIGHT_CEILING as usize {
            return Err(format!("{} moves in flight", self.in_flight.len()));
        }
        let totals = self.totals;
        let ended = totals.committed + totals.rolled_back;
        let committed_in_flight = self
            .in_flight
            .values()
            .filter(|moving| moving.phase == MovePhase::Committed)
            .count() as u64;
        if ended + (self.in_flight.len() as u64 - committed_in_flight) != totals.started
            || self.ended.len() > MOVES_REMEMBERED
        {
            return Err(format!(
                "move totals {totals:?} do not add up with {} in flight ({committed_in_flight} \
                 committed) and {} remembered",
                self.in_flight.len(),
                self.ended.len()
            ));
        }
        for (&partition, moving) in &self.in_flight {
            let (owner, epoch) = table
                .owner(partition)
                .ok_or_else(|| format!("a move of partition {partition}, out of range"))?;
            let consistent = match moving.phase {
                MovePhase::Copying => owner == moving.from && epoch < moving.epoch,
                MovePhase::Committed => owner == moving.to && epoch == moving.epoch,
                MovePhase::RolledBack => false,
            };
            if !consistent || moving.from == moving.to || moving.partition != partition {
                return Err(format!(
                    "move {moving:?} does not fit the table (owner {owner} at epoch {epoch})"
                ));
            }
        }
        for (&(partition, epoch), moving) in &self.rolled_back {
            let attempted = self.attempted.get(&partition).copied().unwrap_or(0);
            if moving.phase != MovePhase::RolledBack
                || moving.partition != partition
                || moving.epoch != epoch
                || attempted < epoch
            {
                return Err(format!(
                    "rolled-back move {moving:?} does not fit its record"
                ));
            }
        }
        Ok(())
    }
}

fn refused(what: &str, partition: PartitionId, epoch: u64, found: Option<&Move>) -> MoveOutcome {
    MoveOutcome::Refused(format!(
        "cannot {what} the move of partition {partition} to epoch {epoch}: in flight is {found:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves start towards the target a few at a time; each commits (the table changes at its
    /// epoch), finishes, and makes room for the next; an aborted one comes back at a new epoch;
    /// every command repeated changes nothing; once the table is the target, no target is left.
    #[test]
    fn moves_go_towards_the_target_a_few_at_a_time() {
        let mut table = PartitionTable::new(vec![1; 8]);
        let mut moves = Moves::default();
        moves.aim_at(&table, vec![1, 2, 1, 2, 1, 2, 1, 2]);
        let started: Vec<PartitionId> = moves.in_flight().keys().copied().collect();
        assert_eq!(started, vec![1, 3, 5, 7]);
        assert_eq!(moves.check(&table), Ok(()));
        // The operator's limit: lowered, those in flight go on and none starts; raised again,
        // moves start at once; above the ceiling, refused.
        assert_eq!(moves.set_limit(&table, 0), Ok(()));
        assert_eq!(moves.in_flight().len(), 4);
        assert!(moves
            .set_limit(&table, MOVES_IN_FLIGHT_CEILING + 1)
            .is_err());
        assert_eq!(moves.limit(), 0);
        assert_eq!(moves.set_limit(&table, MOVES_IN_FLIGHT_DEFAULT), Ok(()));
        // The rate: the default until set; unlimited (0) or at least the floor.
        assert_eq!(moves.rate(), MOVE_RATE_DEFAULT);
        assert!(moves.set_rate(MOVE_RATE_FLOOR - 1).is_err());
        assert_eq!(moves.rate(), MOVE_RATE_DEFAULT);
        assert_eq!(moves.set_rate(0), Ok(()));
        assert_eq!(moves.rate(), 0);
        assert_eq!(moves.set_rate(MOVE_RATE_FLOOR), Ok(()));
        assert_eq!(moves.rate(), MOVE_RATE_FLOOR);
        assert_eq!(moves.commit(&mut table, 1, 2), MoveOutcome::Committed);
        assert_eq!(moves.commit(&mut table, 1, 2), MoveOutcome::AlreadyDone);
        assert_eq!(table.owner(1), Some((2, 2)));
        assert!(
            matches!(moves.abort(&table, 1, 2), MoveOutcome::Refused(_)),
            "committed"
        );
        assert_eq!(moves.finish(&table, 1, 2), MoveOutcome::Finished);
        assert_eq!(moves.finish(&table, 1, 2), MoveOutcome::AlreadyDone);
        // Rolled back, it is attempted again at the next epoch.
        assert_eq!(moves.abort(&table, 3, 2), MoveOutcome::Aborted);
        assert_eq!(moves.abort(&table, 3, 2), MoveOutcome::AlreadyDone);
        assert_eq!(moves.in_flight()[&3].epoch, 3);
        assert_eq!(moves.check(&table), Ok(()));
        // The rolled-back attempt waits for its cleanup, then is forgotten.
        let waiting: Vec<(PartitionId, u64, MovePhase)> = moves
            .runs()
            .map(|moving| (moving.partition, moving.epoch, moving.phase))
            .filter(|&(partition, ..)| partition == 3)
            .collect();
        assert_eq!(
            waiting,
            vec![(3, 3, MovePhase::Copying), (3, 2, MovePhase::RolledBack)]
        );
        // At the limit (three in flight, one being cleaned up), another rollback restarts
        // nothing until a cleanup is done.
        assert_eq!(moves.abort(&table, 5, 2), MoveOutcome::Aborted);
        assert!(!moves.in_flight().contains_key(&5));
        assert_eq!(moves.runs().count(), 4);
        assert_eq!(moves.forget(&table, 3, 2), MoveOutcome::Forgotten);
        assert_eq!(moves.in_flight()[&5].epoch, 3);
        assert_eq!(moves.forget(&table, 5, 2), MoveOutcome::Forgotten);
        assert_eq!(moves.forget(&table, 3, 2), MoveOutcome::AlreadyDone);
        assert!(matches!(
            moves.forget(&table, 3, 9),
            MoveOutcome::Refused(_)
        ));
        assert_eq!(
            moves.runs().filter(|moving| moving.partition == 3).count(),
            1
        );
        assert!(matches!(
            moves.commit(&mut table, 3, 2),
            MoveOutcome::Refused(_)
        ));
        for partition in [3, 5, 7] {
            let epoch = moves.in_flight()[&partition].epoch;
            assert_eq!(moves.check(&table), Ok(()));
            assert_eq!(
                moves.commit(&mut table, partition, epoch),
                MoveOutcome::Committed
            );
            assert_eq!(
                moves.finish(&table, partition, epoch),
                MoveOutcome::Finished
            );
        }
        assert_eq!(table.owners(), &[1, 2, 1, 2, 1, 2, 1, 2]);
        assert_eq!(moves.target(), None);
        assert!(moves.in_flight().is_empty());
        // Counted once each, however often repeated: six attempts, four committed, two
        // rolled back; remembered in the order they ended.
        assert_eq!(
            moves.totals(),
            MoveTotals {
                started: 6,
                committed: 4,
                rolled_back: 2
            }
        );
        let ended: Vec<(PartitionId, u64, MovePhase)> = moves
            .ended()
            .map(|moving| (moving.partition, moving.epoch, moving.phase))
            .collect();
        assert_eq!(
            ended,
            vec![
                (1, 2, MovePhase::Committed),
                (3, 2, MovePhase::RolledBack),
                (5, 2, MovePhase::RolledBack),
                (3, 3, MovePhase::Committed),
                (5, 3, MovePhase::Committed),
                (7, 2, MovePhase::Committed),
            ]
        );
        assert_eq!(moves.check(&table), Ok(()));
    }

    /// Only the latest moves are remembered, however many ended.
    #[test]
    fn remembers_a_bounded_number_of_ended_moves() {
        let partitions = MOVES_REMEMBERED as u32 + 10;
        let mut table = PartitionTable::new(vec![1; partitions as usize]);
        let mut moves = Moves::default();
        moves.aim_at(&table, vec![2; partitions as usize]);
        while let Some((&partition, moving)) = moves.in_flight().iter().next() {
            let epoch = moving.epoch;
            assert_eq!(
                moves.commit(&mut table, partition, epoch),
                MoveOutcome::Committed
            );
            assert_eq!(
                moves.finish(&table, partition, epoch),
                MoveOutcome::Finished
            );
            assert_eq!(moves.check(&table), Ok(()));
        }
        assert_eq!(moves.totals().committed, u64::from(partitions));
        let ended: Vec<PartitionId> = moves.ended().map(|moving| moving.partition).collect();
        assert_eq!(ended, (10..partitions).collect::<Vec<_>>());
    }
}
