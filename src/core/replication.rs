//! Log replication (Raft §5.3), the commit rule (§5.4.2), the leader's timers (heartbeat,
//! check-quorum) and leadership transfer (thesis §3.10).

use super::io::Action;
use super::membership::Membership;
use super::message::{AppendResponse, MessageBody, RejectHint};
use super::node::{follower_progress, RawNode, Transfer};
use super::progress::ProgressState;
use super::quorum::VoteResult;
use super::types::{Entry, LogIndex, NodeId, Role};

impl RawNode {
    pub(super) fn tick_leader(&mut self) {
        let now_ms = self.now_ms;
        let check_quorum = self.config.check_quorum;
        #[cfg(feature = "planted-bugs")]
        let check_quorum = check_quorum && !self.config.planted_bugs.leader_ignores_check_quorum;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        if leader
            .transfer
            .is_some_and(|transfer| now_ms >= transfer.deadline_ms)
        {
            leader.transfer = None;
        }
        if now_ms >= leader.check_quorum_deadline_ms {
            let id = self.config.id;
            let heard = self.membership.vote_result(|voter| {
                let active = voter == id
                    || leader
                        .progress
                        .get(&voter)
                        .is_some_and(|progress| progress.recent_active);
                active.then_some(true)
            });
            for progress in leader.progress.values_mut() {
                progress.recent_active = false;
            }
            leader.check_quorum_deadline_ms = now_ms + self.config.election_timeout_min_ms;
            if check_quorum && heard != VoteResult::Won {
                let term = self.term;
                return self.become_follower(term, None);
            }
        }
        if now_ms >= leader.heartbeat_deadline_ms {
            leader.heartbeat_deadline_ms = now_ms + self.config.heartbeat_interval_ms;
            self.broadcast_heartbeat();
        }
    }

