//! The one task that owns a node's core: it feeds the core ticks, peer messages and client
//! requests, and carries out the actions the core emits — persist (through the storage worker),
//! send (through the transport), apply (to the KV state machine) and reply. Everything else in
//! the shell talks to it through [`Request`]s, so the core is never shared and never locked.
//!
//! The loop drains every request that is ready before it asks the core for actions, so many
//! client writes become one persist (one fsync) and one append per peer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

use super::address_book::{self, AddressBook};
use super::error::ApiError;
use super::hooks::Hooks;
use super::metrics::Metrics;
use super::storage_queue::StorageQueue;
use super::storage_worker::{StorageDone, StorageOp};
use super::transport::Transport;
use crate::core::{
    Action, Entry, EntryPayload, Input, LogIndex, MemberState, Membership, MembershipChange,
    Message, MessageBody, NodeId, PersistId, Proposal, RawNode, Refusal, RequestId, Role,
    SnapshotMeta, Status, Term,
};
use crate::kv::{Command, KvStateMachine, Outcome};
use crate::storage::Standing;

/// Requests drained per loop iteration at most, so ticks and storage completions are not starved.
const REQUESTS_PER_ITERATION_MAX: usize = 1024;
/// How often the core is ticked.
const TICK: Duration = Duration::from_millis(10);
/// How long a leader that is shutting down waits for its successor to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// Outcomes of applied entries a follower keeps for proposals it passed on, whose "appended
/// at" answer from the leader may arrive after the entry itself (it travels another way).
const UNCLAIMED_OUTCOMES_MAX: usize = 8192;

/// The result of a write that was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub index: LogIndex,
    pub outcome: Outcome,
}

/// The result of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub value: Option<Bytes>,
    pub index: LogIndex,
}

/// A node's view of the cluster, for `members` and `status`.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub status: Status,
    pub membership: Membership,
    pub addresses: BTreeMap<NodeId, String>,
    pub leader_address: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// Everything the rest of the shell can ask of the loop.
