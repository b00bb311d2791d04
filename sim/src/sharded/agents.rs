//! What the servers around the replicas do with the admin's answers: register (and start a
//! data group once the admin filled it), report leadership, claim partitions.

use super::*;

impl ShardedWorld {
    pub(super) fn admin_replied(&mut self, asker: Asker, reply: ravel::replica::Reply<Directory>) {
        match asker {
            Asker::Initialize => {
                if let Ok(Answer::Written {
                    outcome: DirectoryOutcome::Initialized,
                    ..
                }) = reply
                {
                    self.initialized = true;
                }
            }
            Asker::Register { server } => match reply {
                Ok(Answer::Written {
                    outcome: DirectoryOutcome::Registered { node, group, .. },
                    ..
                }) => self.registered(server, node, group),
                Ok(Answer::Written {
                    outcome: DirectoryOutcome::NotInitialized,
                    ..
                })
                | Err(_) => {}
                Ok(other) => self.fail(format!("server {server}'s registration got {other:?}")),
            },
            Asker::Report { node, term } => match reply {
                Ok(Answer::Written {
                    outcome: DirectoryOutcome::LeaderRecorded | DirectoryOutcome::LeaderStale { .. },
                    ..
                }) => {
                    if self.reported.insert((node, term)) {
                        self.schedule(1_000, Event::ClaimRead { node, term });
                    }
                }
                Err(_) => {}
                Ok(other) => self.fail(format!("n{node}'s report of term {term} got {other:?}")),
            },
            Asker::ClaimRead { node, term } => {
                if let Ok(Answer::Read {
                    answer: DirectoryAnswer::Overview(directory),
                    ..
                }) = reply
                {
                    let group = self.group_of[&node];
                    let Some(table) = directory.table() else {
                        return;
                    };
                    let claimed: Vec<u32> = (0..table.partitions())
                        .filter(|&partition| table.owner(partition) == Some((group, 1)))
                        .collect();
                    let command = Command::Claim {
                        partitions: table.partitions(),
                        claimed,
                    };
                    self.send_data(node, Asker::Claim { node, term }, write(command.encode()));
                }
            }
            Asker::ClientRoute { client } => {
                let state = &mut self.clients[client];
                if !state.routing {
                    return;
                }
                state.routing = false;
                if let Ok(Answer::Read {
                    answer: DirectoryAnswer::Overview(directory),
                    ..
                }) = reply
                {
                    state.route = Some(directory);
                }
                self.schedule(1_000, Event::ClientNext(client));
            }
            Asker::Mover {
                partition,
                epoch,
                ask,
            } => self.mover_admin_replied((partition, epoch), ask, reply),
            Asker::Retire => {
                if let Ok(Answer::Written {
                    outcome: DirectoryOutcome::Retiring { partitions },
                    ..
                }) = reply
                {
                    self.retired = true;
                    let group = self.retires.map_or(0, |(group, _)| group);
                    self.trace.line(self.now_us, || {
                        format!("group {group} is retiring: {partitions} partitions to move away")
                    });
                }
            }
            Asker::Claim { .. } | Asker::Client { .. } | Asker::LateStep => {
                unreachable!("asked of a data group")
            }
        }
    }

    pub(super) fn registered(&mut self, server: usize, node: NodeId, group: GroupId) {
        if let Some(before) = self.assignments[server] {
            if before != (node, group) {
                return self.fail(format!(
                    "server {server} registered again with its token and got node {node} of \
                     group {group}, not node {} of group {} as before",
                    before.0, before.1
                ));
            }
            return;
        }
        self.assignments[server] = Some((node, group));
        self.trace.line(self.now_us, || {
            format!("server {server} is node {node} of group {group}")
        });
        let members: Vec<NodeId> = self
            .assignments
            .iter()
            .flatten()
            .filter(|(_, of)| *of == group)
            .map(|(node, _)| *node)
            .collect();
        if members.len() == GROUP_SIZE as usize && self.started_groups.insert(group) {
            for &member in &members {
                let mut host = Host::new(member, members.clone());
                let setup = (&self.tuning, self.options.core_bugs);
                let fresh = KvStateMachine::sharded(self.settings.partitions);
                host.start(setup, self.seed, self.now_us / 1000, fresh);
                self.data.insert(member, host);
                self.group_of.insert(member, group);
                let jitter = self.rng.random_range(0..TICK_US);
                self.schedule(jitter, Event::Tick(member));
            }
        }
    }

    pub(super) fn data_replied(
        &mut self,
        asker: Asker,
        reply: ravel::replica::Reply<KvStateMachine>,
    ) {
        match asker {
            Asker::Claim { node, term } => {
                if let Ok(Answer::Written {
                    outcome: Outcome::Claimed { .. },
                    ..
                }) = reply
                {
                    self.claimed.insert((node, term));
                }
            }
            Asker::Client { client, op } => self.client_replied(client, op, reply),
            Asker::Mover {
                partition,
                epoch,
                ask,
            } => self.mover_data_replied((partition, epoch), ask, reply),
            Asker::LateStep => {}
            other => unreachable!("{other:?} asked of an admin replica"),
        }
    }
}
