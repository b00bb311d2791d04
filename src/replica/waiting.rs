//! Requests handed to the core and not yet answered: proposals waiting for their entry to be
//! appended and applied, outcomes of entries applied before this follower heard where the leader
//! put its forwarded proposal, and reads waiting for their read index.
//!
//! A proposal is answered from the entry applied at the index the core accepted it at, and only
//! if that entry has the term it was accepted in: another leader's entry in its place means the
//! proposal never took effect.

use std::collections::{BTreeMap, VecDeque};

use super::request::Ticket;
use crate::core::{LogIndex, RequestId, Term};

/// Outcomes of applied entries a follower keeps for proposals it passed on, whose "appended
/// at" answer from the leader may arrive after the entry itself (it travels another way).
const UNCLAIMED_OUTCOMES_MAX: usize = 8192;

/// What a waiting proposal is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalKind {
    /// A client's write: answered with its outcome.
    Write,
    /// A join or configuration change: answered "done".
    Membership,
}

/// How a waiting proposal ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled<Outcome> {
    /// The proposed entry was applied at `index` (`outcome` is `None` for an entry without a
    /// command: a configuration).
    Applied {
        ticket: Ticket,
        kind: ProposalKind,
        index: LogIndex,
        outcome: Option<Outcome>,
    },
    /// Another leader's entry took its place: it never took effect.
    Replaced { ticket: Ticket },
    /// Its index was skipped (a snapshot replaced the log) or its entry applied too long before
    /// the leader said it was this one's: it may or may not have taken effect.
    Unknown { ticket: Ticket, why: &'static str },
}

/// A proposal appended to the log, waiting for its entry to be applied.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    index: LogIndex,
    term: Term,
    ticket: Ticket,
    kind: ProposalKind,
}

/// Both queues are in the order things happen to the log, so a write costs a push at the back
/// and a pop at the front (two `BTreeMap`s cost the in-process benchmark a tenth of its rate).
#[derive(Debug)]
pub struct Waiting<Outcome, Query> {
    /// Handed to the core, not yet appended, by request id (ids only grow: sorted).
    proposals: VecDeque<(RequestId, Ticket, ProposalKind)>,
    /// Appended to the log, by index (sorted). Two may wait at one index: a new leader cut
    /// the log there and appended a later proposal of this node's in its place.
    accepted: VecDeque<Accepted>,
    /// Entries applied while this follower waited to hear where its forwarded proposals were
    /// appended: index → (term, outcome), the newest [`UNCLAIMED_OUTCOMES_MAX`].
    unclaimed: BTreeMap<LogIndex, (Term, Option<Outcome>)>,
    reads: BTreeMap<RequestId, (Ticket, Query)>,
}

impl<Outcome, Query> Default for Waiting<Outcome, Query> {
    fn default() -> Self {
        Waiting {
            proposals: VecDeque::new(),
            accepted: VecDeque::new(),
            unclaimed: BTreeMap::new(),
            reads: BTreeMap::new(),
        }
    }
}

impl<Outcome, Query> Waiting<Outcome, Query> {
    pub fn propose(&mut self, id: RequestId, ticket: Ticket, kind: ProposalKind) {
        assert!(
            self.proposals.back().is_none_or(|&(last, _, _)| last < id),
            "request ids grow"
        );
        self.proposals.push_back((id, ticket, kind));
    }

    pub fn read(&mut self, id: RequestId, ticket: Ticket, query: Query) {
        self.reads.insert(id, (ticket, query));
    }

    /// The read `id`, no longer waiting.
    pub fn take_read(&mut self, id: RequestId) -> Option<(Ticket, Query)> {
        self.reads.remove(&id)
    }

    /// The proposal `id`, no longer waiting (refused, or its outcome unknown).
    pub fn take_proposal(&mut self, id: RequestId) -> Option<(Ticket, ProposalKind)> {
        // Proposals are mostly accepted in the order they were made.
        if let Some(&(first, ticket, kind)) = self.proposals.front() {
            if first == id {
                self.proposals.pop_front();
                return Some((ticket, kind));
            }
        }
        let at = self
            .proposals
            .binary_search_by_key(&id, |&(waiting, _, _)| waiting)
            .ok()?;
        let (_, ticket, kind) = self.proposals.remove(at).expect("found");
        Some((ticket, kind))
    }

    #[cfg(test)]
    pub fn has_proposals(&self) -> bool {
        !self.proposals.is_empty() || !self.accepted.is_empty()
    }

    /// The core appended proposal `id` at `index` in `term`; `applied` is the state machine's
    /// index. Settled at once if its entry was already applied (a forwarded proposal whose
    /// entry arrived before the leader's answer).
    pub fn accepted(
        &mut self,
        id: RequestId,
        index: LogIndex,
        term: Term,
        applied: LogIndex,
    ) -> Option<Settled<Outcome>> {
        if index > applied {
            let (ticket, kind) = self.take_proposal(id)?;
            let accepted = Accepted {
                index,
                term,
                ticket,
                kind,
            };
            if self.accepted.back().is_none_or(|last| last.index < index) {
                self.accepted.push_back(accepted);
            } else {
                let at = self
                    .accepted
                    .partition_point(|waiting| waiting.index <= index);
                self.accepted.insert(at, accepted);
            }
            return None;
        }
        if let Some((applied_term, outcome)) = self.unclaimed.remove(&index) {
            let (ticket, kind) = self.take_proposal(id)?;
            return Some(settle(ticket, kind, index, term == applied_term, outcome));
        }
        let (ticket, _) = self.take_proposal(id)?;
        let why = "the entry was applied too long before the leader said it was this request's; \
                   read the key to find out";
        Some(Settled::Unknown { ticket, why })
    }

