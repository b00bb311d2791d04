//! What a replica needs of the state machine it runs: apply committed commands in order, answer
//! reads, take and restore snapshots, and record where each node can be reached. The key-value
//! store is one; the sharded store's directory will be another, on the same replica.

use std::fmt::Debug;

use bytes::Bytes;

use crate::core::{LogIndex, NodeId};

/// A replicated state machine. Applying must be deterministic: every replica that applies the
/// same entries reaches the same state and the same outcomes.
///
/// A node runs its replica on a task of its own, so the state machine and what travels to and
/// from it are `Send`.
pub trait StateMachine: Debug + Sized + Send + 'static {
    /// What applying a command returns to the client that proposed it.
    type Outcome: Clone + Debug + Send + 'static;
    /// A read, as a client asks it.
    type Query: Debug + Send + 'static;
    /// A read's answer.
    type ReadAnswer: Debug + Send + 'static;
    /// The state at one applied index, taken cheaply on the replica's thread and encoded
    /// elsewhere (encoding a large state takes longer than an election timeout).
    type Image: SnapshotImage;

    /// Applies the command of entry `index`: entries arrive in order, each once. A command that
    /// does not decode is an outcome too (every replica reaches the same verdict), never a panic.
    fn apply(&mut self, index: LogIndex, command: &Bytes) -> Applied<Self::Outcome>;
    /// Records entry `index`, which carries no command (a leader's no-op, a configuration).
    fn skip(&mut self, index: LogIndex);
    /// The last index applied or skipped.
    fn applied_index(&self) -> LogIndex;
    fn read(&self, query: &Self::Query) -> Self::ReadAnswer;
    /// The outcome a write would certainly have if proposed now, when it is refused outright
    /// (the sharded store's data group refuses a key it does not own): answered at once,
    /// never proposed. `None`: propose it. Applying must still check, since the state may
    /// change before the entry applies.
    fn refuse(&self, _command: &Bytes) -> Option<Self::Outcome> {
        None
    }
    fn snapshot(&self) -> Self::Image;
    /// Rebuilds the state from an encoded image; corrupt bytes are an error, never a panic.
    fn restore(image: &[u8]) -> Result<Self, String>;
    /// The command that records `node`'s address (proposed by the replica like a client's).
    fn registration(node: NodeId, address: &str) -> Bytes;
    /// Every address recorded so far, by node (after a restart or a snapshot install).
    fn addresses(&self) -> Vec<(NodeId, String)>;
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<Outcome> {
    pub outcome: Outcome,
    /// The node address this command recorded, if it was a registration.
    pub registered: Option<(NodeId, String)>,
}

/// A state taken by [`StateMachine::snapshot`], to be encoded off the replica's thread.
pub trait SnapshotImage: Debug + Send + 'static {
    /// The snapshot's bytes, identical on every replica at the same applied index.
    fn encode(self: Box<Self>) -> Bytes;
    /// The same bytes as [`SnapshotImage::encode`], written to `out` as they are encoded: a
    /// large state is then never twice in memory (once live, once encoded).
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.encode())
    }
}
