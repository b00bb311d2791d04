//! Proposals made at a follower and passed on to the leader (`src/core/forwarding.rs`): each
//! forwarded batch is appended at most once whatever the network does to it, and its outcome
//! is reported as appended, refused for good, or unknown, never wrongly.

use ravel::core::{Action, EntryPayload, Input, Message, MessageBody, Refusal};
use ravel_sim::harness::TestCluster;

/// A leader (node 1) and two followers.
fn cluster() -> TestCluster {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster
}

/// The forwarded batches queued for delivery, taken off the network.
fn take_proposes(cluster: &mut TestCluster) -> Vec<Message> {
    let (proposes, rest) = std::mem::take(&mut cluster.in_flight)
        .into_iter()
        .partition(|message| matches!(message.body, MessageBody::Propose { .. }));
    cluster.in_flight = rest;
    proposes
}

/// How many entries of `id`'s log hold `command`.
fn copies(cluster: &TestCluster, id: u64, command: &[u8]) -> usize {
    let log = cluster.core(id).log();
    (log.first_index()..=log.last_index())
        .filter_map(|index| log.entry(index))
        .filter(|entry| matches!(&entry.payload, EntryPayload::Command(c) if c == command))
        .count()
}

#[test]
fn a_follower_passes_a_proposal_on_and_learns_where_it_landed() {
    let mut cluster = cluster();
    cluster.take_events(2);
    cluster.propose(2, 7, b"x=1");
    cluster.deliver_all();
    let accepted = cluster
        .take_events(2)
        .into_iter()
        .find_map(|event| match event {
            Action::ProposalAccepted { id: 7, index, term } => Some((index, term)),
            _ => None,
        });
    let (index, term) = accepted.expect("the follower hears where its proposal was appended");
    let entry = cluster
        .core(1)
        .log()
        .entry(index)
        .expect("the leader holds it");
    assert_eq!(entry.term, term);
    assert_eq!(entry.payload, EntryPayload::Command("x=1".into()));
    cluster.run_for(100);
    assert!(
        cluster.status(2).applied >= index,
        "the follower applies it"
    );
}

/// A duplicated batch must not apply a client's command twice.
#[test]
fn a_duplicated_batch_is_appended_once() {
    let mut cluster = cluster();
    cluster.propose(2, 7, b"x=1");
    let proposes = take_proposes(&mut cluster);
    assert_eq!(proposes.len(), 1);
    for _ in 0..3 {
        cluster.deliver(proposes[0].clone());
    }
    cluster.run_for(100);
    for id in 1..=3 {
        assert_eq!(copies(&cluster, id, b"x=1"), 1, "node {id}'s log");
    }
}

/// Batches travel on requests and on replies alike, so one may overtake another: both count.
#[test]
fn a_batch_overtaken_by_a_later_one_is_still_appended() {
    let mut cluster = cluster();
    cluster.propose(2, 7, b"x=1");
    cluster.propose(2, 8, b"x=2");
    let proposes = take_proposes(&mut cluster);
    assert_eq!(proposes.len(), 2);
    cluster.deliver(proposes[1].clone());
    cluster.deliver(proposes[0].clone());
    cluster.deliver(proposes[1].clone());
    cluster.run_for(100);
    assert_eq!(copies(&cluster, 1, b"x=1"), 1);
    assert_eq!(copies(&cluster, 1, b"x=2"), 1);
}

/// A node that no longer leads cannot tell whether it took a batch before, so it stays silent:
/// the follower reports the outcome unknown, never refused.
#[test]
fn a_batch_reaching_a_deposed_leader_is_unknown_not_refused() {
    let mut cluster = cluster();
    cluster.propose(2, 7, b"x=1");
    let proposes = take_proposes(&mut cluster);
    // Node 3 takes over before the batch reaches node 1.
    cluster.step(1, Input::TransferLeadership { to: 3 });
    cluster.deliver_all();
    assert_eq!(cluster.leaders(), vec![3]);
    cluster.take_events(2);
    cluster.deliver(proposes[0].clone());
    cluster.run_for(1_000);
    assert_eq!(copies(&cluster, 3, b"x=1"), 0);
    let outcomes: Vec<Action> = cluster
        .take_events(2)
        .into_iter()
        .filter(|event| {
            matches!(
                event,
                Action::ProposalAccepted { id: 7, .. }
                    | Action::ProposalRefused { id: 7, .. }
                    | Action::ProposalOutcomeUnknown { id: 7 }
            )
        })
        .collect();
    assert_eq!(outcomes, vec![Action::ProposalOutcomeUnknown { id: 7 }]);
}

/// The leader of the batch's term refuses it for good, and then never appends a copy.
#[test]
fn a_refused_batch_stays_refused() {
    let mut cluster = cluster();
    cluster.step(1, Input::TransferLeadership { to: 3 });
    // Node 3 never hears of it: the transfer stays pending until it times out.
    cluster.in_flight.clear();
    cluster.take_events(2);
    cluster.propose(2, 7, b"x=1");
    let proposes = take_proposes(&mut cluster);
    cluster.deliver(proposes[0].clone());
    cluster.deliver_all_matching(|message| message.to == 2);
    let refused = cluster.take_events(2).into_iter().any(|event| {
        event
            == Action::ProposalRefused {
                id: 7,
                reason: Refusal::TransferInProgress,
            }
    });
    assert!(refused, "the follower hears the refusal");
    // The transfer is abandoned; a late copy of the batch still must not be appended.
    cluster.run_for(1_000);
    assert_eq!(cluster.leaders(), vec![1]);
    cluster.deliver(proposes[0].clone());
    cluster.run_for(100);
    assert_eq!(copies(&cluster, 1, b"x=1"), 0);
}
