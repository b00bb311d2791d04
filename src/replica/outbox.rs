//! Messages that promise a write (a granted vote, entries acknowledged as stored) must not leave
//! before that write is durable: a crash would take the promise back after a peer counted it.
//! The outbox holds them until storage reports the write persisted.

use std::collections::VecDeque;

use crate::core::{Message, NodeId, PersistId};

#[derive(Debug, Default)]
pub struct Outbox {
    /// The last write handed to storage, and the last one reported durable.
    persist_issued: PersistId,
    persist_done: PersistId,
    /// Messages that may leave once this write is durable, in order.
    held: VecDeque<(PersistId, Message)>,
}

impl Outbox {
    /// A write was handed to storage.
    pub fn issued(&mut self, id: PersistId) {
        debug_assert!(id > self.persist_issued, "persist ids grow");
        self.persist_issued = id;
    }

    /// The message, if it may leave now; else it is held until every write issued so far is
    /// durable.
    pub fn send(&mut self, message: Message, after_persist: bool) -> Option<Message> {
        if after_persist && self.persist_done < self.persist_issued {
            self.held.push_back((self.persist_issued, message));
            None
        } else {
            Some(message)
        }
    }

    /// Every write up to `id` is durable: the messages that waited for them, in order.
    pub fn persisted(&mut self, id: PersistId) -> Vec<Message> {
        self.persist_done = self.persist_done.max(id);
        let mut ready = Vec::new();
        while let Some((needed, _)) = self.held.front() {
            if *needed > self.persist_done {
                break;
            }
            ready.push(self.held.pop_front().expect("front").1);
        }
        ready
    }

    pub fn holds_message_to(&self, peer: NodeId) -> bool {
        self.held.iter().any(|(_, message)| message.to == peer)
    }

    pub fn held(&self) -> impl Iterator<Item = &Message> {
        self.held.iter().map(|(_, message)| message)
    }
}
