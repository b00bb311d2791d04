//! Membership changes as scenarios (Raft thesis ch. 4): learners, promotion, removal (of the
//! leader too), joint consensus, the refusals, and the rule that a new leader commits an entry
//! of its own term before changing the configuration.

use std::collections::BTreeSet;

use ravel::core::{
    Action, Admission, AppendResponse, Config, Entry, EntryPayload, Input, MemberState, Membership,
    MembershipChange, MembershipError, Message, MessageBody, NodeId, PersistId, RawNode, Recovered,
    Refusal, Role,
};
use ravel_sim::harness::TestCluster;

fn change(
    cluster: &mut TestCluster,
    leader: NodeId,
    request: u64,
    change: MembershipChange,
) -> Vec<Action> {
    cluster.step(
        leader,
        Input::ChangeMembership {
            id: request,
            change,
        },
    );
    let events = cluster.take_events(leader);
    cluster.run_for(300);
    events
}

fn voters(cluster: &TestCluster, id: NodeId) -> BTreeSet<NodeId> {
    cluster.core(id).membership().voters.clone()
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

#[test]
fn a_learner_catches_up_without_voting_then_is_promoted() {
    let mut cluster = TestCluster::with_spares(3, 1, |_| {});
    cluster.elect(1);
    cluster.propose(1, 1, b"before");
    cluster.run_for(100);
    assert_eq!(
        cluster.status(4).last_index,
        0,
        "a spare gets nothing before it is added"
    );
    change(&mut cluster, 1, 2, MembershipChange::AddLearner(4));
    assert_eq!(
        cluster.status(4).commit,
        cluster.status(1).commit,
        "the learner caught up"
    );
    assert!(!cluster.core(4).membership().is_voter(4));
    assert_eq!(cluster.status(4).role, Role::Follower, "it never campaigns");
    change(&mut cluster, 1, 3, MembershipChange::Promote(4));
    for id in 1..=4 {
        assert_eq!(
            voters(&cluster, id),
            set(&[1, 2, 3, 4]),
            "node {id} sees four voters"
        );
    }
    // Four voters: two are no longer a majority.
    cluster.isolate(3);
    cluster.isolate(4);
    cluster.propose(1, 4, b"needs three");
    cluster.run_for(50);
    assert!(cluster.status(1).commit < cluster.status(1).last_index);
}

#[test]
fn a_removed_leader_steps_down_and_stays_quiet() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    let term = cluster.status(1).term;
    change(&mut cluster, 1, 1, MembershipChange::Remove(1));
    cluster.run_for(1_000);
    let leader = cluster.leader().expect("the others elect a leader");
    assert_ne!(leader, 1);
    assert_eq!(voters(&cluster, leader), set(&[2, 3]));
    assert_eq!(cluster.status(1).role, Role::Follower);
    assert!(
        !cluster.core(1).membership().is_voter(1),
        "node 1 knows it was removed"
    );
    assert!(
        cluster.status(leader).term <= term + 2,
        "no disruption from the removed node"
    );
}

#[test]
fn replacing_voters_goes_through_a_joint_configuration() {
    let mut cluster = TestCluster::with_spares(3, 2, |_| {});
    cluster.elect(1);
    // New voters must hold the log first: a node far behind is refused.
    let events = change(
        &mut cluster,
        1,
        1,
        MembershipChange::ReplaceVoters(set(&[1, 4, 5])),
    );
    assert!(events.contains(&Action::ProposalRefused {
        id: 1,
        reason: Refusal::InvalidMembership(MembershipError::TooFarBehind(4))
    }));
    change(&mut cluster, 1, 2, MembershipChange::AddLearner(4));
    change(&mut cluster, 1, 3, MembershipChange::AddLearner(5));
    change(
        &mut cluster,
        1,
        4,
        MembershipChange::ReplaceVoters(set(&[1, 4, 5])),
    );
    cluster.run_for(500);
    let leader = cluster.leader().expect("a leader");
    for id in [1, 4, 5] {
        let membership = cluster.core(id).membership();
        assert_eq!(membership.voters, set(&[1, 4, 5]), "node {id}");
        assert!(
            !membership.is_joint(),
            "node {id} left the joint configuration"
        );
    }
    assert!([1, 4, 5].contains(&leader));
}

