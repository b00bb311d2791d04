//! Linearizable reads without writing to the log (Raft thesis §6.4): ReadIndex, confirmed by a
//! heartbeat round that a quorum acknowledges, or a leader lease earned by such rounds (§6.4.1).
//!
//! A read is served once the state machine has applied its read index, the commit index when the
//! read arrived (taken only after the leader has committed an entry of its own term).

use super::io::{Action, RequestId};
use super::message::MessageBody;
use super::node::RawNode;
use super::progress::ProgressState;
use super::read_forwarding::ReadWaiter;
use super::types::{LogIndex, NodeId, ReadMode, Refusal};

/// Unconfirmed heartbeat rounds remembered for the lease; older ones are forgotten.
const ROUNDS_TRACKED_MAX: usize = 1024;

impl RawNode {
    pub(super) fn read(&mut self, id: RequestId) {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.read_without_read_index
            && self.role == super::types::Role::Leader
        {
            let applied = self.log.applied();
            self.reads_awaiting_apply.push_back((id, applied));
            return;
        }
        if self.leader_state.is_some() {
            return self.read_as_leader(ReadWaiter::Local(id));
        }
        if self.forwards_reads_to().is_some() {
            return self.forward_read(id);
        }
        let reason = Refusal::NotLeader {
            leader_hint: self.leader,
        };
        self.events.push(Action::ReadRefused { id, reason });
    }

    /// A read this leader confirms, its own or a follower's; nothing if not the leader.
    pub(super) fn read_as_leader(&mut self, waiter: ReadWaiter) {
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        if self.log.commit() < leader.term_start_index {
            leader.reads_awaiting_term_commit.push(waiter);
            return;
        }
        self.register_read(waiter);
    }

    /// Gives a read its read index; it waits for the next round unless the lease covers it.
    fn register_read(&mut self, waiter: ReadWaiter) {
        let commit = self.log.commit();
        if self.lease_holds_at(self.now_ms) {
            return self.read_index_confirmed(waiter, commit);
        }
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        leader
            .reads_awaiting_round
            .push_back((waiter, commit, leader.round + 1));
        leader.round_wanted = true;
    }

    /// Whether this node, leading, would answer a read from its lease at local time `now_ms`,
    /// without a heartbeat round. The one rule reads follow; public so that the simulator can
    /// check what the lease promises: no rival leads while it holds (§6.4.1).
    pub fn lease_holds_at(&self, now_ms: u64) -> bool {
        self.config.read_mode == ReadMode::Lease
            && self.leader_state.as_ref().is_some_and(|leader| {
                leader.transfer.is_none()
                    && !leader.lease_forfeited
                    && now_ms < leader.lease_until_ms
            })
    }

    /// Until when (this node's clock) its lease runs, as leader; 0 otherwise.
    pub fn lease_until_ms(&self) -> u64 {
        self.leader_state
            .as_ref()
            .map_or(0, |leader| leader.lease_until_ms)
    }

    /// The leader's no-op committed: reads that arrived before it can now be given an index.
    pub(super) fn on_term_committed(&mut self) {
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let waiting = std::mem::take(&mut leader.reads_awaiting_term_commit);
        for waiter in waiting {
            self.register_read(waiter);
        }
    }

