//! The knobs of one node, validated once at construction so the state machine can trust them.

use std::collections::BTreeSet;

use thiserror::Error;

use super::types::{NodeId, ReadMode};

/// Everything a node needs to know before it starts. Build with [`Config::new`] and adjust fields;
/// [`crate::core::RawNode::new`] validates it.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id. A node that is not one of `voters` waits, without campaigning, to be
    /// added to the group by its leader.
    pub id: NodeId,
    /// The voting members of the group when it was created (later changes are log entries).
    pub voters: BTreeSet<NodeId>,
    /// A node joining an existing group (new, or back after losing its data): it knows no
    /// configuration, never votes or campaigns, and learns the configuration from the leader's
    /// log once the join workflow has added it. `voters` must then be empty.
    pub joining: bool,
    /// A follower campaigns after hearing nothing for a random time in
    /// `[election_timeout_min_ms, election_timeout_max_ms)`.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How often the leader sends heartbeats; must be well below the election timeout.
    pub heartbeat_interval_ms: u64,
    /// Ask for pre-votes before disturbing the group with a new term (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election timeout, and
    /// followers that hear from a leader refuse votes for that long (Raft thesis §6.2).
    pub check_quorum: bool,
    pub read_mode: ReadMode,
    /// A follower passes proposals on to the leader (answered once applied here) instead of
    /// refusing them with "not leader".
    pub forward_proposals: bool,
    /// A follower serves linearizable reads itself, with a read index from the leader, instead
    /// of refusing them with "not leader".
    pub forward_reads: bool,
    /// The largest deviation of any node's clock rate from real time, in parts per million.
    /// Shortens the leader lease so that drift cannot make it outlive the followers' promise.
    pub clock_drift_max_ppm: u64,
    /// Flow control: limits per `Append` and per peer.
    pub entries_per_message_max: usize,
    pub bytes_per_message_max: usize,
    pub inflight_messages_max: usize,
    /// Proposals are refused with `Overloaded` while this many entries wait to commit.
    pub uncommitted_entries_max: usize,
    /// Entries handed to the state machine per `Apply` action, at most.
    pub apply_batch_entries_max: usize,
    /// Applied entries that every voter holds durably are dropped from memory (storage keeps
    /// them), at least this many at a time so the cost is amortized.
    pub release_batch_entries_min: usize,
    /// Ask for a snapshot of the state machine once this many entries were applied since the
    /// last one; the log before it is then compacted. 0: only when a follower needs one.
    pub snapshot_interval_entries: u64,
    /// After a snapshot, keep this many entries before it in memory, so that a follower a little
    /// behind still gets entries rather than the whole snapshot.
    pub snapshot_trailing_entries: u64,
    /// Snapshots travel in chunks of at most this many bytes, one chunk in flight per follower.
    pub snapshot_chunk_bytes_max: usize,
    /// A node becomes a voter only once its log is within this many entries of the leader's.
    pub promotion_lag_max_entries: u64,
    /// Seeds this node's election jitter. Same seed, same inputs: same outputs.
    pub seed: u64,
    /// A joining node's nonce for this start, sent with its join request: a configuration entry
    /// carrying it admits this node ([`crate::core::Admission`]). Drawn anew at every start by
    /// the caller; 0: none (only the leader's answer admits it).
    pub join_nonce: u64,
    /// Test-only: the classic Raft bugs to plant (see [`crate::core::PlantedBugs`]).
    #[cfg(feature = "planted-bugs")]
    pub planted_bugs: super::PlantedBugs,
}

/// A configuration the node refuses to start with, and what to change.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id 0 is reserved; give every node an id of 1 or more")]
    ZeroNodeId,
    #[error(
        "the voter set is empty; list at least this node as a voter, or start the node as joining"
    )]
    NoVoters,
    #[error("a joining node learns the voters from the leader; leave the voter set empty")]
    JoiningWithVoters,
    #[error("{name} is 0 ms; it must be positive")]
    ZeroTimeout { name: &'static str },
    #[error(
        "election timeout range is empty ({min_ms} ms..{max_ms} ms); make the maximum larger than the minimum"
    )]
    InvertedElectionTimeout { min_ms: u64, max_ms: u64 },
    #[error(
        "heartbeat interval ({heartbeat_ms} ms) must be shorter than the minimum election timeout ({election_min_ms} ms), ideally by 5x or more"
    )]
    HeartbeatTooSlow {
        heartbeat_ms: u64,
        election_min_ms: u64,
    },
    #[error("read mode Lease needs check_quorum on: without it a deposed leader could serve stale reads")]
    LeaseWithoutCheckQuorum,
    #[error(
        "clock drift allowance of {ppm} ppm leaves no lease; use less than 250000 ppm or read mode ReadIndex"
    )]
    DriftTooLarge { ppm: u64 },
    #[error("{name} is 0; it must be at least 1")]
    ZeroLimit { name: &'static str },
}

