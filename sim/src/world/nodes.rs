//! Running the nodes: each is the node's own `Replica`, stepped round by round (so an armed
//! crash can land mid-step), with its effects carried out on the simulated disk and network;
//! crashes, graceful stops, restarts and pauses.

use rand::seq::IndexedRandom;
use rand::Rng;
use ravel::core::{Action, Input, Message, NodeId, PersistId, RawNode, Role};
use ravel::core::{AppendResponse, MessageBody};
use ravel::kv::KvStateMachine;
use ravel::replica::{ApiError, Effect, Replica};
use ravel::storage::Standing;

use crate::checker::{NodeWatch, Violation};

use super::*;

impl World {
    pub(super) fn start_node(&mut self, id: NodeId) {
        let tuning = self.tuning;
        let ids = self.founders.clone();
        let seed = self.seed;
        let bugs = self.options.bugs;
        let now_us = self.now_us;
        let node = self.node(id);
        node.incarnation += 1;
        let mut config = sim_config(id, &ids, &tuning, seed ^ (id << 32) ^ node.incarnation);
        config.planted_bugs = bugs;
        if node.joining {
            config.voters.clear();
            config.joining = true;
            // New at every incarnation, as a real node draws it at every start.
            config.join_nonce = (config.seed ^ 0x6a6f_696e).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        }
        let recovered = node.disk.recover();
        let commit = recovered.hard_state.commit;
        let term = recovered.hard_state.term;
        let core = RawNode::new(config, recovered, node.clock.local_ms(now_us))
            .expect("simulator config is valid");
        // Its term, not the one recorded: a torn write may have kept entries of a newer term,
        // which the node resumes in.
        let resumed_term = core.status().term;
        node.replica = Some(node.disk.start_replica(core, sim_address(id)));
        node.watch = NodeWatch {
            term: resumed_term,
            commit,
            role: None,
            last_index: 0,
        };
        let incarnation = node.incarnation;
        self.trace.line(self.now_us, || {
            format!("n{id} starts (incarnation {incarnation}, term {term}, commit {commit})")
        });
    }

    /// Ticks a node with its local time, hands it `input`, and runs its replica round by round
    /// until it has nothing more to say, carrying out what it asks. Checks invariants after each
    /// round, and crashes the node mid-step when a crash is armed for this moment.
    pub(super) fn feed(&mut self, id: NodeId, input: impl FnOnce(&mut Replica<KvStateMachine>)) {
        let now_us = self.now_us;
        let node = &mut self.nodes[id as usize - 1];
        let local_ms = node.clock.local_ms(now_us);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        self.trace.hash(&(now_us, id, local_ms));
        let lease_before = replica.core().lease_until_ms();
        replica.tick(local_ms);
        input(replica);
        // At a lease that grew from a round acknowledged within 3 ms: the voters heard it
        // that recently, so their promises end as close to the lease as they ever do.
        let core = replica.core();
        let lease_until = core.lease_until_ms();
        if self.armed_lease_cut
            && lease_until > lease_before
            && lease_until + 3 >= local_ms + core.config().lease_duration_ms()
        {
            self.cut_lease_holder(id);
        }
        if !self.carry_out_effects(id) {
            return;
        }
        loop {
            let node = &mut self.nodes[id as usize - 1];
            let Some(replica) = node.replica.as_mut() else {
                return;
            };
            let Some(actions) = replica.take_round() else {
                self.carry_out_effects(id);
                return;
            };
            let before = node.watch;
            let status = replica.core().status();
            if before.role != Some(status.role) || before.term != status.term {
                self.trace.line(now_us, || {
                    format!("n{id} becomes {:?} in term {}", status.role, status.term)
                });
            }
            let committed_before = self.checker.committed_len();
            if let Err(violation) = self.checker.after_step(replica.core(), &mut node.watch) {
                return self.fail(violation);
            }
            if let Err(violation) = self.check_quorums(id, before, committed_before) {
                return self.fail(violation);
            }
            self.note_readmissions(id);
            if let Err(violation) = quorums::check_sent_terms(id, status.term, &actions) {
                return self.fail(violation);
            }
            let node = &self.nodes[id as usize - 1];
            let moment = match (before.role, node.watch.role) {
                (Some(Role::Leader), Some(Role::Leader)) if node.watch.commit > before.commit => {
                    Some(CrashMoment::LeaderCommits)
                }
                (previous, Some(Role::Leader)) if previous != Some(Role::Leader) => {
                    Some(CrashMoment::LeaderElected)
                }
                _ => None,
            };
            if self.armed_crash == Some(CrashMoment::Acknowledges) && actions.iter().any(is_promise)
            {
                return self.crash_after_promise(id, actions);
            }
            if moment == Some(CrashMoment::LeaderElected) && self.armed_change {
                self.armed_change = false;
                self.schedule(0, Event::ChangeMembershipOnElection);
            }
            if moment.is_some() && moment == self.armed_crash {
                // Crash before this step's messages to peers leave. A new leader's writes may
                // reach its disk cache first (and survive the crash or not), leaving a divergent
                // no-op.
                // Often chain the other moment: the Figure 8 schedule is a leader lost right
                // after election, then its successor lost right after committing.
                if moment == Some(CrashMoment::LeaderElected) {
                    let persists = actions
                        .into_iter()
                        .filter(|action| matches!(action, Action::Persist { .. }));
                    if !self.execute_all(id, persists) {
                        return;
                    }
                } else if self.rng.random_bool(0.5) {
                    // Or a commit that reached its clients but none of the followers: the
                    // next leader holds those entries without knowing they are committed, and
                    // must not answer reads from its older commit.
                    let local = actions
                        .into_iter()
                        .filter(|action| !matches!(action, Action::Send { .. }));
                    if !self.execute_all(id, local) {
                        return;
                    }
                }
                self.armed_crash = match moment {
                    Some(CrashMoment::LeaderElected) if self.rng.random_bool(0.5) => {
                        Some(CrashMoment::LeaderCommits)
                    }
                    Some(CrashMoment::LeaderCommits) if self.rng.random_bool(0.5) => {
                        Some(CrashMoment::LeaderElected)
                    }
                    _ => None,
                };
                return self.crash_and_restart(id, 20_000..1_000_000);
            }
            if !self.execute_all(id, actions) {
                return;
            }
        }
    }

