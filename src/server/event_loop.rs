//! The one task that owns a node's [`Replica`]: it feeds it ticks, peer messages, storage
//! completions and client requests, and carries out the effects it returns — persist (through
//! the storage worker), send (through the transport), reply (on the request's channel).
//! Everything else in the shell talks to it through [`Request`]s, so the replica is never
//! shared and never locked. What a request's answer is, and when, the replica decides (the same
//! code the simulator runs); this loop only owns the channels, the timers and the I/O.
//!
//! The loop drains every request that is ready before it runs the replica, so many client
//! writes become one persist (one fsync) and one append per peer.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Duration, Instant};

use super::error::ApiError;
use super::hooks::Hooks;
use super::metrics::Metrics;
use super::storage_queue::StorageQueue;
use super::storage_worker::{StorageDone, StorageOp};
use super::transport::Transport;
use crate::core::{
    read_entries_through, LogIndex, MemberState, MembershipChange, Message, MessageBody, NodeId,
    RawNode, Role,
};
use crate::kv::{KvStateMachine, Outcome};
pub use crate::replica::NodeView;
use crate::replica::{self, Answer, Effect, Replica, StateMachine, Ticket};

/// Requests drained per loop iteration at most, so ticks and storage completions are not starved.
const REQUESTS_PER_ITERATION_MAX: usize = 1024;
/// How often the core is ticked.
const TICK: Duration = Duration::from_millis(10);
/// How long a leader that is shutting down waits for its successor to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// The result of a write that was applied (by default, to the key-value store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult<O = Outcome> {
    pub index: LogIndex,
    pub outcome: O,
}

/// The result of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult<A = Result<Option<Bytes>, crate::kv::NotOwned>> {
    pub value: A,
    pub index: LogIndex,
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A look at a node's applied state: it sends what it finds over its own channel.
pub struct Look<S>(pub Box<dyn FnOnce(&S) + Send>);

impl<S> std::fmt::Debug for Look<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Look")
    }
}

/// Everything the rest of the shell can ask of the loop of a node whose replica runs `S`.
#[derive(Debug)]
pub enum Request<S: StateMachine = KvStateMachine> {
    Write {
        /// A command for `S`, encoded.
        command: Bytes,
        /// A follower may pass it on to the leader; if not, it answers "not leader".
        may_forward: bool,
        reply: Reply<WriteResult<S::Outcome>>,
    },
    Read {
        query: S::Query,
        stale: bool,
        /// A follower may serve it with a read index from the leader; if not, it answers
        /// "not leader" (a stale read is served anywhere).
        may_forward: bool,
        reply: Reply<ReadResult<S::ReadAnswer>>,
    },
    /// The leader's side of the join workflow (after the admission hook accepted it).
    Join {
        node: NodeId,
        address: String,
        last_index: LogIndex,
        /// Add as a learner only, never promoted to voter.
        follower_only: bool,
        /// The joiner's nonce for this start (see `core::Admission`).
        nonce: u64,
        reply: Reply<()>,
    },
    Leave {
        node: NodeId,
        reply: Reply<()>,
    },
    View {
        reply: oneshot::Sender<NodeView>,
    },
    /// Runs a look at the state this node has applied so far, on the loop (a data node
    /// exporting a partition for the admin's mover reads its own state this way).
    Inspect(Look<S>),
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

/// Who leads this node's group as the node last saw it: published on every change, for the
/// parts of the shell that must act on it (a data node reports its leadership to the admin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub leader: Option<NodeId>,
    /// This node leads.
    pub leading: bool,
}

/// A reply channel waiting for the replica's answer.
#[derive(Debug)]
enum Waiter<S: StateMachine> {
    Write(Reply<WriteResult<S::Outcome>>),
    Read(Reply<ReadResult<S::ReadAnswer>>),
    Done(Reply<()>),
}

/// What woke the loop: it ticks the replica with the time first, then handles it.
enum Woke {
    Storage(Option<StorageDone>),
    Requests(usize),
    Tick,
}

