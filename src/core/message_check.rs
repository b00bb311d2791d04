//! Whether a message is well formed: the shape every honest core's messages have, checked where
//! peer messages enter a node (the shell drops a malformed one, counts and logs it) and again by
//! the core before it acts on one. A malformed message is evidence of a broken or hostile peer, or
//! of damage in transit that the checksums missed; acting on it would misalign the log (entries
//! that are not contiguous, or do not start right after `prev_log_index`) or trip an assertion
//! deeper in the node. The core also asserts that its own messages pass, so the check can never
//! silently drop what honest peers send.

use thiserror::Error;

use super::membership::Membership;
use super::message::{Message, MessageBody};
use super::types::{EntryPayload, LogIndex, SnapshotMeta, Term};

/// What is wrong with a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("node id 0 as sender or recipient")]
    ZeroNode,
    #[error("sent by node {0} to itself")]
    ToItself(u64),
    #[error("claims a log term {claimed} above the message's term {term}")]
    TermAboveMessage { claimed: Term, term: Term },
    #[error("names index 0 with term {0}")]
    TermAtIndexZero(Term),
    #[error("entry {position} has index {found}, expected {expected}")]
    NotContiguous {
        position: usize,
        found: LogIndex,
        expected: LogIndex,
    },
    #[error("entry {position} has term {term}, below the term {before} before it")]
    TermsDecrease {
        position: usize,
        term: Term,
        before: Term,
    },
    #[error("indexes run past the largest index")]
    IndexOverflow,
    #[error("a snapshot at index 0")]
    SnapshotAtZero,
    #[error("a configuration with {0}")]
    BadMembership(&'static str),
    #[error("a snapshot's admissions {0}")]
    BadAdmissions(&'static str),
}

/// Checks `message` (see the module docs).
pub fn check_message(message: &Message) -> Result<(), Malformed> {
    if message.from == 0 || message.to == 0 {
        return Err(Malformed::ZeroNode);
    }
    if message.from == message.to {
        return Err(Malformed::ToItself(message.from));
    }
    let term = message.term;
    let at_most_term = |claimed: Term| {
        if claimed > term {
            Err(Malformed::TermAboveMessage { claimed, term })
        } else {
            Ok(())
        }
    };
    match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => {
            at_most_term(*last_log_term)?;
            index_names_term(*last_log_index, *last_log_term)
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            ..
        } => {
            at_most_term(*prev_log_term)?;
            index_names_term(*prev_log_index, *prev_log_term)?;
            let mut before = *prev_log_term;
            for (position, entry) in entries.iter().enumerate() {
                let expected = prev_log_index
                    .checked_add(position as u64 + 1)
                    .ok_or(Malformed::IndexOverflow)?;
                if entry.index != expected {
                    return Err(Malformed::NotContiguous {
                        position,
                        found: entry.index,
                        expected,
                    });
                }
                at_most_term(entry.term)?;
                if entry.term < before {
                    return Err(Malformed::TermsDecrease {
                        position,
                        term: entry.term,
                        before,
                    });
                }
                before = entry.term;
                if let EntryPayload::Membership(membership, _) = &entry.payload {
                    check_membership(membership)?;
                }
            }
            Ok(())
        }
        MessageBody::SnapshotChunk {
            meta, offset, data, ..
        } => {
            at_most_term(meta.term)?;
            if meta.index == 0 {
                return Err(Malformed::SnapshotAtZero);
            }
            offset
                .checked_add(data.len() as u64)
                .ok_or(Malformed::IndexOverflow)?;
            check_membership(&meta.membership)?;
            check_admissions(meta)
        }
        MessageBody::SnapshotAck { meta, .. } => {
            if meta.index == 0 {
                return Err(Malformed::SnapshotAtZero);
            }
            Ok(())
        }
        MessageBody::Removed { config_index } => {
            if *config_index == 0 {
                return Err(Malformed::TermAtIndexZero(term));
            }
            Ok(())
        }
        MessageBody::ProposeAccepted { first_index, ids } => {
            if *first_index == 0 {
                return Err(Malformed::TermAtIndexZero(term));
            }
            first_index
                .checked_add(ids.len() as u64)
                .ok_or(Malformed::IndexOverflow)?;
            Ok(())
        }
        MessageBody::VoteResponse { .. }
        | MessageBody::AppendResponse(_)
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::Propose { .. }
        | MessageBody::ProposeRefused { .. }
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { .. } => Ok(()),
    }
}

/// Index 0 is "before the log": it has term 0, and every real index a term of at least 1.
fn index_names_term(index: LogIndex, term: Term) -> Result<(), Malformed> {
    if index == 0 && term != 0 {
        return Err(Malformed::TermAtIndexZero(term));
    }
    Ok(())
}

