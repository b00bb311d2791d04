//! The client history: every operation with when it was called and, if it returned, when and
//! with what. Times are the simulator's event sequence numbers, a strict total order.

use bytes::Bytes;

pub type OpId = u64;

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Put(Bytes),
    Delete,
    CompareAndSwap { expected: Option<Bytes>, new: Bytes },
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Value(Option<Bytes>),
    Done,
    Swapped(bool),
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub id: OpId,
    pub client: u64,
    pub key: Bytes,
    pub kind: OpKind,
    pub called_at: u64,
    /// `None`: timed out or lost; it may or may not have taken effect.
    pub returned: Option<(u64, OpResult)>,
}

#[derive(Default, Debug)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    pub fn call(&mut self, id: OpId, client: u64, key: Bytes, kind: OpKind, at: u64) {
        self.operations.push(Operation {
            id,
            client,
            key,
            kind,
            called_at: at,
            returned: None,
        });
    }

    fn find(&mut self, id: OpId) -> Option<&mut Operation> {
        // Operations are appended in id order, so a binary search finds them.
        let position = self.operations.binary_search_by_key(&id, |op| op.id).ok()?;
        self.operations.get_mut(position)
    }

    pub fn complete(&mut self, id: OpId, result: OpResult, at: u64) {
        if let Some(op) = self.find(id) {
            debug_assert!(op.returned.is_none(), "operation {id} returned twice");
            op.returned = Some((at, result));
        }
    }

    /// The operation definitely did not take effect (refused before it was proposed).
    pub fn fail(&mut self, id: OpId) {
        if let Ok(position) = self.operations.binary_search_by_key(&id, |op| op.id) {
            self.operations.remove(position);
        }
    }

    pub fn completed(&self) -> usize {
        self.operations
            .iter()
            .filter(|op| op.returned.is_some())
            .count()
    }
}
