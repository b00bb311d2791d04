//! The node: its state, the one `step` entry point that dispatches every input, and
//! `take_actions`, which turns the state changes of a batch of inputs into actions.
//!
//! Role-specific handling lives beside this file: `election.rs` (pre-vote, vote, becoming leader),
//! `replication.rs` (appends, commit, leadership transfer), `reads.rs` (ReadIndex and lease).

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{Config, ConfigError};
use super::io::{Action, Input, PersistId, Proposal, RequestId};
use super::log::RaftLog;
use super::membership::Membership;
use super::message::{Message, MessageBody};
use super::message_check::check_message;
use super::progress::Progress;
use super::read_forwarding::{ForwardedReads, ReadWaiter};
use super::types::{
    Admission, Entry, HardState, LogIndex, NodeId, ReadMode, Refusal, Role, SnapshotMeta, Term,
};

/// What storage handed back after a restart: the durable hard state, the snapshot the state
/// machine was restored from, and the log after it.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// Contiguous from the snapshot's index + 1 (or from 1).
    pub entries: Vec<Entry>,
}

/// A snapshot of the node's state, for operators and for the simulator's checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub persisted: LogIndex,
    pub last_index: LogIndex,
    /// Where this node stands in the committed configuration.
    pub member: MemberState,
    /// Peer messages dropped as impossible from an honest peer: malformed ones, and a second
    /// leader of this node's own term. Always 0 in a healthy cluster (the simulators check
    /// it); anything else means a broken or hostile peer.
    pub refused_messages: u64,
}

/// A node's place in the cluster, as far as it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Not (yet) in a committed configuration: a joiner waits here for the leader's first
    /// append after its addition commits.
    ConnectionPending,
    Learner,
    Voter,
    /// Was a member; the latest configuration no longer includes it.
    Removed,
}

/// State only a leader has.
#[derive(Debug)]
pub(super) struct LeaderState {
    /// One per voter other than this node.
    pub progress: BTreeMap<NodeId, Progress>,
    pub heartbeat_deadline_ms: u64,
    pub check_quorum_deadline_ms: u64,
    /// The index of this term's no-op: reads wait until it commits.
    pub term_start_index: LogIndex,
    /// The last heartbeat round sent, and the highest one a quorum acknowledged.
    pub round: u64,
    pub round_confirmed: u64,
    /// `(round, sent at)` of rounds not yet confirmed, for the lease.
    pub round_sent_at_ms: VecDeque<(u64, u64)>,
    /// A read is waiting for a round that has not been sent yet.
    pub round_wanted: bool,
    pub lease_until_ms: u64,
    /// A TimeoutNow left in this term: its target may campaign at any later moment (the
    /// message can be delayed past the transfer's deadline) with votes that ignore the
    /// lockout, so no lease can be trusted again in this term; reads take a round.
    pub lease_forfeited: bool,
    /// Reads (this node's or a follower's) waiting for their round: `(waiter, read index,
    /// round)`.
    pub reads_awaiting_round: VecDeque<(ReadWaiter, LogIndex, u64)>,
    /// Reads that arrived before this term's no-op committed.
    pub reads_awaiting_term_commit: Vec<ReadWaiter>,
    pub transfer: Option<Transfer>,
    /// Nodes asking to join, first come first served.
    pub join_pool: VecDeque<super::join::PendingJoin>,
    /// Forwarded batches taken in this term, so that none is appended twice.
    pub forwards_seen: super::forwarding::ForwardsSeen,
}

impl LeaderState {
    /// The highest index of `peer`'s that counts toward quorums: only what it acknowledged in
    /// answers that did not say it is joining — a joining node started without its data, so
    /// it may have forgotten what it acknowledged and the terms it saw, and a leader of a term
    /// it forgot could commit with it — unless this leader admitted it (removed it, or added
    /// it as a learner, since: what it holds came from this leader;
    /// `PendingJoin::admitted_here`).
    pub fn counted_match(&self, peer: NodeId, progress: &Progress) -> LogIndex {
        if self.admitted_here(peer) {
            progress.match_index
        } else {
            progress.counted_match
        }
    }

