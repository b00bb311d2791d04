//! One simulated machine of the sharded store: a `Replica` of any state machine (the admin's
//! directory or a data group's key-value store) on a simulated disk, stepped round by round with
//! its effects collected for the world to carry out.

use std::collections::BTreeMap;

use ravel::core::{Action, NodeId, PlantedBugs, RawNode, Role};
use ravel::replica::{Effect, Replica, StateMachine, Ticket};

use crate::checker::{Checker, NodeWatch, Violation};
use crate::disk::SimDisk;
use crate::world::{sim_config, Tuning};

use super::Asker;

pub struct Host<S: StateMachine> {
    pub id: NodeId,
    /// The group's voters (fixed: the sharded simulation has no membership changes yet).
    pub voters: Vec<NodeId>,
    pub replica: Option<Replica<S>>,
    pub disk: SimDisk,
    pub incarnation: u64,
    pub sync_in_flight: bool,
    pub watch: NodeWatch,
    /// Who is waiting for each request handed to the replica.
    pub waiting: BTreeMap<Ticket, Asker>,
    pub next_ticket: Ticket,
}

impl<S: StateMachine> Host<S> {
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Host {
            id,
            voters,
            replica: None,
            disk: SimDisk::default(),
            incarnation: 0,
            sync_in_flight: false,
            watch: NodeWatch::default(),
            waiting: BTreeMap::new(),
            next_ticket: 1,
        }
    }

    /// Starts (or restarts) the replica from what the disk holds.
    pub fn start(
        &mut self,
        (tuning, bugs): (&Tuning, PlantedBugs),
        seed: u64,
        now_ms: u64,
        fresh: S,
    ) {
        self.incarnation += 1;
        let seed = seed ^ (self.id << 32) ^ self.incarnation;
        let mut config = sim_config(self.id, &self.voters, tuning, seed);
        config.planted_bugs = bugs;
        let recovered = self.disk.recover();
        self.watch = NodeWatch {
            term: recovered.hard_state.term,
            commit: recovered.hard_state.commit,
            ..NodeWatch::default()
        };
        let core = RawNode::new(config, recovered, now_ms).expect("simulator config is valid");
        self.replica = Some(
            self.disk
                .start_replica_of(core, format!("sim-n{}", self.id), fresh),
        );
        self.sync_in_flight = false;
        self.waiting.clear();
    }

    /// Loses the process and the disk's unsynced writes.
    pub fn crash(&mut self, rng: &mut rand_chacha::ChaCha8Rng) {
        // Pending disk syncs belong to the incarnation that is gone.
        self.incarnation += 1;
        self.replica = None;
        self.disk.crash(rng);
        self.sync_in_flight = false;
        self.waiting.clear();
    }

    pub fn ticket(&mut self, asker: Asker) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.insert(ticket, asker);
        ticket
    }

    pub fn is_leader(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|replica| replica.role() == Role::Leader)
    }

    pub fn term(&self) -> u64 {
        self.replica
            .as_ref()
            .map_or(0, |replica| replica.core().status().term)
    }

    /// Ticks the replica with `now_ms`, gives it `input`, and runs it until it has nothing more
    /// to say; every round is checked, and everything it asks is returned in order.
    pub fn step(
        &mut self,
        now_ms: u64,
        checker: &mut Checker,
        input: impl FnOnce(&mut Replica<S>),
    ) -> Result<Vec<Effect<S>>, Violation> {
        let Some(replica) = self.replica.as_mut() else {
            return Ok(Vec::new());
        };
        replica.tick(now_ms);
        input(replica);
        let mut effects = replica.take_effects();
        while let Some(actions) = replica.take_round() {
            checker.after_step(replica.core(), &mut self.watch)?;
            for action in actions {
                match &action {
                    Action::Apply { entries } => {
                        for entry in entries {
                            checker.on_apply(self.id, entry)?;
                        }
                    }
                    Action::InstallSnapshot { meta, .. } => checker.on_install(self.id, meta)?,
                    _ => {}
                }
                replica.execute(action);
                replica.move_effects_to(&mut effects);
            }
        }
        replica.move_effects_to(&mut effects);
        Ok(effects)
    }
}
