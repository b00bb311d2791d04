//! Scenarios from the Raft paper (Ongaro & Ousterhout, 2014) and thesis, each named after the
//! section or figure it checks. Every step of every scenario also runs the simulator's
//! invariant checker.

use bytes::Bytes;
use ravel::core::{
    Action, Entry, EntryPayload, Input, Message, MessageBody, ProgressState, Proposal, ReadMode,
    Refusal, Role,
};
use ravel::kv::Command;
use ravel_sim::harness::{without_pre_vote_or_check_quorum, TestCluster};

/// For `deliver_all_matching`: everything but appends, so that a leader's entries do not spread.
fn no_appends(message: &Message) -> bool {
    !matches!(message.body, MessageBody::Append { .. })
}

/// §5.2: a leader is elected, every node follows it, and all agree on the term.
#[test]
fn section_5_2_a_single_leader_is_elected_and_followed() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.run_for(1_000);
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1, "exactly one leader, got {leaders:?}");
    let leader = leaders[0];
    let term = cluster.status(leader).term;
    for id in 1..=3 {
        assert_eq!(cluster.status(id).term, term);
        assert_eq!(cluster.status(id).leader, Some(leader));
    }
}

/// §5.2, split votes: two candidates at once; the one the third node hears first wins, the
/// other steps down in the same term.
#[test]
fn section_5_2_dueling_candidates_resolve_to_one_leader() {
    let mut cluster = TestCluster::new(3, |config| config.pre_vote = false);
    cluster.step(1, Input::Campaign);
    cluster.step(3, Input::Campaign);
    // Deliver node 1's request to node 2 first.
    let (from_one, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut cluster.in_flight)
        .into_iter()
        .partition(|message| message.from == 1);
    cluster.in_flight = from_one.into_iter().chain(rest).collect();
    cluster.deliver_all();
    assert_eq!(cluster.leaders(), vec![1]);
    assert_eq!(cluster.status(3).role, Role::Follower);
    assert_eq!(cluster.status(3).term, cluster.status(1).term);
}

/// §5.2: a vote counts only in the term it was cast in. A grant from an earlier campaign that
/// arrives late elects no one in the next term, where the voter is free to choose again.
#[test]
fn section_5_2_a_late_vote_from_an_earlier_term_does_not_count() {
    let mut cluster = TestCluster::new(3, without_pre_vote_or_check_quorum);
    cluster.step(1, Input::Campaign);
    cluster.deliver_all_matching(|message| message.to != 1);
    let late_grants: Vec<_> = std::mem::take(&mut cluster.in_flight)
        .into_iter()
        .filter(|message| {
            matches!(
                message.body,
                MessageBody::VoteResponse { granted: true, .. }
            )
        })
        .collect();
    assert_eq!(late_grants.len(), 2, "nodes 2 and 3 granted their votes");
    let first_term = cluster.status(1).term;
    // Node 1 campaigns again before the grants arrive; its new requests are lost.
    cluster.step(1, Input::Campaign);
    cluster.in_flight.clear();
    assert_eq!(cluster.status(1).term, first_term + 1);
    for grant in late_grants {
        cluster.deliver(grant);
    }
    assert!(
        cluster.leaders().is_empty(),
        "grants of term {first_term} elected a leader of term {}",
        first_term + 1
    );
}

/// §5.4.1: a node refuses its vote to a candidate whose log is less up to date.
#[test]
fn section_5_4_1_votes_go_only_to_up_to_date_candidates() {
    // Node 1's log ends in term 1; nodes 2 and 3 hold a term-2 entry.
    let mut cluster = TestCluster::with_logs(&[vec![1], vec![1, 2], vec![1, 2]], 2, |_| {});
    cluster.elect(1);
    assert!(
        cluster.leaders().is_empty(),
        "node 1 must not win with a stale log"
    );
    cluster.elect(2);
    assert_eq!(cluster.leaders(), vec![2]);
}

