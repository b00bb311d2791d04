//! Linearizable reads served by a follower (Raft thesis §6.4, "reads from followers", as etcd
//! does them): the follower asks the leader for a read index, the leader confirms its
//! leadership as for a read of its own (a quorum's heartbeat round, or its lease) and answers
//! with the commit index it had when the request arrived, and the follower reads its own state
//! machine once it has applied that index. The leader does the confirming; the followers do the
//! reading, so reads spread over the cluster.
//!
//! Reads change nothing, so unlike forwarded writes they need no deduplication: a duplicated
//! request is confirmed twice, and a duplicated answer finds nothing waiting. For the same
//! reason a request is asked again of a new leader as soon as this node follows one (any
//! leader's index confirmed after the read began will do), so a leader change costs a read one
//! round trip, not a timeout. What must never happen is an answer taken for a request other
//! than its own: an older request's index may predate writes that completed before a newer
//! read began. Requests are numbered per incarnation of the follower (`nonce`, `seq`), and
//! numbers are never reused. A read no leader answers within an election timeout of the last
//! asking is refused (`LeaderUnresponsive`); the client may retry it anywhere.

use std::collections::{BTreeMap, VecDeque};

use super::io::{Action, RequestId};
use super::message::MessageBody;
use super::node::RawNode;
use super::types::{LogIndex, NodeId, Refusal, Role};

/// A follower's reads on their way to the leader, or waiting for its read index.
#[derive(Debug, Default)]
pub(super) struct ForwardedReads {
    /// Reads that arrived since the last `take_actions`: they leave together, in one request.
    batch: Vec<RequestId>,
    /// The last request number used.
    seq: u64,
    /// Request number → the reads it carries, who was asked, and when to give up.
    waiting: BTreeMap<u64, Waiting>,
    /// `(give up at, request number)` in the order sent (a request asked again appears again).
    deadlines: VecDeque<(u64, u64)>,
    /// The leader every waiting request was last sent to, so that the common case (no leader
    /// change) costs no walk over them.
    asked: Option<NodeId>,
}

#[derive(Debug)]
struct Waiting {
    ids: Vec<RequestId>,
    asked: NodeId,
    give_up_at: u64,
}

/// Who waits for a read index at the leader: a read of its own, or a follower's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadWaiter {
    Local(RequestId),
    Remote { from: NodeId, nonce: u64, seq: u64 },
}

impl RawNode {
    /// Whether reads made here now go to the leader for a read index rather than being refused.
    /// Only a member does: the leader stops replicating to a node it removed (or has not added
    /// yet), whose state machine might never reach the read index.
    pub(super) fn forwards_reads_to(&self) -> Option<NodeId> {
        let leader = self.leader?;
        let forwards = self.config.forward_reads
            && self.role == Role::Follower
            && leader != self.config.id
            && self.is_replicated_member();
        forwards.then_some(leader)
    }

    /// Queues a read for the next request to the leader (sent by `take_actions`).
    pub(super) fn forward_read(&mut self, id: RequestId) {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.follower_read_from_own_commit {
            let commit = self.log.commit();
            return self.await_apply(id, commit);
        }
        self.forwarded_reads.batch.push(id);
    }

