//! A replica: one Raft core and one state machine, and the rules that turn the core's actions
//! into answers — send a promise only after the write it promises is durable, apply committed
//! entries and feed `Applied` back, match applied entries to the clients waiting for them, serve
//! snapshot chunks, stage an incoming snapshot, keep the address book.
//!
//! Sans-IO like the core: no clock, no channels, no tokio. Inputs go in through its methods
//! (a client request with the runtime's [`Ticket`], a peer message, a storage completion, a tick
//! with the time); what the runtime must do comes out as [`Effect`]s, in order. The node's event
//! loop (`server::event_loop`), the simulators and the benchmarks all drive this one type, so the
//! simulator proves the code that answers real clients.
//!
//! Driving it: feed inputs, then [`Replica::run`] (or, to stop between the core's rounds of
//! actions as the simulator does to crash a node mid-step, [`Replica::take_round`] and
//! [`Replica::execute`]), then carry out [`Replica::take_effects`].

mod address_book;
mod effect;
mod error;
mod outbox;
mod request;
mod staging;
mod state_machine;
mod waiting;

pub use address_book::AddressBook;
pub use effect::Effect;
pub use error::ApiError;
pub use request::{Answer, Reply, Request, Ticket};
pub use state_machine::{Applied, SnapshotImage, StateMachine};

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::core::{
    Action, Entry, EntryPayload, Input, LogIndex, MemberState, Membership, MembershipChange,
    Message, NodeId, PersistId, Proposal, RawNode, Refusal, RequestId, Role, SnapshotMeta, Status,
    Term,
};
use crate::storage::Standing;
use outbox::Outbox;
use staging::SnapshotStaging;
use waiting::{ProposalKind, Settled, Waiting};

/// A node's view of its cluster, for `members` and `status`.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub status: Status,
    pub membership: Membership,
    pub addresses: BTreeMap<NodeId, String>,
    pub leader_address: Option<String>,
}

pub struct Replica<S: StateMachine> {
    core: RawNode,
    state: S,
    /// Where this node is reached (registered in the address book when it leads).
    address: String,
    book: AddressBook,
    /// Addresses peers announced with their messages; the book wins over them.
    announced: BTreeMap<NodeId, String>,
    next_request_id: RequestId,
    /// Writes gathered since the last round: many become one append (one fsync, one message
    /// per peer).
    proposals: Vec<Proposal>,
    waiting: Waiting<S::Outcome, S::Query>,
    outbox: Outbox,
    staging: SnapshotStaging,
    /// The snapshot this node saved last, kept to serve chunks without storage if the caller
    /// hands it over (the simulators do); otherwise every chunk is read from storage
    /// (`Effect::ReadSnapshotChunk`), as a node does, keeping no second copy of its state.
    saved_snapshot: Option<(SnapshotMeta, Bytes)>,
    role: Role,
    leader: Option<NodeId>,
    member: MemberState,
    effects: Vec<Effect<S>>,
}

