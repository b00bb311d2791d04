//! A node fed generated peer messages — entries out of order or not after `prev_log_index`,
//! terms above the message's, configurations without voters, snapshots at index 0, all mixed
//! with plausible ones around the node's own log — never panics, and never asks its storage or
//! state machine for what they would refuse (see `ravel_sim::hostile_peer`). The fuzz target
//! `peer_batch` feeds the same node arbitrary bytes.

use bytes::Bytes;
use proptest::prelude::*;
use ravel::core::{Admission, Entry, EntryPayload, Membership, Message, MessageBody, SnapshotMeta};
use ravel::server::convert::message_to_proto;
use ravel_sim::hostile_peer::{HostileTarget, TARGET};

fn entry() -> impl Strategy<Value = Entry> {
    (
        0..8u64,
        0..5u64,
        prop::option::of(prop::collection::btree_set(0..5u64, 0..3)),
        prop::option::of((0..5u64, 0..3u64)),
    )
        .prop_map(|(index, term, membership, admission)| Entry {
            index,
            term,
            payload: match membership {
                Some(voters) => EntryPayload::Membership(
                    Membership::with_voters(voters),
                    admission.map(|(node, nonce)| Admission { node, nonce }),
                ),
                None => EntryPayload::Command(Bytes::from_static(b"\x00")),
            },
        })
}

fn meta() -> impl Strategy<Value = SnapshotMeta> {
    let admissions = proptest::collection::vec((0..6u64, 0..3u64), 0..3);
    (0..10u64, 0..5u64, admissions).prop_map(|(index, term, admissions)| SnapshotMeta {
        index,
        term,
        membership: Membership::with_voters([1, 2, 3]),
        admissions: (admissions.into_iter())
            .map(|(node, nonce)| Admission { node, nonce })
            .collect(),
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (any::<bool>(), 0..8u64, 0..5u64).prop_map(|(pre_vote, last_log_index, last_log_term)| {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                leadership_transfer: false,
            }
        }),
        (
            0..8u64,
            0..5u64,
            prop::collection::vec(entry(), 0..4),
            0..10u64
        )
            .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                MessageBody::Append {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    durable_everywhere: leader_commit,
                }
            }),
        // Appends that are well formed, so that the checks past the boundary are reached too.
        (0..6u64, 1..4u64, 0..4usize, 0..10u64).prop_map(|(prev, term, count, leader_commit)| {
            MessageBody::Append {
                prev_log_index: prev,
                prev_log_term: if prev == 0 { 0 } else { term.min(2) },
                entries: (1..=count as u64)
                    .map(|k| Entry {
                        index: prev + k,
                        term,
                        payload: EntryPayload::Noop,
                    })
                    .collect(),
                leader_commit,
                durable_everywhere: 0,
            }
        }),
        (0..10u64, 0..4u64).prop_map(|(commit, round)| MessageBody::Heartbeat { commit, round }),
        (
            meta(),
            0..64u64,
            prop::collection::vec(any::<u8>(), 0..16),
            any::<bool>()
        )
            .prop_map(|(meta, offset, data, done)| MessageBody::SnapshotChunk {
                meta,
                offset,
                data: Bytes::from(data),
                done
            }),
        Just(MessageBody::TimeoutNow),
        (0..10u64, 0..3u64).prop_map(|(index, seq)| MessageBody::ReadIndexResponse {
            nonce: 0,
            seq,
            index
        }),
    ]
}

fn message() -> impl Strategy<Value = (u64, Message)> {
    (1..4u64, 0..6u64, body()).prop_map(|(from, term, body)| {
        (
            from,
            Message {
                from,
                to: TARGET,
                term,
                body,
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_node_survives_whatever_its_peers_send(
        messages in prop::collection::vec((message(), 0..400u64), 1..40)
    ) {
        let mut node = HostileTarget::new();
        for ((from, message), pause_ms) in messages {
            node.deliver(from, message_to_proto(&message));
            node.pass(pause_ms);
        }
    }
}

/// The boundary refuses what would misalign the log: entries that do not start right after
/// `prev_log_index`.
#[test]
fn an_append_not_following_prev_is_refused_at_the_boundary() {
    let mut node = HostileTarget::new();
    let append = Message {
        from: 1,
        to: TARGET,
        term: 3,
        body: MessageBody::Append {
            prev_log_index: 4,
            prev_log_term: 2,
            entries: vec![Entry {
                index: 9,
                term: 3,
                payload: EntryPayload::Noop,
            }],
            leader_commit: 9,
            durable_everywhere: 0,
        },
    };
    node.deliver(1, message_to_proto(&append));
    assert_eq!(node.refused, 1);
}