    /// The highest heartbeat round of `peer`'s that counts toward quorums, on the same terms
    /// as [`Self::counted_match`].
    pub fn counted_round(&self, peer: NodeId, progress: &Progress) -> u64 {
        if self.admitted_here(peer) {
            progress.round_acknowledged
        } else {
            progress.counted_round
        }
    }

    fn admitted_here(&self, peer: NodeId) -> bool {
        (self.join_pool.iter()).any(|pending| pending.node == peer && pending.admitted_here)
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub to: NodeId,
    pub deadline_ms: u64,
    pub timeout_now_sent: bool,
}

/// The leader's progress record for `peer`, if this node leads and `peer` is a follower. A free
/// function so that callers can keep borrowing the node's other fields alongside it.
pub(super) fn follower_progress(
    leader_state: &mut Option<LeaderState>,
    peer: NodeId,
) -> Option<&mut Progress> {
    leader_state.as_mut()?.progress.get_mut(&peer)
}

/// One Raft node. See the module documentation of [`crate::core`] for how to drive it.
pub struct RawNode {
    pub(super) config: Config,
    pub(super) rng: ChaCha8Rng,
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) now_ms: u64,
    pub(super) election_deadline_ms: u64,
    /// With check-quorum, votes are refused until then: an election timeout after last hearing
    /// from a leader (or after starting, since a restarted node may have heard from one).
    pub(super) vote_lockout_until_ms: u64,
    /// Answers to this node's current (pre-)campaign.
    pub(super) votes: BTreeMap<NodeId, bool>,
    pub(super) leader_state: Option<LeaderState>,
    /// Every voter holds the log up to here durably (as last computed or heard from a leader);
    /// applied entries below it are released from memory.
    pub(super) durable_everywhere: LogIndex,
    /// The latest snapshot saved or installed here (index 0: none; its configuration is then the
    /// initial one from `Config::voters`).
    pub(super) snapshot: SnapshotMeta,
    /// The configuration in effect: the latest in the log.
    pub(super) membership: Membership,
    /// Joining (new, or back without its data): never votes or campaigns until `Admitted`,
    /// whatever configurations its log shows (they may predate the loss of its data).
    pub(super) joining: bool,
    /// A joining node holds, at this index, a configuration entry made for its own request
    /// ([`super::types::Admission`]); it counts as admitted once that entry is durable — not
    /// before, or a crash could leave it recorded as admitted with a log that lacks the entry.
    pub(super) admission_at: Option<LogIndex>,
    /// Configuration entries in the log after the snapshot, in order.
    pub(super) membership_log: Vec<(LogIndex, Membership)>,
    /// The admissions (`Admission`) carried by the configuration entries after the snapshot,
    /// by index: kept apart from the entries, which leave memory once applied and durable
    /// everywhere, because the join workflow needs them for as long as the snapshot does not
    /// hold them.
    pub(super) admission_log: Vec<(LogIndex, Admission)>,
    /// A peer said the configuration committed at this index no longer has this node, and no
    /// later configuration it holds has it again (`reconfiguration::handle_removed`).
    pub(super) removed_at: Option<LogIndex>,
    /// A `TakeSnapshot` is out and not yet answered.
    pub(super) snapshot_requested: bool,
    /// A follower needs a snapshot newer than the last one: take one even if the policy would
    /// not yet.
    pub(super) snapshot_wanted: bool,
    /// The snapshot arriving from the leader, and the offset of the next chunk expected.
    pub(super) receiving: Option<(SnapshotMeta, u64)>,
    /// Storage actions that must run in order before this batch's `Persist`: snapshot chunk
    /// writes and installs.
    pub(super) storage_actions: Vec<Action>,
    /// Confirmed reads waiting for the state machine to catch up: `(id, read index)`.
    pub(super) reads_awaiting_apply: VecDeque<(RequestId, LogIndex)>,
    /// Proposals passed on to the leader and not answered yet.
    pub(super) forwarded: super::forwarding::Forwarded,
    /// Reads passed on to the leader for a read index and not answered yet.
    pub(super) forwarded_reads: ForwardedReads,
    /// Messages produced by this batch, sent by `take_actions`.
    pub(super) messages: Vec<Message>,
    /// Replies and notifications produced by this batch.
    pub(super) events: Vec<Action>,
    hard_state_emitted: HardState,
    role_reported: (Role, Term, Option<NodeId>),
    next_persist_id: PersistId,
    /// See [`Status::refused_messages`].
    pub(super) refused_messages: u64,
}

