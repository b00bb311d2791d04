//! Leader election: pre-vote, vote, and taking office (Raft §5.2, thesis §9.6).

use std::collections::{BTreeMap, VecDeque};

use super::message::MessageBody;
use super::node::{LeaderState, RawNode};
use super::progress::Progress;
use super::quorum::VoteResult;
use super::types::{Entry, EntryPayload, LogIndex, NodeId, Role, Term};

impl RawNode {
    /// Starts a pre-vote (which leaves every term alone) or a real election. A campaign on the
    /// leader's request (`leadership_transfer`) asks voters to ignore their leader lease.
    pub(super) fn campaign(&mut self, pre_vote: bool, leadership_transfer: bool) {
        if !self.may_campaign() {
            return;
        }
        let request_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.term += 1;
            self.vote = Some(self.config.id);
            self.role = Role::Candidate;
            self.term
        };
        self.leader = None;
        self.leader_state = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.count_votes() == VoteResult::Won {
            return self.won_vote(pre_vote, leadership_transfer);
        }
        let body = MessageBody::VoteRequest {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leadership_transfer,
        };
        let id = self.config.id;
        let peers: Vec<NodeId> = self
            .membership
            .replicas()
            .into_iter()
            .filter(|&peer| peer != id && self.membership.is_voter(peer))
            .collect();
        for peer in peers {
            self.send_with_term(peer, request_term, body.clone());
        }
    }

    /// Raft §5.2 and §5.4.1: one vote per term, only for a candidate whose log is up to date.
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        request_term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let free_to_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && request_term > self.term);
        #[cfg(feature = "planted-bugs")]
        let free_to_vote = free_to_vote
            || (self.config.planted_bugs.vote_twice_in_term && self.role == Role::Follower);
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(feature = "planted-bugs")]
        let log_ok = log_ok || self.config.planted_bugs.vote_without_log_check;
        // Votes are not limited to the current configuration's voters: the candidate counts only
        // the voters of its own configuration (thesis §4.2.1), which may include a learner not
        // yet told of its promotion, or a node whose own latest (uncommitted) entry removed it.
        // A node votes once any configuration it knows includes it, unless it is joining: a node
        // back without its data has forgotten its past votes and stays silent until admitted.
        let member = !self.joining && self.ever_member();
        let granted = free_to_vote && log_ok && member;
        if granted && !pre_vote {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        let reply_term = if granted && pre_vote {
            request_term
        } else {
            self.term
        };
        self.send_with_term(
            from,
            reply_term,
            MessageBody::VoteResponse { pre_vote, granted },
        );
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let current = match self.role {
            Role::PreCandidate => pre_vote && term == self.term + 1,
            Role::Candidate => !pre_vote && term == self.term,
            Role::Follower | Role::Leader => false,
        };
        if !current || !self.is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        match self.count_votes() {
            VoteResult::Won => self.won_vote(pre_vote, false),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn count_votes(&self) -> VoteResult {
        self.membership
            .vote_result(|voter| self.votes.get(&voter).copied())
    }

    fn won_vote(&mut self, pre_vote: bool, leadership_transfer: bool) {
        if pre_vote {
            self.campaign(false, leadership_transfer);
        } else {
            self.become_leader();
        }
    }

    /// Takes office: fresh progress for every follower and a no-op of the new term, whose commit
    /// commits everything before it (Raft §5.4.2) and opens the leader for reads.
    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate can become leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        let next_index = self.log.last_index() + 1;
        let id = self.config.id;
        let progress: BTreeMap<NodeId, Progress> = self
            .membership
            .replicas()
            .into_iter()
            .filter(|&peer| peer != id)
            .map(|peer| (peer, Progress::new(next_index)))
            .collect();
        self.leader_state = Some(LeaderState {
            progress,
            heartbeat_deadline_ms: self.now_ms + self.config.heartbeat_interval_ms,
            check_quorum_deadline_ms: self.now_ms + self.config.election_timeout_min_ms,
            term_start_index: next_index,
            round: 0,
            round_confirmed: 0,
            round_sent_at_ms: VecDeque::new(),
            round_wanted: false,
            lease_until_ms: 0,
            lease_forfeited: false,
            reads_awaiting_round: VecDeque::new(),
            reads_awaiting_term_commit: Vec::new(),
            transfer: None,
            join_pool: VecDeque::new(),
            forwards_seen: Default::default(),
        });
        // A brand-new cluster's first entry records its founding configuration, so that nodes
        // joining later learn it from the log; otherwise a no-op.
        let payload = if next_index == 1 {
            EntryPayload::Membership(self.membership.clone(), None)
        } else {
            EntryPayload::Noop
        };
        self.log.append(Entry {
            term: self.term,
            index: next_index,
            payload,
        });
        self.log_changed_from(next_index);
    }
}