#[test]
fn changes_are_refused_while_another_is_pending_or_impossible() {
    let mut cluster = TestCluster::with_spares(3, 2, |_| {});
    cluster.elect(1);
    cluster.isolate(2);
    cluster.isolate(3);
    cluster.step(
        1,
        Input::ChangeMembership {
            id: 1,
            change: MembershipChange::AddLearner(4),
        },
    );
    cluster.step(
        1,
        Input::ChangeMembership {
            id: 2,
            change: MembershipChange::AddLearner(5),
        },
    );
    let refused = cluster.take_events(1);
    assert!(refused.contains(&Action::ProposalRefused {
        id: 2,
        reason: Refusal::InvalidMembership(MembershipError::ChangeInProgress)
    }));
    let mut single = TestCluster::new(1, |_| {});
    single.elect(1);
    single.step(
        1,
        Input::ChangeMembership {
            id: 3,
            change: MembershipChange::Remove(1),
        },
    );
    assert!(single.take_events(1).contains(&Action::ProposalRefused {
        id: 3,
        reason: Refusal::InvalidMembership(MembershipError::NoVotersLeft)
    }));
    single.step(
        1,
        Input::ChangeMembership {
            id: 4,
            change: MembershipChange::Promote(9),
        },
    );
    assert!(single.take_events(1).contains(&Action::ProposalRefused {
        id: 4,
        reason: Refusal::InvalidMembership(MembershipError::NotALearner(9))
    }));
}

/// The single-server change bug (Ongaro, raft-dev, 2015): a new leader that changes the
/// configuration before committing an entry of its own term can commit it with a majority that
/// is disjoint from one of the configuration the previous leader appended but never committed;
/// the old leader then wins with that one and overwrites a committed entry. With the rule, the
/// change waits and the disjoint majority never forms.
#[test]
fn a_new_leader_commits_in_its_term_before_changing_membership() {
    fn run(bug: bool) -> Result<(), String> {
        let result = std::panic::catch_unwind(|| {
            let mut cluster = TestCluster::with_spares(4, 1, |config| {
                config.planted_bugs.change_membership_before_own_term_commit = bug;
                // The schedule of the original report, in basic Raft: no lease lockout.
                config.check_quorum = false;
                config.pre_vote = false;
            });
            cluster.elect(1);
            // S5 is a learner everyone knows of; S1 starts promoting it ({1..5}), and the entry
            // reaches only S5.
            cluster.step(
                1,
                Input::ChangeMembership {
                    id: 1,
                    change: MembershipChange::AddLearner(5),
                },
            );
            cluster.run_for(200);
            cluster.isolate(1);
            cluster.step(
                1,
                Input::ChangeMembership {
                    id: 2,
                    change: MembershipChange::Promote(5),
                },
            );
            cluster.heal();
            cluster.now_ms += 50;
            cluster.step(
                1,
                Input::Tick {
                    now_ms: cluster.now_ms,
                },
            );
            let between_one_and_five =
                |message: &Message| matches!((message.from, message.to), (1, 5) | (5, 1));
            cluster.deliver_all_matching(between_one_and_five);
            cluster.in_flight.clear();
            assert!(
                cluster.core(5).membership().is_voter(5),
                "S5 holds the promotion"
            );
            assert!(!cluster.core(2).membership().is_voter(5), "S2 does not");
            // S2 wins term 2 with S3 and S4 and at once removes S4: {1,2,3}. Only S3 hears it.
            cluster.isolate(1);
            cluster.isolate(5);
            cluster.step(2, Input::Campaign);
            cluster.deliver_all_matching(|message| {
                !matches!(message.body, MessageBody::Append { .. })
            });
            cluster.step(
                2,
                Input::ChangeMembership {
                    id: 2,
                    change: MembershipChange::Remove(4),
                },
            );
            cluster.deliver_all_matching(|message| message.to != 4 && message.from != 4);
            cluster.in_flight.clear();
            // S1 returns; S4 (removed, with an old log) and S5 elect it under {1..5}.
            cluster.heal();
            cluster.isolate(2);
            cluster.isolate(3);
            cluster.run_for(2_000);
            assert_eq!(cluster.leader(), Some(1), "S1 leads again");
        });
        result.map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".to_string())
        })
    }
    assert_eq!(run(false), Ok(()), "with the rule, nothing unsafe happens");
    let failure = run(true).expect_err("without it, safety breaks");
    assert!(failure.contains("invariant violated"), "{failure}");
}

