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
