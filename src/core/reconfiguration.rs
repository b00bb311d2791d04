//! Membership changes (Raft thesis ch. 4): which configuration is in effect, how a leader makes
//! a change, and the rules that keep changes safe.
//!
//! A node always uses the latest configuration in its log, committed or not; if that entry is
//! truncated, the previous one is in effect again. A leader makes one change at a time, and only
//! after it has committed an entry of its own term (otherwise a change from a previous leader
//! that did not commit could combine with its own into two disjoint majorities). A change of more
//! than one voter goes through a joint configuration, which the leader leaves as soon as it
//! commits. A leader that is not a voter of the committed configuration steps down.

use super::io::{Action, RequestId};
use super::membership::{Membership, MembershipChange, MembershipError};
use super::message::MessageBody;
use super::node::RawNode;
use super::progress::Progress;
use super::types::{Admission, Entry, EntryPayload, LogIndex, NodeId, Refusal, Role};

impl RawNode {
    /// The configuration in effect at `index`: the last one at or before it in the log, or the
    /// snapshot's.
    pub(super) fn membership_at(&self, index: LogIndex) -> Membership {
        self.membership_in_effect_at(index).clone()
    }

    /// The configuration in effect at `index`, borrowed (asked on every step: no copy).
    pub fn membership_in_effect_at(&self, index: LogIndex) -> &Membership {
        self.membership_log
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or(&self.snapshot.membership, |(_, membership)| membership)
    }

    /// The log changed from `from` on (appended, or truncated and appended): forget the
    /// configurations that were cut and pick up the new ones.
    pub(super) fn log_changed_from(&mut self, from: LogIndex) {
        self.membership_log.retain(|(at, _)| *at < from);
        self.admission_log.retain(|(at, _)| *at < from);
        if self.admission_at.is_some_and(|at| at >= from) {
            self.admission_at = None;
        }
        let last = self.log.last_index();
        let mine = self.own_join_admission();
        for index in from.max(self.log.first_index())..=last {
            if let Some(Entry {
                payload: EntryPayload::Membership(membership, admission),
                ..
            }) = self.log.entry(index)
            {
                self.membership_log.push((index, membership.clone()));
                if let Some(admission) = admission {
                    self.admission_log.push((index, *admission));
                }
                let for_me = mine.is_some() && *admission == mine;
                if self.joining && for_me && self.admission_at.is_none() {
                    self.admission_at = Some(index);
                }
            }
        }
        self.adopt_latest_membership();
    }

    /// What an entry made for this start's join request carries (none without a nonce).
    fn own_join_admission(&self) -> Option<Admission> {
        (self.config.join_nonce != 0).then_some(Admission {
            node: self.config.id,
            nonce: self.config.join_nonce,
        })
    }

    /// A joining node whose log holds, durably, a configuration entry made for its own request
    /// was admitted by the leader that appended it: it votes from now on.
    pub(super) fn admit_once_durable(&mut self) {
        if let Some(at) = self.admission_at {
            if self.log.persisted() >= at {
                self.admission_at = None;
                if self.joining {
                    self.joining = false;
                    self.events.push(Action::Admitted);
                }
            }
        }
    }

    /// A snapshot was installed: its configuration is the base. A joiner whose admission the
    /// snapshot covers (the entry made for its request was compacted away) learns it here, and
    /// counts as admitted once the snapshot is durable.
    pub(super) fn installed_snapshot(&mut self, meta: super::types::SnapshotMeta) {
        let mine = self.own_join_admission();
        if self.joining && mine.is_some_and(|mine| meta.admissions.contains(&mine)) {
            self.admission_at = Some(
                self.admission_at
                    .map_or(meta.index, |at| at.min(meta.index)),
            );
        }
        self.membership_log.retain(|(at, _)| *at > meta.index);
        self.admission_log.retain(|(at, _)| *at > meta.index);
        self.snapshot = meta;
        self.adopt_latest_membership();
    }

