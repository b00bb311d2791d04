//! Checks on what a node counted, not only on what it ended up with: a bug in who counts toward
//! a quorum, or in when a promise is made, often leaves every log intact for thousands of
//! seeds, and shows here at the step that makes it.
//!
//! - A leader's commit rests on its entry being durable on a majority of the voters of the
//!   configuration it counted with (both majorities while joint); no other node commits first.
//! - A leader's election rests on durable votes of a majority of those voters.
//! - Terms rise only by a real election (never a pre-vote) or by a message whose term the
//!   receiver may adopt; and no node sends a term above its own, except the pre-vote request
//!   and a granted pre-vote (the term an election would have), so a term nobody started cannot
//!   travel.
//! - A log never holds two configuration changes beyond what is committed (one change at a
//!   time, the rule the single-server change and joint consensus both rely on), and a leader
//!   appends one only after an entry of its own term committed.

use std::collections::BTreeSet;

use ravel::core::{
    Action, EntryPayload, HardState, LogIndex, Membership, MessageBody, NodeId, Role, Term,
};

use crate::checker::{NodeWatch, Violation};

use super::*;

/// The term of a message being delivered, and whether its receiver may take that term as its
/// own (a pre-vote request, and a granted pre-vote, carry a term nobody has started yet).
#[derive(Clone, Copy, Debug)]
pub(super) struct Delivering {
    pub term: Term,
    pub adoptable: bool,
}

impl Delivering {
    pub(super) fn of(message: &Message) -> Delivering {
        Delivering {
            term: message.term,
            adoptable: !carries_a_pre_vote_term(&message.body),
        }
    }
}

/// A pre-vote request, and a granted pre-vote, carry the term an election would have: one no
/// node has started yet.
fn carries_a_pre_vote_term(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::VoteRequest { pre_vote: true, .. }
            | MessageBody::VoteResponse {
                pre_vote: true,
                granted: true
            }
    )
}

impl World {
    /// The checks above, on node `id` after one step; `before` is what the checker saw of it
    /// before the step, `committed_before` the committed record's length then.
    pub(super) fn check_quorums(
        &self,
        id: NodeId,
        before: NodeWatch,
        committed_before: LogIndex,
    ) -> Result<(), Violation> {
        let core = self.node_ref(id).core().expect("it just stepped");
        let status = core.status();
        if status.term > before.term {
            self.check_term_rise(id, before.term, status.term, status.role)?;
        }
        let committed_now = self.checker.committed_len();
        if committed_now > committed_before {
            // A leader that removed itself steps down in the step that commits the removal.
            if status.role != Role::Leader && before.role != Some(Role::Leader) {
                return Err(format!(
                    "node {id} ({:?}, term {}) committed index {committed_now} before any leader did",
                    status.role, status.term
                ));
            }
            // The configuration it counted with: the last in its log before this step (one it
            // appends as the commit lands, say a promotion, counts from the next step).
            let counted_with = core.membership_in_effect_at(before.last_index);
            for index in committed_before + 1..=committed_now {
                let entry = self.checker.committed_entry(index).expect("recorded");
                // A node that lost its disk after acknowledging still counts: the join workflow
                // treats that loss as one voter's, which Raft survives. What it acknowledges
                // while joining again does not, until this leader held it out of its voters
                // (see `note_readmissions`): it may have forgotten a vote for a later leader,
                // and a leader deposed without knowing it could commit with it.
                let holds = |voter: NodeId| {
                    let node = self.node_ref(voter);
                    let counts_now =
                        !node.joining || node.readmitted_by.contains(&(id, status.term));
                    let lost = node.lost_disk.as_ref();
                    lost.is_some_and(|disk| disk.durably_holds(entry.index, entry.term))
                        || (counts_now && node.disk.durably_holds(entry.index, entry.term))
                };
                if let Some(short) = short_of_majority(counted_with, holds) {
                    let holders: Vec<NodeId> = counted_with
                        .replicas()
                        .into_iter()
                        .filter(|&voter| holds(voter))
                        .collect();
                    let not_admitted: Vec<NodeId> = (counted_with.replicas().into_iter())
                        .filter(|&voter| {
                            let node = self.node_ref(voter);
                            node.joining && !node.readmitted_by.contains(&(id, status.term))
                        })
                        .collect();
                    let not_admitted = if not_admitted.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (what {not_admitted:?} acknowledged since losing its disk does \
                             not count: not admitted again yet)"
                        )
                    };
                    return Err(format!(
                        "leader {id} (term {}) committed index {index} (term {}) durable on \
                         only {short} of the voters it counts with ({}): on \
                         {holders:?}{not_admitted}",
                        status.term,
                        entry.term,
                        describe_membership(counted_with),
                    ));
                }
            }
        }
        if status.role == Role::Leader && before.role != Some(Role::Leader) {
            let term = status.term;
            // Its own vote may still be on its way to disk: nothing it says as leader leaves
            // before that write is synced.
            let own = core.hard_state();
            let voted_for_it = |hard_state: &HardState| {
                hard_state.term > term || (hard_state.term == term && hard_state.vote == Some(id))
            };
            let voted = |voter: NodeId| {
                if voter == id {
                    return voted_for_it(&own);
                }
                self.node_ref(voter)
                    .disks()
                    .any(|disk| voted_for_it(disk.durable_hard_state()))
            };
            if let Some(short) = short_of_majority(core.membership(), voted) {
                return Err(format!(
                    "node {id} leads term {term} with durable votes of only {short} of the \
                     voters it counts with: {}",
                    describe_membership(core.membership())
                ));
            }
        }
        if status.role == Role::Leader {
            self.check_changes_after_own_commit(id, before.last_index)?;
            self.check_one_change_at_a_time(id)?;
        }
        Ok(())
    }

    /// Notes, after a step of leader `id`, every node joining again (it lost its disk) that the
    /// leader holds out of its voters: the join workflow removes such a node, or adds it as a
    /// learner, before it may count again (a node not yet admitted never counts toward a
    /// quorum).
    pub(super) fn note_readmissions(&mut self, id: NodeId) {
        if !self.nodes.iter().any(|node| node.joining) {
            return;
        }
        let core = self.node_ref(id).core().expect("it just stepped");
        let status = core.status();
        if status.role != Role::Leader {
            return;
        }
        let membership = core.membership();
        let held_out: Vec<NodeId> = (self.nodes.iter())
            .filter(|node| node.joining && !membership.is_voter(node.id))
            .map(|node| node.id)
            .collect();
        for node in held_out {
            self.node(node).readmitted_by.insert((id, status.term));
        }
    }

    /// A leader appends a configuration change only once an entry of its own term committed
    /// (the rule found missing after the thesis: a new leader that changes the configuration
    /// before it knows what its predecessors committed can make a quorum disjoint from theirs).
    fn check_changes_after_own_commit(
        &self,
        id: NodeId,
        last_index_before: LogIndex,
    ) -> Result<(), Violation> {
        let core = self.node_ref(id).core().expect("up");
        let log = core.log();
        let term = core.status().term;
        let from = last_index_before
            .max(log.commit())
            .max(log.first_index() - 1)
            + 1;
        for index in from..=log.last_index() {
            let Some(entry) = log.entry(index) else {
                continue;
            };
            let EntryPayload::Membership(membership, _) = &entry.payload else {
                continue;
            };
            // (A first leader records the founders' configuration: no change.)
            if entry.term == term
                && membership != core.membership_in_effect_at(index - 1)
                && log
                    .term(log.commit())
                    .is_some_and(|committed| committed != term)
            {
                return Err(format!(
                    "leader {id} appended a configuration change at {index} in term {term} \
                     before any entry of its term committed (its commit {} is of term {:?})",
                    log.commit(),
                    log.term(log.commit())
                ));
            }
        }
        Ok(())
    }

    /// A term rises by the node's own election (one above the term it had, or above the term
    /// of the message that started it, as `TimeoutNow` does) or to the term of a message it
    /// may adopt; never while it only asks for pre-votes.
    fn check_term_rise(
        &self,
        id: NodeId,
        from: Term,
        to: Term,
        role: Role,
    ) -> Result<(), Violation> {
        let message = self.delivering;
        let adopted = message.is_some_and(|message| message.adoptable && message.term == to);
        let elected = matches!(role, Role::Candidate | Role::Leader)
            && (to == from + 1 || message.is_some_and(|message| to == message.term + 1));
        if adopted || elected {
            return Ok(());
        }
        Err(format!(
            "node {id} ({role:?}) moved from term {from} to {to} without an election of its own \
             or a message it may take that term from (delivering {message:?})"
        ))
    }
}