/// Figure 7: whatever the followers' logs, the leader's consistency check and backtracking
/// bring them all to the leader's log (after its new no-op), deleting the extraneous entries.
#[test]
fn figure_7_followers_converge_to_the_leaders_log() {
    let leader_log = vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let logs = vec![
        leader_log.clone(),
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a)
        vec![1, 1, 1, 4],                         // (b)
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c)
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d)
        vec![1, 1, 1, 4, 4, 4, 4],                // (e)
        vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f)
    ];
    let mut cluster = TestCluster::with_logs(&logs, 7, |config| config.entries_per_message_max = 3);
    cluster.elect(1);
    assert_eq!(
        cluster.leader(),
        Some(1),
        "votes from (a), (b), (e), (f) elect the leader in term 8"
    );
    assert_eq!(cluster.status(1).term, 8);
    cluster.run_for(100);
    let mut expected = leader_log;
    expected.push(8);
    for id in 1..=7 {
        assert_eq!(cluster.log_terms(id), expected, "node {id}'s log");
        assert_eq!(
            cluster.status(id).commit,
            11,
            "node {id} commits through the no-op"
        );
    }
}

/// Figure 8: a leader must not commit an entry of an earlier term by counting replicas, even
/// when a majority stores it; only an entry of its own term commits it (§5.4.2).
#[test]
fn figure_8_earlier_term_entries_are_not_committed_by_counting() {
    // (c) in the figure: S1 leads term 4 with the term-2 entry at index 2; S5 holds term 3 there.
    let logs = vec![vec![1, 2], vec![1, 2], vec![1], vec![1], vec![1, 3]];
    let mut cluster = TestCluster::with_logs(&logs, 3, |config| config.entries_per_message_max = 1);
    cluster.step(1, Input::Campaign);
    // Votes arrive. S2 gets every append. S3 gets S1's first probe (which fails: S3 lacks index
    // 2) and then only appends without S1's term-4 no-op. S4 and S5 hear nothing more.
    let probed_s3 = std::cell::Cell::new(false);
    cluster.deliver_all_matching(|message| match &message.body {
        MessageBody::Append { entries, .. } if message.to == 3 => {
            !probed_s3.replace(true) || entries.iter().all(|entry| entry.term != 4)
        }
        MessageBody::Append { .. } => message.to == 2,
        _ => message.to != 4 && message.to != 5,
    });
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(
        cluster.core(1).progress(3).map(|p| p.match_index),
        Some(2),
        "S3 now holds the term-2 entry"
    );
    assert_eq!(
        cluster.core(1).progress(2).map(|p| p.match_index),
        Some(3),
        "S2 holds the no-op too"
    );
    assert_eq!(
        cluster.status(1).commit,
        0,
        "index 2 is stored on S1, S2, S3 (a majority) but is from term 2: not committed by counting"
    );
    // Once the no-op of S1's own term reaches a majority, both commit together.
    cluster.deliver_all();
    assert_eq!(cluster.status(1).commit, 3);
}

/// Figure 2, "updated on stable storage before responding to RPCs": a vote leaves only once it
/// is durable. A voter that crashed before its disk synced would forget it and could vote again
/// in the same term, for a second leader.
#[test]
fn figure_2_a_vote_leaves_only_once_durable() {
    let mut cluster = TestCluster::new(3, |config| config.pre_vote = false);
    cluster.isolate(2);
    cluster.hold_syncs(3);
    cluster.elect(1);
    assert!(
        cluster.leaders().is_empty(),
        "node 3's vote waits for its disk"
    );
    cluster.sync(3);
    cluster.deliver_all();
    assert_eq!(cluster.leaders(), vec![1], "the durable vote elects node 1");
}

/// Figure 2: `votedFor` is persistent state. A voter that restarts still knows whom it voted
/// for in its term, and refuses a second candidate of that term.
#[test]
fn figure_2_a_vote_survives_a_restart() {
    // Without check-quorum a restarted node takes vote requests at once (no lockout).
    let mut cluster = TestCluster::new(3, without_pre_vote_or_check_quorum);
    cluster.isolate(2);
    cluster.step(1, Input::Campaign);
    // The vote arrives; node 1's appends do not, so node 2's log is as up to date as node 3's.
    cluster.deliver_all_matching(no_appends);
    assert_eq!(cluster.leaders(), vec![1], "node 3's vote elects node 1");
    let term = cluster.status(1).term;
    cluster.crash(3);
    cluster.restart(3);
    assert_eq!(cluster.core(3).hard_state().term, term);
    assert_eq!(cluster.core(3).hard_state().vote, Some(1));
    // Node 2 campaigns in the same term, with a log as short as node 3's.
    cluster.heal();
    cluster.isolate(1);
    cluster.elect(2);
    assert!(
        cluster.status(2).role != Role::Leader || cluster.status(2).term > term,
        "a second leader in term {term}"
    );
}