pub struct EventLoop<S: StateMachine = KvStateMachine> {
    replica: Replica<S>,
    transport: Transport<S>,
    hooks: Hooks,
    metrics: Metrics,
    storage: StorageQueue,
    storage_done: mpsc::UnboundedReceiver<StorageDone>,
    requests: mpsc::Receiver<Request<S>>,
    started: Instant,
    next_ticket: Ticket,
    waiters: BTreeMap<Ticket, Waiter<S>>,
    /// The open reply of the latest batch from each peer, with the messages gathered for it.
    replies: BTreeMap<NodeId, (oneshot::Sender<Vec<Message>>, Vec<Message>)>,
    shutting_down: Option<oneshot::Sender<()>>,
    /// Set when the node must stop at once (fail-stop), with the reason.
    fatal: Option<String>,
    leadership: watch::Sender<Leadership>,
}

/// The parts an event loop is built from.
pub struct EventLoopParts<S: StateMachine = KvStateMachine> {
    pub core: RawNode,
    /// The state machine, recovered from the same storage as the core.
    pub state: S,
    pub address: String,
    pub transport: Transport<S>,
    pub hooks: Hooks,
    pub metrics: Metrics,
    pub storage: StorageQueue,
    pub storage_done: mpsc::UnboundedReceiver<StorageDone>,
    pub requests: mpsc::Receiver<Request<S>>,
    /// Where leadership changes are published (see [`Leadership`]).
    pub leadership: watch::Sender<Leadership>,
}

impl<S: StateMachine> EventLoop<S> {
    pub fn new(parts: EventLoopParts<S>) -> Self {
        EventLoop {
            // No snapshot bytes kept in memory: storage reads a follower's chunks from the file.
            replica: Replica::new(parts.core, parts.state, parts.address, None),
            transport: parts.transport,
            hooks: parts.hooks,
            metrics: parts.metrics,
            storage: parts.storage,
            storage_done: parts.storage_done,
            requests: parts.requests,
            started: Instant::now(),
            next_ticket: 1,
            waiters: BTreeMap::new(),
            replies: BTreeMap::new(),
            shutting_down: None,
            fatal: None,
            leadership: parts.leadership,
        }
    }