#[derive(Debug)]
pub enum Request {
    Write {
        command: Command,
        /// A follower may pass it on to the leader; if not, it answers "not leader".
        may_forward: bool,
        reply: Reply<WriteResult>,
    },
    Read {
        key: Bytes,
        stale: bool,
        /// A follower may serve it with a read index from the leader; if not, it answers
        /// "not leader" (a stale read is served anywhere).
        may_forward: bool,
        reply: Reply<ReadResult>,
    },
    /// The leader's side of the join workflow (after the admission hook accepted it).
    Join {
        node: NodeId,
        address: String,
        last_index: LogIndex,
        /// Add as a learner only, never promoted to voter.
        follower_only: bool,
        reply: Reply<()>,
    },
    Leave {
        node: NodeId,
        reply: Reply<()>,
    },
    View {
        reply: oneshot::Sender<NodeView>,
    },
    /// Messages from a peer that said it can be reached at `from_address`. With `reply`, the
    /// messages to that peer that become ready meanwhile ride back on the RPC's reply.
    Peer {
        from: NodeId,
        from_address: String,
        messages: Vec<Message>,
        reply: Option<oneshot::Sender<Vec<Message>>>,
    },
    /// This joining node's join completed (the leader answered `JOINED`): recorded durably, so
    /// that a restart resumes as a member instead of joining again; a voter (not a
    /// follower-only learner) from now on votes and may campaign.
    Admitted {
        voter: bool,
    },
    /// A joiner given no cluster id learned it from the cluster: recorded durably.
    ClusterLearned {
        cluster_id: u64,
    },
    /// Stop: hand leadership over if leader, let storage finish, then answer.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A request waiting for the core.
#[derive(Debug)]
enum Pending {
    Write(Reply<WriteResult>),
    Leave(Reply<()>),
    Join(Reply<()>),
}

pub struct EventLoop {
    core: RawNode,
    kv: KvStateMachine,
    address: String,
    book: AddressBook,
    transport: Transport,
    hooks: Hooks,
    metrics: Metrics,
    storage: StorageQueue,
    storage_done: mpsc::UnboundedReceiver<StorageDone>,
    requests: mpsc::Receiver<Request>,
    started: Instant,
    next_request_id: RequestId,
    pending: BTreeMap<RequestId, Pending>,
    /// Proposals appended to the log: index → (term, request).
    accepted: BTreeMap<LogIndex, (Term, RequestId)>,
    /// Entries applied while this follower waited to hear where its forwarded proposals were
    /// appended: index → (term, outcome), the newest [`UNCLAIMED_OUTCOMES_MAX`].
    unclaimed: BTreeMap<LogIndex, (Term, Option<Outcome>)>,
    reads: BTreeMap<RequestId, (Bytes, Reply<ReadResult>)>,
    /// The last persist handed to storage, and the last one reported durable.
    persist_issued: PersistId,
    persist_done: PersistId,
    /// Messages that may leave only once this persist is durable.
    held: VecDeque<(PersistId, Message)>,
    /// The open reply of the latest batch from each peer, with the messages gathered for it.
    replies: BTreeMap<NodeId, (oneshot::Sender<Vec<Message>>, Vec<Message>)>,
    /// Chunks of a snapshot arriving from the leader.
    staging: Vec<u8>,
    /// The snapshot this node saved last, kept to serve chunks without reading the file.
    saved_snapshot: Option<(SnapshotMeta, Bytes)>,
    role: (Role, Option<NodeId>),
    member: MemberState,
    shutting_down: Option<oneshot::Sender<()>>,
    /// Set when the node must stop at once (fail-stop), with the reason.
    fatal: Option<String>,
}

/// The parts an event loop is built from.
pub struct EventLoopParts {
    pub core: RawNode,
    pub kv: KvStateMachine,
    pub address: String,
    pub transport: Transport,
    pub hooks: Hooks,
    pub metrics: Metrics,
    pub storage: StorageQueue,
    pub storage_done: mpsc::UnboundedReceiver<StorageDone>,
    pub requests: mpsc::Receiver<Request>,
    pub saved_snapshot: Option<(SnapshotMeta, Bytes)>,
}

impl EventLoop {
    pub fn new(parts: EventLoopParts) -> Self {
        let status = parts.core.status();
        let book = AddressBook::from_state_machine(&parts.kv);
        EventLoop {
            member: status.member,
            // As if a follower: the core's first RoleChanged (a bootstrapping node may already
            // lead) then registers this node's address like any new leader does.
            role: (Role::Follower, None),
            core: parts.core,
            kv: parts.kv,
            address: parts.address,
            book,
            transport: parts.transport,
            hooks: parts.hooks,
            metrics: parts.metrics,
            storage: parts.storage,
            storage_done: parts.storage_done,
            requests: parts.requests,
            started: Instant::now(),
            next_request_id: 1,
            pending: BTreeMap::new(),
            accepted: BTreeMap::new(),
            unclaimed: BTreeMap::new(),
            reads: BTreeMap::new(),
            persist_issued: 0,
            persist_done: 0,
            held: VecDeque::new(),
            replies: BTreeMap::new(),
            staging: Vec::new(),
            saved_snapshot: parts.saved_snapshot,
            shutting_down: None,
            fatal: None,
        }
    }

