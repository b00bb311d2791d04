//! Carrying out what a replica asks: writes to its simulated disk (synced later, after a
//! random delay), messages onto the network, and the answers to requests.

use super::*;

impl ShardedWorld {
    pub(super) fn carry_out_admin(&mut self, index: usize, effect: Effect<Directory>) {
        let id = self.admins[index].id;
        match effect {
            Effect::Reply { ticket, reply } => {
                if let Some(asker) = self.admins[index].waiting.remove(&ticket) {
                    self.admin_replied(asker, reply);
                }
            }
            other => {
                let host = &mut self.admins[index];
                if let Some(follow_up) = carry_out_common(host, other, &mut self.rng) {
                    self.follow_up(id, follow_up);
                }
            }
        }
    }

    pub(super) fn carry_out_data(&mut self, id: NodeId, effect: Effect<KvStateMachine>) {
        match effect {
            Effect::Reply { ticket, reply } => {
                let asker = self
                    .data
                    .get_mut(&id)
                    .and_then(|host| host.waiting.remove(&ticket));
                if let Some(asker) = asker {
                    self.data_replied(asker, reply);
                }
            }
            Effect::LeaderChanged {
                role: Role::Leader,
                term,
                ..
            } => {
                let group = self.group_of[&id];
                self.led.insert((group, id, term));
                self.trace.line(self.now_us, || {
                    format!("n{id} leads group {group} in {term}")
                });
                self.schedule(1_000, Event::Report { node: id, term });
            }
            other => {
                let host = self.data.get_mut(&id).expect("started");
                if let Some(follow_up) = carry_out_common(host, other, &mut self.rng) {
                    self.follow_up(id, follow_up);
                }
            }
        }
    }

    pub(super) fn follow_up(&mut self, id: NodeId, follow_up: FollowUp) {
        match follow_up {
            FollowUp::Send(message) => {
                for delay in self.network.route(message.from, message.to, &mut self.rng) {
                    self.schedule(delay, Event::Deliver(message.clone()));
                }
            }
            FollowUp::Sync {
                incarnation,
                up_to,
                delay,
            } => self.schedule(
                delay,
                Event::Synced {
                    node: id,
                    incarnation,
                    up_to,
                },
            ),
        }
    }

    pub(super) fn synced(&mut self, id: NodeId, incarnation: u64, up_to: PersistId) {
        let done = if let Some(host) = self.admins.iter_mut().find(|host| host.id == id) {
            sync_done(host, incarnation, up_to, &mut self.rng)
        } else if let Some(host) = self.data.get_mut(&id) {
            sync_done(host, incarnation, up_to, &mut self.rng)
        } else {
            None
        };
        let Some((synced, again)) = done else {
            return;
        };
        if let Some(follow_up) = again {
            self.follow_up(id, follow_up);
        }
        let persisted = Input::Persisted { id: synced };
        self.step(
            id,
            |replica| replica.completed(persisted.clone()),
            |replica| replica.completed(persisted.clone()),
        );
    }
}

/// What carrying out an effect asks of the world.
pub(super) enum FollowUp {
    Send(Message),
    Sync {
        incarnation: u64,
        up_to: PersistId,
        delay: u64,
    },
}

/// Carries out the effects every replica has alike (storage and sending).
pub(super) fn carry_out_common<S: StateMachine>(
    host: &mut Host<S>,
    effect: Effect<S>,
    rng: &mut ChaCha8Rng,
) -> Option<FollowUp> {
    match effect {
        Effect::Persist {
            id,
            hard_state,
            entries,
            ..
        } => {
            host.disk.write(id, hard_state, entries);
            start_sync(host, rng)
        }
        Effect::InstallSnapshot { id, meta, data } => {
            host.disk.write_install(id, meta, data);
            start_sync(host, rng)
        }
        Effect::Send(message) => Some(FollowUp::Send(message)),
        Effect::SaveSnapshot { meta, image } => {
            let replica = host.replica.as_mut().expect("up");
            host.disk.save_snapshot_of(replica, meta, image);
            None
        }
        Effect::ReadSnapshotChunk {
            to,
            meta,
            offset,
            bytes_max,
        } => {
            let replica = host.replica.as_mut().expect("up");
            host.disk
                .read_chunk_for(replica, (to, meta, offset, bytes_max));
            None
        }
        Effect::ReadEntries {
            peer,
            from,
            through,
            entries_max,
            bytes_max,
        } => {
            let replica = host.replica.as_mut().expect("up");
            host.disk
                .read_entries_for(replica, (peer, from, through, entries_max, bytes_max));
            None
        }
        Effect::Fatal(reason) => panic!("n{} stops: {reason}", host.id),
        Effect::Reply { .. }
        | Effect::RecordStanding(_)
        | Effect::AddressLearned { .. }
        | Effect::LeaderChanged { .. }
        | Effect::MemberStateChanged { .. } => None,
    }
}

pub(super) fn start_sync<S: StateMachine>(
    host: &mut Host<S>,
    rng: &mut ChaCha8Rng,
) -> Option<FollowUp> {
    if host.sync_in_flight {
        return None;
    }
    host.sync_in_flight = true;
    Some(FollowUp::Sync {
        incarnation: host.incarnation,
        up_to: host.disk.written_id,
        delay: rng.random_range(100..5_000),
    })
}

/// A sync came back: the persist id now durable, and the next sync if more was written.
pub(super) fn sync_done<S: StateMachine>(
    host: &mut Host<S>,
    incarnation: u64,
    up_to: PersistId,
    rng: &mut ChaCha8Rng,
) -> Option<(PersistId, Option<FollowUp>)> {
    if host.incarnation != incarnation || host.replica.is_none() {
        return None;
    }
    host.sync_in_flight = false;
    host.disk.sync_up_to(up_to);
    let synced = host.disk.synced_id;
    let again = if host.disk.has_unsynced() {
        start_sync(host, rng)
    } else {
        None
    };
    Some((synced, again))
}