/// The join workflow: a new node starts connection pending, asks a follower, is redirected to
/// the leader, is added as a learner, caught up, promoted, and told; it turns voter once the
/// leader's append tells it its addition committed.
#[test]
fn a_node_joins_through_a_follower_and_the_leaders_pool() {
    let mut cluster = TestCluster::with_spares(3, 1, |_| {});
    cluster.elect(1);
    for request in 0..20 {
        cluster.propose(1, request, b"history");
    }
    cluster.run_for(50);
    assert_eq!(cluster.status(4).member, MemberState::ConnectionPending);
    cluster.step(
        2,
        Input::Join {
            id: 100,
            node: 4,
            last_index: 0,
            nonce: 0,
        },
    );
    assert!(cluster.take_events(2).contains(&Action::ProposalRefused {
        id: 100,
        reason: Refusal::NotLeader {
            leader_hint: Some(1)
        }
    }));
    cluster.step(
        1,
        Input::Join {
            id: 101,
            node: 4,
            last_index: 0,
            nonce: 0,
        },
    );
    // A retried request for the same node joins the same queue entry.
    cluster.step(
        1,
        Input::Join {
            id: 102,
            node: 4,
            last_index: 0,
            nonce: 0,
        },
    );
    cluster.run_for(500);
    let events = cluster.take_events(1);
    for id in [101, 102] {
        assert!(
            events.contains(&Action::JoinCompleted { id, node: 4 }),
            "request {id}: {events:?}"
        );
    }
    assert_eq!(voters(&cluster, 1), set(&[1, 2, 3, 4]));
    assert_eq!(cluster.status(4).member, MemberState::Voter);
    assert_eq!(cluster.status(4).commit, cluster.status(1).commit);
}

/// The leader that promoted a joiner is lost before the joiner hears that it was admitted
/// (its answer, or the commit of the promotion). The configuration {1, 2} counts the joiner, so
/// node 1 cannot be elected without its vote. Told only by the leader's answer, the joiner
/// stays silent for ever and the group never elects again; with the nonce of its request in the
/// promotion entry, it knows from its own log that it was admitted, and votes.
#[test]
fn a_joiner_whose_admission_answer_is_lost_learns_it_from_its_log() {
    let run = |nonce: u64| {
        let mut cluster = TestCluster::with_spares(1, 1, |config| {
            if config.id == 2 {
                config.voters.clear();
                config.joining = true;
                config.join_nonce = 77;
            }
        });
        cluster.elect(1);
        cluster.propose(1, 1, b"before");
        cluster.run_for(50);
        cluster.step(
            1,
            Input::Join {
                id: 100,
                node: 2,
                last_index: 0,
                nonce,
            },
        );
        let mut waited = 0;
        while !voters(&cluster, 2).contains(&2) {
            cluster.run_for(5);
            waited += 5;
            assert!(waited < 2_000, "node 2 was never promoted");
        }
        // Nothing more reaches node 2 from its leader, which then crashes and comes back.
        cluster.cut_link(1, 2);
        cluster.crash(1);
        cluster.restart(1);
        cluster.heal();
        cluster.run_for(5_000);
        cluster.leaders()
    };
    assert_eq!(run(77), vec![1], "admitted by its log, node 2 votes");
    assert_eq!(
        run(0),
        Vec::<NodeId>::new(),
        "told only by the lost answer, node 2 never votes: no leader"
    );
    assert_eq!(
        run(78),
        Vec::<NodeId>::new(),
        "another request's nonce admits nothing"
    );
}

