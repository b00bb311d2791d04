//! What a leader lease promises (Raft thesis §6.4.1): while a leader may answer reads from its
//! lease, no other node leads in a later term. A read served then is linearizable only because
//! nobody else can have committed a write since; this checks the promise itself, at every step,
//! instead of waiting for a client to read a key a rival just wrote inside the few milliseconds
//! a broken lease outlives the truth.
//!
//! Each node's lease is judged on its own clock at the present instant — what the core would
//! answer a read arriving now (a node is ticked with its local time before every input) — so
//! clock drift and offsets count exactly as they do for the core.

use ravel::core::{NodeId, ReadMode, Role, Term};

use crate::checker::Violation;

use super::*;

impl World {
    pub(super) fn check_leases(&self) -> Result<(), Violation> {
        if self.tuning.read_mode != ReadMode::Lease {
            return Ok(());
        }
        // Runs after every event: one pass, clocks read for leaders only, nothing allocated.
        let mut holder: Option<(NodeId, Term, u64)> = None;
        let mut newest_leader: Option<(NodeId, Term)> = None;
        for node in &self.nodes {
            let Some(core) = node.core() else {
                continue;
            };
            if core.role() != Role::Leader {
                continue;
            }
            let term = core.hard_state().term;
            if newest_leader.is_none_or(|(_, newest)| term > newest) {
                newest_leader = Some((node.id, term));
            }
            let local_ms = node.clock.local_ms(self.now_us);
            if core.lease_holds_at(local_ms) && holder.is_none_or(|(_, held, _)| term < held) {
                holder = Some((node.id, term, local_ms));
            }
        }
        let Some((holder, held_term, local_ms)) = holder else {
            return Ok(());
        };
        if let Some((rival, rival_term)) = newest_leader.filter(|&(_, term)| term > held_term) {
            return Err(format!(
                "node {rival} leads in term {rival_term} while node {holder}'s lease from term \
                 {held_term} still holds (its clock reads {local_ms} ms): a read it answers now \
                 may miss the rival's writes"
            ));
        }
        self.check_lease_outlives_no_promise(holder, held_term)
    }

    /// The lease rests on a promise: voters that heard the leader refuse votes for the election
    /// timeout of their own clock. So while it holds, the voters free to vote — up, not
    /// leading, past their promise on their own clock — must not make a majority of its
    /// configuration (of both, while joint). This sees a lease that outlives the promise
    /// (drift or clock resolution misjudged) whether or not an election happens to use the gap.
    fn check_lease_outlives_no_promise(&self, holder: NodeId, term: Term) -> Result<(), Violation> {
        let membership = self
            .node_ref(holder)
            .core()
            .expect("a lease holder is up")
            .membership();
        let free_to_vote = |voter: NodeId| {
            let node = self.node_ref(voter);
            voter != holder
                && node.core().is_some_and(|core| {
                    core.role() != Role::Leader
                        && node.clock.local_ms(self.now_us) >= core.vote_lockout_until_ms()
                })
        };
        // Stops at the first voter past the point where no majority can be free: while the
        // leader is heard, that is after the first bound voter or two.
        let free_majority = |voters: &std::collections::BTreeSet<NodeId>| {
            let majority = voters.len() / 2 + 1;
            let mut free = 0;
            for (seen, &voter) in voters.iter().enumerate() {
                if free_to_vote(voter) {
                    free += 1;
                } else if voters.len() - (seen + 1) + free < majority {
                    return false;
                }
            }
            !voters.is_empty() && free >= majority
        };
        if free_majority(&membership.voters)
            && (membership.outgoing_voters.is_empty() || free_majority(&membership.outgoing_voters))
        {
            let free: Vec<NodeId> = (membership.voters.iter())
                .chain(&membership.outgoing_voters)
                .copied()
                .filter(|&voter| free_to_vote(voter))
                .collect();
            return Err(format!(
                "node {holder}'s lease from term {term} outlives the promise it rests on: voters \
                 {free:?} are free to vote (past their lockout on their own clocks), a majority \
                 of {:?}",
                membership.voters
            ));
        }
        Ok(())
    }
}