    /// Sends every follower what it lacks, within the flow-control limits.
    pub(super) fn send_appends(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        let followers_min = leader
            .progress
            .iter()
            .map(|(&peer, progress)| leader.counted_match(peer, progress))
            .min();
        let everywhere =
            followers_min.map_or(self.log.persisted(), |min| min.min(self.log.persisted()));
        self.durable_everywhere = self.durable_everywhere.max(everywhere);
        let peers: Vec<NodeId> = leader.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer);
        }
    }

    fn send_append(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let commit = self.log.commit();
        let first_held = self.log.first_index();
        let (inflight_max, entries_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.entries_per_message_max,
            self.config.bytes_per_message_max,
        );
        let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
            return;
        };
        let behind_memory = progress.next_index < first_held;
        if progress.state == ProgressState::Snapshot || (behind_memory && progress.storage_lacks) {
            return self.send_snapshot(peer);
        }
        if behind_memory {
            return self.read_back(peer);
        }
        loop {
            let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
                return;
            };
            if progress.is_paused(inflight_max) {
                return;
            }
            let has_entries = progress.next_index <= last_index;
            // An empty append still probes a follower whose match is unknown (a node just
            // added, whose next index starts past the leader's log).
            let needs_probe =
                progress.state == ProgressState::Probe && progress.match_index < last_index;
            if !has_entries && progress.commit_sent >= commit && !needs_probe {
                return;
            }
            let next_index = progress.next_index;
            let probing = progress.state == ProgressState::Probe;
            let prev_log_index = next_index - 1;
            let Some(prev_log_term) = self.log.term(prev_log_index) else {
                return self.send_snapshot(peer);
            };
            let entries: Vec<Entry> =
                self.log
                    .slice(next_index, last_index, entries_max, bytes_max);
            let last_sent = entries.last().map(|entry| entry.index);
            self.push_append(peer, prev_log_index, prev_log_term, entries);
            if probing || last_sent.is_none() {
                return;
            }
        }
    }

    /// Sends `peer` an append of `entries` after `prev_log_index` (of `prev_log_term`), with
    /// the commit index, and records it in the follower's progress.
    fn push_append(
        &mut self,
        peer: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: u64,
        entries: Vec<Entry>,
    ) {
        let commit = self.log.commit();
        let id = self.config.id;
        let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
            return;
        };
        progress.sent(entries.last().map(|entry| entry.index));
        progress.commit_sent = commit;
        let message = super::message::Message {
            from: id,
            to: peer,
            term: self.term,
            body: MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: commit,
                durable_everywhere: self.durable_everywhere,
            },
        };
        // What followers refuse as malformed, a leader must never send.
        if let Err(malformed) = super::message_check::check_message(&message) {
            panic!("leader {id} sends a malformed append ({malformed}): {message:?}");
        }
        self.messages.push(message);
    }

    /// The follower needs entries the core no longer holds in memory: ask storage for them,
    /// from the one before them (for its term) up to the first held in memory.
    fn read_back(&mut self, peer: NodeId) {
        let first_held = self.log.first_index();
        let (entries_max, bytes_max) = (
            self.config.entries_per_message_max,
            self.config.bytes_per_message_max,
        );
        let inflight_max = self.config.inflight_messages_max;
        let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
            return;
        };
        if progress.is_paused(inflight_max) {
            return;
        }
        let next = progress.next_index;
        debug_assert!(next < first_held, "entries {next}.. are held in memory");
        // Entry 0 does not exist; its term is 0.
        let from = (next - 1).max(1);
        progress.reading = Some((from, next));
        self.events.push(Action::ReadEntries {
            peer,
            from,
            through: first_held - 1,
            entries_max: entries_max + usize::from(from < next),
            bytes_max,
        });
    }

    /// Storage read back entries for `peer` (asked by [`RawNode::read_back`]): send them if
    /// the follower still needs them; if storage no longer held them, send the snapshot.
    pub(super) fn entries_read(&mut self, peer: NodeId, from: LogIndex, mut entries: Vec<Entry>) {
        let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
            return;
        };
        let Some((asked_from, next)) = progress.reading else {
            return;
        };
        if asked_from != from {
            return;
        }
        progress.reading = None;
        if progress.state == ProgressState::Snapshot || progress.next_index != next {
            return self.send_append(peer);
        }
        let prev_log_term = if from < next {
            match entries.first() {
                Some(prev) if prev.index == from => Some(entries.remove(0).term),
                _ => None,
            }
        } else {
            Some(0)
        };
        let holds = prev_log_term.is_some() && entries.first().is_some_and(|e| e.index == next);
        if !holds {
            progress.storage_lacks = true;
            return self.send_snapshot(peer);
        }
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                next + offset as LogIndex,
                "storage read back entries with a gap: {from}.. asked"
            );
        }
        let prev_log_term = prev_log_term.expect("checked above");
        self.push_append(peer, next - 1, prev_log_term, entries);
        self.send_append(peer);
    }

    /// Follower side of §5.3: the consistency check, then merge and commit.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        self.follow(from);
        let commit = self.log.commit();
        let response = if prev_log_index < commit {
            AppendResponse::Accepted {
                match_index: commit,
                joining: self.joining,
            }
        } else if self.log.term(prev_log_index) == Some(prev_log_term)
            || self.skips_consistency_check(prev_log_index)
        {
            let (last_new, changed_from) = self.log.merge(prev_log_index, entries);
            if let Some(from) = changed_from {
                self.log_changed_from(from);
            }
            #[cfg(feature = "planted-bugs")]
            let last_new = if self.config.planted_bugs.follower_commit_past_new_entries {
                self.log.last_index()
            } else {
                last_new
            };
            self.log.commit_to(leader_commit.min(last_new));
            AppendResponse::Accepted {
                match_index: last_new,
                joining: self.joining,
            }
        } else {
            let hint = if prev_log_index > self.log.last_index() {
                RejectHint {
                    conflict_term: None,
                    conflict_index: self.log.last_index() + 1,
                }
            } else {
                RejectHint {
                    conflict_term: self.log.term(prev_log_index),
                    conflict_index: self.log.first_index_of_term_at(prev_log_index, commit + 1),
                }
            };
            AppendResponse::Rejected {
                rejected_index: prev_log_index,
                hint,
            }
        };
        self.send(from, MessageBody::AppendResponse(response));
    }

    #[cfg(feature = "planted-bugs")]
    fn skips_consistency_check(&self, prev_log_index: LogIndex) -> bool {
        self.config.planted_bugs.append_without_consistency_check
            && prev_log_index <= self.log.last_index()
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn skips_consistency_check(&self, _prev_log_index: LogIndex) -> bool {
        false
    }

    /// Heard from the leader of the current term: follow it, and promise not to vote for a while.
    pub(super) fn follow(&mut self, leader: NodeId) {
        assert_ne!(
            self.role,
            Role::Leader,
            "election safety violated: node {} leads term {} and hears from leader {leader}",
            self.config.id,
            self.term
        );
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.vote_lockout_until_ms = self.now_ms + self.config.election_timeout_min_ms;
        self.reset_election_timer();
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, response: AppendResponse) {
        let last_index = self.log.last_index();
        let Some(progress) = follower_progress(&mut self.leader_state, from) else {
            return;
        };
        progress.recent_active = true;
        match response {
            AppendResponse::Accepted {
                match_index,
                joining,
            } => {
                if match_index > last_index {
                    return;
                }
                let counted = progress.counts_match(match_index, joining);
                if progress.accepted(match_index) {
                    self.maybe_commit();
                    self.maybe_send_timeout_now(from);
                } else if counted {
                    self.maybe_commit();
                }
            }
            AppendResponse::Rejected {
                rejected_index,
                hint,
            } => {
                // The follower's log ends below what it was known to match: it lost its data
                // (a disk replaced; an old rejection delayed this long costs only a re-probe).
                // Start over from where its log ends, or a change that needs its
                // acknowledgement could wait forever.
                if hint.conflict_term.is_none() && hint.conflict_index <= progress.match_index {
                    progress.match_index = hint.conflict_index.saturating_sub(1);
                    progress.counted_match = progress.counted_match.min(progress.match_index);
                    progress.become_probe(hint.conflict_index);
                    return;
                }
                let stale = rejected_index <= progress.match_index
                    || (progress.state == ProgressState::Probe
                        && rejected_index + 1 != progress.next_index);
                if stale {
                    return;
                }
                let next_index = match hint.conflict_term {
                    Some(term) => self
                        .log
                        .last_index_of_term(term, rejected_index)
                        .map_or(hint.conflict_index, |index| index + 1),
                    None => hint.conflict_index,
                };
                progress.become_probe(next_index.min(rejected_index));
            }
        }
    }

    /// Raft §5.4.2: commit the highest index stored on a majority, but only by counting replicas
    /// of an entry from the current term.
    pub(super) fn maybe_commit(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        let id = self.config.id;
        let persisted = self.log.persisted();
        #[cfg(feature = "planted-bugs")]
        let persisted = if self.config.planted_bugs.leader_counts_unpersisted_entries {
            self.log.last_index()
        } else {
            persisted
        };
        #[cfg(feature = "planted-bugs")]
        let (joining_counts, joint_by_new_voters) = (
            self.config.planted_bugs.joining_counts_toward_quorum,
            self.config.planted_bugs.joint_commit_by_new_voters_only,
        );
        #[cfg(not(feature = "planted-bugs"))]
        let (joining_counts, joint_by_new_voters) = (false, false);
        let index_of = |voter| {
            if voter == id {
                persisted
            } else if joining_counts {
                leader
                    .progress
                    .get(&voter)
                    .map_or(0, |progress| progress.match_index)
            } else {
                (leader.progress.get(&voter))
                    .map_or(0, |progress| leader.counted_match(voter, progress))
            }
        };
        let candidate = if joint_by_new_voters && self.membership.is_joint() {
            Membership::with_voters(self.membership.voters.iter().copied())
                .committed_index(index_of)
        } else {
            self.membership.committed_index(index_of)
        };
        if candidate <= self.log.commit() {
            return;
        }
        let own_term = self.log.term(candidate) == Some(self.term);
        #[cfg(feature = "planted-bugs")]
        let own_term = own_term || self.config.planted_bugs.commit_previous_term_by_counting;
        if !own_term {
            return;
        }
        let term_start_index = leader.term_start_index;
        let was_term_committed = self.log.commit() >= term_start_index;
        self.log.commit_to(candidate);
        if !was_term_committed && candidate >= term_start_index {
            self.on_term_committed();
        }
        self.after_leader_commit();
    }

    pub(super) fn transfer_leadership(&mut self, to: NodeId) {
        if self.role != Role::Leader || to == self.config.id || !self.is_voter(to) {
            return;
        }
        let deadline_ms = self.now_ms + self.config.election_timeout_min_ms;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        if leader.transfer.is_some_and(|transfer| transfer.to == to) {
            return;
        }
        leader.transfer = Some(Transfer {
            to,
            deadline_ms,
            timeout_now_sent: false,
        });
        // The target may win an election at any moment now: no more lease reads.
        leader.lease_until_ms = 0;
        self.maybe_send_timeout_now(to);
    }

    /// Once the transfer target holds the whole log, tell it to campaign.
    fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let Some(transfer) = leader.transfer.as_mut() else {
            return;
        };
        let caught_up = leader
            .progress
            .get(&peer)
            .is_some_and(|progress| progress.match_index == last_index);
        if transfer.to == peer && !transfer.timeout_now_sent && caught_up {
            transfer.timeout_now_sent = true;
            leader.lease_forfeited = true;
            self.send(peer, MessageBody::TimeoutNow);
        }
    }
}