/// A joiner counts itself admitted by an entry made for its request only once that entry is
/// durable: recorded as admitted while the entry could still be lost in a crash, it would
/// restart as a member whose log lacks what it was admitted with.
#[test]
fn a_joiner_is_admitted_by_its_log_only_once_the_entry_is_durable() {
    let mut config = Config::joining(2);
    config.join_nonce = 77;
    let mut node = RawNode::new(config, Recovered::default(), 0).expect("valid");
    let admitting = |index, membership, nonce| Entry {
        term: 1,
        index,
        payload: EntryPayload::Membership(membership, Some(Admission { node: 2, nonce })),
    };
    let mut learner = Membership::with_voters([1]);
    learner.learners.insert(2);
    let entries = vec![
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Membership(Membership::with_voters([1]), None),
        },
        // An entry made for another request (an earlier start's) admits nothing.
        admitting(2, learner.clone(), 76),
        admitting(3, learner, 77),
    ];
    node.step(Input::Message(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 1,
            durable_everywhere: 0,
        },
    }));
    let actions = node.take_actions();
    assert!(!actions.contains(&Action::Admitted), "not durable yet");
    let persisted: Vec<PersistId> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Persist { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(node.status().member, MemberState::ConnectionPending);
    for id in persisted {
        node.step(Input::Persisted { id });
    }
    assert!(node.take_actions().contains(&Action::Admitted));
}

/// A member that lost its disk joins again: the leader removes it (so it stops trusting what the
/// node acknowledged before) and adds it back; it catches up from nothing.
#[test]
fn a_member_that_lost_its_data_is_replaced() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    for request in 0..10 {
        cluster.propose(1, request, b"history");
    }
    cluster.run_for(50);
    let before = cluster.status(1).commit;
    cluster.crash(3);
    cluster.wipe(3);
    cluster.restart_joining(3);
    assert_eq!(cluster.status(3).member, MemberState::ConnectionPending);
    cluster.step(
        1,
        Input::Join {
            id: 200,
            node: 3,
            last_index: 0,
            nonce: 0,
        },
    );
    cluster.run_for(1_000);
    assert!(cluster
        .take_events(1)
        .contains(&Action::JoinCompleted { id: 200, node: 3 }));
    assert_eq!(
        cluster.status(3).member,
        MemberState::ConnectionPending,
        "silent until told"
    );
    cluster.step(3, Input::Admitted);
    assert_eq!(cluster.status(3).member, MemberState::Voter);
    assert_eq!(voters(&cluster, 1), set(&[1, 2, 3]));
    assert!(
        cluster.status(3).commit > before,
        "node 3 caught up from nothing"
    );
    assert_eq!(
        cluster.nodes[&3].kv().snapshot(),
        cluster.nodes[&1].kv().snapshot()
    );
}

/// A removed follower never receives the entry that removes it (replication to it stops
/// there), so it used to campaign for ever believing it was a voter. The leader now tells a
/// non-member that speaks as a member that it was removed: it stops campaigning, reports itself
/// removed, and its term stops moving.
#[test]
fn a_removed_node_that_missed_its_removal_learns_it_and_stays_quiet() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster.propose(1, 1, b"before");
    cluster.run_for(100);
    // Node 3 hears nothing more from the leader: the removal never reaches it.
    cluster.cut_link(1, 3);
    change(&mut cluster, 1, 2, MembershipChange::Remove(3));
    assert_eq!(voters(&cluster, 1), set(&[1, 2]));
    assert_eq!(voters(&cluster, 3), set(&[1, 2, 3]), "node 3 missed it");
    cluster.heal();
    cluster.run_for(5_000);
    assert_eq!(cluster.status(3).member, MemberState::Removed);
    assert_eq!(cluster.status(3).role, Role::Follower);
    let term = cluster.status(3).term;
    cluster.run_for(10_000);
    assert_eq!(cluster.status(3).term, term, "it stopped campaigning");
    assert!(
        !cluster
            .in_flight
            .iter()
            .any(|message| message.from == 3
                && matches!(message.body, MessageBody::VoteRequest { .. })),
        "it still asks for votes"
    );
    assert_eq!(cluster.leader(), Some(1), "the others were not disturbed");
    // It no longer passes writes on (the leader would append them, but it would never receive
    // them to answer its client): it refuses, pointing at the leader it knows.
    cluster.take_events(3);
    cluster.propose(3, 9, b"through a removed node");
    let refused = cluster.take_events(3);
    assert!(
        refused.iter().any(|event| matches!(
            event,
            Action::ProposalRefused {
                id: 9,
                reason: Refusal::NotLeader { .. }
            }
        )),
        "{refused:?}"
    );
}