    /// Runs until shut down (`Ok`) or until storage fails (`Err`, with the reason).
    pub async fn run(mut self) -> Result<(), String> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(REQUESTS_PER_ITERATION_MAX);
        let mut handover_deadline: Option<Instant> = None;
        loop {
            let woke = tokio::select! {
                biased;
                done = self.storage_done.recv() => Woke::Storage(done),
                // Nothing new while the disk is behind (see `storage_queue`).
                count = self.requests.recv_many(&mut batch, REQUESTS_PER_ITERATION_MAX), if self.storage.has_room() => {
                    Woke::Requests(count)
                }
                _ = ticker.tick() => Woke::Tick,
            };
            // The time first: what just arrived is judged at the moment it arrived, not at the
            // last tick, up to a tick interval ago. A follower's vote lockout dated from an
            // older tick would end early, and a leader's lease judged at one would run late:
            // together, a rival elected while the old leader still answers reads from its lease.
            let now_ms = self.now_ms();
            self.replica.tick(now_ms);
            match woke {
                Woke::Storage(Some(StorageDone::Inputs(inputs))) => {
                    for input in inputs {
                        self.replica.completed(input);
                    }
                }
                Woke::Storage(Some(StorageDone::Failed(reason))) => {
                    return Err(self.fail(format!(
                        "storage failed: {reason}; fix the disk, then restart the node"
                    )))
                }
                Woke::Storage(None) if self.shutting_down.is_some() => break,
                Woke::Storage(None) => {
                    return Err(self.fail("the storage worker stopped".to_string()))
                }
                Woke::Requests(0) => break,
                Woke::Requests(_) => self.handle_requests(&mut batch),
                Woke::Tick => {
                    let core = self.replica.core();
                    self.metrics
                        .observe_status(&core.status(), core.membership().voters.len());
                }
            }
            self.run_replica();
            self.close_replies();
            if let Some(reason) = self.fatal.take() {
                return Err(self.fail(reason));
            }
            if self.shutting_down.is_some() {
                let deadline = *handover_deadline.get_or_insert_with(|| {
                    if let Some(to) = self.replica.hand_over() {
                        tracing::info!(to, "shutting down: handing leadership over");
                        self.run_replica();
                    }
                    Instant::now() + HANDOVER_WAIT
                });
                if self.replica.role() != Role::Leader || Instant::now() >= deadline {
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

    fn ticket(&mut self, waiter: Waiter<S>) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiters.insert(ticket, waiter);
        ticket
    }

    fn handle_requests(&mut self, batch: &mut Vec<Request<S>>) {
        for request in batch.drain(..) {
            match request {
                Request::Write {
                    command,
                    may_forward,
                    reply,
                } => {
                    let ticket = self.ticket(Waiter::Write(reply));
                    self.replica.request(
                        ticket,
                        replica::Request::Write {
                            command,
                            may_forward,
                        },
                    );
                }
                Request::Read {
                    query,
                    stale,
                    may_forward,
                    reply,
                } => {
                    let ticket = self.ticket(Waiter::Read(reply));
                    self.replica.request(
                        ticket,
                        replica::Request::Read {
                            query,
                            stale,
                            may_forward,
                        },
                    );
                }
                Request::Join {
                    node,
                    address,
                    last_index,
                    follower_only,
                    nonce,
                    reply,
                } => {
                    let ticket = self.ticket(Waiter::Done(reply));
                    self.replica.request(
                        ticket,
                        replica::Request::Join {
                            node,
                            address,
                            last_index,
                            follower_only,
                            nonce,
                        },
                    );
                }
                Request::Leave { node, reply } => {
                    let ticket = self.ticket(Waiter::Done(reply));
                    let change = MembershipChange::Remove(node);
                    self.replica
                        .request(ticket, replica::Request::ChangeMembership(change));
                }
                Request::Inspect(Look(look)) => look(self.replica.state()),
                Request::View { reply } => {
                    let mut view = self.replica.view();
                    if view.leader_address.is_none() {
                        view.leader_address = view
                            .status
                            .leader
                            .and_then(|leader| self.transport.address_of(leader));
                    }
                    let _ = reply.send(view);
                }
                Request::Peer {
                    from,
                    from_address,
                    messages,
                    reply,
                } => {
                    self.replica.announced(from, &from_address);
                    self.transport
                        .learn(from, &from_address, self.replica.book());
                    if let Some(reply) = reply {
                        // A newer batch from the same peer: the older reply goes as it is.
                        if let Some(older) = self.replies.insert(from, (reply, Vec::new())) {
                            self.close_reply(older);
                        }
                    }
                    for message in messages {
                        self.replica.message(message);
                    }
                }
                Request::ClusterLearned { cluster_id } => {
                    let _ = self.storage.send(StorageOp::RecordClusterId(cluster_id));
                }
                Request::Admitted { voter } => self.replica.admitted(voter),
                Request::Shutdown { reply } => self.shutting_down = Some(reply),
            }
        }
    }

    /// Runs the replica until it has nothing more to say, and carries out its effects.
    fn run_replica(&mut self) {
        self.replica.run();
        for effect in self.replica.take_effects() {
            self.carry_out(effect);
        }
    }

    fn carry_out(&mut self, effect: Effect<S>) {
        match effect {
            Effect::Persist {
                id,
                hard_state,
                entries,
                sync,
            } => {
                let _ = self.storage.send(StorageOp::Persist {
                    id,
                    hard_state,
                    entries,
                    sync,
                });
            }
            Effect::Send(message) => self.route(message),
            Effect::SaveSnapshot { meta, image } => {
                let image = Box::new(image);
                let _ = self.storage.send(StorageOp::SaveSnapshot { meta, image });
            }
            Effect::ReadSnapshotChunk {
                to,
                meta,
                offset,
                bytes_max,
            } => {
                let _ = self.storage.send(StorageOp::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    bytes_max,
                });
            }
            Effect::ReadEntries {
                peer,
                from,
                through,
                entries_max,
                bytes_max,
            } => {
                let _ = self.storage.send(StorageOp::ReadEntries {
                    peer,
                    from,
                    through: read_entries_through(from, through, entries_max),
                    bytes_max,
                });
            }
            Effect::InstallSnapshot { id, meta, data } => {
                let _ = self.storage.send(StorageOp::Install { id, meta, data });
            }
            Effect::RecordStanding(standing) => {
                let _ = self.storage.send(StorageOp::RecordStanding(standing));
            }
            Effect::Reply { ticket, reply } => self.answer(ticket, reply),
            Effect::AddressLearned { node, address } => {
                self.transport.set_address(node, &address);
            }
            Effect::LeaderChanged { role, term, leader } => {
                self.metrics.leader_changed();
                tracing::info!(term, ?leader, ?role, "leader changed");
                let me = self.replica.core().id();
                self.hooks.leader_change(leader.unwrap_or(0), term, me);
                self.leadership.send_replace(Leadership {
                    term,
                    leader,
                    leading: role == Role::Leader,
                });
            }
            Effect::MemberStateChanged { from, to } => {
                tracing::info!(?from, ?to, "member state changed");
                if to == MemberState::Removed {
                    tracing::warn!(
                        "this node was removed from the cluster: it no longer votes or \
                         campaigns; to bring it back, restart it with --join ADDR of a member"
                    );
                }
                self.hooks.switch_status(member_state_name(to));
            }
            Effect::Fatal(reason) => {
                self.fatal.get_or_insert(reason);
            }
        }
    }

    fn answer(&mut self, ticket: Ticket, reply: replica::Reply<S>) {
        let Some(waiter) = self.waiters.remove(&ticket) else {
            return;
        };
        match &reply {
            Ok(Answer::Written { .. }) => self.metrics.wrote(),
            Ok(Answer::Read { .. }) => self.metrics.read(),
            Ok(Answer::Done) => {}
            Err(error) => {
                tracing::debug!(%error, "request not done");
                self.metrics.refused();
            }
        }
        match (waiter, reply) {
            (Waiter::Write(channel), Ok(Answer::Written { index, outcome })) => {
                let _ = channel.send(Ok(WriteResult { index, outcome }));
            }
            (Waiter::Read(channel), Ok(Answer::Read { answer, index })) => {
                let _ = channel.send(Ok(ReadResult {
                    value: answer,
                    index,
                }));
            }
            (Waiter::Done(channel), Ok(Answer::Done)) => {
                let _ = channel.send(Ok(()));
            }
            (waiter, Ok(answer)) => {
                // The replica answers each kind of request in its own kind.
                unreachable!("{waiter:?} answered with {answer:?}")
            }
            (Waiter::Write(channel), Err(error)) => {
                let _ = channel.send(Err(error));
            }
            (Waiter::Read(channel), Err(error)) => {
                let _ = channel.send(Err(error));
            }
            (Waiter::Done(channel), Err(error)) => {
                let _ = channel.send(Err(error));
            }
        }
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
            _ => self.transport.send(message, self.replica.book()),
        }
    }