    /// The armed crash after a promise: carries out the step's actions (what a correct node holds
    /// until its disk synced stays held), then crashes the node before that sync. Often the
    /// leader is then lost as it commits, which may have counted the promise: if the promise
    /// left early, that commit now rests on a write that is gone.
    pub(super) fn crash_after_promise(&mut self, id: NodeId, actions: Vec<Action>) {
        if !self.execute_all(id, actions) {
            return;
        }
        self.armed_crash = self
            .rng
            .random_bool(0.5)
            .then_some(CrashMoment::LeaderCommits);
        self.trace.line(self.now_us, || {
            format!("n{id}: crash right after a promise")
        });
        self.crash(id);
        // Often a quick restart: a vote request still in flight then finds the node back with
        // whatever its disk kept, free to promise again if it forgot.
        let down_max_us = *[20_000, 1_000_000]
            .choose(&mut self.rng)
            .expect("non-empty");
        let down_us = self.rng.random_range(1_000..down_max_us);
        self.schedule(down_us, Event::Restart(id))
    }

    /// Has the node's replica carry out a round's actions in order, and carries out what it
    /// asks; false if the run failed or the node stopped (nothing after that happens).
    pub(super) fn execute_all(
        &mut self,
        id: NodeId,
        actions: impl IntoIterator<Item = Action>,
    ) -> bool {
        for action in actions {
            self.trace.hash(&(id, &action));
            if let Err(violation) = self.check_action(id, &action) {
                self.fail(violation);
                return false;
            }
            let Some(replica) = self.nodes[id as usize - 1].replica.as_mut() else {
                return false;
            };
            replica.execute(action);
            if !self.carry_out_effects(id) {
                return false;
            }
        }
        true
    }

