//! Routing clients: each key to its partition's group, at the leader the directory names (or
//! any member), the directory read again after a refusal; every operation in the history.

use super::*;

impl ShardedWorld {
    pub(super) fn client_next(&mut self, client: usize) {
        if self.clients[client].current.is_some() || self.clients[client].routing {
            return;
        }
        let Some(directory) = self.clients[client].route.as_ref() else {
            self.clients[client].routing = true;
            let admin = self.random_admin();
            self.send_admin(admin, Asker::ClientRoute { client }, overview());
            self.schedule(
                REQUEST_TIMEOUT_US,
                Event::ClientTimeout { client, op: None },
            );
            return;
        };
        let key = Bytes::from(format!("k{}", self.rng.random_range(0..self.options.keys)));
        let partition = partition_of(&key, directory.settings().partitions);
        let Some((group, _)) = directory.table().and_then(|table| table.owner(partition)) else {
            // No table yet: read the directory again later.
            self.clients[client].route = None;
            self.schedule(50_000, Event::ClientNext(client));
            return;
        };
        let info = &directory.groups()[&group];
        let members: Vec<NodeId> = info.members.iter().copied().collect();
        let target = match info.leader {
            Some(leader) if self.rng.random_bool(0.8) => leader,
            _ => *members.choose(&mut self.rng).expect("a group has members"),
        };
        let op = self.next_op;
        self.next_op += 1;
        let (kind, request) = match self.rng.random_range(0..10) {
            0..=4 => (
                OpKind::Get,
                Request::Read {
                    query: key.clone(),
                    stale: false,
                    may_forward: true,
                },
            ),
            5..=8 => {
                let value = Bytes::from(format!("v{op}"));
                let command = Command::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                (OpKind::Put(value), write(command.encode()))
            }
            _ => (
                OpKind::Delete,
                write(Command::Delete { key: key.clone() }.encode()),
            ),
        };
        let at = self.stamp();
        self.history.call(op, client as u64, key, kind, at);
        self.clients[client].current = Some(op);
        self.send_data(target, Asker::Client { client, op }, request);
        self.schedule(
            REQUEST_TIMEOUT_US,
            Event::ClientTimeout {
                client,
                op: Some(op),
            },
        );
    }

    pub(super) fn client_replied(
        &mut self,
        client: usize,
        op: OpId,
        reply: ravel::replica::Reply<KvStateMachine>,
    ) {
        if self.clients[client].current != Some(op) {
            return;
        }
        self.clients[client].current = None;
        let kind = self
            .history
            .operations
            .iter()
            .rev()
            .find(|operation| operation.id == op)
            .map(|operation| operation.kind.clone())
            .expect("called");
        let at = self.stamp();
        let result = match reply {
            Ok(Answer::Written { outcome, .. }) => match (&kind, outcome) {
                (OpKind::Put(_), Outcome::Put) | (OpKind::Delete, Outcome::Deleted { .. }) => {
                    Some(OpResult::Done)
                }
                (_, Outcome::NotOwned(_)) => None,
                (_, outcome) => {
                    return self.fail(format!(
                        "client {client}'s {kind:?} was answered {outcome:?}"
                    ))
                }
            },
            Ok(Answer::Read {
                answer: Ok(value), ..
            }) if kind == OpKind::Get => Some(OpResult::Value(value)),
            Ok(Answer::Read { answer: Err(_), .. }) => None,
            Ok(other) => {
                return self.fail(format!("client {client}'s {kind:?} was answered {other:?}"))
            }
            // The outcome is unknown: the operation stays open in the history.
            Err(ApiError::OutcomeUnknown(_)) => {
                self.clients[client].route = None;
                self.schedule(1_000, Event::ClientNext(client));
                return;
            }
            Err(_) => None,
        };
        match result {
            Some(result) => {
                self.history.complete(op, result, at);
                if self.faults_over {
                    self.completed_after_heal += 1;
                }
            }
            None => {
                // Refused before it took effect: not in the history; route again.
                self.history.fail(op);
                self.clients[client].route = None;
            }
        }
        let pause = self.rng.random_range(1_000..20_000);
        self.schedule(pause, Event::ClientNext(client));
    }
}