fn check_membership(membership: &Membership) -> Result<(), Malformed> {
    let members = [
        &membership.voters,
        &membership.outgoing_voters,
        &membership.learners,
    ];
    if members.iter().any(|set| set.contains(&0)) {
        return Err(Malformed::BadMembership("node id 0"));
    }
    if membership.voters.is_empty() {
        return Err(Malformed::BadMembership("no voters"));
    }
    if membership
        .learners
        .iter()
        .any(|learner| membership.voters.contains(learner))
    {
        return Err(Malformed::BadMembership("a node both voter and learner"));
    }
    Ok(())
}

/// A snapshot's admissions, as the core builds them: one per member at most, in node order,
/// each of a request (nonce 0 is none).
fn check_admissions(meta: &SnapshotMeta) -> Result<(), Malformed> {
    if (meta.admissions.iter()).any(|admission| !meta.membership.is_member(admission.node)) {
        return Err(Malformed::BadAdmissions("name a node that is no member"));
    }
    if meta.admissions.iter().any(|admission| admission.nonce == 0) {
        return Err(Malformed::BadAdmissions("name no request (nonce 0)"));
    }
    if (meta.admissions.windows(2)).any(|pair| pair[0].node >= pair[1].node) {
        return Err(Malformed::BadAdmissions(
            "are not one per node in node order",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::{Entry, NodeId};

    fn append(prev: (LogIndex, Term), entries: &[(LogIndex, Term)]) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_log_index: prev.0,
                prev_log_term: prev.1,
                entries: entries
                    .iter()
                    .map(|&(index, term)| Entry {
                        index,
                        term,
                        payload: EntryPayload::Command(Bytes::from_static(b"x")),
                    })
                    .collect(),
                leader_commit: 0,
                durable_everywhere: 0,
            },
        }
    }

    #[test]
    fn an_honest_append_passes() {
        assert_eq!(check_message(&append((0, 0), &[(1, 1), (2, 3)])), Ok(()));
        assert_eq!(check_message(&append((5, 2), &[(6, 2), (7, 3)])), Ok(()));
        assert_eq!(check_message(&append((5, 2), &[])), Ok(()));
    }

    #[test]
    fn appends_that_would_misalign_the_log_are_malformed() {
        let gap = append((5, 2), &[(6, 2), (8, 2)]);
        assert!(matches!(
            check_message(&gap),
            Err(Malformed::NotContiguous { position: 1, .. })
        ));
        let not_after_prev = append((5, 2), &[(5, 2)]);
        assert!(matches!(
            check_message(&not_after_prev),
            Err(Malformed::NotContiguous { position: 0, .. })
        ));
        let from_the_future = append((5, 2), &[(6, 4)]);
        assert!(matches!(
            check_message(&from_the_future),
            Err(Malformed::TermAboveMessage { claimed: 4, .. })
        ));
        let decreasing = append((5, 2), &[(6, 1)]);
        assert!(matches!(
            check_message(&decreasing),
            Err(Malformed::TermsDecrease { .. })
        ));
        let overflow = append((u64::MAX, 1), &[(0, 1)]);
        assert_eq!(check_message(&overflow), Err(Malformed::IndexOverflow));
        let term_at_zero = append((0, 1), &[(1, 1)]);
        assert_eq!(
            check_message(&term_at_zero),
            Err(Malformed::TermAtIndexZero(1))
        );
    }

    #[test]
    fn senders_and_configurations_are_checked() {
        let mut to_itself = append((0, 0), &[]);
        to_itself.to = 1;
        assert_eq!(check_message(&to_itself), Err(Malformed::ToItself(1)));
        let mut with_bad_membership = append((0, 0), &[(1, 1)]);
        if let MessageBody::Append { entries, .. } = &mut with_bad_membership.body {
            entries[0].payload = EntryPayload::Membership(Membership::with_voters([]), None);
        }
        assert_eq!(
            check_message(&with_bad_membership),
            Err(Malformed::BadMembership("no voters"))
        );
    }

    /// A snapshot's admissions are bounded by its configuration: one per member, in order.
    #[test]
    fn a_snapshots_admissions_are_checked() {
        let chunk = |admissions: &[(NodeId, u64)]| Message {
            from: 2,
            to: 1,
            term: 3,
            body: MessageBody::SnapshotChunk {
                meta: SnapshotMeta {
                    index: 9,
                    term: 3,
                    membership: Membership::with_voters([1, 2, 3]),
                    admissions: (admissions.iter())
                        .map(|&(node, nonce)| crate::core::Admission { node, nonce })
                        .collect(),
                },
                offset: 0,
                data: Bytes::new(),
                done: true,
            },
        };
        assert_eq!(check_message(&chunk(&[(1, 5), (3, 7)])), Ok(()));
        for (admissions, reason) in [
            (&[(4, 5)][..], "name a node that is no member"),
            (&[(1, 0)][..], "name no request (nonce 0)"),
            (&[(3, 5), (1, 7)][..], "are not one per node in node order"),
            (&[(1, 5), (1, 7)][..], "are not one per node in node order"),
        ] {
            assert_eq!(
                check_message(&chunk(admissions)),
                Err(Malformed::BadAdmissions(reason))
            );
        }
    }
}