/// The same rule for entries: a follower acknowledges an append only once its entries are
/// durable, since the leader counts the acknowledgement towards a commit that must outlive the
/// follower's crash.
#[test]
fn figure_2_a_follower_acknowledges_only_durable_entries() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    let commit = cluster.status(1).commit;
    cluster.isolate(2);
    cluster.hold_syncs(3);
    cluster.propose(1, 7, b"x");
    cluster.deliver_all();
    assert_eq!(
        cluster.status(1).commit,
        commit,
        "node 3's acknowledgement waits for its disk"
    );
    cluster.sync(3);
    cluster.deliver_all();
    assert_eq!(cluster.status(1).commit, commit + 1);
}

/// §5.3: a follower that receives a stale leader's append tells it the new term, and the stale
/// leader steps down.
#[test]
fn section_5_3_a_stale_leader_steps_down_on_hearing_a_higher_term() {
    let mut cluster = TestCluster::new(3, |config| config.check_quorum = false);
    cluster.elect(1);
    cluster.isolate(1);
    cluster.elect(2);
    assert_eq!(
        cluster.leaders(),
        vec![1, 2],
        "both believe they lead, in different terms"
    );
    cluster.heal();
    cluster.propose(1, 7, b"stale");
    assert!(matches!(
        cluster.take_events(1).as_slice(),
        [.., Action::ProposalAccepted { .. }]
    ));
    cluster.deliver_all();
    assert_eq!(cluster.leaders(), vec![2]);
    assert_eq!(cluster.status(1).term, cluster.status(2).term);
}

/// §5.1: a node rejects an append from an older term whole: its log, its commit and the leader
/// it follows stay as they were, and the stale leader is told the newer term. Accepting it would
/// let a deposed leader overwrite what the new one committed.
#[test]
fn section_5_1_a_follower_rejects_an_append_from_an_older_term() {
    let mut cluster = TestCluster::new(3, |config| config.check_quorum = false);
    cluster.elect(1);
    cluster.isolate(1);
    cluster.elect(2);
    let before = (cluster.log_terms(3), cluster.status(3));
    assert_eq!(before.1.commit, 2, "node 3 holds term 2's no-op, committed");
    cluster.heal();
    cluster.propose(1, 7, b"stale");
    // Only the stale leader's appends to node 3 arrive.
    cluster.deliver_all_matching(|message| {
        message.from == 1 && message.to == 3 && matches!(message.body, MessageBody::Append { .. })
    });
    let after = (cluster.log_terms(3), cluster.status(3));
    assert_eq!(after.0, before.0, "node 3's log is untouched");
    assert_eq!(after.1.commit, before.1.commit);
    assert_eq!(
        after.1.leader,
        Some(2),
        "node 3 still follows the term-2 leader"
    );
    assert!(
        cluster
            .in_flight
            .iter()
            .any(|message| message.from == 3 && message.to == 1 && message.term == after.1.term),
        "node 3 tells the stale leader its term"
    );
}

/// Figure 2, AppendEntries rule 5: a follower commits up to the leader's commit index but no
/// further than the last entry this append confirmed. Entries past it may be a deposed leader's,
/// never committed. Ravel's leader backtracks to the first entry that differs, so only a short
/// append (one entry per message) that arrives late, written out here, can expose the rule.
#[test]
fn figure_2_a_follower_commits_no_further_than_the_append_confirmed() {
    // Index 3 is term 3's on nodes 1 and 2; node 3 still holds a deposed term-2 leader's.
    let logs = vec![vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 2]];
    let mut cluster = TestCluster::with_logs(&logs, 3, |config| config.entries_per_message_max = 1);
    cluster.isolate(3);
    cluster.elect(1);
    assert_eq!(cluster.leader(), Some(1));
    let term = cluster.status(1).term;
    assert_eq!(
        cluster.status(1).commit,
        4,
        "nodes 1 and 2 commit through the no-op"
    );
    cluster.heal();
    let short_append = Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::Append {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![Entry {
                term: 2,
                index: 2,
                payload: EntryPayload::Noop,
            }],
            leader_commit: 4,
            durable_everywhere: 1,
        },
    };
    cluster.deliver(short_append);
    assert_eq!(cluster.log_terms(3), vec![1, 2, 2], "nothing conflicted");
    assert_eq!(
        cluster.status(3).commit,
        2,
        "node 3 commits index 2, which the append matched, and not its own index 3"
    );
    // The leader's own appends then replace the stale entry, and node 3 catches up.
    cluster.deliver_all();
    cluster.run_for(100);
    assert_eq!(cluster.log_terms(3), cluster.log_terms(1));
    assert_eq!(cluster.status(3).commit, 4);
}

