//! How the key-value store records the replica's address book: each node's address is a write
//! under a reserved key prefix (which clients cannot write), so it survives restarts, travels in
//! snapshots, and every member agrees on it.

use bytes::Bytes;

use super::{Command, KvStateMachine};
use crate::core::NodeId;

/// Keys starting with this byte belong to Ravel itself; client keys may not start with it.
pub const RESERVED_KEY_PREFIX: u8 = 0;
const NODE_ADDRESS_PREFIX: &[u8] = b"\0ravel/node-address/";

/// Every node address recorded in `kv` (after a restart or a snapshot install), by node.
pub fn recorded(kv: &KvStateMachine) -> Vec<(NodeId, String)> {
    kv.scan_prefix(NODE_ADDRESS_PREFIX)
        .into_iter()
        .filter_map(|(key, value)| parse(&key, &value))
        .collect()
}

/// The command that records `node`'s address.
pub fn register(node: NodeId, address: &str) -> Command {
    let mut key = NODE_ADDRESS_PREFIX.to_vec();
    key.extend_from_slice(node.to_string().as_bytes());
    Command::Put {
        key: Bytes::from(key),
        value: Bytes::copy_from_slice(address.as_bytes()),
    }
}

/// The node and address a command records, if it is a registration.
pub fn registration(command: &Command) -> Option<(NodeId, String)> {
    match command {
        Command::Put { key, value } => parse(key, value),
        _ => None,
    }
}

fn parse(key: &[u8], value: &[u8]) -> Option<(NodeId, String)> {
    let id = key.strip_prefix(NODE_ADDRESS_PREFIX)?;
    let node = std::str::from_utf8(id).ok()?.parse().ok()?;
    let address = String::from_utf8(value.to_vec()).ok()?;
    Some((node, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_reads_back_and_other_writes_are_not_registrations() {
        let command = register(7, "10.0.0.7:7379");
        assert_eq!(
            registration(&command),
            Some((7, "10.0.0.7:7379".to_string()))
        );
        let plain = Command::Put {
            key: Bytes::from_static(b"ravel/node-address/7"),
            value: Bytes::from_static(b"x"),
        };
        assert_eq!(registration(&plain), None);
    }

    #[test]
    fn the_addresses_are_read_back_from_the_state_machine() {
        let mut kv = KvStateMachine::new();
        kv.apply(1, &register(1, "a:1").encode());
        kv.apply(2, &register(2, "b:2").encode());
        kv.apply(3, &register(1, "c:3").encode());
        assert_eq!(
            recorded(&kv),
            vec![(1, "c:3".to_string()), (2, "b:2".to_string())]
        );
    }
}