impl RawNode {
    /// Starts a node from what storage recovered, at the caller's time `now_ms`.
    pub fn new(config: Config, recovered: Recovered, now_ms: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let Recovered {
            hard_state,
            snapshot,
            entries,
        } = recovered;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut node = RawNode {
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::recover(snapshot.as_ref(), entries, hard_state.commit),
            now_ms,
            election_deadline_ms: 0,
            vote_lockout_until_ms: now_ms + config.election_timeout_min_ms,
            votes: BTreeMap::new(),
            leader_state: None,
            durable_everywhere: 0,
            snapshot: snapshot.unwrap_or_else(|| SnapshotMeta {
                index: 0,
                term: 0,
                membership: Membership::with_voters(config.voters.iter().copied()),
                admissions: Vec::new(),
            }),
            membership: Membership::default(),
            joining: config.joining,
            admission_at: None,
            membership_log: Vec::new(),
            admission_log: Vec::new(),
            removed_at: None,
            snapshot_requested: false,
            snapshot_wanted: false,
            receiving: None,
            storage_actions: Vec::new(),
            reads_awaiting_apply: VecDeque::new(),
            forwarded: Default::default(),
            forwarded_reads: Default::default(),
            messages: Vec::new(),
            events: Vec::new(),
            hard_state_emitted: hard_state,
            role_reported: (Role::Follower, hard_state.term, None),
            refused_messages: 0,
            next_persist_id: 1,
            config,
        };
        // A node's term is never below the terms in its log (it took each entry in that term).
        // Storage writes a batch's entries before its hard state, so a crash that tore the
        // batch can keep entries of a newer term than the term recorded: the node resumes in
        // that term, with no vote (a vote leaves only once its batch is durable, so none was
        // cast there).
        if node.log.last_term() > node.term {
            node.term = node.log.last_term();
            node.vote = None;
        }
        let first = node.log.first_index();
        node.log_changed_from(first);
        node.reset_election_timer();
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit(),
            applied: self.log.applied(),
            persisted: self.log.persisted(),
            last_index: self.log.last_index(),
            member: self.member_state(),
            refused_messages: self.refused_messages,
        }
    }

    /// Its role now (what `status()` says, without building the rest).
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit(),
        }
    }

    /// The leader's view of a follower, if this node leads.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.leader_state.as_ref()?.progress.get(&peer)
    }

    /// Consumes one input. Effects accumulate until [`RawNode::take_actions`].
    pub fn step(&mut self, input: Input) {
        match input {
            Input::Tick { now_ms } => self.tick(now_ms),
            Input::Message(message) => self.step_message(message),
            Input::Propose(proposals) => self.propose(proposals),
            Input::Read { id } => self.read(id),
            Input::Persisted { id } => {
                self.log.persisted_to(id);
                self.admit_once_durable();
                if self.role == Role::Leader {
                    self.maybe_commit();
                }
            }
            Input::Applied { index } => self.log.applied_to(index),
            Input::TransferLeadership { to } => self.transfer_leadership(to),
            Input::Campaign => {
                if self.role != Role::Leader && !self.campaign_would_break_a_lease() {
                    self.campaign(false, false);
                }
            }
            Input::SnapshotSaved { meta } => self.snapshot_saved(meta),
            Input::ChangeMembership { id, change } => self.change_membership(id, change),
            // The index the joiner reports is not trusted: it proves nothing about what the
            // joiner acknowledged before (see `drive_join_pool`).
            Input::Join {
                id,
                node,
                last_index: _,
                nonce,
            } => self.join(id, node, nonce),
            Input::Admitted => self.joining = false,
            Input::SnapshotChunkRead {
                to,
                meta,
                offset,
                data,
                done,
            } => self.snapshot_chunk_read(to, meta, offset, data, done),
            Input::EntriesRead {
                peer,
                from,
                entries,
            } => self.entries_read(peer, from, entries),
        }
    }

    fn tick(&mut self, now_ms: u64) {
        if now_ms <= self.now_ms {
            return;
        }
        self.now_ms = now_ms;
        self.expire_forwarded();
        self.expire_forwarded_reads();
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.now_ms >= self.election_deadline_ms && self.may_campaign() {
                    let pre_vote = self.config.pre_vote;
                    self.campaign(pre_vote, false);
                }
            }
        }
    }

    /// Term rules common to every role (Raft §5.1), then dispatch by message.
    fn step_message(&mut self, message: Message) {
        if message.to != self.config.id || message.from == self.config.id {
            return;
        }
        // The shell checks peer messages where they enter; this is the second line.
        if check_message(&message).is_err() || self.is_second_leader(&message) {
            self.refused_messages += 1;
            return;
        }
        if let MessageBody::Removed { config_index } = message.body {
            // A fact about a committed configuration, whatever the sender's term.
            return self.handle_removed(config_index);
        }
        self.tell_if_removed(message.from, &message.body);
        if message.term > self.term {
            match &message.body {
                MessageBody::VoteRequest {
                    pre_vote,
                    leadership_transfer,
                    ..
                } => {
                    if !leadership_transfer && self.in_vote_lockout() {
                        return;
                    }
                    #[cfg(feature = "planted-bugs")]
                    let pre_vote = *pre_vote && !self.config.planted_bugs.pre_vote_adopts_term;
                    if !pre_vote {
                        self.become_follower(message.term, None);
                    }
                }
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::TimeoutNow
                | MessageBody::SnapshotChunk { .. } => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if self.is_from_older_term(&message) {
            self.reply_to_stale(&message);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(
                from,
                message.term,
                pre_vote,
                last_log_index,
                last_log_term,
            ),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, message.term, pre_vote, granted)
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                durable_everywhere,
            } => {
                self.durable_everywhere = self.durable_everywhere.max(durable_everywhere);
                self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            MessageBody::AppendResponse(response) => self.handle_append_response(from, response),
            MessageBody::Heartbeat { commit, round } => self.handle_heartbeat(from, commit, round),
            MessageBody::HeartbeatResponse { round, joining } => {
                self.handle_heartbeat_response(from, round, joining)
            }
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.may_campaign() {
                    self.campaign(false, true);
                }
            }
            MessageBody::SnapshotChunk {
                meta,
                offset,
                data,
                done,
            } => self.handle_snapshot_chunk(from, meta, offset, data, done),
            MessageBody::SnapshotAck { meta, received } => {
                self.handle_snapshot_ack(from, meta, received)
            }
            MessageBody::Propose {
                nonce,
                seq,
                proposals,
            } => self.handle_propose(from, nonce, seq, proposals),
            MessageBody::ProposeAccepted { first_index, ids } => {
                self.handle_propose_accepted(first_index, ids)
            }
            MessageBody::ProposeRefused { ids, reason } => self.handle_propose_refused(ids, reason),
            MessageBody::ReadIndex { nonce, seq } => self.handle_read_index(from, nonce, seq),
            MessageBody::ReadIndexResponse { nonce, seq, index } => {
                self.handle_read_index_response(nonce, seq, index)
            }
            MessageBody::Removed { .. } => unreachable!("handled above"),
        }
    }

    /// A message only a leader sends, of the term this node leads: two leaders in one term cannot
    /// happen with honest peers (§5.2), so it is refused instead of acted on.
    fn is_second_leader(&self, message: &Message) -> bool {
        self.role == Role::Leader
            && message.term == self.term
            && matches!(
                message.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::SnapshotChunk { .. }
            )
    }

    /// §5.1: a message from an older term is answered, never acted on.
    fn is_from_older_term(&self, message: &Message) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.append_from_older_term
            && matches!(message.body, MessageBody::Append { .. })
        {
            return false;
        }
        message.term < self.term
    }

    /// A message from an older term. A stale leader is told the newer term so that it steps
    /// down; a stale pre-candidate is refused so that it stops waiting.
    fn reply_to_stale(&mut self, message: &Message) {
        let body = match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => MessageBody::HeartbeatResponse {
                round: 0,
                joining: self.joining,
            },
            MessageBody::VoteRequest { pre_vote: true, .. } => MessageBody::VoteResponse {
                pre_vote: true,
                granted: false,
            },
            _ => return,
        };
        self.send(message.from, body);
    }

    fn propose(&mut self, proposals: Vec<Proposal>) {
        if let Some(leader) = self.forwards_to() {
            return self.forward(leader, proposals);
        }
        let refusal = if self.role != Role::Leader {
            Some(Refusal::NotLeader {
                leader_hint: self.leader,
            })
        } else if self
            .leader_state
            .as_ref()
            .is_some_and(|leader| leader.transfer.is_some())
        {
            Some(Refusal::TransferInProgress)
        } else if (self.log.last_index() - self.log.commit()) as usize + proposals.len()
            > self.config.uncommitted_entries_max
        {
            Some(Refusal::Overloaded)
        } else {
            None
        };
        if let Some(reason) = refusal {
            for proposal in proposals {
                self.events.push(Action::ProposalRefused {
                    id: proposal.id,
                    reason,
                });
            }
            return;
        }
        self.events.reserve(proposals.len());
        for proposal in proposals {
            let index = self.append_command(proposal.command);
            self.events.push(Action::ProposalAccepted {
                id: proposal.id,
                index,
                term: self.term,
            });
        }
    }

    /// A leader's append of a client command in its term; returns the entry's index.
    pub(super) fn append_command(&mut self, command: bytes::Bytes) -> LogIndex {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            payload: super::types::EntryPayload::Command(command),
        });
        index
    }

    /// Steps down (or stays) as follower in `term`, following `leader` if known.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term must never decrease: {} -> {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.step_down_as_leader();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Refuses what only a leader could finish.
    fn step_down_as_leader(&mut self) {
        let Some(leader_state) = self.leader_state.take() else {
            return;
        };
        let reason = Refusal::NotLeader { leader_hint: None };
        for pending in &leader_state.join_pool {
            for &id in &pending.requests {
                self.events.push(Action::ProposalRefused { id, reason });
            }
        }
        // A follower's requests go unanswered: it gives up on them after an election timeout.
        let waiting = leader_state
            .reads_awaiting_round
            .iter()
            .map(|&(waiter, _, _)| waiter);
        for waiter in waiting.chain(leader_state.reads_awaiting_term_commit.iter().copied()) {
            if let ReadWaiter::Local(id) = waiter {
                self.events.push(Action::ReadRefused { id, reason });
            }
        }
    }

    pub(super) fn reset_election_timer(&mut self) {
        let timeout = self
            .rng
            .random_range(self.config.election_timeout_min_ms..self.config.election_timeout_max_ms);
        self.election_deadline_ms = self.now_ms + timeout;
    }

    pub(super) fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    /// The configuration in effect here.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// A forced campaign (an operator's request) while this node still heard a leader lately
    /// would be a vote for itself inside the lease it acknowledged: that leader answers reads
    /// from its lease while this node may already win with others. Refused until the lockout
    /// ends; only a leadership transfer, which ends the old leader's lease first, may skip it.
    /// A node still in term 0 never acknowledged anyone, and a sole voter has no one else's
    /// lease to respect (a new cluster bootstraps so).
    fn campaign_would_break_a_lease(&self) -> bool {
        self.config.read_mode == ReadMode::Lease
            && self.term > 0
            && self.in_vote_lockout()
            && (self.membership.voters.iter())
                .chain(&self.membership.outgoing_voters)
                .any(|&voter| voter != self.config.id)
    }

    /// Until when (this node's clock) it promised to refuse votes, having last heard a leader
    /// (or restarted): the promise a leader's lease rests on. For the simulator's lease checks.
    pub fn vote_lockout_until_ms(&self) -> u64 {
        self.vote_lockout_until_ms
    }

    pub(super) fn in_vote_lockout(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.vote_during_lease {
            return false;
        }
        self.config.check_quorum
            && (self.role == Role::Leader || self.now_ms < self.vote_lockout_until_ms)
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        // What peers refuse as malformed, this node must never send.
        if let Err(malformed) = check_message(&message) {
            panic!(
                "node {} sends a malformed message ({malformed}): {message:?}",
                self.config.id
            );
        }
        self.messages.push(message);
    }

    /// Turns this batch's state changes into actions, to be executed in order: the persist first,
    /// then the messages (held until durable where required), replies, and committed entries.
    #[must_use = "actions carry obligations: persist, send, apply and reply"]
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.flush_forwarded_reads();
        if self.role == Role::Leader {
            self.drive_join_pool();
            self.send_appends();
            self.flush_read_rounds();
        }
        self.release_applied_reads();
        self.maybe_request_snapshot();
        self.log.release_to(
            self.durable_everywhere,
            self.config.release_batch_entries_min,
        );
        let mut actions = Vec::with_capacity(self.messages.len() + self.events.len() + 3);
        let current = (self.role, self.term, self.leader);
        if current != self.role_reported {
            self.role_reported = current;
            actions.push(Action::RoleChanged {
                role: current.0,
                term: current.1,
                leader: current.2,
            });
        }
        self.push_persist(&mut actions);
        let outstanding = self.log.has_pending_persists();
        let is_leader = self.role == Role::Leader;
        for message in self.messages.drain(..) {
            let after_persist =
                outstanding && !needs_no_persist(&message.body, is_leader, &self.config);
            actions.push(Action::Send {
                message,
                after_persist,
            });
        }
        actions.append(&mut self.events);
        loop {
            let entries = self.log.take_committed(self.config.apply_batch_entries_max);
            if entries.is_empty() {
                break;
            }
            actions.push(Action::Apply { entries });
        }
        actions
    }

    pub(super) fn allocate_persist_id(&mut self) -> PersistId {
        let id = self.next_persist_id;
        self.next_persist_id += 1;
        id
    }

    fn push_persist(&mut self, actions: &mut Vec<Action>) {
        actions.append(&mut self.storage_actions);
        let hard_state = self.hard_state();
        let hard_state_changed = hard_state != self.hard_state_emitted;
        let has_entries = self.log.has_unsent();
        if !hard_state_changed && !has_entries {
            return;
        }
        let id = self.allocate_persist_id();
        let entries = self.log.take_unsent(id);
        let sync = !entries.is_empty()
            || hard_state.term != self.hard_state_emitted.term
            || hard_state.vote != self.hard_state_emitted.vote;
        self.hard_state_emitted = hard_state;
        actions.push(Action::Persist {
            id,
            hard_state: hard_state_changed.then_some(hard_state),
            entries,
            sync,
        });
    }
}

/// Messages that may leave before this node's pending writes are durable: the leader's appends
/// and heartbeats (the leader counts itself only once durable, Raft thesis §10.2.1), and the
/// forwarding of proposals and reads.
fn needs_no_persist(body: &MessageBody, is_leader: bool, config: &Config) -> bool {
    #[cfg(feature = "planted-bugs")]
    if config.planted_bugs.ack_before_persist && matches!(body, MessageBody::AppendResponse(_)) {
        return true;
    }
    let _ = config;
    // Forwarding promises nothing about this node's disk: a batch asks, and "appended at" is
    // acted on only once the entry is applied, so committed on a majority's disks; a read index
    // is a commit index, committed on a majority's disks already.
    let forwarding = matches!(
        body,
        MessageBody::Propose { .. }
            | MessageBody::ProposeAccepted { .. }
            | MessageBody::ProposeRefused { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { .. }
    );
    forwarding
        || is_leader
            && matches!(
                body,
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
            )
}