/// Thesis §9.6: a node rejoining after a partition does not disrupt the leader, because its
/// pre-votes fail and so its term never grew.
#[test]
fn thesis_9_6_a_rejoining_node_does_not_disrupt_the_leader_with_pre_vote() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    let term = cluster.status(1).term;
    cluster.isolate(3);
    cluster.run_for(2_000);
    assert_eq!(
        cluster.status(3).term,
        term,
        "pre-votes fail: no term inflation while isolated"
    );
    cluster.heal();
    cluster.run_for(500);
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(cluster.status(1).term, term);
    assert_eq!(cluster.status(3).leader, Some(1));
}

/// Without pre-vote the same partition inflates the isolated node's term, and its return
/// deposes the leader: the reason pre-vote exists.
#[test]
fn thesis_9_6_without_pre_vote_the_rejoining_node_disrupts() {
    let mut cluster = TestCluster::new(3, without_pre_vote_or_check_quorum);
    cluster.elect(1);
    let term = cluster.status(1).term;
    cluster.isolate(3);
    cluster.run_for(2_000);
    assert!(cluster.status(3).term > term + 3);
    cluster.heal();
    cluster.run_for(1_000);
    assert!(cluster.status(1).term > term, "the leader was deposed");
}

/// Thesis §6.2, check-quorum: a leader that cannot reach a majority steps down within an
/// election timeout, so clients stop waiting on it.
#[test]
fn thesis_6_2_a_leader_without_a_quorum_steps_down() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster.isolate(1);
    cluster.run_for(300);
    assert_eq!(cluster.status(1).role, Role::Follower);
}

/// Thesis §3.10: leadership transfer catches the target up and hands over in the next term.
#[test]
fn thesis_3_10_leadership_transfer_hands_over_to_the_target() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    let term = cluster.status(1).term;
    cluster.propose(1, 1, b"before");
    cluster.step(1, Input::TransferLeadership { to: 3 });
    cluster.propose(1, 2, b"during");
    let events = cluster.take_events(1);
    assert!(events.iter().any(|event| matches!(
        event,
        Action::ProposalRefused {
            id: 2,
            reason: Refusal::TransferInProgress
        }
    )));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(3));
    assert_eq!(cluster.status(3).term, term + 1);
    assert_eq!(cluster.status(1).role, Role::Follower);
}

/// Without forwarding, a follower refuses proposals and names the leader, so clients can
/// redirect (with it, `tests/forwarding.rs`).
#[test]
fn proposals_to_a_follower_are_refused_with_a_leader_hint() {
    let mut cluster = TestCluster::new(3, |config| config.forward_proposals = false);
    cluster.elect(2);
    cluster.propose(1, 9, b"x");
    let events = cluster.take_events(1);
    assert!(events.contains(&Action::ProposalRefused {
        id: 9,
        reason: Refusal::NotLeader {
            leader_hint: Some(2)
        }
    }));
}

/// Thesis §6.4, ReadIndex: a read is answered only after a heartbeat round confirms leadership,
/// so a leader cut off from the majority never answers.
#[test]
fn thesis_6_4_read_index_needs_a_quorum_round() {
    let mut cluster = TestCluster::new(3, |config| config.read_mode = ReadMode::ReadIndex);
    cluster.elect(1);
    cluster.step(1, Input::Read { id: 1 });
    assert!(cluster.take_events(1).is_empty(), "not before the round");
    cluster.deliver_all();
    assert!(matches!(
        cluster.take_events(1).as_slice(),
        [Action::ReadReady { id: 1, .. }]
    ));

    cluster.isolate(1);
    cluster.step(1, Input::Read { id: 2 });
    cluster.deliver_all();
    assert!(cluster.take_events(1).is_empty(), "no quorum, no answer");
    cluster.run_for(300);
    let events = cluster.take_events(1);
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Action::ReadRefused { id: 2, .. })),
        "refused when the leader steps down: {events:?}"
    );
}