    /// The entry at `index` of `term` was applied with `outcome`: settles the proposals accepted
    /// there, and those accepted at indexes the log skipped. `leading` is whether this node
    /// leads (a leader's proposals are never forwarded, so nothing is kept unclaimed).
    pub fn applied(
        &mut self,
        index: LogIndex,
        term: Term,
        outcome: Option<Outcome>,
        leading: bool,
        settled: &mut Vec<Settled<Outcome>>,
    ) {
        while let Some(skipped) = self
            .accepted
            .front()
            .filter(|waiting| waiting.index < index)
        {
            let ticket = skipped.ticket;
            self.accepted.pop_front();
            let why = "a snapshot replaced this node's log";
            settled.push(Settled::Unknown { ticket, why });
        }
        let mut outcome = Some(outcome);
        let mut claimed = false;
        while let Some(&waiting) = self
            .accepted
            .front()
            .filter(|waiting| waiting.index == index)
        {
            self.accepted.pop_front();
            // The entry applied is the one proposed only if its term is the one it was
            // accepted in; at most one proposal waiting here can match.
            let same_term = waiting.term == term;
            let this_outcome = if same_term {
                outcome.take().flatten()
            } else {
                None
            };
            settled.push(settle(
                waiting.ticket,
                waiting.kind,
                index,
                same_term,
                this_outcome,
            ));
            claimed = true;
        }
        if claimed {
            return;
        }
        let outcome = outcome.take().flatten();
        if !leading && !self.proposals.is_empty() {
            self.unclaimed.insert(index, (term, outcome));
            if self.unclaimed.len() > UNCLAIMED_OUTCOMES_MAX {
                self.unclaimed.pop_first();
            }
        } else {
            self.unclaimed.clear();
        }
    }

    /// Everything still waiting, taken out (the node stops): the proposals' tickets, in log
    /// order then request order, and the reads'.
    pub fn abandon(&mut self) -> (Vec<Ticket>, Vec<Ticket>) {
        self.unclaimed.clear();
        let mut proposals: Vec<Ticket> = self
            .accepted
            .drain(..)
            .map(|waiting| waiting.ticket)
            .collect();
        proposals.extend(self.proposals.drain(..).map(|(_, ticket, _)| ticket));
        let reads = std::mem::take(&mut self.reads)
            .into_values()
            .map(|(ticket, _)| ticket)
            .collect();
        (proposals, reads)
    }
}

/// How a proposal accepted at `index` ends once an entry there is applied: with its outcome if
/// that entry is the one proposed (`same_term`), else replaced by another leader's entry.
fn settle<Outcome>(
    ticket: Ticket,
    kind: ProposalKind,
    index: LogIndex,
    same_term: bool,
    outcome: Option<Outcome>,
) -> Settled<Outcome> {
    if same_term {
        Settled::Applied {
            ticket,
            kind,
            index,
            outcome,
        }
    } else {
        Settled::Replaced { ticket }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type W = Waiting<&'static str, ()>;

    #[test]
    fn a_proposal_is_answered_by_the_entry_of_its_term_at_its_index() {
        let mut waiting = W::default();
        waiting.propose(1, 10, ProposalKind::Write);
        waiting.propose(2, 20, ProposalKind::Write);
        assert_eq!(waiting.accepted(1, 5, 3, 4), None);
        assert_eq!(waiting.accepted(2, 6, 3, 4), None);
        let mut settled = Vec::new();
        waiting.applied(5, 3, Some("put"), true, &mut settled);
        waiting.applied(6, 4, Some("other"), true, &mut settled);
        assert_eq!(
            settled,
            vec![
                Settled::Applied {
                    ticket: 10,
                    kind: ProposalKind::Write,
                    index: 5,
                    outcome: Some("put")
                },
                Settled::Replaced { ticket: 20 },
            ]
        );
        assert!(!waiting.has_proposals());
    }

    #[test]
    fn a_forwarded_proposal_applied_before_its_answer_is_claimed_later() {
        let mut waiting = W::default();
        waiting.propose(1, 10, ProposalKind::Write);
        let mut settled = Vec::new();
        waiting.applied(7, 2, Some("put"), false, &mut settled);
        assert!(settled.is_empty());
        let late = waiting.accepted(1, 7, 2, 7);
        assert_eq!(
            late,
            Some(Settled::Applied {
                ticket: 10,
                kind: ProposalKind::Write,
                index: 7,
                outcome: Some("put")
            })
        );
    }

    #[test]
    fn a_skipped_index_leaves_the_outcome_unknown() {
        let mut waiting = W::default();
        waiting.propose(1, 10, ProposalKind::Write);
        assert_eq!(waiting.accepted(1, 5, 1, 0), None);
        let mut settled = Vec::new();
        waiting.applied(9, 2, None, true, &mut settled);
        assert!(matches!(settled[..], [Settled::Unknown { ticket: 10, .. }]));
    }

    #[test]
    fn two_proposals_at_one_index_after_the_log_was_cut_are_both_answered() {
        let mut waiting = W::default();
        waiting.propose(1, 10, ProposalKind::Write);
        waiting.propose(2, 20, ProposalKind::Write);
        assert_eq!(waiting.accepted(1, 5, 2, 0), None);
        assert_eq!(waiting.accepted(2, 5, 3, 0), None);
        let mut settled = Vec::new();
        waiting.applied(5, 3, Some("put"), false, &mut settled);
        assert_eq!(
            settled,
            vec![
                Settled::Replaced { ticket: 10 },
                Settled::Applied {
                    ticket: 20,
                    kind: ProposalKind::Write,
                    index: 5,
                    outcome: Some("put")
                },
            ]
        );
        assert!(!waiting.has_proposals());
    }
}
