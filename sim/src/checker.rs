//! The Raft safety invariants, checked after every step of every node (Raft §5.2–5.4, Figure 3):
//! election safety, log matching, leader completeness, state-machine safety, and terms and commit
//! indexes that never move backwards within a node's life.

use std::collections::BTreeMap;

use ravel::core::{Entry, LogIndex, NodeId, RawNode, Role, SnapshotMeta, Term};

/// What the checker remembers of one node between steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeWatch {
    pub term: Term,
    pub commit: LogIndex,
    pub role: Option<Role>,
    /// The last index of its log.
    pub last_index: LogIndex,
}

#[derive(Debug, Default)]
pub struct Checker {
    /// The leader of each term, as soon as one is seen.
    leaders: BTreeMap<Term, NodeId>,
    /// The committed prefix of the log, as observed from any node's commit index.
    committed: Vec<Entry>,
    /// For each committed entry, the term in which it was first seen committed.
    committed_in_term: Vec<Term>,
    pub elections: u64,
}

pub type Violation = String;

impl Checker {
    /// Checks one node right after it stepped.
    pub fn after_step(&mut self, core: &RawNode, watch: &mut NodeWatch) -> Result<(), Violation> {
        let status = core.status();
        let id = status.id;
        if status.refused_messages > 0 {
            return Err(format!(
                "node {id}: refused {} peer messages as impossible from an honest peer \
                 (malformed, or from a second leader of its term)",
                status.refused_messages
            ));
        }
        if status.term < watch.term {
            return Err(format!(
                "node {id}: term went back from {} to {}",
                watch.term, status.term
            ));
        }
        if status.commit < watch.commit {
            return Err(format!(
                "node {id}: commit index went back from {} to {}",
                watch.commit, status.commit
            ));
        }
        if status.role == Role::Leader {
            let leader = *self.leaders.entry(status.term).or_insert(id);
            if leader != id {
                return Err(format!(
                    "election safety: nodes {leader} and {id} are both leader of term {}",
                    status.term
                ));
            }
            if watch.role != Some(Role::Leader) {
                self.elections += 1;
                self.check_leader_completeness(core)?;
            }
        }
        self.check_committed(core, watch.commit, status.commit)?;
        watch.term = status.term;
        watch.commit = status.commit;
        watch.role = Some(status.role);
        watch.last_index = core.log().last_index();
        Ok(())
    }

    /// Every entry committed in a term is in the log of every leader of a later term (Raft
    /// §5.4.3). (A candidate held up long enough can win an earlier term than one in which
    /// something was since committed; it need not hold that.)
    fn check_leader_completeness(&self, core: &RawNode) -> Result<(), Violation> {
        // Entries released from memory were durable on every voter, checked when they committed.
        let held_from = core.log().first_index() as usize - 1;
        let term = core.status().term;
        let required = self
            .committed
            .iter()
            .zip(&self.committed_in_term)
            .skip(held_from)
            .filter(|(_, committed_in)| **committed_in < term);
        for (committed, _) in required {
            if core.log().entry(committed.index) != Some(committed) {
                return Err(format!(
                    "leader completeness: node {} leads term {} without committed entry {} (term {}); it has {:?}",
                    core.id(),
                    core.status().term,
                    committed.index,
                    committed.term,
                    core.log().entry(committed.index).map(|entry| entry.term)
                ));
            }
        }
        Ok(())
    }

    /// Nodes agree on every committed index; newly committed entries extend the record.
    fn check_committed(
        &mut self,
        core: &RawNode,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<(), Violation> {
        // Entries below the first one held came in a snapshot, checked when it was installed.
        let held_from = core.log().first_index().max(from + 1);
        for index in held_from..=to {
            let Some(entry) = core.log().entry(index) else {
                return Err(format!(
                    "node {} committed index {index} that it does not hold",
                    core.id()
                ));
            };
            match self.committed.get(index as usize - 1) {
                Some(known) if known != entry => {
                    return Err(format!(
                        "committed entries differ at index {index}: term {} known committed, node {} committed term {}",
                        known.term,
                        core.id(),
                        entry.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.push(entry.clone());
                    self.committed_in_term.push(core.status().term);
                }
            }
        }
        Ok(())
    }

    /// A snapshot installed from a leader covers only committed entries, ending in the committed
    /// entry at its index.
    pub fn on_install(&mut self, node: NodeId, meta: &SnapshotMeta) -> Result<(), Violation> {
        match self.committed.get(meta.index as usize - 1) {
            Some(known) if known.term == meta.term => Ok(()),
            Some(known) => Err(format!(
                "node {node} installs a snapshot ending at index {} term {}, where term {} was committed",
                meta.index, meta.term, known.term
            )),
            None => Err(format!("node {node} installs a snapshot beyond the committed log ({meta:?})")),
        }
    }

    /// State-machine safety: what a node applies at an index is what was committed there.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        match self.committed.get(entry.index as usize - 1) {
            Some(known) if known == entry => Ok(()),
            Some(known) => Err(format!(
                "state machine safety: node {node} applies term {} at index {}, where term {} was committed",
                entry.term, entry.index, known.term
            )),
            None => Err(format!("node {node} applies index {} before it is known committed", entry.index)),
        }
    }

    /// Log matching (Raft §5.3): two logs with an entry of the same index and term are identical
    /// up to it. Checked across every pair of live nodes.
    pub fn check_log_matching(&self, cores: &[&RawNode]) -> Result<(), Violation> {
        for (position, a) in cores.iter().enumerate() {
            for b in &cores[position + 1..] {
                let (log_a, log_b) = (a.log(), b.log());
                // Below both commit indexes, each log was already checked against the committed
                // record; entries released from memory cannot be compared.
                let lowest = (log_a.commit().min(log_b.commit()) + 1)
                    .max(log_a.first_index())
                    .max(log_b.first_index());
                let mut index = log_a.last_index().min(log_b.last_index());
                while index >= lowest && log_a.term(index) != log_b.term(index) {
                    index -= 1;
                }
                for at in lowest..=index {
                    if log_a.entry(at) != log_b.entry(at) {
                        return Err(format!(
                            "log matching: nodes {} and {} agree on index {index} term {:?} but differ at index {at}",
                            a.id(),
                            b.id(),
                            log_a.term(index)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The entry known committed at `index`, if any is yet.
    pub fn committed_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.committed.get((index as usize).checked_sub(1)?)
    }

    pub fn committed_len(&self) -> LogIndex {
        self.committed.len() as LogIndex
    }
}