/// §6.4 batching: reads that arrive while a round is out wait for it to be confirmed and then
/// share the next round, so a busy leader sends a round per batch of reads, not per read. A
/// round whose answers are lost holds the next one back for one heartbeat interval at most.
/// Thesis §6.4, step 1: a new leader does not know what its predecessor committed until an entry
/// of its own term commits (its commit index may lag writes the old leader acknowledged), so it
/// answers no read before then, even with a quorum's heartbeats in hand.
#[test]
fn thesis_6_4_a_new_leader_answers_reads_only_after_its_terms_first_commit() {
    let logs = vec![vec![1, 1], vec![1, 1], vec![1, 1]];
    let mut cluster =
        TestCluster::with_logs(&logs, 1, |config| config.read_mode = ReadMode::ReadIndex);
    cluster.step(1, Input::Campaign);
    cluster.deliver_all_matching(no_appends);
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(cluster.status(1).commit, 0, "the no-op has not spread");
    cluster.step(1, Input::Read { id: 1 });
    cluster.deliver_all_matching(no_appends);
    assert!(
        cluster.take_events(1).is_empty(),
        "no read before the no-op commits"
    );
    cluster.deliver_all();
    assert_eq!(cluster.status(1).commit, 3);
    assert!(matches!(
        cluster.take_events(1).as_slice(),
        [Action::ReadReady { id: 1, .. }]
    ));
}

#[test]
fn thesis_6_4_reads_arriving_during_a_round_share_the_next_one() {
    let heartbeats = |cluster: &TestCluster| {
        cluster
            .in_flight
            .iter()
            .filter(|message| matches!(message.body, MessageBody::Heartbeat { .. }))
            .count()
    };
    let mut cluster = TestCluster::new(3, |config| config.read_mode = ReadMode::ReadIndex);
    cluster.elect(1);
    cluster.deliver_all();
    cluster.step(1, Input::Read { id: 1 });
    assert_eq!(
        heartbeats(&cluster),
        2,
        "the first read starts a round at once"
    );
    for id in 2..=10 {
        cluster.step(1, Input::Read { id });
    }
    assert_eq!(
        heartbeats(&cluster),
        2,
        "later reads wait for the round in flight"
    );
    cluster.deliver_all();
    let ready = |events: Vec<Action>| {
        events
            .iter()
            .filter(|event| matches!(event, Action::ReadReady { .. }))
            .count()
    };
    assert_eq!(
        ready(cluster.take_events(1)),
        10,
        "two rounds answer all ten reads"
    );

    // Answers lost: the next round goes out once a heartbeat interval has passed.
    cluster.step(1, Input::Read { id: 11 });
    cluster.in_flight.clear();
    cluster.step(1, Input::Read { id: 12 });
    assert!(
        cluster.in_flight.is_empty(),
        "held back by the unanswered round"
    );
    cluster.run_for(cluster.core(1).config().heartbeat_interval_ms + 1);
    cluster.deliver_all();
    assert_eq!(ready(cluster.take_events(1)), 2);
}

/// A 3-node cluster in lease mode whose leader, node 1, answered read 1 from its lease (no
/// round trip).
fn leader_reading_from_its_lease() -> TestCluster {
    let mut cluster = TestCluster::new(3, |config| config.read_mode = ReadMode::Lease);
    cluster.elect(1);
    cluster.run_for(50);
    cluster.step(1, Input::Read { id: 1 });
    assert!(
        matches!(
            cluster.take_events(1).as_slice(),
            [Action::ReadReady { id: 1, .. }]
        ),
        "the lease holds"
    );
    cluster
}

/// Thesis §6.4.1, lease: within the lease, reads need no round trip; once acknowledgements stop
/// the lease runs out and reads wait for a round again.
#[test]
fn thesis_6_4_1_lease_reads_skip_the_round_only_while_the_lease_holds() {
    let mut cluster = leader_reading_from_its_lease();
    cluster.isolate(1);
    cluster.now_ms += cluster.core(1).config().election_timeout_min_ms;
    cluster.step(1, Input::Read { id: 2 });
    assert!(cluster
        .take_events(1)
        .iter()
        .all(|event| !matches!(event, Action::ReadReady { .. })));
}