impl<S: StateMachine> Replica<S> {
    /// A replica of `core` over `state` (both recovered from the same storage), whose latest
    /// saved snapshot is `saved_snapshot`.
    /// An empty `address` registers none (a replica a test drives by hand).
    pub fn new(
        core: RawNode,
        state: S,
        address: String,
        saved_snapshot: Option<(SnapshotMeta, Bytes)>,
    ) -> Self {
        let member = core.member_state();
        Replica {
            book: AddressBook::from_pairs(state.addresses()),
            core,
            state,
            address,
            announced: BTreeMap::new(),
            next_request_id: 1,
            proposals: Vec::new(),
            waiting: Waiting::default(),
            outbox: Outbox::default(),
            staging: SnapshotStaging::default(),
            saved_snapshot,
            // As if a follower: the core's first RoleChanged (a bootstrapping node may already
            // lead) then registers this node's address like any new leader does.
            role: Role::Follower,
            leader: None,
            member,
            effects: Vec::new(),
        }
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// Time has passed: `now_ms` is the runtime's monotonic clock.
    pub fn tick(&mut self, now_ms: u64) {
        self.core.step(Input::Tick { now_ms });
    }

    /// A client's request; answered by an [`Effect::Reply`] under `ticket`, now or later.
    pub fn request(&mut self, ticket: Ticket, request: Request<S::Query>) {
        match request {
            Request::Write {
                command,
                may_forward,
            } => {
                if !may_forward && self.role != Role::Leader {
                    return self.reply(ticket, Err(self.not_leader()));
                }
                if let Some(outcome) = self.state.refuse(&command) {
                    let index = self.state.applied_index();
                    return self.reply(ticket, Ok(Answer::Written { index, outcome }));
                }
                let id = self.request_id();
                self.waiting.propose(id, ticket, ProposalKind::Write);
                self.proposals.push(Proposal { id, command });
            }
            Request::Read {
                query,
                stale,
                may_forward,
            } => {
                if stale {
                    self.answer_read(ticket, &query);
                } else if !may_forward && self.role != Role::Leader {
                    self.reply(ticket, Err(self.not_leader()));
                } else {
                    let id = self.request_id();
                    self.waiting.read(id, ticket, query);
                    self.core.step(Input::Read { id });
                }
            }
            Request::Join {
                node,
                address,
                last_index,
                follower_only,
                nonce,
            } => self.join(ticket, node, address, (last_index, nonce), follower_only),
            Request::ChangeMembership(change) => {
                let id = self.request_id();
                self.waiting.propose(id, ticket, ProposalKind::Membership);
                self.core.step(Input::ChangeMembership { id, change });
            }
        }
    }

    /// An input straight to the core: an operator's command, or a test's hand-made input.
    /// Storage completions go through [`Replica::completed`] (held messages leave then);
    /// clients' requests through [`Replica::request`], or nobody answers them.
    pub fn step(&mut self, input: Input) {
        match input {
            Input::Persisted { .. }
            | Input::SnapshotSaved { .. }
            | Input::SnapshotChunkRead { .. }
            | Input::EntriesRead { .. } => self.completed(input),
            other => self.core.step(other),
        }
    }

    /// A message from a peer.
    pub fn message(&mut self, message: Message) {
        self.core.step(Input::Message(message));
    }

    /// A peer said it is reached at `address` (the replicated address book wins over this).
    pub fn announced(&mut self, node: NodeId, address: &str) {
        if !address.is_empty() && self.announced.get(&node).map(String::as_str) != Some(address) {
            self.announced.insert(node, address.to_string());
        }
    }

    /// Storage finished something the core asked for (`Persisted`, `SnapshotSaved`,
    /// `SnapshotChunkRead`, `EntriesRead`). Messages that waited for a write to be durable leave now.
    pub fn completed(&mut self, input: Input) {
        if let Input::Persisted { id } = input {
            for message in self.outbox.persisted(id) {
                self.effects.push(Effect::Send(message));
            }
        }
        self.core.step(input);
    }

    /// The bytes of the snapshot storage saved last (its `SnapshotSaved` comes through
    /// [`Replica::completed`]), kept to serve followers without reading storage.
    pub fn snapshot_saved(&mut self, meta: SnapshotMeta, data: Bytes) {
        self.saved_snapshot = Some((meta, data));
    }

    /// This joining node's join completed (the leader answered): recorded durably, so that a
    /// restart resumes as a member instead of joining again; a voter (not a follower-only
    /// learner) from now on votes and may campaign. Until the record is durable a crash
    /// restarts the node as joining, which is safe: it only asks again.
    pub fn admitted(&mut self, voter: bool) {
        self.effects
            .push(Effect::RecordStanding(Standing::Admitted));
        if voter {
            self.core.step(Input::Admitted);
        }
    }

    /// Hands leadership to voter `to` (an operator's request).
    pub fn transfer_leadership(&mut self, to: NodeId) {
        self.core.step(Input::TransferLeadership { to });
    }

    /// Starts an election now, skipping the pre-vote (an operator's request).
    pub fn campaign(&mut self) {
        self.core.step(Input::Campaign);
    }

    /// A leader on its way out hands over to the most caught-up voter; the successor, if any.
    pub fn hand_over(&mut self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        let me = self.core.id();
        let successor = self
            .core
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|&voter| voter != me)
            .max_by_key(|&voter| {
                self.core
                    .progress(voter)
                    .map_or(0, |progress| progress.match_index)
            })?;
        self.core.step(Input::TransferLeadership { to: successor });
        Some(successor)
    }

    /// Answers everything still waiting: the node stops, because of `error`. A proposal was
    /// handed to the core, which appended it here or passed it on to the leader: it may still
    /// commit, so it is answered "outcome unknown" (the error itself tells a client it was
    /// refused and to retry elsewhere, which would make a retried put or compare-and-swap take
    /// effect twice). Reads never take effect: they get the error.
    pub fn abandon_waiting(&mut self, error: ApiError) {
        #[cfg(feature = "planted-bugs")]
        let refuse = self.core.config().planted_bugs.shutdown_refuses_handed_over
            && matches!(error, ApiError::ShuttingDown);
        let (proposals, reads) = self.waiting.abandon();
        for ticket in proposals {
            #[cfg(feature = "planted-bugs")]
            if refuse {
                self.reply(ticket, Err(ApiError::ShuttingDown));
                continue;
            }
            self.reply(ticket, Err(ApiError::OutcomeUnknown(format!("{error}"))));
        }
        for ticket in reads {
            self.reply(ticket, Err(error.clone()));
        }
    }

