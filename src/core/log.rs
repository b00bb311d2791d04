//! The in-memory view of the replicated log and how far it is durable, committed and applied.
//!
//! The caller's storage holds the durable copy; this holds every entry the node knows, and the
//! watermarks that tie the two together:
//! `applied <= applying <= commit <= last_index` and `persisted <= last_index`.

use std::collections::VecDeque;

use super::io::PersistId;
use super::types::{Entry, LogIndex, SnapshotMeta, Term};

#[derive(Debug)]
pub struct RaftLog {
    /// `entries[k]` has index `first_index + k`.
    entries: Vec<Entry>,
    first_index: LogIndex,
    /// The term of the entry just before `first_index`, once earlier entries were released.
    released_term: Term,
    /// Every entry up to here is durable, as reported by `Persisted`.
    persisted: LogIndex,
    /// Entries from here on have not been handed to storage yet.
    unsent_from: LogIndex,
    /// Persists handed out and not yet reported durable: `(id, last index written)`.
    pending_persists: VecDeque<(PersistId, LogIndex)>,
    commit: LogIndex,
    /// Handed to the state machine.
    applying: LogIndex,
    /// Reported applied by the state machine.
    applied: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: the snapshot (if any) and the durable entries after it,
    /// contiguous. The state machine is restored from the snapshot, so it counts as applied.
    pub fn recover(snapshot: Option<&SnapshotMeta>, entries: Vec<Entry>, commit: LogIndex) -> Self {
        let (snapshot_index, snapshot_term) =
            snapshot.map_or((0, 0), |meta| (meta.index, meta.term));
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                snapshot_index + 1 + offset as u64,
                "recovered log must follow the snapshot contiguously"
            );
        }
        let last = snapshot_index + entries.len() as LogIndex;
        assert!(
            commit <= last,
            "recovered commit {commit} beyond last entry {last}"
        );
        RaftLog {
            entries,
            first_index: snapshot_index + 1,
            released_term: snapshot_term,
            persisted: last,
            unsent_from: last + 1,
            pending_persists: VecDeque::new(),
            commit: commit.max(snapshot_index),
            applying: snapshot_index,
            applied: snapshot_index,
        }
    }

    pub fn last_index(&self) -> LogIndex {
        self.first_index + self.entries.len() as LogIndex - 1
    }

    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.released_term, |entry| entry.term)
    }

    /// The term of the entry at `index`; 0 for index 0; `None` if there is no such entry or it
    /// was released from memory (except the last released one, whose term is kept).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index + 1 == self.first_index {
            return Some(self.released_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The first index still held in memory.
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index)?;
        self.entries.get(offset as usize)
    }

    pub fn commit(&self) -> LogIndex {
        self.commit
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Entries not yet handed to storage.
    pub fn has_unsent(&self) -> bool {
        self.unsent_from <= self.last_index()
    }

    /// Writes handed out or about to be, not yet reported durable.
    pub fn has_pending_persists(&self) -> bool {
        !self.pending_persists.is_empty() || self.unsent_from <= self.last_index()
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries with the same term as `index`, not going below
    /// `floor`. Used for the rejection hint.
    pub fn first_index_of_term_at(&self, index: LogIndex, floor: LogIndex) -> LogIndex {
        let term = self.term(index);
        let mut first = index;
        while first > floor.max(1) && self.term(first - 1) == term {
            first -= 1;
        }
        first
    }

    /// The last index at or before `index` whose term is `term`, if any.
    pub fn last_index_of_term(&self, term: Term, index: LogIndex) -> Option<LogIndex> {
        let mut at = index.min(self.last_index());
        while at >= self.first_index {
            let entry_term = self.term(at)?;
            if entry_term == term {
                return Some(at);
            }
            if entry_term < term {
                return None;
            }
            at -= 1;
        }
        None
    }

    /// Appends entries that follow the last one (a leader's own proposals).
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        debug_assert!(entry.term >= self.last_term());
        self.entries.push(entry);
    }

    /// Merges entries from the leader that follow `prev_index` (already checked to match):
    /// skips those already present, truncates at the first conflict, appends the rest.
    /// Returns the index of the last entry the leader sent, and the first index that changed.
    pub fn merge(
        &mut self,
        prev_index: LogIndex,
        mut entries: Vec<Entry>,
    ) -> (LogIndex, Option<LogIndex>) {
        let last_new = prev_index + entries.len() as LogIndex;
        let conflict = entries
            .iter()
            .position(|entry| self.term(entry.index) != Some(entry.term));
        let Some(position) = conflict else {
            return (last_new, None);
        };
        let from = entries[position].index;
        assert!(
            from > self.commit,
            "log matching violated: leader overwrites committed index {from} (commit {})",
            self.commit
        );
        self.truncate_from(from);
        self.entries.extend(entries.drain(position..));
        (last_new, Some(from))
    }

    fn truncate_from(&mut self, from: LogIndex) {
        if from > self.last_index() {
            return;
        }
        self.entries.truncate((from - self.first_index) as usize);
        self.unsent_from = self.unsent_from.min(from);
        self.persisted = self.persisted.min(from - 1);
        // A persist in flight that wrote past the cut will not make those indexes durable.
        for (_, last_written) in self.pending_persists.iter_mut() {
            *last_written = (*last_written).min(from - 1);
        }
    }

    /// Entries from `from` up to `to`, at most `count_max` of them and, beyond the first,
    /// at most `bytes_max` bytes.
    pub fn slice(
        &self,
        from: LogIndex,
        to: LogIndex,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<Entry> {
        if from > to || from < self.first_index || to > self.last_index() {
            return Vec::new();
        }
        let start = (from - self.first_index) as usize;
        let end = ((to - self.first_index) as usize + 1).min(start.saturating_add(count_max));
        let mut bytes = 0;
        let mut taken = Vec::with_capacity(end - start);
        for entry in &self.entries[start..end] {
            bytes += entry.size_bytes();
            if bytes > bytes_max && !taken.is_empty() {
                break;
            }
            taken.push(entry.clone());
        }
        taken
    }

    /// Takes the entries not yet handed to storage, recording the persist that will write them.
    pub fn take_unsent(&mut self, id: PersistId) -> Vec<Entry> {
        let last = self.last_index();
        let unsent = if self.unsent_from <= last {
            self.slice(self.unsent_from, last, usize::MAX, usize::MAX)
        } else {
            Vec::new()
        };
        self.unsent_from = last + 1;
        self.pending_persists.push_back((id, last));
        unsent
    }

    /// Storage reports every persist up to `id` durable.
    pub fn persisted_to(&mut self, id: PersistId) {
        while let Some(&(pending_id, last_written)) = self.pending_persists.front() {
            if pending_id > id {
                break;
            }
            self.pending_persists.pop_front();
            self.persisted = self.persisted.max(last_written);
        }
    }

    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.commit = index;
        true
    }

    /// The next committed entries to hand to the state machine, at most `count_max`.
    pub fn take_committed(&mut self, count_max: usize) -> Vec<Entry> {
        if self.applying >= self.commit {
            return Vec::new();
        }
        let entries = self.slice(self.applying + 1, self.commit, count_max, usize::MAX);
        self.applying += entries.len() as LogIndex;
        entries
    }

    /// Drops entries up to `index` from memory: they are applied here and durable on every voter,
    /// so no one will ask for them again (storage keeps them). Done in large steps so the cost of
    /// moving the remaining entries is amortized.
    pub fn release_to(&mut self, index: LogIndex, batch_min: usize) {
        let index = index.min(self.applied);
        if index < self.first_index {
            return;
        }
        let count = (index - self.first_index + 1) as usize;
        if count < batch_min.max(self.entries.len() / 2) {
            return;
        }
        self.released_term = self.entries[count - 1].term;
        self.entries.drain(..count);
        self.first_index = index + 1;
    }

    /// Drops every entry up to `index` from memory now (a snapshot covers them).
    pub fn drop_through(&mut self, index: LogIndex) {
        let index = index.min(self.applied).min(self.last_index());
        if index < self.first_index {
            return;
        }
        let count = (index - self.first_index + 1) as usize;
        self.released_term = self.entries[count - 1].term;
        self.entries.drain(..count);
        self.first_index = index + 1;
    }

    /// Replaces the log's prefix with an installed snapshot (Raft §7): entries after it are kept
    /// if the log holds the snapshot's last entry, otherwise the whole log is discarded. The
    /// state machine is replaced, so everything up to `meta.index` is committed and applied.
    /// `persist` is the id of the action that makes the snapshot durable.
    pub fn install(&mut self, meta: &SnapshotMeta, persist: PersistId) {
        if self.term(meta.index) == Some(meta.term) && meta.index <= self.last_index() {
            let count = (meta.index + 1).saturating_sub(self.first_index) as usize;
            self.entries.drain(..count);
        } else {
            self.entries.clear();
            self.unsent_from = meta.index + 1;
            self.persisted = self.persisted.min(meta.index);
            for (_, last_written) in self.pending_persists.iter_mut() {
                *last_written = (*last_written).min(meta.index);
            }
        }
        self.first_index = meta.index + 1;
        self.released_term = meta.term;
        self.unsent_from = self.unsent_from.max(meta.index + 1);
        self.commit = self.commit.max(meta.index);
        self.applying = self.applying.max(meta.index);
        self.applied = self.applied.max(meta.index);
        self.pending_persists.push_back((persist, meta.index));
    }

    pub fn applying(&self) -> LogIndex {
        self.applying
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        if index > self.applied {
            assert!(
                index <= self.applying,
                "applied {index} beyond what was handed out ({})",
                self.applying
            );
            self.applied = index;
        }
    }
}