/// Thesis §3.10 with §6.4.1: the target of a handover may win an election at once (its vote
/// request bypasses the followers' lease promise), so a leader that begins a handover stops
/// serving reads from its lease right away, though the lease has time left.
#[test]
fn a_leader_handing_over_serves_no_more_reads_from_its_lease() {
    let mut cluster = leader_reading_from_its_lease();
    cluster.step(1, Input::TransferLeadership { to: 3 });
    cluster.step(1, Input::Read { id: 2 });
    assert!(
        cluster
            .take_events(1)
            .iter()
            .all(|event| !matches!(event, Action::ReadReady { .. })),
        "no read from the lease once the handover began"
    );
}

/// §6.4.1: a forced campaign is a vote for oneself. A follower that heard its leader within the
/// election timeout promised that leader's lease not to vote, for itself included: in lease mode
/// it refuses the operator's request until the promise runs out (found by the random
/// simulator's lease check: a forced campaign won while the old leader still read from its
/// lease). With read index, there is no lease to respect and the campaign starts at once.
#[test]
fn a_follower_inside_a_lease_refuses_a_forced_campaign() {
    let mut cluster = leader_reading_from_its_lease();
    let term = cluster.status(2).term;
    cluster.step(2, Input::Campaign);
    assert_eq!(
        cluster.status(2).role,
        Role::Follower,
        "refused inside the lease"
    );
    assert_eq!(cluster.status(2).term, term);
    // Once node 2 stops hearing the leader, its promise runs out and the campaign goes ahead.
    cluster.isolate(1);
    cluster.run_for(cluster.core(2).config().election_timeout_min_ms);
    let node_1_now = cluster.now_ms;
    assert!(
        !cluster.core(1).lease_holds_at(node_1_now),
        "the lease ran out first"
    );
    cluster.step(2, Input::Campaign);
    assert!(
        cluster.status(2).term > term,
        "campaigns once the promise ran out"
    );

    let mut read_index = TestCluster::new(3, |_| {});
    read_index.elect(1);
    read_index.run_for(50);
    let term = read_index.status(2).term;
    read_index.step(2, Input::Campaign);
    assert_eq!(
        read_index.status(2).term,
        term + 1,
        "no lease: campaigns at once"
    );
}

/// §3.10 with §6.4.1: a TimeoutNow can arrive late, after the handover's deadline passed and the
/// leader went back to leading; its target then campaigns with votes that ignore the followers'
/// lease promise. So once a leader has sent one, it takes no lease again in that term (found by
/// the random simulator's lease check: a late TimeoutNow's target won while the old leader held
/// a lease earned after its handover timed out).
#[test]
fn a_leader_that_sent_timeout_now_takes_no_lease_again_in_its_term() {
    let mut cluster = leader_reading_from_its_lease();
    cluster.step(1, Input::TransferLeadership { to: 3 });
    cluster.deliver_all_matching(|message| !matches!(message.body, MessageBody::TimeoutNow));
    let timeout_now = cluster
        .in_flight
        .iter()
        .position(|message| matches!(message.body, MessageBody::TimeoutNow))
        .expect("node 3 was caught up: TimeoutNow sent");
    let late = cluster.in_flight.remove(timeout_now);
    // The handover times out; heartbeat rounds are acknowledged again.
    cluster.run_for(cluster.core(1).config().election_timeout_min_ms * 2);
    assert_eq!(
        cluster.leader(),
        Some(1),
        "still leading after the handover timed out"
    );
    let now = cluster.now_ms;
    assert!(
        !cluster.core(1).lease_holds_at(now),
        "no lease while a TimeoutNow may be on its way"
    );
    // The late TimeoutNow arrives: node 3 wins at once, ignoring the promises.
    cluster.deliver(late);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(3));
}

/// §5.3 with flow control: a follower in probe state gets one append at a time; once it
/// answers, it switches to pipelined replication bounded by the in-flight limit.
#[test]
fn flow_control_probes_then_pipelines_within_the_inflight_limit() {
    let mut cluster = TestCluster::new(3, |config| {
        config.entries_per_message_max = 1;
        config.inflight_messages_max = 2;
    });
    cluster.elect(1);
    assert_eq!(
        cluster.core(1).progress(2).map(|p| p.state),
        Some(ProgressState::Replicate)
    );
    for request in 0..5 {
        cluster.propose(1, request, b"p");
    }
    let appends_to_2 = cluster
        .in_flight
        .iter()
        .filter(|message| message.to == 2 && matches!(message.body, MessageBody::Append { .. }))
        .count();
    assert_eq!(
        appends_to_2, 2,
        "no more than the in-flight limit before acknowledgements"
    );
    cluster.deliver_all();
    assert_eq!(cluster.status(2).commit, cluster.status(1).last_index);
}

