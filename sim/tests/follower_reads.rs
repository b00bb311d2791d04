//! Linearizable reads served by followers (`src/core/read_forwarding.rs`, Raft thesis §6.4): a
//! follower asks the leader for a read index, the leader answers only after a quorum confirmed
//! its leadership, and the follower reads once it has applied that index.

use ravel::core::{Action, Input, MembershipChange, MessageBody, Refusal};
use ravel_sim::harness::{without_pre_vote_or_check_quorum, TestCluster};

/// The reads `events` released, by id.
fn ready(events: &[Action]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match event {
            Action::ReadReady { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// Over the next election timeout, `node` serves no read and refuses read `id` as unanswered.
fn gives_up_without_a_read(cluster: &mut TestCluster, node: u64, id: u64) {
    cluster.run_for(2_500);
    let events = cluster.take_events(node);
    assert!(ready(&events).is_empty(), "{events:?}");
    let refused = Action::ReadRefused {
        id,
        reason: Refusal::LeaderUnresponsive,
    };
    assert!(events.contains(&refused), "{events:?}");
}

/// The read waits for the leader's quorum round and then for the follower's own state machine:
/// a follower that has not applied the read index yet does not answer.
#[test]
fn a_follower_reads_once_the_leader_confirmed_and_it_applied_the_read_index() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    // Node 2 misses the next write's append; node 3 makes it commit.
    cluster.propose(1, 100, b"x=1");
    cluster.deliver_all_matching(|message| {
        !(message.to == 2 && matches!(message.body, MessageBody::Append { .. }))
    });
    let commit = cluster.status(1).commit;
    assert!(cluster.status(2).applied < commit, "node 2 is behind");
    cluster.take_events(2);

    cluster.step(2, Input::Read { id: 7 });
    let asked = cluster
        .in_flight
        .iter()
        .any(|message| message.to == 1 && matches!(message.body, MessageBody::ReadIndex { .. }));
    assert!(
        asked,
        "the follower asks the leader: {:?}",
        cluster.in_flight
    );
    // The request and the leader's round, but still no appends for node 2.
    cluster.deliver_all_matching(|message| !matches!(message.body, MessageBody::Append { .. }));
    assert!(
        ready(&cluster.take_events(2)).is_empty(),
        "not before applying {commit}"
    );

    cluster.deliver_all();
    let events = cluster.take_events(2);
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Action::ReadReady { id: 7, index } if *index >= commit)),
        "{events:?}"
    );
    assert!(cluster.status(2).applied >= commit);
}

/// A leader cut off from the majority cannot confirm a follower's read: a newer leader may have
/// committed writes it has not seen. The follower on its side of the partition gets no read
/// index, however long it waits, and gives up after an election timeout.
#[test]
fn a_deposed_leader_hands_out_no_read_index() {
    let mut cluster = TestCluster::new(5, without_pre_vote_or_check_quorum);
    cluster.elect(1);
    for a in [1, 2] {
        for b in [3, 4, 5] {
            cluster.cut_link(a, b);
            cluster.cut_link(b, a);
        }
    }
    cluster.elect(3);
    cluster.propose(3, 100, b"x=2");
    cluster.deliver_all();
    assert!(cluster.status(3).commit > cluster.status(1).commit);
    assert_eq!(
        cluster.status(2).leader,
        Some(1),
        "node 2 still follows node 1"
    );
    cluster.take_events(2);

    cluster.step(2, Input::Read { id: 8 });
    cluster.deliver_all();
    assert!(
        ready(&cluster.take_events(2)).is_empty(),
        "no quorum, no read"
    );
    gives_up_without_a_read(&mut cluster, 2, 8);
}

/// Node 1 leads; node 2's read `id` is on its way to it as a request that gets lost.
fn read_request_lost(id: u64) -> TestCluster {
    let mut cluster = TestCluster::new(3, without_pre_vote_or_check_quorum);
    cluster.elect(1);
    cluster.take_events(2);
    cluster.step(2, Input::Read { id });
    let lost = cluster.in_flight.len();
    cluster.in_flight.clear();
    assert_eq!(lost, 1, "one request, lost");
    cluster
}

