//! The simulated clients: each runs one operation at a time on a small key space, follows leader
//! hints, and gives up on an attempt after a timeout (which leaves it "may have happened").

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::NodeId;
use ravel::kv::Command;

use crate::history::{OpId, OpKind};

pub type ClientId = u64;

#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    /// Where the next request goes: the last leader hint, or a guess.
    pub target: NodeId,
    /// The attempt in flight.
    pub current: Option<OpId>,
    /// Values this client has written, so compare-and-swap sometimes expects the right one.
    written: Vec<Bytes>,
    writes: u64,
}

impl Client {
    pub fn new(id: ClientId, target: NodeId) -> Self {
        Client {
            id,
            target,
            current: None,
            written: Vec::new(),
            writes: 0,
        }
    }

    /// A fresh value no other write in the run uses, so reads identify the write they saw.
    fn unique_value(&mut self) -> Bytes {
        self.writes += 1;
        let value = Bytes::from(format!("c{}-{}", self.id, self.writes));
        self.written.push(value.clone());
        if self.written.len() > 8 {
            self.written.remove(0);
        }
        value
    }

    /// Picks the next operation: reads, puts, deletes and compare-and-swaps on `keys` keys.
    pub fn next_operation(&mut self, keys: usize, rng: &mut ChaCha8Rng) -> (Bytes, OpKind) {
        let key = Bytes::from(format!("k{}", rng.random_range(0..keys)));
        let kind = match rng.random_range(0..100) {
            0..40 => OpKind::Get,
            40..70 => OpKind::Put(self.unique_value()),
            70..80 => OpKind::Delete,
            _ => {
                let expected = match rng.random_range(0..3) {
                    0 => None,
                    _ if self.written.is_empty() => None,
                    _ => Some(self.written[rng.random_range(0..self.written.len())].clone()),
                };
                OpKind::CompareAndSwap {
                    expected,
                    new: self.unique_value(),
                }
            }
        };
        (key, kind)
    }
}

/// The log command for a write; `None` for a read.
pub fn to_command(key: &Bytes, kind: &OpKind) -> Option<Command> {
    let key = key.clone();
    match kind {
        OpKind::Get => None,
        OpKind::Put(value) => Some(Command::Put {
            key,
            value: value.clone(),
        }),
        OpKind::Delete => Some(Command::Delete { key }),
        OpKind::CompareAndSwap { expected, new } => Some(Command::CompareAndSwap {
            key,
            expected: expected.clone(),
            new: new.clone(),
        }),
    }
}