/// No message carries a term above its sender's, except a pre-vote request and a granted
/// pre-vote: a refused pre-vote, say, that echoed the requested term would hand a pre-candidate
/// a term no election started.
pub(super) fn check_sent_terms(
    id: NodeId,
    term: Term,
    actions: &[Action],
) -> Result<(), Violation> {
    for action in actions {
        let Action::Send { message, .. } = action else {
            continue;
        };
        if message.term > term && !carries_a_pre_vote_term(&message.body) {
            return Err(format!(
                "node {id} in term {term} sent term {} to node {}: {:?}",
                message.term, message.to, message.body
            ));
        }
    }
    Ok(())
}

impl World {
    /// A leader's log holds at most one configuration entry beyond the committed record.
    fn check_one_change_at_a_time(&self, id: NodeId) -> Result<(), Violation> {
        let log = self.node_ref(id).core().expect("up").log();
        let from = (self.checker.committed_len() + 1).max(log.first_index());
        let changes: Vec<LogIndex> = (from..=log.last_index())
            .filter(|&index| {
                log.entry(index)
                    .is_some_and(|entry| matches!(entry.payload, EntryPayload::Membership(..)))
            })
            .collect();
        if changes.len() > 1 {
            return Err(format!(
                "leader {id} holds {} uncommitted configuration changes (at {changes:?}, \
                 committed up to {}): one at a time",
                changes.len(),
                self.checker.committed_len()
            ));
        }
        Ok(())
    }
}

/// `None` if `holds` is true of a majority of the voters (and of the outgoing voters while
/// joint); otherwise how many of the voter set that fell short did.
fn short_of_majority(membership: &Membership, holds: impl Fn(NodeId) -> bool) -> Option<String> {
    let check = |voters: &BTreeSet<NodeId>| {
        let count = voters.iter().filter(|&&voter| holds(voter)).count();
        (count <= voters.len() / 2).then(|| format!("{count} of {}", voters.len()))
    };
    check(&membership.voters).or_else(|| {
        if membership.is_joint() {
            check(&membership.outgoing_voters).map(|short| format!("{short} outgoing"))
        } else {
            None
        }
    })
}

fn describe_membership(membership: &Membership) -> String {
    format!(
        "voters {:?}, outgoing {:?}",
        membership.voters, membership.outgoing_voters
    )
}