/// A crashed follower restarts from its durable state and catches up.
#[test]
fn a_restarted_follower_recovers_its_log_and_catches_up() {
    let mut cluster = TestCluster::new(3, |_| {});
    cluster.elect(1);
    cluster.propose(1, 1, b"a");
    cluster.deliver_all();
    cluster.crash(3);
    cluster.propose(1, 2, b"b");
    cluster.deliver_all();
    cluster.restart(3);
    assert_eq!(
        cluster.status(3).last_index,
        2,
        "noop and the first write were durable"
    );
    cluster.run_for(100);
    assert_eq!(cluster.status(3).commit, 3);
}

/// Thesis §6.4.1: the lease is sound only because followers that hear from a leader refuse to
/// vote for an election timeout. Node 3 stops hearing the leader (one-way cut); a little later
/// the leader stops hearing anyone, so its last lease is still running when node 3 campaigns.
/// Node 2 heard the leader recently and refuses, so no rival exists while the lease holds. With
/// the refusal planted away, node 3 wins while node 1 still serves lease reads: a stale read.
#[test]
fn thesis_6_4_1_followers_that_hear_a_leader_refuse_votes() {
    fn run(vote_during_lease: bool) -> (Vec<u64>, bool) {
        let mut cluster = TestCluster::new(3, |config| {
            config.read_mode = ReadMode::Lease;
            config.planted_bugs.vote_during_lease = vote_during_lease;
        });
        cluster.elect(1);
        cluster.run_for(50);
        cluster.cut_link(1, 3);
        cluster.run_for(90);
        cluster.cut_link(2, 1);
        cluster.cut_link(3, 1);
        let mut rival_elected_under_lease = false;
        for _ in 0..100 {
            cluster.run_for(5);
            // Would node 1 serve a lease read right now (no round trip)?
            cluster.step(1, Input::Read { id: 1 });
            let lease_read = cluster
                .take_events(1)
                .iter()
                .any(|event| matches!(event, Action::ReadReady { .. }));
            if lease_read && cluster.leaders().contains(&3) {
                rival_elected_under_lease = true;
            }
        }
        (cluster.leaders(), rival_elected_under_lease)
    }
    let (_, unsafe_lease) = run(false);
    assert!(!unsafe_lease, "no rival while the lease holds");
    let (_, unsafe_lease) = run(true);
    assert!(
        unsafe_lease,
        "without the refusal a rival is elected during the lease"
    );
}

/// §7: a follower that was down while the leader compacted its log catches up from the
/// snapshot, sent in chunks; lost, duplicated and reordered chunks only resume the transfer.
#[test]
fn section_7_a_lagging_follower_catches_up_by_snapshot_despite_lost_and_reordered_chunks() {
    let mut cluster = TestCluster::new(3, |config| {
        config.snapshot_interval_entries = 10;
        config.snapshot_trailing_entries = 0;
        config.snapshot_chunk_bytes_max = 16;
    });
    cluster.elect(1);
    cluster.crash(3);
    for request in 0..40 {
        let command = Command::Put {
            key: Bytes::from(format!("key-{request}")),
            value: Bytes::from(format!("value-{request}")),
        };
        let proposal = Proposal {
            id: request,
            command: command.encode(),
        };
        cluster.step(1, Input::Propose(vec![proposal]));
        cluster.deliver_all();
    }
    let snapshot_index = cluster.core(1).log().first_index() - 1;
    assert!(
        snapshot_index >= 30,
        "the leader compacted its log through {snapshot_index}"
    );
    cluster.restart(3);
    // Deliver by hand: drop every third chunk, duplicate every other, and swap neighbours.
    let mut chunks_seen = 0;
    for _ in 0..400 {
        cluster.now_ms += 5;
        for id in 1..=3 {
            cluster.step(
                id,
                Input::Tick {
                    now_ms: cluster.now_ms,
                },
            );
        }
        let mut batch = std::mem::take(&mut cluster.in_flight);
        batch.reverse();
        for message in batch {
            if matches!(message.body, MessageBody::SnapshotChunk { .. }) {
                chunks_seen += 1;
                if chunks_seen % 3 == 0 {
                    continue;
                }
                if chunks_seen % 2 == 0 {
                    cluster.deliver(message.clone());
                }
            }
            cluster.deliver(message);
        }
        if cluster.status(3).commit == cluster.status(1).commit {
            break;
        }
    }
    assert!(
        chunks_seen > 3,
        "the snapshot travelled in several chunks ({chunks_seen})"
    );
    assert_eq!(
        cluster.status(3).commit,
        cluster.status(1).commit,
        "node 3 caught up"
    );
    assert!(
        cluster.core(3).log().first_index() > snapshot_index,
        "node 3 installed the snapshot"
    );
    assert_eq!(
        cluster.nodes[&3].kv().snapshot(),
        cluster.nodes[&1].kv().snapshot(),
        "same state machine"
    );
}