/// A request lost with its leader is asked again of the next one as soon as the follower follows
/// it: the read is served within the new leader's first round, not refused after a timeout.
#[test]
fn a_read_is_asked_again_of_a_new_leader() {
    let mut cluster = read_request_lost(9);
    cluster.elect(3);
    assert_eq!(cluster.status(2).leader, Some(3));
    cluster.deliver_all();
    let events = cluster.take_events(2);
    assert_eq!(ready(&events), vec![9], "{events:?}");
}

/// A follower that becomes leader itself serves the reads it was waiting on, confirming them
/// as its own instead of letting them time out.
#[test]
fn a_follower_that_becomes_leader_confirms_its_waiting_reads_itself() {
    let mut cluster = read_request_lost(10);
    cluster.elect(2);
    assert_eq!(cluster.leader(), Some(2));
    cluster.run_for(50);
    let events = cluster.take_events(2);
    assert_eq!(ready(&events), vec![10], "{events:?}");
}

/// An answer meant for an earlier incarnation of the follower (delayed past its crash and
/// restart) is not taken for a new request that happens to carry the same number: its index
/// predates writes that completed before the new read began.
#[test]
fn a_read_index_meant_for_an_earlier_incarnation_is_ignored() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster.step(2, Input::Read { id: 1 });
    cluster.deliver_all_matching(|message| {
        !matches!(message.body, MessageBody::ReadIndexResponse { .. })
    });
    let stale: Vec<_> = std::mem::take(&mut cluster.in_flight)
        .into_iter()
        .filter(|message| matches!(message.body, MessageBody::ReadIndexResponse { .. }))
        .collect();
    assert_eq!(stale.len(), 1);
    let stale_index = cluster.status(1).commit;

    cluster.crash(2);
    cluster.restart(2);
    cluster.propose(1, 100, b"x=3");
    cluster.deliver_all();
    let write_index = cluster.status(1).commit;
    assert!(write_index > stale_index);
    cluster.take_events(2);

    // The new incarnation's first request; the stale answer arrives first.
    cluster.step(2, Input::Read { id: 2 });
    for message in stale {
        cluster.deliver(message);
    }
    cluster.deliver_all();
    let events = cluster.take_events(2);
    let served: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Action::ReadReady { id: 2, index } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(served.len(), 1, "{events:?}");
    assert!(
        served[0] >= write_index,
        "served at {served:?}, before the write at {write_index}"
    );
}

/// Reads that arrive together leave in one request, and one round confirms them all.
#[test]
fn reads_at_a_follower_share_one_request_and_one_round() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster.run_for(50);
    cluster.take_events(2);
    assert_eq!(cluster.status(2).leader, Some(1));
    let ids = 20..30;
    cluster.step_batch(2, ids.clone().map(|id| Input::Read { id }).collect());
    let requests = cluster
        .in_flight
        .iter()
        .filter(|message| matches!(message.body, MessageBody::ReadIndex { .. }))
        .count();
    assert_eq!(requests, 1);
    cluster.deliver_all();
    assert_eq!(ready(&cluster.take_events(2)), ids.collect::<Vec<_>>());
}

/// A node removed from the cluster gets no read index: the leader no longer replicates to it
/// (here it never even hears of its removal), so its state machine would never reach the index
/// and the read would wait for ever. It is refused after an election timeout instead.
#[test]
fn a_removed_node_gets_no_read_index() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    let change = MembershipChange::Remove(3);
    cluster.step(1, Input::ChangeMembership { id: 50, change });
    cluster.run_for(100);
    assert!(!cluster.core(1).membership().is_member(3));
    assert_eq!(
        cluster.status(3).leader,
        Some(1),
        "node 3 still follows node 1"
    );
    cluster.take_events(3);

    cluster.step(3, Input::Read { id: 11 });
    gives_up_without_a_read(&mut cluster, 3, 11);
}