    /// Answers every open reply that waits for nothing more: no message to its peer is held
    /// back for a persist (those join the reply once durable).
    fn close_replies(&mut self) {
        let ready: Vec<NodeId> = self
            .replies
            .keys()
            .copied()
            .filter(|&peer| !self.replica.holds_message_to(peer))
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
                    self.transport.send(message, self.replica.book());
                }
            }
        }
    }

    /// Stops acknowledging anything: everything waiting is answered, saying why.
    fn fail(&mut self, reason: String) -> String {
        tracing::error!(%reason, "this node stops acknowledging anything");
        self.abandon_waiting(ApiError::StorageFailed(reason.clone()));
        reason
    }

    /// Answers everything the replica still has waiting (see [`Replica::abandon_waiting`]).
    /// What provably never reached it (still queued) is answered "shutting down" by the
    /// dropped queue.
    fn abandon_waiting(&mut self, error: ApiError) {
        self.replica.abandon_waiting(error);
        for effect in self.replica.take_effects() {
            if let Effect::Reply { ticket, reply } = effect {
                self.answer(ticket, reply);
            }
        }
    }

    fn finish(mut self) {
        for open in std::mem::take(&mut self.replies).into_values() {
            self.close_reply(open);
        }
        self.abandon_waiting(ApiError::ShuttingDown);
        if let Some(reply) = self.shutting_down.take() {
            let _ = reply.send(());
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
