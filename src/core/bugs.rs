//! Classic Raft bugs that can be planted on purpose (feature `planted-bugs`), so the simulator can
//! prove that its checkers catch them. Every switch is off by default; production builds do not
//! even compile them.

/// Which bugs to plant. Each names the rule of the Raft paper it breaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Grant votes without the "candidate's log is at least as up to date" check (§5.4.1).
    pub vote_without_log_check: bool,
    /// Commit entries of earlier terms by counting replicas (the Figure 8 bug, §5.4.2).
    pub commit_previous_term_by_counting: bool,
    /// Serve reads from the leader's local state without confirming leadership (§6.4 of the thesis).
    pub read_without_read_index: bool,
    /// Acknowledge appended entries before they are durable (§5.3 requires them stored first).
    pub ack_before_persist: bool,
    /// Followers grant votes while they still hear from a leader, breaking the lease (§6.4.1).
    pub vote_during_lease: bool,
    /// Grant a second vote in a term already voted in (§5.2: at most one vote per term).
    pub vote_twice_in_term: bool,
    /// Accept appended entries without the consistency check on the previous entry (§5.3).
    pub append_without_consistency_check: bool,
    /// Label a snapshot with the term of the entry before its last one (§7: the snapshot's last
    /// included term must be exact, or a follower's consistency check goes wrong after it).
    pub snapshot_with_wrong_term: bool,
    /// Act on an append from a leader of an older term instead of only answering it with the
    /// newer term (§5.1): a deposed leader's entries overwrite the new leader's.
    pub append_from_older_term: bool,
    /// Let a new leader change the membership before it committed an entry of its own term
    /// (the single-server change bug found after the thesis; see its errata).
    pub change_membership_before_own_term_commit: bool,
    /// Append every forwarded batch that arrives, even one already appended: a duplicated
    /// message applies a client's command twice (the leader must take each batch once).
    pub forward_without_dedup: bool,
    /// A follower serves a read at its own commit index instead of asking the leader for a
    /// read index (thesis §6.4): a follower cut off from a newer leader answers stale values.
    pub follower_read_from_own_commit: bool,
    /// A leader answers a follower's read-index request with its commit index at once, without
    /// a quorum's heartbeat round: a deposed leader hands out stale read indexes.
    pub read_index_without_round: bool,
    /// Not the core's but the node's: a node told to stop answers "shutting down" (refused,
    /// retry elsewhere) for writes it already handed to the core, which it may have passed on to
    /// the leader: a client that retries applies its write twice.
    pub shutdown_refuses_handed_over: bool,
    /// Not the core's but the node's: a node restarted before it was admitted resumes as a
    /// member with whatever part of the log it had received, instead of asking to join again.
    pub resume_while_joining: bool,
    /// A follower commits up to the leader's commit index within its whole log, not only
    /// within the entries the append just matched (§5.3: `min(leaderCommit, index of last new
    /// entry)`): a stale tail beyond them gets committed.
    pub follower_commit_past_new_entries: bool,
    /// A node takes the term of a pre-vote request as its own (thesis §9.6: a pre-vote must
    /// disturb no one's term).
    pub pre_vote_adopts_term: bool,
    /// A leader starts a configuration change while another is uncommitted (the single-server
    /// change rule: one at a time).
    pub two_changes_at_once: bool,
    /// A leader counts the acknowledgements of a node that rejoined without its disk before it
    /// was admitted again: it may have forgotten what it acknowledged.
    pub joining_counts_toward_quorum: bool,
    /// The leader lease ignores clock drift (thesis §6.4.1: bound it by the drift allowance).
    pub lease_ignores_drift: bool,
    /// A joint configuration commits with a majority of the new voters only (§6: both).
    pub joint_commit_by_new_voters_only: bool,
    /// A leader counts its own entries toward commit before they are durable.
    pub leader_counts_unpersisted_entries: bool,
    /// A leader that hears from no majority stays leader (thesis §6.2, check-quorum): a
    /// partitioned leader holds its clients until they time out, however long the partition.
    pub leader_ignores_check_quorum: bool,
    /// A leader answers a member's repeated join request at once, as a retry, without evidence
    /// (its nonce in a committed admission) that this very request was admitted: a member that
    /// lost its disk counts again without being removed and added back first.
    pub rejoin_answered_as_retry: bool,
}

impl PlantedBugs {
    /// The bug called `name` on the command line, or `None` for an unknown name.
    pub fn by_name(name: &str) -> Option<Self> {
        let mut bugs = PlantedBugs::default();
        match name {
            "vote-without-log-check" => bugs.vote_without_log_check = true,
            "commit-previous-term-by-counting" => bugs.commit_previous_term_by_counting = true,
            "read-without-read-index" => bugs.read_without_read_index = true,
            "ack-before-persist" => bugs.ack_before_persist = true,
            "vote-during-lease" => bugs.vote_during_lease = true,
            "vote-twice-in-term" => bugs.vote_twice_in_term = true,
            "append-without-consistency-check" => bugs.append_without_consistency_check = true,
            "snapshot-with-wrong-term" => bugs.snapshot_with_wrong_term = true,
            "append-from-older-term" => bugs.append_from_older_term = true,
            "change-membership-before-own-term-commit" => {
                bugs.change_membership_before_own_term_commit = true
            }
            "forward-without-dedup" => bugs.forward_without_dedup = true,
            "follower-read-from-own-commit" => bugs.follower_read_from_own_commit = true,
            "read-index-without-round" => bugs.read_index_without_round = true,
            "shutdown-refuses-handed-over" => bugs.shutdown_refuses_handed_over = true,
            "resume-while-joining" => bugs.resume_while_joining = true,
            "follower-commit-past-new-entries" => bugs.follower_commit_past_new_entries = true,
            "pre-vote-adopts-term" => bugs.pre_vote_adopts_term = true,
            "two-changes-at-once" => bugs.two_changes_at_once = true,
            "joining-counts-toward-quorum" => bugs.joining_counts_toward_quorum = true,
            "lease-ignores-drift" => bugs.lease_ignores_drift = true,
            "joint-commit-by-new-voters-only" => bugs.joint_commit_by_new_voters_only = true,
            "leader-counts-unpersisted-entries" => bugs.leader_counts_unpersisted_entries = true,
            "leader-ignores-check-quorum" => bugs.leader_ignores_check_quorum = true,
            "rejoin-answered-as-retry" => bugs.rejoin_answered_as_retry = true,
            _ => return None,
        }
        Some(bugs)
    }

    /// Every name `by_name` knows.
    pub const NAMES: [&'static str; 24] = [
        "vote-without-log-check",
        "commit-previous-term-by-counting",
        "read-without-read-index",
        "ack-before-persist",
        "vote-during-lease",
        "vote-twice-in-term",
        "append-without-consistency-check",
        "snapshot-with-wrong-term",
        "append-from-older-term",
        "change-membership-before-own-term-commit",
        "forward-without-dedup",
        "follower-read-from-own-commit",
        "read-index-without-round",
        "shutdown-refuses-handed-over",
        "resume-while-joining",
        "follower-commit-past-new-entries",
        "pre-vote-adopts-term",
        "two-changes-at-once",
        "joining-counts-toward-quorum",
        "lease-ignores-drift",
        "joint-commit-by-new-voters-only",
        "leader-counts-unpersisted-entries",
        "leader-ignores-check-quorum",
        "rejoin-answered-as-retry",
    ];
}
