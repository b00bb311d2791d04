//! Proposals made at a follower, passed on to the leader inside Raft's own messages (as etcd's
//! followers do): a client may write through any member, and the leader sees one batched
//! message instead of one client call per command.
//!
//! Safety rests on two rules. The leader appends a forwarded batch at most once: batches are
//! numbered per sender incarnation, and a leader remembers the numbers it took from each in its
//! term (a duplicate is dropped without an answer; so is a batch older than all it remembers).
//! And only a leader, in the batch's own term, ever refuses a batch; since a node leads a term
//! at most once, nobody else can later append what was refused. A batch dropped or answered too
//! late leaves its proposals "outcome unknown", never "refused".

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::io::{Action, Proposal, RequestId};
use super::message::{ForwardRefusal, MessageBody};
use super::node::RawNode;
use super::types::{LogIndex, NodeId, Refusal, Role, Term};

/// A follower's proposals waiting for the leader's answer.
#[derive(Debug, Default)]
pub(super) struct Forwarded {
    /// The last batch number used; the next batch takes the one after.
    seq: u64,
    /// Proposal → the term it was forwarded in.
    waiting: BTreeMap<RequestId, Term>,
    /// `(give up at, proposal)` in the order forwarded.
    deadlines: VecDeque<(u64, RequestId)>,
}

/// Batch numbers a leader remembers per sender incarnation: enough that batches overtaking one
/// another (they travel on requests and on replies alike) are all taken.
const SEEN_BATCHES_MAX: usize = 1024;

/// The batches a leader has taken in its term, per `(sender, nonce)`.
pub(super) type ForwardsSeen = BTreeMap<(NodeId, u64), SeenBatches>;

/// The newest batch numbers taken from one sender incarnation.
#[derive(Debug, Default)]
pub(super) struct SeenBatches {
    taken: BTreeSet<u64>,
}

impl SeenBatches {
    /// Records `seq` and says whether it is new. Once full, a number older than every one
    /// remembered may have been taken and forgotten, so it counts as seen.
    fn take(&mut self, seq: u64) -> bool {
        let forgotten = self.taken.len() >= SEEN_BATCHES_MAX
            && self.taken.first().is_some_and(|&oldest| seq < oldest);
        if forgotten || !self.taken.insert(seq) {
            return false;
        }
        if self.taken.len() > SEEN_BATCHES_MAX {
            self.taken.pop_first();
        }
        true
    }
}

impl RawNode {
    /// Whether proposals made here now go to the leader rather than being refused.
    pub(super) fn forwards_to(&self) -> Option<NodeId> {
        let leader = self.leader?;
        let forwards = self.config.forward_proposals
            && self.role == Role::Follower
            && leader != self.config.id
            && self.is_replicated_member();
        forwards.then_some(leader)
    }

    /// Passes `proposals` on to `leader` in one batch.
    pub(super) fn forward(&mut self, leader: NodeId, proposals: Vec<Proposal>) {
        let give_up_at = self.now_ms + self.config.election_timeout_max_ms;
        let term = self.term;
        let forwarded = &mut self.forwarded;
        forwarded.seq += 1;
        for proposal in &proposals {
            forwarded.waiting.insert(proposal.id, term);
            forwarded.deadlines.push_back((give_up_at, proposal.id));
        }
        let body = MessageBody::Propose {
            nonce: self.config.seed,
            seq: forwarded.seq,
            proposals,
        };
        self.send(leader, body);
    }

    /// The leader's side: appends a batch it has not seen, or refuses it, or ignores it.
    pub(super) fn handle_propose(
        &mut self,
        from: NodeId,
        nonce: u64,
        seq: u64,
        proposals: Vec<Proposal>,
    ) {
        let uncommitted = (self.log.last_index() - self.log.commit()) as usize;
        let overloaded = uncommitted + proposals.len() > self.config.uncommitted_entries_max;
        let Some(leader) = self.leader_state.as_mut() else {
            // Not the leader (any more, or after a restart): silence, as it cannot tell whether
            // it appended this batch before.
            return;
        };
        let new = leader
            .forwards_seen
            .entry((from, nonce))
            .or_default()
            .take(seq);
        #[cfg(feature = "planted-bugs")]
        let new = new || self.config.planted_bugs.forward_without_dedup;
        if !new {
            return;
        }
        let ids = proposals.iter().map(|proposal| proposal.id).collect();
        let refusal = if leader.transfer.is_some() {
            Some(ForwardRefusal::TransferInProgress)
        } else if overloaded {
            Some(ForwardRefusal::Overloaded)
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.send(from, MessageBody::ProposeRefused { ids, reason });
        }
        let first_index = self.log.last_index() + 1;
        for proposal in proposals {
            self.append_command(proposal.command);
        }
        self.send(from, MessageBody::ProposeAccepted { first_index, ids });
    }

    /// The follower's side: the leader appended the batch (in the message's term, this node's).
    pub(super) fn handle_propose_accepted(&mut self, first_index: LogIndex, ids: Vec<RequestId>) {
        let term = self.term;
        for (offset, id) in ids.into_iter().enumerate() {
            if self.forwarded.waiting.get(&id) == Some(&term) {
                self.forwarded.waiting.remove(&id);
                self.events.push(Action::ProposalAccepted {
                    id,
                    index: first_index + offset as LogIndex,
                    term,
                });
            }
        }
    }

    /// The follower's side: the leader will never append the batch.
    pub(super) fn handle_propose_refused(&mut self, ids: Vec<RequestId>, reason: ForwardRefusal) {
        let reason = match reason {
            ForwardRefusal::TransferInProgress => Refusal::TransferInProgress,
            ForwardRefusal::Overloaded => Refusal::Overloaded,
        };
        for id in ids {
            if self.forwarded.waiting.remove(&id).is_some() {
                self.events.push(Action::ProposalRefused { id, reason });
            }
        }
    }

    /// Gives up on forwarded proposals the leader has not answered in an election timeout.
    pub(super) fn expire_forwarded(&mut self) {
        let forwarded = &mut self.forwarded;
        while let Some(&(give_up_at, id)) = forwarded.deadlines.front() {
            if give_up_at > self.now_ms {
                break;
            }
            forwarded.deadlines.pop_front();
            if forwarded.waiting.remove(&id).is_some() {
                self.events.push(Action::ProposalOutcomeUnknown { id });
            }
        }
    }
}