    /// Makes the latest configuration the one in effect; a leader starts or stops replicating
    /// to the nodes it adds or removes.
    pub(super) fn adopt_latest_membership(&mut self) {
        let latest = self.membership_log.last().map_or_else(
            || self.snapshot.membership.clone(),
            |(_, membership)| membership.clone(),
        );
        if latest == self.membership {
            return;
        }
        self.membership = latest;
        let id = self.config.id;
        if self.removed_at.is_some() && self.latest_config_with_me() > self.removed_at {
            // Added again (through the join workflow) after it was removed.
            self.removed_at = None;
        }
        let next_index = self.log.last_index() + 1;
        if let Some(leader) = self.leader_state.as_mut() {
            let replicas = self.membership.replicas();
            leader.progress.retain(|peer, _| replicas.contains(peer));
            for peer in replicas.into_iter().filter(|&peer| peer != id) {
                leader
                    .progress
                    .entry(peer)
                    .or_insert_with(|| Progress::new(next_index));
            }
        }
    }

    /// Whether the configuration in effect is not committed yet (a change is in flight).
    pub fn membership_change_pending(&self) -> bool {
        self.membership.is_joint()
            || self
                .membership_log
                .last()
                .is_some_and(|(at, _)| *at > self.log.commit())
    }

    /// Whether this node may stand for election: it is a voter of the configuration in effect,
    /// or of the last committed one while a later entry (say, one removing it) has not committed
    /// — without that, a leader that removed itself and lost its quorum before the removal
    /// committed could leave the remaining voters unable to elect anyone.
    pub(super) fn may_campaign(&self) -> bool {
        let id = self.config.id;
        if self.joining || self.removed_at.is_some() {
            return false;
        }
        if self.membership.is_voter(id) {
            return true;
        }
        let commit = self.log.commit();
        let pending = self
            .membership_log
            .last()
            .is_some_and(|(at, _)| *at > commit);
        pending && self.membership_at(commit).is_voter(id)
    }

    /// Where this node stands in the configuration committed so far.
    pub fn member_state(&self) -> super::node::MemberState {
        use super::node::MemberState;
        let id = self.config.id;
        if self.joining {
            return MemberState::ConnectionPending;
        }
        if self.removed_at.is_some() {
            return MemberState::Removed;
        }
        let committed = self.membership_in_effect_at(self.log.commit());
        if committed.voters.contains(&id) {
            MemberState::Voter
        } else if committed.learners.contains(&id) {
            MemberState::Learner
        } else if self.ever_member() && !self.membership.is_member(id) {
            MemberState::Removed
        } else {
            MemberState::ConnectionPending
        }
    }

    /// Whether the leader replicates to this node, as far as it knows: it is not joining, not
    /// told it was removed, and a member of the configuration in effect. Only such a node passes
    /// reads and writes on to the leader: a write or read it passed on would otherwise wait for
    /// an entry it never receives (the caller answers "not leader" with the leader's address).
    pub(super) fn is_replicated_member(&self) -> bool {
        !self.joining && self.removed_at.is_none() && self.membership.is_member(self.config.id)
    }

    /// The index of the latest configuration this node holds that has it as a member (the
    /// snapshot's counts at the snapshot's index); `None` if none does.
    fn latest_config_with_me(&self) -> Option<LogIndex> {
        let id = self.config.id;
        self.membership_log
            .iter()
            .rev()
            .find(|(_, membership)| membership.is_member(id))
            .map(|(at, _)| *at)
            .or_else(|| {
                self.snapshot
                    .membership
                    .is_member(id)
                    .then_some(self.snapshot.index)
            })
    }

    /// A peer says the configuration committed at `config_index` does not have this node. It is
    /// believed unless this node is joining (a removed node may come back that way) or holds a
    /// configuration with itself from that index on (it was added again). From then on it does
    /// not campaign, and reports itself removed.
    pub(super) fn handle_removed(&mut self, config_index: LogIndex) {
        if self.joining || self.latest_config_with_me() >= Some(config_index) {
            return;
        }
        if self.removed_at.is_none() {
            self.removed_at = Some(config_index);
            if self.role != Role::Follower && self.role != Role::Leader {
                let term = self.term;
                self.become_follower(term, None);
            }
        }
    }

    /// A node not in the committed configuration (nor in the one in effect) that speaks as a
    /// member — it campaigns or answers as a follower — was removed without receiving the entry
    /// that says so (replication to it stopped there): tell it, so that it stops.
    pub(super) fn tell_if_removed(&mut self, from: NodeId, body: &MessageBody) {
        let speaks_as_member = matches!(
            body,
            MessageBody::VoteRequest { .. }
                | MessageBody::AppendResponse(_)
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::SnapshotAck { .. }
        );
        if !speaks_as_member || self.joining || self.membership.is_member(from) {
            return;
        }
        let commit = self.log.commit();
        let committed_at = self
            .membership_log
            .iter()
            .rev()
            .find(|(at, _)| *at <= commit)
            .map_or(self.snapshot.index, |(at, _)| *at);
        if committed_at == 0 || self.membership_at(commit).is_member(from) {
            return;
        }
        self.send(
            from,
            MessageBody::Removed {
                config_index: committed_at,
            },
        );
    }