/// A stale notice of removal is ignored by a node that was added again since.
#[test]
fn a_stale_removal_notice_is_ignored_after_the_node_was_added_again() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    change(&mut cluster, 1, 1, MembershipChange::Remove(3));
    let removed_at = cluster.status(1).commit;
    change(&mut cluster, 1, 2, MembershipChange::AddLearner(3));
    cluster.run_for(500);
    assert_eq!(cluster.status(3).member, MemberState::Learner);
    cluster.deliver(Message {
        from: 2,
        to: 3,
        term: cluster.status(2).term,
        body: MessageBody::Removed {
            config_index: removed_at,
        },
    });
    assert_eq!(cluster.status(3).member, MemberState::Learner);
}

/// Three nodes (no pre-vote or check-quorum, so a cut-off leader lingers), node 1 leading,
/// with a few entries committed everywhere; returns the cluster and the commit index.
fn three_nodes_led_by_1_with_history() -> (TestCluster, u64) {
    let mut cluster = TestCluster::new(3, ravel_sim::harness::without_pre_vote_or_check_quorum);
    cluster.elect(1);
    for request in 0..3 {
        cluster.propose(1, request, b"history");
    }
    cluster.run_for(50);
    let committed = cluster.status(1).commit;
    (cluster, committed)
}

/// From `three_nodes_led_by_1_with_history`: node 1 is cut off and appends a stale entry in its
/// term while nodes 2 and 3 elect node 3 and commit past it; then node 3 loses its disk and comes
/// back joining, reachable only from node 1 (node 2 is cut off). Returns the contested index.
fn deposed_leader_1_meets_forgetful_node_3(cluster: &mut TestCluster, committed: u64) -> u64 {
    cluster.isolate(1);
    cluster.propose(1, 100, b"stale");
    cluster.elect(3);
    assert_eq!(cluster.leader(), Some(3));
    cluster.propose(3, 200, b"newer");
    cluster.run_for(50);
    let contested = committed + 1;
    assert!(
        cluster.status(2).commit > contested,
        "term 2 committed past the contested index"
    );
    cluster.crash(3);
    cluster.wipe(3);
    cluster.restart_joining(3);
    cluster.heal();
    cluster.isolate(2);
    contested
}

/// Raft's safety rests on every voter keeping what it acknowledged. A member that lost its disk
/// forgot that (and the terms it saw), so until a leader has removed and re-added it its
/// acknowledgements must not count. Here node 1 still believes it leads term 1 (it was cut off
/// while nodes 2 and 3 moved to term 2 and committed there); node 3 loses its disk and comes
/// back reachable only from node 1. Counting node 3's acknowledgements, node 1 would commit its
/// own term-1 entry at an index where term 2 already committed another: two committed entries
/// at one index (the madsim harness found this, seed 228 with `--disk-loss`).
#[test]
fn a_member_that_lost_its_data_does_not_count_until_admitted_again() {
    let (mut cluster, committed) = three_nodes_led_by_1_with_history();
    assert_eq!(cluster.status(2).commit, committed);
    let contested = deposed_leader_1_meets_forgetful_node_3(&mut cluster, committed);
    cluster.run_for(500);

    let term_at = |cluster: &TestCluster, id, index: u64| cluster.log_terms(id)[index as usize - 1];
    let stale_commit = cluster.status(1).commit;
    assert!(
        stale_commit < contested
            || term_at(&cluster, 1, contested) == term_at(&cluster, 2, contested),
        "node 1 committed index {contested} of term {} with the forgetful node's help; term {} \
         committed it first",
        term_at(&cluster, 1, contested),
        term_at(&cluster, 2, contested)
    );
}

