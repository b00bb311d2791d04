//! The clients: closed-loop, each with one operation at a time, sent to a node as a request
//! through its replica's request path, answered by what the replica replies (checked against
//! what was asked), recorded in the history.

use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::Rng;
use ravel::core::NodeId;
use ravel::kv::{KvStateMachine, Outcome};
use ravel::replica::{self, Answer, ApiError, Ticket};

use crate::checker::Violation;
use crate::client::{to_command, ClientId};
use crate::history::{OpId, OpKind, OpResult};

use super::*;

impl World {
    /// Node `id` answered the request under `ticket`: a client's request (checked against what
    /// was asked, then sent back), or a join (the joiner is admitted or redirected).
    pub(super) fn replied(
        &mut self,
        id: NodeId,
        ticket: Ticket,
        reply: replica::Reply<KvStateMachine>,
    ) -> Result<(), Violation> {
        if let Some((joiner, incarnation)) = self.join_requests.get(&ticket).copied() {
            match reply {
                Ok(_) => {
                    // The join workflow's promise: a node told it joined is a voter in the
                    // configuration the answering leader has committed.
                    let core = self.node_ref(id).core().expect("it just answered");
                    let committed = core.membership_in_effect_at(core.status().commit);
                    if joiner != id && !committed.is_voter(joiner) {
                        return Err(format!(
                            "node {id} told node {joiner} it joined, but node {joiner} is no \
                             voter in the configuration node {id} committed (voters {:?})",
                            committed.voters
                        ));
                    }
                    if incarnation != self.node_ref(joiner).incarnation {
                        // The node restarted since it asked (perhaps without its disk): the
                        // answer reaches no one, and the node asks again.
                        self.trace.line(self.now_us, || {
                            format!("n{joiner} restarted since it asked: the answer is lost")
                        });
                        return Ok(());
                    }
                    // A member back without its disk forgot what it acknowledged and whom it
                    // voted for: it may be told it joined (and count again) only once some
                    // leader held it out of its voters, so that what it holds now came from
                    // that leader's replication. A log refilled by a leader deposed without
                    // knowing it looks complete too, and proves nothing.
                    let forgetful = self.node_ref(joiner);
                    if joiner != id && forgetful.joining && forgetful.readmitted_by.is_empty() {
                        return Err(format!(
                            "node {id} told node {joiner} it joined, back without its disk, \
                             though no leader has held it out of its voters since the loss \
                             (answered as a retry: it may count what it forgot)"
                        ));
                    }
                    if let Some(join) = self.joins.get_mut(&joiner) {
                        join.done = true;
                    }
                    // The leader's answer reaches the joiner (and it records it durably).
                    self.node(joiner).joining = false;
                    self.schedule(1, Event::Admit(joiner));
                    self.trace
                        .line(self.now_us, || format!("n{joiner} has joined"));
                }
                Err(error) => {
                    // Redirected: the joiner asks the hinted leader (or anyone) next time.
                    let hint = match error {
                        ApiError::NotLeader { leader_id, .. } => leader_id,
                        _ => None,
                    };
                    let next =
                        hint.unwrap_or_else(|| *self.ids.choose(&mut self.rng).expect("nodes"));
                    if let Some(join) = self.joins.get_mut(&joiner) {
                        join.target = next;
                    }
                }
            }
            return Ok(());
        }
        // Membership changes the fault schedule asked for need no answer.
        let Some(request) = self.node(id).requests.remove(&ticket) else {
            return Ok(());
        };
        let wrong = |answer: &dyn std::fmt::Debug| {
            format!(
                "node {id} answered client {}'s {:?} with {answer:?}",
                request.client, request.kind
            )
        };
        let reply = match reply {
            Ok(Answer::Written { outcome, .. }) => match (&request.kind, outcome) {
                (OpKind::Put(_), Outcome::Put) | (OpKind::Delete, Outcome::Deleted { .. }) => {
                    Reply::Ok(OpResult::Done)
                }
                (OpKind::CompareAndSwap { .. }, Outcome::CompareAndSwap { swapped, .. }) => {
                    Reply::Ok(OpResult::Swapped(swapped))
                }
                (_, outcome) => return Err(wrong(&outcome)),
            },
            // A plain cluster serves every key: "not owned" would be a wrong answer.
            Ok(Answer::Read {
                answer: Ok(answer), ..
            }) if matches!(request.kind, OpKind::Get) => Reply::Ok(OpResult::Value(answer)),
            Ok(answer) => return Err(wrong(&answer)),
            Err(ApiError::NotLeader { leader_id, .. }) => Reply::Refused(leader_id),
            Err(ApiError::OutcomeUnknown(_)) => Reply::Unknown,
            Err(_) => Reply::Refused(None),
        };
        self.send_reply(&request, reply);
        Ok(())
    }

