//! Checks across nodes (log matching, replicas that applied the same index agree) and the
//! descriptions a failure report prints.

use std::collections::BTreeMap;

use bytes::Bytes;
use ravel::core::MessageBody;
use ravel::core::{LogIndex, Message, NodeId, RawNode};
use ravel::replica::Replica;

use super::*;

impl World {
    pub(super) fn check_log_matching(&mut self) {
        let cores: Vec<&RawNode> = self.nodes.iter().filter_map(SimNode::core).collect();
        if let Err(violation) = self.checker.check_log_matching(&cores) {
            self.fail(violation);
        }
    }

    /// Replicas that applied the same index hold byte-identical state machines (this catches
    /// a snapshot that restores to the wrong state, which no log check sees).
    pub(super) fn check_replicas_agree(&mut self) {
        let mut by_applied: BTreeMap<LogIndex, (NodeId, Bytes)> = BTreeMap::new();
        for node in &self.nodes {
            let Some(kv) = node.replica.as_ref().map(Replica::state) else {
                continue;
            };
            let state = kv.snapshot();
            match by_applied.get(&kv.applied_index()) {
                Some((other, other_state)) if *other_state != state => {
                    let violation = format!(
                        "state machines of nodes {other} and {} differ after applying {} entries",
                        node.id,
                        kv.applied_index()
                    );
                    return self.fail(violation);
                }
                Some(_) => {}
                None => {
                    by_applied.insert(kv.applied_index(), (node.id, state));
                }
            }
        }
    }

    pub(super) fn describe_nodes(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            match node.core() {
                Some(core) => text.push_str(&format!(
                    "\n    n{}: {:?}, voters {:?} (outgoing {:?}), learners {:?}",
                    node.id,
                    core.status(),
                    core.membership().voters,
                    core.membership().outgoing_voters,
                    core.membership().learners
                )),
                None => text.push_str(&format!("\n    n{}: down", node.id)),
            }
        }
        text
    }
}

pub(super) fn describe_message(message: &Message) -> String {
    let detail = match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer,
            ..
        } => format!(
            "last=({last_log_index},{last_log_term}){}",
            if *leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        MessageBody::VoteResponse { granted, .. } => format!("granted={granted}"),
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            ..
        } => format!(
            "prev=({prev_log_index},{prev_log_term}) entries={} commit={leader_commit}",
            entries.len()
        ),
        MessageBody::AppendResponse(response) => format!("{response:?}"),
        MessageBody::Heartbeat { commit, round } => format!("commit={commit} round={round}"),
        MessageBody::HeartbeatResponse { round, joining } => {
            format!("round={round} joining={joining}")
        }
        MessageBody::TimeoutNow => String::new(),
        MessageBody::SnapshotChunk {
            meta,
            offset,
            data,
            done,
        } => format!("{meta:?} offset={offset} bytes={} done={done}", data.len()),
        MessageBody::SnapshotAck { meta, received } => format!("{meta:?} received={received}"),
        MessageBody::Propose { seq, proposals, .. } => {
            format!("seq={seq} proposals={}", proposals.len())
        }
        MessageBody::ProposeAccepted { first_index, ids } => {
            format!("first={first_index} count={}", ids.len())
        }
        MessageBody::ProposeRefused { ids, reason } => {
            format!("count={} reason={reason:?}", ids.len())
        }
        MessageBody::ReadIndex { seq, .. } => format!("seq={seq}"),
        MessageBody::ReadIndexResponse { seq, index, .. } => format!("seq={seq} index={index}"),
        MessageBody::Removed { config_index } => format!("config_index={config_index}"),
    };
    format!("{} t{} {detail}", message.body.kind(), message.term)
}