/// The same race, with one more step the random simulator found (seed 8135, `--faults
/// all,disk-loss`, once its commit check stopped counting joining nodes' copies): an answer node
/// 3 sent *before* it lost its disk ("accepted, not joining") reaches node 1 after node 3 came
/// back joining. Its standing vouches only for what it acknowledged then, not for what node 3
/// acknowledged since; before the fix it cleared the leader's "joining" mark for node 3, and
/// node 1 counted what the forgetful node 3 acknowledged after it lost its disk.
#[test]
fn a_delayed_answer_from_before_the_disk_loss_does_not_readmit_the_node() {
    let (mut cluster, committed) = three_nodes_led_by_1_with_history();
    let old_term = cluster.status(1).term;
    // What node 3 answered before its loss, still on its way.
    let delayed = Message {
        from: 3,
        to: 1,
        term: old_term,
        body: MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: committed,
            joining: false,
        }),
    };
    let contested = deposed_leader_1_meets_forgetful_node_3(&mut cluster, committed);
    cluster.run_for(200);
    assert!(
        cluster.status(1).commit < contested,
        "the joining node's acknowledgements counted"
    );
    cluster.deliver(delayed);
    cluster.run_for(300);
    assert!(
        cluster.status(1).commit < contested,
        "node 1 committed index {contested} (term {old_term}) with what node 3 acknowledged \
         after losing its disk, once an answer from before the loss arrived; term {} committed \
         another entry there",
        cluster.status(2).term
    );
}

/// The same race, through the join workflow (mutation testing led here: `join.rs` answered a
/// member's request at once as a retry when the log it reported held the leader's committed
/// entries). Node 1, deposed without knowing it, refills the forgetful node 3's log itself (node
/// 3 is a member of its configuration). Node 3 then asks node 1 to join with a log that looks
/// complete. Answered "joined", it would count again, and node 1 would commit its stale term
/// with node 3's help where term 2 committed another entry. The leader answers at once only a
/// request whose nonce a committed entry admitted; any other member that asks is replaced,
/// which node 1, without node 2, cannot commit.
#[test]
fn a_forgetful_member_whose_log_a_deposed_leader_refilled_is_not_answered_as_a_retry() {
    let (mut cluster, committed) = three_nodes_led_by_1_with_history();
    let contested = deposed_leader_1_meets_forgetful_node_3(&mut cluster, committed);
    cluster.run_for(300);
    let refilled = cluster.core(3).log().last_index();
    assert!(
        refilled >= cluster.status(1).commit,
        "node 1 refilled node 3's log ({refilled} entries)"
    );
    cluster.step(
        1,
        Input::Join {
            id: 300,
            node: 3,
            last_index: refilled,
            nonce: cluster.join_nonce(3),
        },
    );
    cluster.run_for(50);
    let answered = cluster
        .take_events(1)
        .contains(&Action::JoinCompleted { id: 300, node: 3 });
    if answered {
        // What node 3 does on that answer; the harness then sees the two commits.
        cluster.step(3, Input::Admitted);
    }
    cluster.propose(1, 400, b"after");
    cluster.run_for(500);
    assert!(!answered, "node 1 answered the forgetful node 3 as a retry");
    assert!(cluster.status(1).commit < contested);
}