    /// Sends the round that reads registered since the last one wait for, keeping at most one
    /// round in flight: reads that arrive while a round is out wait for the next, sent as soon
    /// as that one is confirmed. A busy leader then confirms many reads per round instead of
    /// sending a round per read. A round out for a heartbeat interval no longer holds the next
    /// back (its answers may have been lost).
    pub(super) fn flush_read_rounds(&mut self) {
        let now_ms = self.now_ms;
        let patience_ms = self.config.heartbeat_interval_ms;
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        if !leader.round_wanted {
            return;
        }
        let round_in_flight = leader
            .round_sent_at_ms
            .back()
            .is_some_and(|&(round, sent_ms)| {
                round > leader.round_confirmed && now_ms < sent_ms + patience_ms
            });
        if !round_in_flight {
            self.broadcast_heartbeat();
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit();
        let now_ms = self.now_ms;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        leader.round += 1;
        leader.round_wanted = false;
        let round = leader.round;
        if leader.round_sent_at_ms.len() == ROUNDS_TRACKED_MAX {
            leader.round_sent_at_ms.pop_front();
        }
        leader.round_sent_at_ms.push_back((round, now_ms));
        let beats: Vec<(NodeId, LogIndex)> = leader
            .progress
            .iter()
            .map(|(&peer, progress)| (peer, commit.min(progress.match_index)))
            .collect();
        for (peer, commit) in beats {
            self.send(peer, MessageBody::Heartbeat { commit, round });
        }
        self.confirm_rounds();
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, round: u64) {
        self.follow(from);
        self.log.commit_to(commit.min(self.log.last_index()));
        let joining = self.joining;
        self.send(from, MessageBody::HeartbeatResponse { round, joining });
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64, joining: bool) {
        let last_index = self.log.last_index();
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let Some(progress) = leader.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.round_acknowledged = progress.round_acknowledged.max(round);
        progress.counts_round(round, joining);
        match progress.state {
            ProgressState::Snapshot => {}
            ProgressState::Probe => progress.probe_sent = false,
            ProgressState::Replicate => {
                // No progress over a whole heartbeat interval with appends out: they were lost.
                let stalled = progress.match_index < last_index
                    && progress.match_index == progress.match_at_last_heartbeat
                    && !progress.inflight.is_empty();
                if stalled {
                    let next_index = progress.match_index + 1;
                    progress.become_probe(next_index);
                }
            }
        }
        progress.match_at_last_heartbeat = progress.match_index;
        if progress.state == ProgressState::Snapshot {
            self.snapshot_heartbeat(from);
        }
        self.confirm_rounds();
    }

    /// Finds the highest round a quorum acknowledged; releases its reads and extends the lease.
    fn confirm_rounds(&mut self) {
        let id = self.config.id;
        let lease_duration_ms = self.config.lease_duration_ms();
        let lease_mode = self.config.read_mode == ReadMode::Lease;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let confirmed = self.membership.committed_index(|voter| {
            if voter == id {
                leader.round
            } else {
                (leader.progress.get(&voter))
                    .map_or(0, |progress| leader.counted_round(voter, progress))
            }
        });
        if confirmed <= leader.round_confirmed {
            return;
        }
        leader.round_confirmed = confirmed;
        let mut sent_at_ms = None;
        while let Some(&(round, at_ms)) = leader.round_sent_at_ms.front() {
            if round > confirmed {
                break;
            }
            leader.round_sent_at_ms.pop_front();
            if round == confirmed {
                sent_at_ms = Some(at_ms);
            }
        }
        if let (true, Some(at_ms), None) = (lease_mode, sent_at_ms, leader.transfer) {
            leader.lease_until_ms = leader.lease_until_ms.max(at_ms + lease_duration_ms);
        }
        while let Some(leader) = self.leader_state.as_mut() {
            let Some(&(waiter, index, round)) = leader.reads_awaiting_round.front() else {
                break;
            };
            if round > confirmed {
                break;
            }
            leader.reads_awaiting_round.pop_front();
            self.read_index_confirmed(waiter, index);
        }
    }

    /// Answers confirmed reads whose index the state machine has reached.
    pub(super) fn release_applied_reads(&mut self) {
        let applied = self.log.applied();
        while self
            .reads_awaiting_apply
            .front()
            .is_some_and(|&(_, index)| index <= applied)
        {
            let (id, index) = self
                .reads_awaiting_apply
                .pop_front()
                .expect("checked non-empty");
            self.events.push(Action::ReadReady { id, index });
        }
    }
}
