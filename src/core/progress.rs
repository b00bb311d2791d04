//! The leader's view of one follower: how much of the log it holds and how to send it more.

use std::collections::VecDeque;

use super::types::{LogIndex, SnapshotMeta};

/// How the leader sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: one `Append` at a time until one is accepted.
    Probe,
    /// The follower is known to match: stream `Append`s optimistically, up to the in-flight limit.
    Replicate,
    /// The entries the follower needs were compacted: send the snapshot, one chunk at a time.
    Snapshot,
}

/// A snapshot on its way to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    pub meta: SnapshotMeta,
    /// The follower holds the bytes before this offset.
    pub acknowledged: u64,
    /// A chunk was asked of storage or sent, and not yet acknowledged.
    pub chunk_outstanding: bool,
    /// Heartbeat answers since the last acknowledgement.
    pub stalled_heartbeats: u8,
    /// When the transfer began or the follower last acknowledged a chunk.
    pub progressed_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In `Probe`: an `Append` is out and no answer has come yet.
    pub probe_sent: bool,
    /// In `Replicate`: the last index of each `Append` not yet acknowledged, oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// The commit index last sent, so a commit advance is told even with no new entries.
    pub commit_sent: LogIndex,
    /// Heard from in the current check-quorum period.
    pub recent_active: bool,
    /// The highest heartbeat round this follower has acknowledged.
    pub round_acknowledged: u64,
    /// `match_index` at the previous heartbeat answer, to notice a stalled stream.
    pub match_at_last_heartbeat: LogIndex,
    /// In `Snapshot`: the transfer under way.
    pub snapshot: Option<SnapshotTransfer>,
    /// Entries the follower needs are being read back from storage (the core no longer holds
    /// them): the `from` asked for and the `next_index` it was asked at. Nothing else is sent
    /// to the follower meanwhile.
    pub reading: Option<(LogIndex, LogIndex)>,
    /// Storage did not hold entries this follower needs: it gets a snapshot instead.
    pub storage_lacks: bool,
    /// The highest index, and the highest heartbeat round, the follower acknowledged in
    /// answers that did not say it is joining (see `AppendResponse::Accepted`): only these
    /// count toward quorums (`LeaderState::counted_match`). Kept apart from `match_index` and
    /// `round_acknowledged`, which steer replication, because an answer's standing vouches only
    /// for what that same answer reports: one delayed from before the follower lost its disk
    /// says "not joining" of what it held then, not of what it acknowledged since.
    pub counted_match: LogIndex,
    pub counted_round: u64,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            commit_sent: 0,
            recent_active: false,
            round_acknowledged: 0,
            match_at_last_heartbeat: 0,
            snapshot: None,
            reading: None,
            storage_lacks: false,
            counted_match: 0,
            counted_round: 0,
        }
    }

    /// Whether another `Append` may go out now.
    pub fn is_paused(&self, inflight_max: usize) -> bool {
        if self.reading.is_some() {
            return true;
        }
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_max,
            ProgressState::Snapshot => true,
        }
    }

    /// Records an acknowledgement of `index` by an answer that says whether the follower is
    /// joining; true if what counts of it toward quorums rose.
    pub fn counts_match(&mut self, index: LogIndex, joining: bool) -> bool {
        let rises = !joining && index > self.counted_match;
        if rises {
            self.counted_match = index;
        }
        rises
    }

    /// Records an acknowledgement of heartbeat `round` by an answer that says whether the
    /// follower is joining.
    pub fn counts_round(&mut self, round: u64, joining: bool) {
        if !joining {
            self.counted_round = self.counted_round.max(round);
        }
    }

    /// Records an `Append` carrying entries up to `last_index` (or none, for a commit update).
    pub fn sent(&mut self, last_index: Option<LogIndex>) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot => {}
        }
    }

    /// The follower holds everything up to `index`. Returns whether that is news.
    pub fn accepted(&mut self, index: LogIndex) -> bool {
        self.probe_sent = false;
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if self.state == ProgressState::Probe
            || (self.state == ProgressState::Snapshot
                && self
                    .snapshot
                    .as_ref()
                    .is_none_or(|transfer| index >= transfer.meta.index))
        {
            self.become_replicate();
        }
        true
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.snapshot = None;
        self.reading = None;
        self.storage_lacks = false;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// The follower needs the snapshot `meta`.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta, now_ms: u64) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
        self.reading = None;
        self.storage_lacks = false;
        self.snapshot = Some(SnapshotTransfer {
            meta,
            acknowledged: 0,
            chunk_outstanding: false,
            stalled_heartbeats: 0,
            progressed_ms: now_ms,
        });
    }

    /// Back to one-at-a-time sending, from `next_index`.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.probe_sent = false;
        self.reading = None;
        self.inflight.clear();
        self.next_index = next_index.max(self.match_index + 1);
    }
}
