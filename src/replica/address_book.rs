//! Where each node of the group can be reached. The core knows nodes by id only; the addresses
//! are replicated through the log (the state machine records them, see
//! [`StateMachine::registration`](super::StateMachine::registration)), so they survive restarts,
//! travel in snapshots, and every member agrees on them.

use std::collections::BTreeMap;

use crate::core::NodeId;

#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    addresses: BTreeMap<NodeId, String>,
}

impl AddressBook {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        AddressBook {
            addresses: pairs.into_iter().collect(),
        }
    }

    pub fn get(&self, node: NodeId) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    pub fn insert(&mut self, node: NodeId, address: String) {
        self.addresses.insert(node, address);
    }

    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.addresses
            .iter()
            .map(|(node, address)| (*node, address.as_str()))
    }
}
