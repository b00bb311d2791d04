//! What the directory's log carries, what applying it answers, and what can be asked of it.

use crate::core::{NodeId, Term};
use crate::sharding::{GroupId, PartitionId};

use super::state::{Directory, DirectorySettings, GroupInfo, ServerInfo};

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum DirectoryCommand {
    /// The settings of a new system, proposed by the directory's first replica when it starts
    /// the group: applied once, while no server is registered; they never change after.
    Initialize(DirectorySettings),
    /// A new server asks for an id and a group. `token` is the server's own random number for
    /// this request: a retry with the same token gets the same answer, not a second id.
    Register {
        token: u64,
        address: String,
        labels: Vec<(String, String)>,
    },
    /// A server leaves its group (and the system).
    Leave { node: NodeId },
    /// `leader` leads `group` in `term` (a group's leader reports every change; anyone may
    /// report what it saw). Older terms than the one recorded are ignored.
    ReportLeader {
        group: GroupId,
        leader: NodeId,
        term: Term,
    },
    /// Where one of the directory's own replicas is reached (its replica's address book).
    RecordReplicaAddress { node: NodeId, address: String },
    /// The commit point of a move (`directory::moves`): its destination has ingested the whole
    /// partition, durably; from now on the destination owns it at `epoch`.
    CommitMove { partition: PartitionId, epoch: u64 },
    /// Rolls back a move not committed yet.
    AbortMove { partition: PartitionId, epoch: u64 },
    /// A committed move is complete: the source dropped the partition, the destination serves it.
    FinishMove { partition: PartitionId, epoch: u64 },
    /// A rolled-back attempt is cleaned up: its source unfroze, its destination discarded.
    ForgetMove { partition: PartitionId, epoch: u64 },
    /// The group is to be retired: its partitions move to the others (by consistent hashing
    /// with bounded loads); no new server is placed in it; once it owns none, its servers can
    /// leave.
    RetireGroup { group: GroupId },
    /// At most `limit` moves in flight at once from now on (0: none starts; those in flight go
    /// on).
    SetMoveLimit { limit: u32 },
    /// Moves ship at most `bytes_per_second` between them from now on (0: unlimited).
    SetMoveRate { bytes_per_second: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryOutcome {
    /// The directory has these settings (set now, or already the same).
    Initialized,
    /// No settings yet (the first replica has not proposed them): retry shortly.
    NotInitialized,
    /// The server's id and group, and that group's leader if one is known (none for the first
    /// member of a new group, which starts it).
    Registered {
        node: NodeId,
        group: GroupId,
        leader: Option<NodeId>,
        /// The addresses of the group's other members, the leader's first: the server joins
        /// the group through them. Empty: it is the first and starts the group.
        seeds: Vec<String>,
        /// The system's partitions: a data group serves none of them until it claims or
        /// ingests them, from the first entry of its log on.
        partitions: u32,
    },
    Left {
        group: GroupId,
        /// The addresses of the group's remaining members, the leader's first: the server
        /// leaves the group's Raft configuration through them (none: the group is empty now).
        members: Vec<String>,
    },
    LeaderRecorded,
    /// A report of a term older than (or as old as) the one recorded.
    LeaderStale {
        recorded: Term,
    },
    AddressRecorded,
    /// What a move command did.
    Move(super::MoveOutcome),
    /// The group is retiring (now, or already): this many partitions are still to move away.
    Retiring {
        partitions: u32,
    },
    /// The limit on moves in flight is set.
    MoveLimitSet,
    /// The limit on the bytes moves ship per second is set.
    MoveRateSet,
    /// The command was refused, and why; nothing changed.
    Refused(String),
    /// The entry did not decode: every replica reaches the same verdict, nothing changed.
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryQuery {
    /// Which group owns this partition, at which epoch, and that group's leader.
    Route(PartitionId),
    Group(GroupId),
    Server(NodeId),
    /// Everything: for routing clients, `ravel groups` and the status page.
    Overview,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryAnswer {
    /// `None` while no partition table exists (not enough groups yet).
    Route(Option<(GroupId, u64, Option<NodeId>)>),
    Group(Option<GroupInfo>),
    Server(Option<ServerInfo>),
    Overview(Box<Directory>),
}

impl DirectoryCommand {
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(crate::storage::encode(self))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::storage::CodecError> {
        crate::storage::decode(bytes)
    }
}