    /// What the checker sees of an action before the replica carries it out.
    pub(super) fn check_action(&mut self, id: NodeId, action: &Action) -> Result<(), Violation> {
        match action {
            Action::Send { message, .. } => {
                let grants_vote = matches!(
                    message.body,
                    MessageBody::VoteResponse {
                        pre_vote: false,
                        granted: true
                    }
                );
                let outsider = id > self.founders.len() as NodeId
                    && self
                        .node_ref(id)
                        .core()
                        .is_some_and(|core| core.log().last_index() == 0);
                if grants_vote && outsider {
                    return Err(format!("node {id} votes before it ever joined the cluster"));
                }
                // A member back without its disk forgot the votes it cast: it may have voted in
                // this very term already. It votes again only once admitted.
                if grants_vote && self.node_ref(id).joining {
                    return Err(format!(
                        "node {id} votes for node {} in term {} while joining again after \
                         losing its disk (not admitted yet)",
                        message.to, message.term
                    ));
                }
            }
            Action::Apply { entries } => {
                for entry in entries {
                    self.checker.on_apply(id, entry)?;
                }
            }
            Action::InstallSnapshot { meta, .. } => {
                self.checker.on_install(id, meta)?;
                self.trace
                    .line(self.now_us, || format!("n{id} installs snapshot {meta:?}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Carries out what the node's replica asked for, in order; false if the run failed or the
    /// node stopped.
    pub(super) fn carry_out_effects(&mut self, id: NodeId) -> bool {
        let incarnation = self.nodes[id as usize - 1].incarnation;
        let Some(replica) = self.nodes[id as usize - 1].replica.as_mut() else {
            return false;
        };
        let mut effects = std::mem::take(&mut self.effects);
        replica.move_effects_to(&mut effects);
        let mut carried_out = true;
        for effect in effects.drain(..) {
            if !carried_out || self.nodes[id as usize - 1].incarnation != incarnation {
                carried_out = false;
                continue;
            }
            if let Err(violation) = self.carry_out(id, effect) {
                self.fail(violation);
                carried_out = false;
            }
        }
        self.effects = effects;
        carried_out && self.nodes[id as usize - 1].incarnation == incarnation
    }

    pub(super) fn carry_out(
        &mut self,
        id: NodeId,
        effect: Effect<KvStateMachine>,
    ) -> Result<(), Violation> {
        match effect {
            Effect::Persist {
                id: persist_id,
                hard_state,
                entries,
                sync: _,
            } => {
                self.trace.line(self.now_us, || {
                    format!(
                        "n{id} persist #{persist_id} {hard_state:?} +{} entries",
                        entries.len()
                    )
                });
                if self.node(id).disk_full_until_us > self.now_us {
                    // The write fails with "no space": the node stops until space is freed.
                    let restart_in = self.node(id).disk_full_until_us - self.now_us;
                    self.trace
                        .line(self.now_us, || format!("n{id}: disk full; the node stops"));
                    self.crash(id);
                    self.schedule(restart_in, Event::Restart(id));
                    return Ok(());
                }
                self.node(id).disk.write(persist_id, hard_state, entries);
                self.schedule_sync(id);
            }
            Effect::Send(message) => self.transmit(message),
            Effect::SaveSnapshot { meta, image } => {
                self.trace
                    .line(self.now_us, || format!("n{id} saves snapshot {meta:?}"));
                let node = self.node(id);
                let replica = node.replica.as_mut().expect("up");
                node.disk.save_snapshot_of(replica, meta, image);
            }
            Effect::ReadSnapshotChunk {
                to,
                meta,
                offset,
                bytes_max,
            } => {
                let node = self.node(id);
                let replica = node.replica.as_mut().expect("up");
                node.disk
                    .read_chunk_for(replica, (to, meta, offset, bytes_max));
            }
            Effect::ReadEntries {
                peer,
                from,
                through,
                entries_max,
                bytes_max,
            } => {
                let node = self.node(id);
                let replica = node.replica.as_mut().expect("up");
                node.disk
                    .read_entries_for(replica, (peer, from, through, entries_max, bytes_max));
            }
            Effect::InstallSnapshot {
                id: persist_id,
                meta,
                data,
            } => {
                self.node(id).disk.write_install(persist_id, meta, data);
                self.schedule_sync(id);
            }
            // The simulator models a node's standing with `joining` (set when it loses its disk,
            // cleared when its join completes or its log shows it was admitted).
            Effect::RecordStanding(Standing::Admitted) => self.node(id).joining = false,
            Effect::RecordStanding(_) | Effect::AddressLearned { .. } => {}
            Effect::Reply { ticket, reply } => self.replied(id, ticket, reply)?,
            Effect::LeaderChanged { role, term, leader } => {
                self.trace.line(self.now_us, || {
                    format!("n{id} is {role:?} in term {term}, leader {leader:?}")
                });
            }
            Effect::MemberStateChanged { from, to } => {
                self.trace
                    .line(self.now_us, || format!("n{id}: {from:?} -> {to:?}"));
            }
            Effect::Fatal(reason) => return Err(format!("node {id} stops: {reason}")),
        }
        Ok(())
    }

    /// Starts a sync of everything written so far, unless one is already under way.
    pub(super) fn schedule_sync(&mut self, id: NodeId) {
        let delay = self.rng.random_range(100..self.sync_delay_max_us);
        let node = self.node(id);
        if node.sync_in_flight {
            return;
        }
        node.sync_in_flight = true;
        let event = Event::DiskSynced {
            node: id,
            incarnation: node.incarnation,
            up_to: node.disk.written_id,
        };
        self.schedule(delay, event);
    }

    pub(super) fn transmit(&mut self, message: Message) {
        self.trace.line(self.now_us, || {
            format!(
                "n{} -> n{} {}",
                message.from,
                message.to,
                describe_message(&message)
            )
        });
        let delays = self.network.route(message.from, message.to, &mut self.rng);
        if let Some((last, rest)) = delays.split_last() {
            for &delay in rest {
                self.schedule(delay, Event::Deliver(Box::new(message.clone())));
            }
            self.schedule(*last, Event::Deliver(Box::new(message)));
        }
    }

    pub(super) fn disk_synced(&mut self, id: NodeId, incarnation: u64, up_to: PersistId) {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica.is_none() {
            return;
        }
        node.sync_in_flight = false;
        if node.sync_fails {
            // fsync reported an error: what it wrote may or may not be on disk, so the node
            // must stop rather than acknowledge anything (fail-stop), and restart.
            node.sync_fails = false;
            self.trace.line(self.now_us, || {
                format!("n{id}: fsync fails; the node stops")
            });
            return self.crash_and_restart(id, 50_000..1_000_000);
        }
        node.disk.sync_up_to(up_to);
        let synced = node.disk.synced_id;
        if node.disk.has_unsynced() {
            node.sync_in_flight = true;
            let written = node.disk.written_id;
            let delay = self.rng.random_range(100..self.sync_delay_max_us);
            self.schedule(
                delay,
                Event::DiskSynced {
                    node: id,
                    incarnation,
                    up_to: written,
                },
            );
        }
        // Messages that waited for these writes leave now.
        self.feed(id, |replica| {
            replica.completed(Input::Persisted { id: synced })
        });
    }

    pub(super) fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize - 1];
        if node.replica.is_none() {
            return;
        }
        let survived = node.disk.crash(&mut self.rng);
        node.replica = None;
        node.incarnation += 1;
        node.sync_in_flight = false;
        node.paused = false;
        node.deferred.clear();
        node.requests.clear();
        self.trace.line(self.now_us, || {
            format!("n{id} crashes ({survived} unsynced writes survive)")
        });
    }

    /// Stops `id` as SIGTERM would, before it goes down: its storage finishes every write, and
    /// its replica answers every request still waiting (as the node's event loop does when it
    /// stops). A write it handed to the core may still commit, so anything but "outcome
    /// unknown" for it would let the client retry and write twice.
    pub(super) fn stop_gracefully(&mut self, id: NodeId) {
        let node = self.node(id);
        if node.paused {
            return;
        }
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        replica.abandon_waiting(ApiError::ShuttingDown);
        let written = node.disk.written_id;
        node.disk.sync_up_to(written);
        self.trace
            .line(self.now_us, || format!("n{id} stops gracefully"));
        self.carry_out_effects(id);
    }

    /// Crashes `id` and restarts it after a time drawn from `down_us`.
    pub(super) fn crash_and_restart(&mut self, id: NodeId, down_us: std::ops::Range<u64>) {
        self.crash(id);
        let down_us = self.rng.random_range(down_us);
        self.schedule(down_us, Event::Restart(id));
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        if self.node(id).replica.is_none() {
            self.start_node(id);
        }
    }

    pub(super) fn resume(&mut self, id: NodeId) {
        let node = self.node(id);
        if !node.paused {
            return;
        }
        node.paused = false;
        let deferred = std::mem::take(&mut node.deferred);
        self.trace.line(self.now_us, || {
            format!("n{id} resumes with {} queued events", deferred.len())
        });
        for event in deferred {
            self.handle(event);
        }
    }
}

/// Where the simulator says node `id` is reached (replicated in its address book like a real
/// node's address).
pub(super) fn sim_address(id: NodeId) -> String {
    format!("sim-n{id}")
}

/// A message that promises something the sender's disk must keep: an accepted append or a
/// granted vote.
pub(super) fn is_promise(action: &Action) -> bool {
    match action {
        Action::Send { message, .. } => matches!(
            message.body,
            MessageBody::AppendResponse(AppendResponse::Accepted { .. })
                | MessageBody::VoteResponse {
                    pre_vote: false,
                    granted: true
                }
        ),
        _ => false,
    }
}