/// A retry is recognised by the nonce of the entry that admitted it, and that evidence outlives
/// compaction: the snapshot carries each member's latest admission. Without it, a joiner whose
/// answer was lost and whose admission was compacted away would look like a member that lost
/// its data, and be removed for nothing: the random simulator found a 3-node group that could
/// not elect again after such a removal met a real disk loss (seed 1135, `--faults
/// all,disk-loss`). A request with another nonce (another start of the node) is no retry.
#[test]
fn a_retry_is_recognised_after_its_admission_was_compacted() {
    let run = |nonce: u64| {
        let mut cluster = TestCluster::with_spares(1, 1, |config| {
            config.snapshot_interval_entries = 10;
            config.snapshot_trailing_entries = 0;
            if config.id == 2 {
                config.voters.clear();
                config.joining = true;
                config.join_nonce = 77;
            }
        });
        cluster.elect(1);
        let join = |id| Input::Join {
            id,
            node: 2,
            last_index: 0,
            nonce: 77,
        };
        cluster.step(1, join(100));
        cluster.run_for(500);
        assert!(cluster
            .take_events(1)
            .contains(&Action::JoinCompleted { id: 100, node: 2 }));
        for request in 0..30 {
            cluster.propose(1, request, b"after");
        }
        cluster.run_for(200);
        let snapshot = cluster.core(1).log().first_index() - 1;
        assert!(snapshot >= 20, "compacted through {snapshot}");
        cluster.step(
            1,
            Input::Join {
                id: 101,
                node: 2,
                last_index: cluster.core(2).log().last_index(),
                nonce,
            },
        );
        let answered = cluster
            .take_events(1)
            .contains(&Action::JoinCompleted { id: 101, node: 2 });
        (answered, voters(&cluster, 1))
    };
    assert_eq!(
        run(77),
        (true, set(&[1, 2])),
        "the retry is answered at once"
    );
    assert_eq!(
        run(78),
        (false, set(&[1])),
        "another start's request: node 2 is removed, to be added again"
    );
}

/// A joiner whose admitting entry was compacted before it arrived learns of its admission from
/// the snapshot it installs instead (once the snapshot is durable), as it would from the entry.
#[test]
fn a_joiner_learns_its_admission_from_the_snapshot() {
    let admitted = |nonce: u64| {
        let mut config = Config::joining(2);
        config.join_nonce = 77;
        let mut node = RawNode::new(config, Recovered::default(), 0).expect("valid");
        let mut membership = Membership::with_voters([1]);
        membership.learners.insert(2);
        node.step(Input::Message(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::SnapshotChunk {
                meta: ravel::core::SnapshotMeta {
                    index: 30,
                    term: 1,
                    membership,
                    admissions: vec![Admission { node: 2, nonce }],
                },
                offset: 0,
                data: bytes::Bytes::from_static(b"state"),
                done: true,
            },
        }));
        let actions = node.take_actions();
        assert!(!actions.contains(&Action::Admitted), "not durable yet");
        for action in actions {
            if let Action::InstallSnapshot { id, .. } = action {
                node.step(Input::Persisted { id });
            }
        }
        node.take_actions().contains(&Action::Admitted)
    };
    assert!(admitted(77));
    assert!(!admitted(76), "another start's admission admits nothing");
}

/// What the pool admitted holds only for the start of the node it admitted. Node 4 is added as
/// a learner (so the pool trusts what it holds from then on); then it loses its disk and asks
/// again, with a new start's nonce, while its first request is still queued. Merged into that request, the new one inherited its trust: the forgetful
/// node would have been promoted (and counted) without being removed first.
#[test]
fn a_new_start_of_a_queued_joiner_is_not_trusted_for_the_old_one() {
    let mut cluster = TestCluster::with_spares(3, 1, |config| {
        if config.id == 4 {
            config.voters.clear();
            config.joining = true;
            config.join_nonce = 77;
        }
    });
    cluster.elect(1);
    cluster.propose(1, 1, b"history");
    cluster.run_for(50);
    // Node 4's answers never arrive: it stays a learner, and its request stays queued.
    cluster.cut_link(4, 1);
    cluster.step(
        1,
        Input::Join {
            id: 100,
            node: 4,
            last_index: 0,
            nonce: 77,
        },
    );
    cluster.run_for(200);
    assert!(cluster.core(1).membership().learners.contains(&4));

    cluster.crash(4);
    cluster.wipe(4);
    cluster.restart_joining(4);
    cluster.heal();
    cluster.step(
        1,
        Input::Join {
            id: 101,
            node: 4,
            last_index: 0,
            nonce: cluster.join_nonce(4),
        },
    );
    assert!(
        !cluster.core(1).membership().is_member(4),
        "node 4's new start is removed before it is added again"
    );
    cluster.run_for(1_000);
    let events = cluster.take_events(1);
    for id in [100, 101] {
        assert!(events.contains(&Action::JoinCompleted { id, node: 4 }));
    }
    assert_eq!(voters(&cluster, 1), set(&[1, 2, 3, 4]));
}