    /// Whether this node appears in any configuration it knows (as voter or learner).
    pub(super) fn ever_member(&self) -> bool {
        let id = self.config.id;
        self.snapshot.membership.is_member(id)
            || self
                .membership_log
                .iter()
                .any(|(_, membership)| membership.is_member(id))
    }

    /// Leader: validates a change and appends it; answered like a proposal.
    pub(super) fn change_membership(&mut self, id: RequestId, change: MembershipChange) {
        let action = match self.make_change(change) {
            Ok((index, term)) => Action::ProposalAccepted { id, index, term },
            Err(reason) => Action::ProposalRefused { id, reason },
        };
        self.events.push(action);
    }

    /// Leader: validates a change and appends it; returns where.
    pub(super) fn make_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<(LogIndex, super::types::Term), Refusal> {
        self.make_change_admitting(change, None)
    }

    /// [`RawNode::make_change`] for a joiner's request, which the entry names (`admission`).
    pub(super) fn make_change_admitting(
        &mut self,
        change: MembershipChange,
        admission: Option<Admission>,
    ) -> Result<(LogIndex, super::types::Term), Refusal> {
        let next = self.check_change(&change)?;
        let index = self.log.last_index() + 1;
        let term = self.term;
        self.log.append(Entry {
            term,
            index,
            payload: EntryPayload::Membership(next, admission),
        });
        self.log_changed_from(index);
        Ok((index, term))
    }

    fn check_change(&self, change: &MembershipChange) -> Result<Membership, Refusal> {
        let Some(leader) = self.leader_state.as_ref() else {
            return Err(Refusal::NotLeader {
                leader_hint: self.leader,
            });
        };
        if leader.transfer.is_some() {
            return Err(Refusal::TransferInProgress);
        }
        let invalid = Refusal::InvalidMembership;
        let own_term_committed = self.log.commit() >= leader.term_start_index;
        #[cfg(feature = "planted-bugs")]
        let own_term_committed = own_term_committed
            || self
                .config
                .planted_bugs
                .change_membership_before_own_term_commit;
        if !own_term_committed {
            return Err(invalid(MembershipError::LeaderNotReady));
        }
        let pending = self
            .membership_log
            .last()
            .is_some_and(|(at, _)| *at > self.log.commit());
        #[cfg(feature = "planted-bugs")]
        let pending = pending && !self.config.planted_bugs.two_changes_at_once;
        if pending || self.membership.is_joint() {
            return Err(invalid(MembershipError::ChangeInProgress));
        }
        let next = self.membership.apply(change).map_err(invalid)?;
        // A new voter must hold nearly the whole log, or it could make the next quorum wait for
        // it (or, if the leader fails, block elections: thesis §4.2.1).
        let last = self.log.last_index();
        let lag_max = self.config.promotion_lag_max_entries;
        for voter in next
            .voters
            .iter()
            .filter(|&&voter| !self.membership.is_voter(voter) && voter != self.config.id)
        {
            let matched = leader
                .progress
                .get(voter)
                .map_or(0, |progress| progress.match_index);
            // It must hold every committed entry too (among them the one that added it, so it
            // knows it is a member and will vote when asked).
            if matched + lag_max < last || matched < self.log.commit() {
                return Err(invalid(MembershipError::TooFarBehind(*voter)));
            }
        }
        Ok(next)
    }

    /// Leader, after its commit index advanced: leave a committed joint configuration, and step
    /// down if the committed configuration no longer has this node as a voter.
    pub(super) fn after_leader_commit(&mut self) {
        let commit = self.log.commit();
        let latest_committed = self
            .membership_log
            .last()
            .is_none_or(|(at, _)| *at <= commit);
        if !latest_committed || self.role != Role::Leader {
            return;
        }
        if self.membership.is_joint() {
            let index = self.log.last_index() + 1;
            let next = self.membership.leave_joint();
            self.log.append(Entry {
                term: self.term,
                index,
                payload: EntryPayload::Membership(next, None),
            });
            self.log_changed_from(index);
            return;
        }
        if !self.membership.is_voter(self.config.id) {
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
