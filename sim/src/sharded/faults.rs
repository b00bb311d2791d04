//! Faults: crashes that lose unsynced writes (of admin and data replicas alike) and
//! partitions, often of a data group's leader alone; then everything heals.

use super::*;

impl ShardedWorld {
    pub(super) fn fault(&mut self) {
        if self.faults_over {
            return;
        }
        let ids = self.all_ids();
        match self.rng.random_range(0..3) {
            0 | 1 => {
                let id = *ids.choose(&mut self.rng).expect("admins at least");
                self.crash_node(id);
            }
            _ => {
                let leaders: Vec<NodeId> = self
                    .data
                    .iter()
                    .filter(|(_, host)| host.is_leader())
                    .map(|(&id, _)| id)
                    .collect();
                let isolated: Vec<NodeId> = if !leaders.is_empty() && self.rng.random_bool(0.5) {
                    // A group's leader cut off from its group (and from everyone else): it
                    // leads on alone for a while and keeps reporting a term that is over.
                    vec![*leaders.choose(&mut self.rng).expect("non-empty")]
                } else {
                    let size = self.rng.random_range(1..=ids.len() / 2);
                    let mut pool = ids.clone();
                    (0..size)
                        .map(|_| pool.swap_remove(self.rng.random_range(0..pool.len())))
                        .collect()
                };
                self.trace
                    .line(self.now_us, || format!("partition isolates {isolated:?}"));
                self.network.isolate(&isolated, &ids);
                let heal = self.rng.random_range(200_000..2_000_000);
                self.schedule(heal, Event::Heal);
            }
        }
        let next = self.rng.random_range(200_000..1_200_000);
        self.schedule(next, Event::Fault);
    }

    /// Crashes replica `id` (it loses what it had not synced) and schedules its restart.
    pub(super) fn crash_node(&mut self, id: NodeId) {
        let crashed = if let Some(host) = self.admins.iter_mut().find(|host| host.id == id) {
            let up = host.replica.is_some();
            host.crash(&mut self.rng);
            up
        } else {
            let host = self.data.get_mut(&id).expect("started");
            let up = host.replica.is_some();
            host.crash(&mut self.rng);
            up
        };
        if crashed {
            self.trace.line(self.now_us, || format!("n{id} crashes"));
            let down = self.rng.random_range(50_000..1_500_000);
            self.schedule(down, Event::Restart(id));
        }
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let (tuning, seed, now_ms) = (self.tuning, self.seed, self.now_us / 1000);
        if let Some(host) = self.admins.iter_mut().find(|host| host.id == id) {
            if host.replica.is_none() {
                let setup = (&tuning, self.options.core_bugs);
                host.start(setup, seed, now_ms, fresh_directory(self.options.bugs));
                self.trace.line(self.now_us, || format!("n{id} restarts"));
            }
        } else if let Some(host) = self.data.get_mut(&id) {
            if host.replica.is_none() {
                let setup = (&tuning, self.options.core_bugs);
                let fresh = KvStateMachine::sharded(self.settings.partitions);
                host.start(setup, seed, now_ms, fresh);
                self.trace.line(self.now_us, || format!("n{id} restarts"));
            }
        }
    }

    /// Ends the faults: the network heals and every crashed replica restarts.
    pub(super) fn heal(&mut self) {
        self.faults_over = true;
        self.healed_at_us = Some(self.now_us);
        self.network.heal();
        self.trace
            .line(self.now_us, || "faults over; everything heals".to_string());
        for id in self.all_ids() {
            self.restart(id);
        }
        // Clients waiting on a route or an answer that will never come go on.
        for client in 0..self.clients.len() {
            self.schedule(1_000, Event::ClientNext(client));
        }
    }
}