/// The index bookkeeping, case by case, after etcd-raft's `log_test.go`: what recovery, merging
/// a leader's entries, persisting, committing, applying, releasing and installing a snapshot do
/// to the watermarks `persisted`, `commit`, `applying`, `applied` and to the entries held.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::Membership;
    use crate::core::types::EntryPayload;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Noop,
        }
    }

    /// A log recovered with entries of these terms from index 1, all durable, nothing committed.
    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(offset, &term)| entry(offset as LogIndex + 1, term))
            .collect();
        RaftLog::recover(None, entries, 0)
    }

    fn terms(log: &RaftLog) -> Vec<Term> {
        (log.first_index()..=log.last_index())
            .map(|index| log.term(index).expect("held"))
            .collect()
    }

    fn snapshot(index: LogIndex, term: Term) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            membership: Membership::default(),
            admissions: Vec::new(),
        }
    }

    #[test]
    fn recovery_follows_the_snapshot_and_counts_it_applied() {
        let log = RaftLog::recover(Some(&snapshot(10, 3)), vec![entry(11, 3), entry(12, 4)], 11);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (11, 12, 4)
        );
        assert_eq!(log.term(10), Some(3), "the snapshot's term is kept");
        assert_eq!(log.term(9), None, "before the snapshot nothing is known");
        assert_eq!(log.term(0), Some(0));
        assert_eq!((log.persisted(), log.commit()), (12, 11));
        assert_eq!((log.applying(), log.applied()), (10, 10));
        assert!(!log.has_pending_persists());

        let empty = RaftLog::recover(Some(&snapshot(10, 3)), Vec::new(), 0);
        assert_eq!((empty.last_index(), empty.last_term()), (10, 3));
        assert_eq!(empty.commit(), 10, "a snapshot is committed");
    }

    #[test]
    #[should_panic(expected = "contiguously")]
    fn recovery_refuses_a_gap_after_the_snapshot() {
        RaftLog::recover(Some(&snapshot(10, 3)), vec![entry(12, 3)], 0);
    }

    #[test]
    fn merging_skips_what_matches_and_truncates_at_the_first_conflict() {
        // Entries already held: nothing changes, even if the leader sent fewer than held.
        let mut log = log_of(&[1, 1, 2, 2]);
        assert_eq!(log.merge(1, vec![entry(2, 1), entry(3, 2)]), (3, None));
        assert_eq!(
            terms(&log),
            vec![1, 1, 2, 2],
            "a shorter append truncates nothing"
        );

        // A conflict at 3: 3 and everything after it are replaced.
        assert_eq!(
            log.merge(2, vec![entry(3, 3), entry(4, 3), entry(5, 3)]),
            (5, Some(3))
        );
        assert_eq!(terms(&log), vec![1, 1, 3, 3, 3]);
        assert_eq!(
            log.persisted(),
            2,
            "the replaced entries are no longer durable"
        );

        // Past the end: appended.
        assert_eq!(log.merge(5, vec![entry(6, 3)]), (6, Some(6)));
        assert_eq!(log.last_index(), 6);
    }

    #[test]
    fn a_persist_in_flight_past_a_truncation_does_not_make_the_new_entries_durable() {
        let mut log = log_of(&[1]);
        log.merge(1, vec![entry(2, 1), entry(3, 1)]);
        assert_eq!(log.take_unsent(7).len(), 2);
        // The leader changed; 2 and 3 are replaced before persist 7 completes.
        log.merge(1, vec![entry(2, 2), entry(3, 2)]);
        log.persisted_to(7);
        assert_eq!(
            log.persisted(),
            1,
            "persist 7 wrote the old entries 2 and 3"
        );
        assert!(log.has_unsent(), "the new entries still have to be written");
        let written = log.take_unsent(8);
        assert_eq!(
            written.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![2, 2]
        );
        log.persisted_to(8);
        assert_eq!(log.persisted(), 3);
    }

    #[test]
    #[should_panic(expected = "log matching violated")]
    fn merging_refuses_to_overwrite_a_committed_entry() {
        let mut log = log_of(&[1, 1, 1]);
        log.commit_to(2);
        log.merge(1, vec![entry(2, 2)]);
    }

    #[test]
    fn persists_complete_in_order_and_an_old_report_changes_nothing() {
        let mut log = log_of(&[]);
        log.append(entry(1, 1));
        log.append(entry(2, 1));
        assert_eq!(log.take_unsent(1).len(), 2);
        log.append(entry(3, 1));
        assert_eq!(log.take_unsent(2).len(), 1);
        assert!(log.has_pending_persists() && !log.has_unsent());
        assert_eq!(log.persisted(), 0);
        log.persisted_to(1);
        assert_eq!(log.persisted(), 2);
        log.persisted_to(1);
        assert_eq!(log.persisted(), 2, "a repeated report is harmless");
        log.persisted_to(2);
        assert_eq!(log.persisted(), 3);
        assert!(!log.has_pending_persists());
    }

    #[test]
    fn commit_never_regresses_and_never_passes_the_last_entry() {
        let mut log = log_of(&[1, 1, 1]);
        assert!(log.commit_to(2));
        assert!(!log.commit_to(1), "commit does not move back");
        assert!(!log.commit_to(2));
        assert_eq!(log.commit(), 2);
        let beyond = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut log = log_of(&[1]);
            log.commit_to(2);
        }));
        assert!(beyond.is_err(), "a commit beyond the log is a bug");
    }

    #[test]
    fn committed_entries_are_handed_out_once_in_batches_then_reported_applied() {
        let mut log = log_of(&[1, 1, 1, 1, 1]);
        assert!(log.take_committed(10).is_empty(), "nothing committed yet");
        log.commit_to(4);
        let first: Vec<LogIndex> = log.take_committed(3).iter().map(|e| e.index).collect();
        assert_eq!(first, vec![1, 2, 3]);
        assert_eq!((log.applying(), log.applied()), (3, 0));
        let rest: Vec<LogIndex> = log.take_committed(3).iter().map(|e| e.index).collect();
        assert_eq!(rest, vec![4], "only up to the commit index");
        assert!(log.take_committed(3).is_empty());
        log.applied_to(2);
        log.applied_to(1);
        assert_eq!(log.applied(), 2, "applied does not move back");
        log.applied_to(4);
        assert_eq!(log.applied(), 4);
    }

    #[test]
    #[should_panic(expected = "beyond what was handed out")]
    fn applied_cannot_pass_what_was_handed_out() {
        let mut log = log_of(&[1, 1]);
        log.commit_to(2);
        log.take_committed(1);
        log.applied_to(2);
    }

    #[test]
    fn releasing_keeps_the_last_released_term_and_waits_for_a_large_step() {
        let mut log = log_of(&[1, 1, 2, 2, 2, 3]);
        log.commit_to(6);
        log.take_committed(10);
        log.applied_to(4);
        log.release_to(6, 100);
        assert_eq!(log.first_index(), 1, "too small a step: nothing released");
        log.release_to(6, 1);
        assert_eq!(log.first_index(), 5, "released only what was applied");
        assert_eq!(
            log.term(4),
            Some(2),
            "the last released entry's term is kept"
        );
        assert_eq!(log.term(3), None);
        assert_eq!(log.entry(4), None);
        assert_eq!(terms(&log), vec![2, 3]);
        assert_eq!(
            log.slice(3, 6, 10, usize::MAX),
            Vec::new(),
            "released entries are gone"
        );

        log.applied_to(6);
        log.drop_through(6);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (7, 6, 3)
        );
    }

    #[test]
    fn a_snapshot_that_matches_the_log_keeps_the_entries_after_it() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.install(&snapshot(2, 1), 5);
        assert_eq!((log.first_index(), log.last_index()), (3, 4));
        assert_eq!(terms(&log), vec![2, 2]);
        assert_eq!((log.commit(), log.applying(), log.applied()), (2, 2, 2));
        assert!(
            log.has_pending_persists(),
            "the snapshot itself is being made durable"
        );
        log.persisted_to(5);
        assert_eq!(log.persisted(), 4);
    }

    #[test]
    fn a_snapshot_that_conflicts_with_the_log_replaces_all_of_it() {
        let mut log = log_of(&[1, 1, 1, 1]);
        log.install(&snapshot(3, 2), 5);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (4, 3, 2)
        );
        assert_eq!(
            log.entry(4),
            None,
            "the old entry 4 followed a different history"
        );
        assert_eq!(log.persisted(), 3, "durable only up to the snapshot");
        log.persisted_to(5);
        assert_eq!(log.persisted(), 3);
        assert_eq!(log.commit(), 3);

        // Beyond the log's end: everything replaced too.
        let mut short = log_of(&[1]);
        short.install(&snapshot(9, 4), 1);
        assert_eq!(
            (short.first_index(), short.last_index(), short.last_term()),
            (10, 9, 4)
        );
    }

    #[test]
    fn rejection_hints_and_up_to_date_checks() {
        let log = log_of(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(
            log.first_index_of_term_at(5, 0),
            3,
            "the run of term 2 starts at 3"
        );
        assert_eq!(log.first_index_of_term_at(5, 4), 4, "not below the floor");
        assert_eq!(log.first_index_of_term_at(2, 0), 1);
        assert_eq!(log.last_index_of_term(2, 6), Some(5));
        assert_eq!(log.last_index_of_term(3, 6), None, "no entry of term 3");
        assert_eq!(log.last_index_of_term(1, 6), Some(2));
        assert_eq!(
            log.last_index_of_term(4, 5),
            None,
            "term 4 lies after index 5"
        );
        assert!(log.is_up_to_date(6, 4));
        assert!(
            log.is_up_to_date(1, 5),
            "a later last term wins whatever the length"
        );
        assert!(
            !log.is_up_to_date(9, 3),
            "an earlier last term loses whatever the length"
        );
        assert!(
            !log.is_up_to_date(5, 4),
            "same last term: the longer log wins"
        );
    }
}