    /// Sends the reads queued since the last call in one request, or refuses them if this node
    /// no longer knows a leader to ask; asks a new leader again for requests sent to an old one.
    /// A node that became leader itself confirms them as its own reads.
    pub(super) fn flush_forwarded_reads(&mut self) {
        let reads = &self.forwarded_reads;
        if reads.batch.is_empty() && reads.waiting.is_empty() {
            return;
        }
        if self.leader_state.is_some() {
            return self.take_over_forwarded_reads();
        }
        let leader = self.forwards_reads_to();
        if let Some(leader) = leader {
            self.ask_again(leader);
        }
        if self.forwarded_reads.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.forwarded_reads.batch);
        let Some(leader) = leader else {
            let reason = Refusal::NotLeader {
                leader_hint: self.leader,
            };
            for id in batch {
                self.events.push(Action::ReadRefused { id, reason });
            }
            return;
        };
        let give_up_at = self.now_ms + self.config.election_timeout_max_ms;
        let reads = &mut self.forwarded_reads;
        reads.seq += 1;
        let seq = reads.seq;
        let waiting = Waiting {
            ids: batch,
            asked: leader,
            give_up_at,
        };
        reads.waiting.insert(seq, waiting);
        reads.deadlines.push_back((give_up_at, seq));
        self.send(
            leader,
            MessageBody::ReadIndex {
                nonce: self.config.seed,
                seq,
            },
        );
    }

    /// This node leads now: its reads still on their way, or waiting for another leader's
    /// answer, become reads of its own (confirmed after they began, like any other).
    fn take_over_forwarded_reads(&mut self) {
        let reads = &mut self.forwarded_reads;
        let mut ids = std::mem::take(&mut reads.batch);
        for (_, waiting) in std::mem::take(&mut reads.waiting) {
            ids.extend(waiting.ids);
        }
        reads.deadlines.clear();
        reads.asked = None;
        for id in ids {
            self.read_as_leader(ReadWaiter::Local(id));
        }
    }

    /// Sends every request that `leader` was not the one asked to it, with a fresh deadline.
    fn ask_again(&mut self, leader: NodeId) {
        let give_up_at = self.now_ms + self.config.election_timeout_max_ms;
        let reads = &mut self.forwarded_reads;
        if reads.asked.replace(leader) == Some(leader) {
            return;
        }
        let mut again = Vec::new();
        for (&seq, waiting) in reads.waiting.iter_mut() {
            if waiting.asked != leader {
                waiting.asked = leader;
                waiting.give_up_at = give_up_at;
                reads.deadlines.push_back((give_up_at, seq));
                again.push(seq);
            }
        }
        for seq in again {
            self.send(
                leader,
                MessageBody::ReadIndex {
                    nonce: self.config.seed,
                    seq,
                },
            );
        }
    }

    /// The leader's side: confirms its leadership for the request, then answers with the read
    /// index. Anyone else stays silent, as does a leader asked by a node it does not replicate
    /// to (removed, perhaps without knowing it yet), whose state machine might never reach the
    /// index: the follower gives up after an election timeout.
    pub(super) fn handle_read_index(&mut self, from: NodeId, nonce: u64, seq: u64) {
        if !self.membership.is_member(from) {
            return;
        }
        let waiter = ReadWaiter::Remote { from, nonce, seq };
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.read_index_without_round && self.leader_state.is_some() {
            let index = self.log.commit();
            return self.read_index_confirmed(waiter, index);
        }
        self.read_as_leader(waiter);
    }

    /// The follower's side: reads the request carried may be served once `index` is applied.
    pub(super) fn handle_read_index_response(&mut self, nonce: u64, seq: u64, index: LogIndex) {
        if nonce != self.config.seed {
            return;
        }
        let Some(waiting) = self.forwarded_reads.waiting.remove(&seq) else {
            return;
        };
        for id in waiting.ids {
            self.await_apply(id, index);
        }
    }

    /// Gives up on reads whose read index has not come back within an election timeout of the
    /// last asking.
    pub(super) fn expire_forwarded_reads(&mut self) {
        let reads = &mut self.forwarded_reads;
        while let Some(&(give_up_at, seq)) = reads.deadlines.front() {
            if give_up_at > self.now_ms {
                break;
            }
            reads.deadlines.pop_front();
            let expired = reads
                .waiting
                .get(&seq)
                .is_some_and(|waiting| waiting.give_up_at <= self.now_ms);
            if !expired {
                continue;
            }
            let waiting = reads.waiting.remove(&seq).expect("checked present");
            for id in waiting.ids {
                self.events.push(Action::ReadRefused {
                    id,
                    reason: Refusal::LeaderUnresponsive,
                });
            }
        }
    }

    /// A confirmed read index for `waiter`: a read of this node's waits for the state machine,
    /// a follower's request is answered.
    pub(super) fn read_index_confirmed(&mut self, waiter: ReadWaiter, index: LogIndex) {
        match waiter {
            ReadWaiter::Local(id) => self.await_apply(id, index),
            ReadWaiter::Remote { from, nonce, seq } => {
                self.send(from, MessageBody::ReadIndexResponse { nonce, seq, index })
            }
        }
    }

    /// Queues a confirmed read until the state machine has applied `index`, keeping the queue
    /// ordered by index so that one read with a high index holds none with a lower one back.
    pub(super) fn await_apply(&mut self, id: RequestId, index: LogIndex) {
        let queue = &mut self.reads_awaiting_apply;
        let at = queue.partition_point(|&(_, queued)| queued <= index);
        queue.insert(at, (id, index));
    }
}
