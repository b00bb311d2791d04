//! Snapshots (Raft §7): asking the state machine for one by policy, compacting the log behind
//! it, and sending it in chunks to a follower whose next entries were compacted.
//!
//! The core never holds snapshot bytes for long: the leader asks storage for one chunk at a time
//! (`ReadSnapshotChunk`) and forwards it; the follower stages each chunk (`WriteSnapshotChunk`)
//! and, after the last, installs it (`InstallSnapshot`), in order with its other writes. One
//! chunk is in flight per follower; an acknowledgement names the offset to continue from, so a
//! lost, duplicated or reordered chunk only resumes the transfer.

use bytes::Bytes;

use super::io::Action;
use super::message::{AppendResponse, MessageBody};
use super::node::{follower_progress, RawNode};
use super::progress::ProgressState;
use super::types::{Admission, NodeId, SnapshotMeta};

/// Heartbeat answers without snapshot progress before the outstanding chunk is sent again.
const STALLED_HEARTBEATS_MAX: u8 = 2;

impl RawNode {
    /// Asks for a snapshot once enough entries were applied since the last one, at a moment when
    /// the state machine has applied exactly what the core knows (nothing handed out pending).
    pub(super) fn maybe_request_snapshot(&mut self) {
        let interval = self.config.snapshot_interval_entries;
        let applied = self.log.applied();
        if self.snapshot_requested || applied != self.log.applying() {
            return;
        }
        let due = interval > 0 && applied >= self.snapshot.index + interval;
        // A follower needs entries no longer held, and the last snapshot does not reach them.
        let wanted = self.snapshot_wanted && applied > self.snapshot.index;
        if !due && !wanted {
            return;
        }
        // Storage keeps only the latest snapshot, so a new one restarts every transfer of the
        // old from zero: with a transfer slower than the interval between snapshots, a follower
        // that needs one would never get it (the sharded simulation found an admin replica
        // stuck so under steady writes). A due snapshot waits while a transfer progresses.
        if !wanted && self.snapshot_transfer_progressing() {
            return;
        }
        self.snapshot_wanted = false;
        let term = self
            .log
            .term(applied)
            .expect("the applied entry's term is known");
        #[cfg(feature = "planted-bugs")]
        let term = match self.config.planted_bugs.snapshot_with_wrong_term {
            true => self.log.term(applied - 1).unwrap_or(term),
            false => term,
        };
        self.snapshot_requested = true;
        let membership = self.membership_at(applied);
        let admissions = (self.admissions_through(applied).into_iter())
            .map(|(node, nonce)| Admission { node, nonce })
            .collect();
        self.events.push(Action::TakeSnapshot {
            meta: SnapshotMeta {
                index: applied,
                term,
                membership,
                admissions,
            },
        });
    }

    /// Leader: a follower is receiving the latest snapshot and acknowledged a chunk within an
    /// election timeout.
    fn snapshot_transfer_progressing(&self) -> bool {
        let Some(leader) = self.leader_state.as_ref() else {
            return false;
        };
        leader.progress.values().any(|progress| {
            progress.snapshot.as_ref().is_some_and(|transfer| {
                transfer.meta == self.snapshot
                    && self.now_ms.saturating_sub(transfer.progressed_ms)
                        < self.config.election_timeout_max_ms
            })
        })
    }

    /// Storage saved the snapshot: keep only a tail of entries before it in memory.
    pub(super) fn snapshot_saved(&mut self, meta: SnapshotMeta) {
        self.snapshot_requested = false;
        if meta.index <= self.snapshot.index || meta.index > self.log.applied() {
            return;
        }
        let keep_from = meta
            .index
            .saturating_sub(self.config.snapshot_trailing_entries);
        self.log
            .drop_through(keep_from.max(self.durable_everywhere).min(meta.index));
        self.snapshot = meta;
    }