    // ---- carrying out the core's actions ----------------------------------------------------

    /// Carries out everything the core asks until it has nothing more to say.
    pub fn run(&mut self) {
        while let Some(actions) = self.take_round() {
            for action in actions {
                self.execute(action);
            }
        }
    }

    /// The core's next round of actions (after proposing the writes gathered so far), or `None`
    /// when it has nothing more to say. Carry each out with [`Replica::execute`], in order.
    #[must_use]
    pub fn take_round(&mut self) -> Option<Vec<Action>> {
        if !self.proposals.is_empty() {
            let proposals = std::mem::take(&mut self.proposals);
            self.core.step(Input::Propose(proposals));
        }
        let actions = self.core.take_actions();
        if actions.is_empty() {
            // Checked at rest, not only on a role change or a write made durable: a follower
            // told it was removed sees neither, and must still record it.
            self.note_member_state();
            return None;
        }
        Some(actions)
    }

    /// Carries out one action of the core's; what the runtime must do goes to the effects.
    pub fn execute(&mut self, action: Action) {
        match action {
            Action::Persist {
                id,
                hard_state,
                entries,
                sync,
            } => {
                self.outbox.issued(id);
                self.effects.push(Effect::Persist {
                    id,
                    hard_state,
                    entries,
                    sync,
                });
            }
            Action::Send {
                message,
                after_persist,
            } => {
                if let Some(message) = self.outbox.send(message, after_persist) {
                    self.effects.push(Effect::Send(message));
                }
            }
            Action::Apply { entries } => self.apply(entries),
            Action::ProposalAccepted { id, index, term } => {
                let applied = self.state.applied_index();
                if let Some(settled) = self.waiting.accepted(id, index, term, applied) {
                    self.answer_settled(settled);
                }
            }
            Action::ProposalOutcomeUnknown { id } => {
                if let Some((ticket, _)) = self.waiting.take_proposal(id) {
                    let why = "the leader did not answer the request passed on to it in time";
                    self.reply(ticket, Err(ApiError::OutcomeUnknown(why.to_string())));
                }
            }
            Action::ProposalRefused { id, reason } => {
                if let Some((ticket, _)) = self.waiting.take_proposal(id) {
                    self.reply(ticket, Err(self.refusal(reason)));
                }
            }
            Action::ReadReady { id, index } => {
                if self.state.applied_index() < index {
                    return self.fatal(format!(
                        "a read at index {index} was ready before the state machine applied it \
                         (applied {})",
                        self.state.applied_index()
                    ));
                }
                if let Some((ticket, query)) = self.waiting.take_read(id) {
                    self.answer_read(ticket, &query);
                }
            }
            Action::ReadRefused { id, reason } => {
                if let Some((ticket, _)) = self.waiting.take_read(id) {
                    self.reply(ticket, Err(self.refusal(reason)));
                }
            }
            Action::TakeSnapshot { meta } => {
                if self.state.applied_index() != meta.index {
                    return self.fatal(format!(
                        "asked to snapshot at {} but the state machine applied {}",
                        meta.index,
                        self.state.applied_index()
                    ));
                }
                let image = self.state.snapshot();
                self.effects.push(Effect::SaveSnapshot { meta, image });
            }
            Action::ReadSnapshotChunk {
                to,
                meta,
                offset,
                bytes_max,
            } => match &self.saved_snapshot {
                Some((saved, data)) if *saved == meta => {
                    if let Some(input) = Input::snapshot_chunk(to, meta, offset, bytes_max, data) {
                        self.core.step(input);
                    }
                }
                _ => self.effects.push(Effect::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    bytes_max,
                }),
            },
            Action::ReadEntries {
                peer,
                from,
                through,
                entries_max,
                bytes_max,
            } => self.effects.push(Effect::ReadEntries {
                peer,
                from,
                through,
                entries_max,
                bytes_max,
            }),
            Action::WriteSnapshotChunk {
                meta, offset, data, ..
            } => {
                if let Err(error) = self.staging.write(&meta, offset, &data) {
                    self.fatal(error);
                }
            }
            Action::InstallSnapshot { id, meta } => self.install(id, meta),
            Action::JoinCompleted { id, node } => {
                tracing::info!(node, "node joined the cluster as a voter");
                if let Some((ticket, _)) = self.waiting.take_proposal(id) {
                    self.reply(ticket, Ok(Answer::Done));
                }
            }
            Action::Admitted => {
                tracing::info!("a configuration entry in the log admits this node");
                self.effects
                    .push(Effect::RecordStanding(Standing::Admitted));
            }
            Action::RoleChanged { role, term, leader } => self.role_changed(role, term, leader),
        }
    }

    /// What the runtime must do now, in order.
    #[must_use]
    pub fn take_effects(&mut self) -> Vec<Effect<S>> {
        std::mem::take(&mut self.effects)
    }

    /// Moves what the runtime must do now, in order, to the end of `out` (a runtime that
    /// carries effects out after every action reuses one buffer).
    pub fn move_effects_to(&mut self, out: &mut Vec<Effect<S>>) {
        out.append(&mut self.effects);
    }

    // ---- what the runtime may look at --------------------------------------------------------

    pub fn core(&self) -> &RawNode {
        &self.core
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// Whether a message to `peer` waits for a write to be durable.
    pub fn holds_message_to(&self, peer: NodeId) -> bool {
        self.outbox.holds_message_to(peer)
    }

    /// The messages waiting for a write to be durable.
    pub fn held_messages(&self) -> impl Iterator<Item = &Message> {
        self.outbox.held()
    }

    pub fn view(&self) -> NodeView {
        let mut addresses: BTreeMap<NodeId, String> = self
            .book
            .iter()
            .map(|(node, address)| (node, address.to_string()))
            .collect();
        addresses.insert(self.core.id(), self.address.clone());
        NodeView {
            status: self.core.status(),
            membership: self.core.membership().clone(),
            addresses,
            leader_address: self.leader_address(),
        }
    }

    pub fn not_leader(&self) -> ApiError {
        ApiError::NotLeader {
            leader_id: self.leader,
            leader_address: self.leader_address(),
        }
    }

    // ---- helpers -----------------------------------------------------------------------------

    fn request_id(&mut self) -> RequestId {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    fn reply(&mut self, ticket: Ticket, reply: Reply<S>) {
        self.effects.push(Effect::Reply { ticket, reply });
    }

    fn fatal(&mut self, reason: String) {
        self.effects.push(Effect::Fatal(reason));
    }

    fn answer_read(&mut self, ticket: Ticket, query: &S::Query) {
        let answer = self.state.read(query);
        let index = self.state.applied_index();
        self.reply(ticket, Ok(Answer::Read { answer, index }));
    }

    /// The leader's side of a join: record the joiner's address in the replicated address book
    /// (ahead of its membership entry in the log, so every member can reach it), then queue it.
    fn join(
        &mut self,
        ticket: Ticket,
        node: NodeId,
        address: String,
        (last_index, nonce): (LogIndex, u64),
        follower_only: bool,
    ) {
        if self.role != Role::Leader {
            return self.reply(ticket, Err(self.not_leader()));
        }
        if let Some(known) = self.book.get(node) {
            let live = node == self.core.id()
                || self
                    .core
                    .progress(node)
                    .is_some_and(|progress| progress.recent_active);
            if known != address && live {
                let error = ApiError::AlreadyExists(format!(
                    "node id {node} is already used by the live node at {known}; pick another id, \
                     or stop that node first"
                ));
                return self.reply(ticket, Err(error));
            }
        }
        if !address.is_empty() && self.book.get(node) != Some(address.as_str()) {
            let id = self.request_id();
            self.proposals.push(Proposal {
                id,
                command: S::registration(node, &address),
            });
        }
        if !address.is_empty() {
            self.effects.push(Effect::AddressLearned {
                node,
                address: address.clone(),
            });
        }
        // The registration goes first.
        if !self.proposals.is_empty() {
            let proposals = std::mem::take(&mut self.proposals);
            self.core.step(Input::Propose(proposals));
        }
        if follower_only && self.core.membership().learners.contains(&node) {
            return self.reply(ticket, Ok(Answer::Done));
        }
        let id = self.request_id();
        self.waiting.propose(id, ticket, ProposalKind::Membership);
        if follower_only {
            // A read replica: a learner from the start, answered once its addition applies.
            self.core.step(Input::ChangeMembership {
                id,
                change: MembershipChange::AddLearner(node),
            });
        } else {
            self.core.step(Input::Join {
                id,
                node,
                last_index,
                nonce,
            });
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return;
        };
        let mut settled = Vec::new();
        for entry in entries {
            let outcome = match &entry.payload {
                EntryPayload::Noop | EntryPayload::Membership(..) => {
                    self.state.skip(entry.index);
                    None
                }
                EntryPayload::Command(command) => {
                    let applied = self.state.apply(entry.index, command);
                    if let Some((node, address)) = applied.registered {
                        self.book.insert(node, address.clone());
                        self.effects.push(Effect::AddressLearned { node, address });
                    }
                    Some(applied.outcome)
                }
            };
            let leading = self.role == Role::Leader;
            self.waiting
                .applied(entry.index, entry.term, outcome, leading, &mut settled);
            for done in settled.drain(..) {
                self.answer_settled(done);
            }
        }
        self.core.step(Input::Applied { index: last });
    }

    fn answer_settled(&mut self, settled: Settled<S::Outcome>) {
        match settled {
            Settled::Applied {
                ticket,
                kind: ProposalKind::Write,
                index,
                outcome: Some(outcome),
            } => self.reply(ticket, Ok(Answer::Written { index, outcome })),
            Settled::Applied {
                kind: ProposalKind::Write,
                index,
                outcome: None,
                ..
            } => self.fatal(format!(
                "a client's write accepted at index {index} applied as an entry without a command"
            )),
            Settled::Applied {
                ticket,
                kind: ProposalKind::Membership,
                ..
            } => self.reply(ticket, Ok(Answer::Done)),
            Settled::Replaced { ticket } => self.reply(ticket, Err(self.not_leader())),
            Settled::Unknown { ticket, why } => {
                self.reply(ticket, Err(ApiError::OutcomeUnknown(why.to_string())))
            }
        }
    }

    fn install(&mut self, id: PersistId, meta: SnapshotMeta) {
        let data = match self.staging.take(&meta) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => return self.fatal(error),
        };
        match S::restore(&data) {
            Ok(state) if state.applied_index() == meta.index => self.state = state,
            Ok(state) => {
                return self.fatal(format!(
                    "the snapshot received for index {} holds the state at {}",
                    meta.index,
                    state.applied_index()
                ))
            }
            Err(error) => {
                // The leader sent a snapshot this build cannot read: stopping is the only safe
                // answer (applying the log after it would diverge from the other replicas).
                return self.fatal(format!(
                    "the snapshot received from the leader does not decode ({error}); \
                     upgrade this node to the leader's version"
                ));
            }
        }
        self.book = AddressBook::from_pairs(self.state.addresses());
        for (node, address) in self.book.iter() {
            self.effects.push(Effect::AddressLearned {
                node,
                address: address.to_string(),
            });
        }
        self.outbox.issued(id);
        // Stored from now on; whatever was kept is of an older snapshot.
        self.saved_snapshot = None;
        self.effects
            .push(Effect::InstallSnapshot { id, meta, data });
    }

    fn role_changed(&mut self, role: Role, term: Term, leader: Option<NodeId>) {
        let was_leading = self.role == Role::Leader;
        let leader_changed = self.leader != leader;
        self.role = role;
        self.leader = leader;
        if leader_changed {
            self.effects
                .push(Effect::LeaderChanged { role, term, leader });
        }
        // A replica without an address (a test's) registers none.
        if role == Role::Leader && !was_leading && !self.address.is_empty() {
            let id = self.core.id();
            if self.book.get(id) != Some(self.address.as_str()) {
                let request = self.request_id();
                let command = S::registration(id, &self.address);
                self.proposals.push(Proposal {
                    id: request,
                    command,
                });
            }
        }
        self.note_member_state();
    }

    /// Reports a change of this node's member state; a removal is recorded durably, so that a
    /// restart does not resume as the member it was.
    fn note_member_state(&mut self) {
        let member = self.core.member_state();
        if member == self.member {
            return;
        }
        self.effects.push(Effect::MemberStateChanged {
            from: self.member,
            to: member,
        });
        if member == MemberState::Removed {
            self.effects.push(Effect::RecordStanding(Standing::Removed));
        }
        self.member = member;
    }

    fn refusal(&self, reason: Refusal) -> ApiError {
        match reason {
            Refusal::NotLeader { .. } => self.not_leader(),
            Refusal::TransferInProgress => {
                ApiError::NoQuorum("leadership is being handed over".to_string())
            }
            Refusal::Overloaded => ApiError::Overloaded,
            Refusal::InvalidMembership(error) => ApiError::InvalidArgument(error.to_string()),
            Refusal::LeaderUnresponsive => {
                ApiError::NoQuorum("the leader did not confirm the read in time".to_string())
            }
        }
    }

    fn leader_address(&self) -> Option<String> {
        let leader = self.leader?;
        if leader == self.core.id() {
            return Some(self.address.clone());
        }
        self.book
            .get(leader)
            .or_else(|| self.announced.get(&leader).map(String::as_str))
            .map(str::to_string)
    }
}