    pub(super) fn client_next(&mut self, client: ClientId) {
        if self.faults_over && client != self.liveness_client() {
            return;
        }
        let keys = self.options.keys;
        let is_liveness = client == self.liveness_client();
        let client_state = &mut self.clients[client as usize - 1];
        if client_state.current.is_some() {
            return;
        }
        let (key, kind) = if is_liveness {
            let value = Bytes::from(format!("live-{}", self.next_op));
            (
                Bytes::from_static(LIVENESS_KEY.as_bytes()),
                OpKind::Put(value),
            )
        } else {
            let (key, kind) = client_state.next_operation(keys, &mut self.rng);
            if self.now_us < self.writes_quiet_until_us {
                (key, OpKind::Get)
            } else {
                (key, kind)
            }
        };
        let op = self.next_op;
        self.next_op += 1;
        // One request in three goes to any member, as a client behind a load balancer would send
        // it: followers pass writes on to the leader (`forwarding.rs`) and serve reads with a
        // read index from it (`read_forwarding.rs`).
        let anywhere = !is_liveness && self.rng.random_range(0..3) == 0;
        let target = if anywhere {
            *self.ids.choose(&mut self.rng).expect("nodes")
        } else {
            self.clients[client as usize - 1].target
        };
        self.clients[client as usize - 1].current = Some(op);
        let at = self.stamp();
        self.history.call(op, client, key.clone(), kind.clone(), at);
        self.trace.line(self.now_us, || {
            format!("client {client}: op {op} {kind:?} on {key:?} -> n{target}")
        });
        let delay = self.network.delay(&mut self.rng);
        let request = Request {
            client,
            op,
            key,
            kind,
        };
        self.schedule(
            delay,
            Event::Request {
                node: target,
                request: Box::new(request),
            },
        );
        self.schedule(CLIENT_TIMEOUT_US, Event::ClientTimeout { client, op });
    }

    /// A client's request reaches node `id`: it goes through the replica's request path, as a
    /// real client's does (a follower passes writes on and asks the leader for a read index).
    pub(super) fn request_arrives(&mut self, id: NodeId, request: Request) {
        let node = self.node(id);
        if node.replica.is_none() {
            return;
        }
        let ticket: Ticket = request.op;
        let asked = match to_command(&request.key, &request.kind) {
            Some(command) => replica::Request::Write {
                command: command.encode(),
                may_forward: true,
            },
            None => replica::Request::Read {
                query: request.key.clone(),
                stale: false,
                may_forward: true,
            },
        };
        node.requests.insert(ticket, request);
        self.feed(id, |replica| replica.request(ticket, asked));
    }

    pub(super) fn send_reply(&mut self, request: &Request, reply: Reply) {
        let delay = self.network.delay(&mut self.rng);
        self.schedule(
            delay,
            Event::Reply {
                client: request.client,
                op: request.op,
                reply: Box::new(reply),
            },
        );
    }

    pub(super) fn reply_arrives(&mut self, client: ClientId, op: OpId, reply: Reply) {
        let client_state = &mut self.clients[client as usize - 1];
        if client_state.current != Some(op) {
            return;
        }
        client_state.current = None;
        let think_us = match reply {
            Reply::Ok(result) => {
                let at = self.stamp();
                self.trace.line(self.now_us, || {
                    format!("client {client}: op {op} -> {result:?}")
                });
                self.history.complete(op, result, at);
                if client == self.liveness_client() {
                    self.liveness_target = Some(self.checker.committed_len());
                    return;
                }
                self.rng.random_range(0..20_000)
            }
            Reply::Unknown => {
                let client_state = &mut self.clients[client as usize - 1];
                client_state.target = *self.ids.choose(&mut self.rng).expect("nodes");
                self.trace.line(self.now_us, || {
                    format!("client {client}: op {op} outcome unknown")
                });
                self.rng.random_range(1_000..20_000)
            }
            Reply::Refused(hint) => {
                self.trace.line(self.now_us, || {
                    format!("client {client}: op {op} refused (leader hint {hint:?})")
                });
                self.history.fail(op);
                let client_state = &mut self.clients[client as usize - 1];
                client_state.target =
                    hint.unwrap_or_else(|| *self.ids.choose(&mut self.rng).expect("nodes"));
                self.rng.random_range(1_000..20_000)
            }
        };
        self.schedule(think_us, Event::ClientNext(client));
    }

    pub(super) fn liveness_client(&self) -> ClientId {
        self.options.clients as ClientId + 1
    }
}