    /// Leader: the next step of a follower's snapshot transfer, if one is due.
    pub(super) fn send_snapshot(&mut self, peer: NodeId) {
        let (latest, now_ms) = (self.snapshot.clone(), self.now_ms);
        let bytes_max = self.config.snapshot_chunk_bytes_max;
        let Some(progress) = follower_progress(&mut self.leader_state, peer) else {
            return;
        };
        if progress.state != ProgressState::Snapshot {
            // The snapshot must reach the entries still held, or the follower would be stuck
            // between them: if it does not, take a new one first.
            if latest.index == 0 || latest.index + 1 < self.log.first_index() {
                self.snapshot_wanted = true;
                return;
            }
            progress.become_snapshot(latest, now_ms);
        }
        let transfer = progress
            .snapshot
            .as_mut()
            .expect("a transfer in snapshot state");
        if transfer.chunk_outstanding {
            return;
        }
        transfer.chunk_outstanding = true;
        self.events.push(Action::ReadSnapshotChunk {
            to: peer,
            meta: transfer.meta.clone(),
            offset: transfer.acknowledged,
            bytes_max,
        });
    }

    /// Leader: storage read the chunk; send it if the transfer still wants it.
    pub(super) fn snapshot_chunk_read(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        let wanted = self
            .leader_state
            .as_ref()
            .and_then(|leader| leader.progress.get(&to))
            .and_then(|progress| progress.snapshot.as_ref())
            .is_some_and(|transfer| transfer.meta == meta && transfer.acknowledged == offset);
        if wanted {
            self.send(
                to,
                MessageBody::SnapshotChunk {
                    meta,
                    offset,
                    data,
                    done,
                },
            );
        }
    }

    /// Leader: the follower holds the snapshot up to `received`.
    pub(super) fn handle_snapshot_ack(&mut self, from: NodeId, meta: SnapshotMeta, received: u64) {
        let Some(progress) = follower_progress(&mut self.leader_state, from) else {
            return;
        };
        progress.recent_active = true;
        if let Some(transfer) = progress
            .snapshot
            .as_mut()
            .filter(|transfer| transfer.meta == meta)
        {
            transfer.acknowledged = received;
            transfer.chunk_outstanding = false;
            transfer.stalled_heartbeats = 0;
            transfer.progressed_ms = self.now_ms;
        }
    }

    /// Leader: a heartbeat answer from a follower in snapshot state. A chunk unanswered over a
    /// few heartbeats was lost: send it again (with the newest snapshot, if this one is gone).
    pub(super) fn snapshot_heartbeat(&mut self, from: NodeId) {
        let (latest, now_ms) = (self.snapshot.clone(), self.now_ms);
        let Some(progress) = follower_progress(&mut self.leader_state, from) else {
            return;
        };
        let Some(transfer) = progress.snapshot.as_mut() else {
            return;
        };
        transfer.stalled_heartbeats += 1;
        if transfer.stalled_heartbeats >= STALLED_HEARTBEATS_MAX {
            if transfer.meta != latest && latest.index > transfer.meta.index {
                progress.become_snapshot(latest, now_ms);
            } else {
                transfer.chunk_outstanding = false;
                transfer.stalled_heartbeats = 0;
            }
        }
    }

    /// Follower: a chunk from the leader. Chunks are taken strictly in order; anything else is
    /// answered with the offset to resume from.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        self.follow(from);
        let commit = self.log.commit();
        if meta.index <= commit {
            // Stale: everything it holds is already committed here.
            self.receiving = None;
            self.send(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted {
                    match_index: commit,
                    joining: self.joining,
                }),
            );
            return;
        }
        let expected = match &self.receiving {
            Some((receiving, next)) if *receiving == meta => *next,
            _ => 0,
        };
        if offset != expected {
            self.send(
                from,
                MessageBody::SnapshotAck {
                    meta,
                    received: expected,
                },
            );
            return;
        }
        let next = offset + data.len() as u64;
        self.storage_actions.push(Action::WriteSnapshotChunk {
            meta: meta.clone(),
            offset,
            data,
            done,
        });
        if !done {
            self.receiving = Some((meta.clone(), next));
            self.send(
                from,
                MessageBody::SnapshotAck {
                    meta,
                    received: next,
                },
            );
            return;
        }
        self.receiving = None;
        let id = self.allocate_persist_id();
        self.storage_actions.push(Action::InstallSnapshot {
            id,
            meta: meta.clone(),
        });
        self.log.install(&meta, id);
        // Entries kept after the snapshot may be an old leader's: vouch only for the snapshot.
        let match_index = meta.index;
        self.installed_snapshot(meta);
        self.send(
            from,
            MessageBody::AppendResponse(AppendResponse::Accepted {
                match_index,
                joining: self.joining,
            }),
        );
    }
}