    /// Runs until shut down (`Ok`) or until storage fails (`Err`, with the reason).
    pub async fn run(mut self) -> Result<(), String> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(REQUESTS_PER_ITERATION_MAX);
        let mut handover_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                done = self.storage_done.recv() => match done {
                    Some(StorageDone::Inputs(inputs)) => {
                        for input in inputs {
                            if let Input::Persisted { id } = input {
                                self.persist_done = id;
                            }
                            self.core.step(input);
                        }
                        self.release_held();
                    }
                    Some(StorageDone::Snapshot { meta, data }) => {
                        self.saved_snapshot = Some((meta, data));
                    }
                    Some(StorageDone::Failed(reason)) => {
                        return Err(self.fail(format!("storage failed: {reason}; fix the disk, then restart the node")))
                    }
                    None if self.shutting_down.is_some() => break,
                    None => return Err(self.fail("the storage worker stopped".to_string())),
                },
                // Nothing new while the disk is behind (see `storage_queue`).
                count = self.requests.recv_many(&mut batch, REQUESTS_PER_ITERATION_MAX), if self.storage.has_room() => {
                    if count == 0 {
                        break;
                    }
                    self.handle_requests(&mut batch);
                }
                _ = ticker.tick() => {
                    let voters = self.core.membership().voters.len();
                    self.metrics.observe_status(&self.core.status(), voters);
                }
            }
            let now_ms = self.now_ms();
            self.core.step(Input::Tick { now_ms });
            self.execute_actions();
            // Every iteration, not only on a role change or a completed persist: a follower told
            // it was removed changes neither, and must still log it and record it durably.
            self.note_member_state();
            self.close_replies();
            if let Some(reason) = self.fatal.take() {
                return Err(self.fail(reason));
            }
            if self.shutting_down.is_some() {
                let deadline = *handover_deadline.get_or_insert_with(|| {
                    self.hand_over();
                    Instant::now() + HANDOVER_WAIT
                });
                if self.role.0 != Role::Leader || Instant::now() >= deadline {
                    break;
                }
            }
        }
        self.finish();
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn request_id(&mut self) -> RequestId {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    fn handle_requests(&mut self, batch: &mut Vec<Request>) {
        let mut proposals = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Write {
                    command,
                    may_forward,
                    reply,
                } => {
                    if !may_forward && self.role.0 != Role::Leader {
                        self.metrics.refused();
                        let _ = reply.send(Err(self.not_leader()));
                        continue;
                    }
                    let id = self.request_id();
                    self.pending.insert(id, Pending::Write(reply));
                    proposals.push(Proposal {
                        id,
                        command: command.encode(),
                    });
                }
                Request::Read {
                    key,
                    stale,
                    may_forward,
                    reply,
                } => {
                    if stale {
                        let value = self.kv.get(&key).cloned();
                        let index = self.kv.applied_index();
                        self.metrics.read();
                        let _ = reply.send(Ok(ReadResult { value, index }));
                    } else if !may_forward && self.role.0 != Role::Leader {
                        self.metrics.refused();
                        let _ = reply.send(Err(self.not_leader()));
                    } else {
                        let id = self.request_id();
                        self.reads.insert(id, (key, reply));
                        self.core.step(Input::Read { id });
                    }
                }
                Request::Join {
                    node,
                    address,
                    last_index,
                    follower_only,
                    reply,
                } => self.join(
                    node,
                    address,
                    last_index,
                    follower_only,
                    reply,
                    &mut proposals,
                ),
                Request::Leave { node, reply } => {
                    let id = self.request_id();
                    self.pending.insert(id, Pending::Leave(reply));
                    self.core.step(Input::ChangeMembership {
                        id,
                        change: MembershipChange::Remove(node),
                    });
                }
                Request::View { reply } => {
                    let _ = reply.send(self.view());
                }
                Request::Peer {
                    from,
                    from_address,
                    messages,
                    reply,
                } => {
                    self.transport.learn(from, &from_address, &self.book);
                    if let Some(reply) = reply {
                        // A newer batch from the same peer: the older reply goes as it is.
                        if let Some(older) = self.replies.insert(from, (reply, Vec::new())) {
                            self.close_reply(older);
                        }
                    }
                    for message in messages {
                        self.core.step(Input::Message(message));
                    }
                }
                Request::ClusterLearned { cluster_id } => {
                    let _ = self.storage.send(StorageOp::RecordClusterId(cluster_id));
                }
                Request::Admitted { voter } => {
                    // Until this record is durable a crash restarts the node as joining, which
                    // is safe: it only asks again (the core's contract for `Admitted`).
                    let _ = self
                        .storage
                        .send(StorageOp::RecordStanding(Standing::Admitted));
                    if voter {
                        self.core.step(Input::Admitted);
                    }
                }
                Request::Shutdown { reply } => self.shutting_down = Some(reply),
            }
        }
        if !proposals.is_empty() {
            self.core.step(Input::Propose(proposals));
        }
    }

    /// The leader's side of a join: record the joiner's address in the replicated address book
    /// (ahead of its membership entry in the log, so every member can reach it), then queue it.
    fn join(
        &mut self,
        node: NodeId,
        address: String,
        last_index: LogIndex,
        follower_only: bool,
        reply: Reply<()>,
        proposals: &mut Vec<Proposal>,
    ) {
        if self.role.0 != Role::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if let Some(known) = self.book.get(node) {
            let live = node == self.core.id()
                || self
                    .core
                    .progress(node)
                    .is_some_and(|progress| progress.recent_active);
            if known != address && live {
                let _ = reply.send(Err(ApiError::AlreadyExists(format!(
                    "node id {node} is already used by the live node at {known}; pick another id, \
                     or stop that node first"
                ))));
                return;
            }
        }
        if self.book.get(node) != Some(address.as_str()) {
            let id = self.request_id();
            proposals.push(Proposal {
                id,
                command: address_book::register(node, &address).encode(),
            });
        }
        self.transport.set_address(node, &address);
        let id = self.request_id();
        self.pending.insert(id, Pending::Join(reply));
        if !proposals.is_empty() {
            self.core.step(Input::Propose(std::mem::take(proposals)));
        }
        if follower_only && self.core.membership().learners.contains(&node) {
            if let Some(Pending::Join(reply)) = self.pending.remove(&id) {
                let _ = reply.send(Ok(()));
            }
        } else if follower_only {
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
            });
        }
    }

    fn execute_actions(&mut self) {
        loop {
            let actions = self.core.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.execute(action);
            }
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Persist {
                id,
                hard_state,
                entries,
                sync,
            } => {
                self.persist_issued = id;
                let _ = self.storage.send(StorageOp::Persist {
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
                if after_persist && self.persist_done < self.persist_issued {
                    self.held.push_back((self.persist_issued, message));
                } else {
                    self.route(message);
                }
            }
            Action::Apply { entries } => self.apply(entries),
            Action::ProposalAccepted { id, index, term } => {
                if index > self.kv.applied_index() {
                    if self.pending.contains_key(&id) {
                        self.accepted.insert(index, (term, id));
                    }
                } else if let Some((applied_term, outcome)) = self.unclaimed.remove(&index) {
                    // A forwarded proposal whose entry was applied before the leader's answer.
                    self.settle(id, index, term == applied_term, outcome);
                } else {
                    let unknown = "the entry was applied too long before the leader said it was \
                                   this request's; read the key to find out";
                    self.answer_error(id, ApiError::OutcomeUnknown(unknown.to_string()));
                }
            }
            Action::ProposalOutcomeUnknown { id } => {
                let unknown = "the leader did not answer the request passed on to it in time";
                self.answer_error(id, ApiError::OutcomeUnknown(unknown.to_string()));
            }
            Action::ProposalRefused { id, reason } => {
                let error = self.refusal(reason);
                self.answer_error(id, error);
            }
            Action::ReadReady { id, .. } => {
                if let Some((key, reply)) = self.reads.remove(&id) {
                    let value = self.kv.get(&key).cloned();
                    let index = self.kv.applied_index();
                    self.metrics.read();
                    let _ = reply.send(Ok(ReadResult { value, index }));
                }
            }
            Action::ReadRefused { id, reason } => {
                if let Some((_, reply)) = self.reads.remove(&id) {
                    self.metrics.refused();
                    let _ = reply.send(Err(self.refusal(reason)));
                }
            }
            Action::TakeSnapshot { meta } => {
                let state = self.kv.snapshot_state();
                let _ = self.storage.send(StorageOp::SaveSnapshot { meta, state });
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
                _ => {
                    let _ = self.storage.send(StorageOp::ReadSnapshotChunk {
                        to,
                        meta,
                        offset,
                        bytes_max,
                    });
                }
            },
            Action::WriteSnapshotChunk { offset, data, .. } => {
                let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                if offset <= self.staging.len() {
                    self.staging.truncate(offset);
                    self.staging.extend_from_slice(&data);
                }
            }
            Action::InstallSnapshot { id, meta } => self.install(id, meta),
            Action::JoinCompleted { id, node } => {
                tracing::info!(node, "node joined the cluster as a voter");
                if let Some(Pending::Join(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
            }
            Action::RoleChanged { role, term, leader } => self.role_changed(role, term, leader),
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return;
        };
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Noop | EntryPayload::Membership(_) => {
                    self.kv.skip(entry.index);
                    None
                }
                EntryPayload::Command(bytes) => Some(match Command::decode(&bytes) {
                    Ok(command) => {
                        if let Some((node, address)) = address_book::registration(&command) {
                            self.book.insert(node, address.clone());
                            self.transport.set_address(node, &address);
                        }
                        self.kv.apply_decoded(entry.index, command)
                    }
                    Err(_) => self.kv.apply(entry.index, &bytes),
                }),
            };
            self.answer_applied(entry.index, entry.term, outcome);
        }
        self.core.step(Input::Applied { index: last });
    }

    /// Answers the proposal accepted at `index`, if it is ours: applied if the entry there is
    /// the one we proposed (same term), refused if another leader's entry took its place.
    fn answer_applied(&mut self, index: LogIndex, term: Term, outcome: Option<Outcome>) {
        // Proposals accepted at indexes the log skipped (a snapshot replaced them): unknown.
        while let Some((&skipped, _)) = self.accepted.first_key_value() {
            if skipped >= index {
                break;
            }
            let (_, id) = self.accepted.remove(&skipped).expect("first key");
            self.answer_error(
                id,
                ApiError::OutcomeUnknown("a snapshot replaced this node's log".to_string()),
            );
        }
        let Some((accepted_term, id)) = self.accepted.remove(&index) else {
            if self.role.0 != Role::Leader && !self.pending.is_empty() {
                self.unclaimed.insert(index, (term, outcome));
                if self.unclaimed.len() > UNCLAIMED_OUTCOMES_MAX {
                    self.unclaimed.pop_first();
                }
            } else {
                self.unclaimed.clear();
            }
            return;
        };
        self.settle(id, index, accepted_term == term, outcome);
    }

    /// Answers request `id`, whose proposal was accepted at `index`: with the outcome if the
    /// entry applied there is the one proposed (`same_term`), else "not leader" (another
    /// leader's entry took its place, so it never took effect).
    fn settle(
        &mut self,
        id: RequestId,
        index: LogIndex,
        same_term: bool,
        outcome: Option<Outcome>,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if !same_term {
            let error = ApiError::NotLeader {
                leader_id: self.role.1,
                leader_address: self.leader_address(),
            };
            return answer(pending, error);
        }
        match pending {
            Pending::Write(reply) => {
                self.metrics.wrote();
                let outcome = outcome.unwrap_or(Outcome::Put);
                let _ = reply.send(Ok(WriteResult { index, outcome }));
            }
            Pending::Leave(reply) | Pending::Join(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn install(&mut self, id: PersistId, meta: SnapshotMeta) {
        let data = Bytes::from(std::mem::take(&mut self.staging));
        match KvStateMachine::restore(&data) {
            Ok(kv) => {
                self.kv = kv;
                self.book = AddressBook::from_state_machine(&self.kv);
                for (node, address) in self.book.iter() {
                    self.transport.set_address(node, address);
                }
            }
            Err(error) => {
                // The leader sent a snapshot this build cannot read: stopping is the only safe
                // answer (applying the log after it would diverge from the other replicas).
                self.fatal = Some(format!(
                    "the snapshot received from the leader does not decode ({error}); \
                     upgrade this node to the leader's version"
                ));
                return;
            }
        }
        self.persist_issued = id;
        self.saved_snapshot = Some((meta.clone(), data.clone()));
        let _ = self.storage.send(StorageOp::Install { id, meta, data });
    }

    fn role_changed(&mut self, role: Role, term: Term, leader: Option<NodeId>) {
        let previous = self.role;
        self.role = (role, leader);
        if previous.1 != leader {
            self.metrics.leader_changed();
            tracing::info!(term, ?leader, ?role, "leader changed");
            self.hooks
                .leader_change(leader.unwrap_or(0), term, self.core.id());
        }
        if role == Role::Leader && previous.0 != Role::Leader {
            let id = self.core.id();
            if self.book.get(id) != Some(self.address.as_str()) {
                let request = self.request_id();
                let command = address_book::register(id, &self.address).encode();
                self.core.step(Input::Propose(vec![Proposal {
                    id: request,
                    command,
                }]));
            }
        }
        self.note_member_state();
    }

    fn release_held(&mut self) {
        while let Some((needed, _)) = self.held.front() {
            if *needed > self.persist_done {
                break;
            }
            let (_, message) = self.held.pop_front().expect("front");
            self.route(message);
        }
        self.note_member_state();
    }

    /// Sends `message` back on its recipient's open reply if there is one, else through the
    /// transport. A leader's replication always takes the transport, in order: riding on a
    /// follower's reply (open while it passes writes on), an append could overtake an earlier
    /// one, be rejected, and send the leader back to entries it no longer holds in memory (a
    /// snapshot, measured: two per 4 s under writes through followers).
    fn route(&mut self, message: Message) {
        let replication = matches!(
            message.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::SnapshotChunk { .. }
        );
        match self.replies.get_mut(&message.to) {
            Some((_, gathered)) if !replication => gathered.push(message),
            _ => self.transport.send(message, &self.book),
        }
    }

    /// Answers every open reply that waits for nothing more: no message to its peer is held
    /// back for a persist (those join the reply once durable).
    fn close_replies(&mut self) {
        let ready: Vec<NodeId> = self
            .replies
            .keys()
            .copied()
            .filter(|&peer| !self.held.iter().any(|(_, message)| message.to == peer))
            .collect();
        for peer in ready {
            if let Some(open) = self.replies.remove(&peer) {
                self.close_reply(open);
            }
        }
    }

    /// Answers a reply; if its RPC is gone (timed out), its messages go through the transport.
    fn close_reply(&mut self, (reply, gathered): (oneshot::Sender<Vec<Message>>, Vec<Message>)) {
        let count = gathered.len();
        match reply.send(gathered) {
            Ok(()) => self.metrics.answered_on_reply(count),
            Err(gathered) => {
                for message in gathered {
                    self.transport.send(message, &self.book);
                }
            }
        }
    }

    /// Logs and tells the `switch-status` hook when this node's member state changed.
    fn note_member_state(&mut self) {
        let member = self.core.status().member;
        if member != self.member {
            tracing::info!(from = ?self.member, to = ?member, "member state changed");
            if member == MemberState::Removed {
                tracing::warn!(
                    "this node was removed from the cluster: it no longer votes or campaigns; \
                     to bring it back, restart it with --join ADDR of a member"
                );
                // So that a restart does not resume as the member it was.
                let _ = self
                    .storage
                    .send(StorageOp::RecordStanding(Standing::Removed));
            }
            self.member = member;
            self.hooks.switch_status(member_state_name(member));
        }
    }

    fn answer_error(&mut self, id: RequestId, error: ApiError) {
        if let Some(pending) = self.pending.remove(&id) {
            tracing::debug!(%error, "request not done");
            self.metrics.refused();
            answer(pending, error);
        }
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

    fn not_leader(&self) -> ApiError {
        ApiError::NotLeader {
            leader_id: self.role.1,
            leader_address: self.leader_address(),
        }
    }

    fn leader_address(&self) -> Option<String> {
        let leader = self.role.1?;
        if leader == self.core.id() {
            return Some(self.address.clone());
        }
        self.book
            .get(leader)
            .map(str::to_string)
            .or_else(|| self.transport.address_of(leader))
    }

    fn view(&self) -> NodeView {
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

    /// A leader on its way out hands over to the most caught-up voter.
    fn hand_over(&mut self) {
        if self.role.0 != Role::Leader {
            return;
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
            });
        if let Some(to) = successor {
            tracing::info!(to, "shutting down: handing leadership over");
            self.core.step(Input::TransferLeadership { to });
            self.execute_actions();
        }
    }

    fn fail(&mut self, reason: String) -> String {
        tracing::error!(%reason, "this node stops acknowledging anything");
        let error = ApiError::StorageFailed(reason.clone());
        self.answer_all(error.clone());
        for (_, (_, reply)) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(error.clone()));
        }
        reason
    }

    /// Answers every waiting write or membership change "outcome unknown", saying why (`error`).
    /// Each was handed to the core, which appended it here or passed it on to the leader: it may
    /// still commit, so the error itself (which tells a client it was refused, and to retry
    /// elsewhere) would make a retried put or compare-and-swap take effect twice. What provably
    /// never reached the core (still queued) is answered "shutting down" by the dropped queue.
    fn answer_all(&mut self, error: ApiError) {
        self.accepted.clear();
        #[cfg(feature = "planted-bugs")]
        let refuse = self.core.config().planted_bugs.shutdown_refuses_handed_over
            && matches!(error, ApiError::ShuttingDown);
        for (_, pending) in std::mem::take(&mut self.pending) {
            #[cfg(feature = "planted-bugs")]
            if refuse {
                answer(pending, ApiError::ShuttingDown);
                continue;
            }
            answer(pending, ApiError::OutcomeUnknown(format!("{error}")));
        }
    }

    fn finish(mut self) {
        for open in std::mem::take(&mut self.replies).into_values() {
            self.close_reply(open);
        }
        self.answer_all(ApiError::ShuttingDown);
        for (_, (_, reply)) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(ApiError::ShuttingDown));
        }
        if let Some(reply) = self.shutting_down.take() {
            let _ = reply.send(());
        }
    }
}

fn answer(pending: Pending, error: ApiError) {
    match pending {
        Pending::Write(reply) => {
            let _ = reply.send(Err(error));
        }
        Pending::Leave(reply) | Pending::Join(reply) => {
            let _ = reply.send(Err(error));
        }
    }
}

pub fn member_state_name(member: MemberState) -> &'static str {
    match member {
        MemberState::ConnectionPending => "connection-pending",
        MemberState::Learner => "learner",
        MemberState::Voter => "voter",
        MemberState::Removed => "removed",
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}