/// §7: a follower that needs a snapshot gets one while the leader goes on writing and taking
/// snapshots faster than one transfer takes: the leader does not replace the snapshot it is
/// sending (storage keeps only the latest, so each new one restarted the transfer from zero and
/// the follower never caught up — found by the sharded simulation, seed 553).
#[test]
fn section_7_a_follower_catches_up_by_snapshot_while_the_leader_keeps_taking_snapshots() {
    let mut cluster = TestCluster::new(3, |config| {
        config.snapshot_interval_entries = 10;
        config.snapshot_trailing_entries = 0;
        config.snapshot_chunk_bytes_max = 16;
    });
    cluster.elect(1);
    cluster.crash(3);
    let mut request = 0;
    let mut propose = |cluster: &mut TestCluster| {
        request += 1;
        let command = Command::Put {
            key: Bytes::from(format!("key-{request}")),
            value: Bytes::from(format!("value-{request}")),
        };
        let proposal = Proposal {
            id: request,
            command: command.encode(),
        };
        cluster.step(1, Input::Propose(vec![proposal]));
    };
    for _ in 0..40 {
        propose(&mut cluster);
        cluster.deliver_all();
    }
    let snapshot_index = cluster.core(1).log().first_index() - 1;
    assert!(snapshot_index >= 30, "compacted through {snapshot_index}");
    cluster.restart(3);
    // A write every 10 ms (a snapshot every 100 ms); a transfer takes far longer.
    let mut caught_up_at = None;
    for step in 0..3_000u64 {
        cluster.now_ms += 5;
        for id in 1..=3 {
            cluster.step(
                id,
                Input::Tick {
                    now_ms: cluster.now_ms,
                },
            );
        }
        if step % 2 == 0 {
            propose(&mut cluster);
        }
        // One network hop per 5 ms: what is sent now arrives at the next step.
        for message in std::mem::take(&mut cluster.in_flight) {
            cluster.deliver(message);
        }
        if cluster.core(3).log().first_index() > snapshot_index + 1 {
            caught_up_at = Some(step);
            break;
        }
    }
    assert!(
        caught_up_at.is_some(),
        "node 3 installed no snapshot in 15 s of writes (commit {} against the leader's {})",
        cluster.status(3).commit,
        cluster.status(1).commit
    );
}

/// Figure 2: currentTerm is never below the terms in the log. Storage writes a batch's entries
/// before its hard state, so a crash that tears the batch can keep entries of term 7 with the
/// hard state of term 5; the node resumes in term 7 with no vote, and campaigns after it (a
/// pre-vote for term 5 + 1 would claim a log newer than its own term: malformed).
#[test]
fn figure_2_a_torn_batch_resumes_in_the_term_of_its_entries() {
    use ravel::core::{Config, HardState, RawNode, Recovered};
    let recovered = Recovered {
        hard_state: HardState {
            term: 5,
            vote: Some(2),
            commit: 0,
        },
        snapshot: None,
        entries: vec![Entry {
            term: 7,
            index: 1,
            payload: EntryPayload::Noop,
        }],
    };
    let mut node = RawNode::new(Config::new(1, [1, 2, 3]), recovered, 0).expect("valid");
    assert_eq!((node.status().term, node.status().vote), (7, None));
    node.step(Input::Tick { now_ms: 10_000 });
    let campaigns: Vec<u64> = node
        .take_actions()
        .into_iter()
        .filter_map(|action| match action {
            Action::Send { message, .. } => Some(message.term),
            _ => None,
        })
        .collect();
    assert!(!campaigns.is_empty(), "it campaigns");
    assert!(campaigns.iter().all(|&term| term == 8), "{campaigns:?}");
}
