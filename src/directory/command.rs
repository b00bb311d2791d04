//! What the directory's log carries, what applying it answers, and what can be asked of it.

use crate::core::{NodeId, Term};
use crate::sharding::{GroupId, PartitionId};

use super::state::{GroupInfo, ServerInfo};

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum DirectoryCommand {
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryOutcome {
    /// The server's id and group, and that group's leader if one is known (none for the first
    /// member of a new group, which starts it).
    Registered {
        node: NodeId,
        group: GroupId,
        leader: Option<NodeId>,
    },
    Left {
        group: GroupId,
    },
    LeaderRecorded,
    /// A report of a term older than (or as old as) the one recorded.
    LeaderStale {
        recorded: Term,
    },
    AddressRecorded,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryAnswer {
    /// `None` while no partition table exists (not enough groups yet).
    Route(Option<(GroupId, u64, Option<NodeId>)>),
    Group(Option<GroupInfo>),
    Server(Option<ServerInfo>),
}

impl DirectoryCommand {
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(crate::storage::encode(self))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::storage::CodecError> {
        crate::storage::decode(bytes)
    }
}