impl Config {
    /// A node joining an existing group (see [`Config::joining`]).
    pub fn joining(id: NodeId) -> Self {
        Config {
            joining: true,
            ..Config::new(id, [])
        }
    }

    /// A configuration with the defaults a production node would use: 1-2 s election timeout,
    /// 100 ms heartbeats, pre-vote and check-quorum on, ReadIndex reads.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Config {
            id,
            voters: voters.into_iter().collect(),
            joining: false,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            heartbeat_interval_ms: 100,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            forward_proposals: true,
            forward_reads: true,
            clock_drift_max_ppm: 1000,
            entries_per_message_max: 1024,
            bytes_per_message_max: 1 << 20,
            inflight_messages_max: 64,
            uncommitted_entries_max: 1 << 20,
            apply_batch_entries_max: 4096,
            release_batch_entries_min: 1024,
            snapshot_interval_entries: 100_000,
            snapshot_trailing_entries: 10_000,
            snapshot_chunk_bytes_max: 1 << 20,
            promotion_lag_max_entries: 1000,
            seed: id,
            join_nonce: 0,
            #[cfg(feature = "planted-bugs")]
            planted_bugs: super::PlantedBugs::default(),
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 || self.voters.contains(&0) {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.voters.is_empty() && !self.joining {
            return Err(ConfigError::NoVoters);
        }
        if !self.voters.is_empty() && self.joining {
            return Err(ConfigError::JoiningWithVoters);
        }
        for (name, value) in [
            ("election_timeout_min_ms", self.election_timeout_min_ms),
            ("election_timeout_max_ms", self.election_timeout_max_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroTimeout { name });
            }
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(ConfigError::InvertedElectionTimeout {
                min_ms: self.election_timeout_min_ms,
                max_ms: self.election_timeout_max_ms,
            });
        }
        if self.heartbeat_interval_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat_ms: self.heartbeat_interval_ms,
                election_min_ms: self.election_timeout_min_ms,
            });
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.clock_drift_max_ppm >= 250_000 {
            return Err(ConfigError::DriftTooLarge {
                ppm: self.clock_drift_max_ppm,
            });
        }
        for (name, value) in [
            ("entries_per_message_max", self.entries_per_message_max),
            ("bytes_per_message_max", self.bytes_per_message_max),
            ("inflight_messages_max", self.inflight_messages_max),
            ("uncommitted_entries_max", self.uncommitted_entries_max),
            ("apply_batch_entries_max", self.apply_batch_entries_max),
            ("release_batch_entries_min", self.release_batch_entries_min),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { name });
            }
        }
        Ok(())
    }

    /// How long a leader may serve reads after a quorum acknowledged a heartbeat it sent.
    ///
    /// Followers promise not to vote for `election_timeout_min_ms` (T) of *their* clock after
    /// hearing from the leader. Clocks count whole milliseconds, so a promise made at 10.9 ms
    /// on a follower's clock is dated 10 and lasts only T - 1 from the heartbeat's arrival; and
    /// if the leader's clock runs slow by `ppm` and the follower's fast by `ppm`, that lasts
    /// `(T - 1) (1 - ppm) / (1 + ppm)` of the leader's time: the lease, counted from when the
    /// leader sent the heartbeat (which is before it arrived).
    pub fn lease_duration_ms(&self) -> u64 {
        let ppm = self.clock_drift_max_ppm;
        #[cfg(feature = "planted-bugs")]
        if self.planted_bugs.lease_ignores_drift {
            return self.election_timeout_min_ms;
        }
        self.election_timeout_min_ms.saturating_sub(1) * (1_000_000 - ppm) / (1_000_000 + ppm)
    }
}
