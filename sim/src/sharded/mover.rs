//! The admin leader's mover, as the real admin runs it: for every move in flight in the
//! directory its leader has applied, a `MoveRun` (the same sans-IO driver the real admin uses)
//! whose asks go over the simulated network to the source's and destination's leaders and to
//! the admin's leader; answers come back as they come, or not at all. A new admin leader starts
//! its runs again from its own record. An uncommitted move that makes no progress for a while
//! is given up (rolled back).

use ravel::directory::{Answer as MoveAnswer, Ask, MoveOutcome, MoveRun};
use ravel::kv::shard::Step;

use super::*;

/// How often the mover looks at its runs.
pub(super) const MOVER_TICK_US: u64 = 50_000;
/// An uncommitted move with no step taken for this long is rolled back (most seeds; some draw
/// a shorter time).
pub(super) const GIVE_UP_US: u64 = 3_000_000;

/// One run, and what it waits for.
pub(super) struct Run {
    run: MoveRun,
    /// The ask out, if any, and when it went.
    asked: Option<(u64, u64)>,
    last_progress_us: u64,
}

/// The mover of one admin leadership (the leader and its term).
#[derive(Default)]
pub(super) struct Mover {
    leadership: Option<(NodeId, u64)>,
    runs: BTreeMap<(u32, u64), Run>,
    next_ask: u64,
}

impl ShardedWorld {
    pub(super) fn mover_tick(&mut self) {
        self.schedule(MOVER_TICK_US, Event::MoverTick);
        let Some(leader) = self
            .admins
            .iter()
            .find(|host| host.is_leader())
            .map(|host| (host.id, host.term()))
        else {
            return;
        };
        if self.mover.leadership != Some(leader) {
            // Ask numbers go on across leaderships: a late answer to an ask of an earlier
            // leadership must not match a new one that reused its number (an ingest's
            // `AlreadyDone` taken as an activation's finished a move never activated).
            self.mover = Mover {
                leadership: Some(leader),
                next_ask: self.mover.next_ask,
                ..Mover::default()
            };
        }
        let directory = self
            .admins
            .iter()
            .find(|host| host.id == leader.0)
            .and_then(|host| host.replica.as_ref())
            .map(|replica| replica.state().moves().runs().copied().collect::<Vec<_>>())
            .unwrap_or_default();
        for moving in &directory {
            self.mover
                .runs
                .entry((moving.partition, moving.epoch))
                .or_insert_with(|| Run {
                    run: MoveRun::new(moving).plant(self.options.bugs),
                    asked: None,
                    last_progress_us: self.now_us,
                });
        }
        let keys: Vec<(u32, u64)> = self.mover.runs.keys().copied().collect();
        for key in keys {
            self.mover_ask(key, leader.0);
        }
    }

    /// Sends run `key`'s next ask, unless it waits for an answer (or is done).
    fn mover_ask(&mut self, key: (u32, u64), admin_leader: NodeId) {
        let now = self.now_us;
        let Some(run) = self.mover.runs.get_mut(&key) else {
            return;
        };
        if run.run.is_done() {
            self.mover.runs.remove(&key);
            return;
        }
        if !run.run.is_committed() && now - run.last_progress_us > self.give_up_us {
            run.run.give_up();
            run.last_progress_us = now;
            run.asked = None;
        }
        let waiting = run
            .asked
            .is_some_and(|(_, at)| now - at < REQUEST_TIMEOUT_US);
        if waiting {
            return;
        }
        let Some(ask) = run.run.ask() else {
            return;
        };
        self.mover.next_ask += 1;
        let id = self.mover.next_ask;
        self.mover.runs.get_mut(&key).expect("listed").asked = Some((id, now));
        let (from, to) = {
            let run = &self.mover.runs[&key].run;
            (run.from, run.to)
        };
        let asker = Asker::Mover {
            partition: key.0,
            epoch: key.1,
            ask: id,
        };
        if let Ask::Source(command) | Ask::Destination(command) = &ask {
            if self.late_step_rate > 0.0 && self.late_steps.random_bool(self.late_step_rate) {
                let group = if matches!(ask, Ask::Source(_)) {
                    from
                } else {
                    to
                };
                let late = self.late_steps.random_range(200_000..3_000_000);
                let command = command.clone();
                self.schedule(late, Event::LateStep { group, command });
            }
        }
        match ask {
            Ask::Source(command) => self.ask_group(from, asker, command),
            Ask::Destination(command) => self.ask_group(to, asker, command),
            Ask::Admin(command) => self.send_admin(admin_leader, asker, write(command.encode())),
            Ask::Export {
                partition,
                after,
                applied_at_least,
            } => {
                // Read from the source's replica that has applied the freeze, as the real
                // admin's export call does.
                let exported = self
                    .data
                    .iter()
                    .filter(|(id, _)| self.group_of.get(id) == Some(&from))
                    .filter_map(|(_, host)| host.replica.as_ref())
                    .find(|replica| replica.state().applied_index() >= applied_at_least)
                    .map(|replica| {
                        replica
                            .state()
                            .export(partition, after.as_deref(), self.chunk_bytes)
                    });
                if let Some((pairs, last)) = exported {
                    self.mover_answered(key, id, MoveAnswer::Exported { pairs, last });
                }
            }
        }
    }

    /// Sends a move step to the leader of `group` as this simulation knows it (none: the ask
    /// times out and goes again).
    pub(super) fn ask_group(&mut self, group: GroupId, asker: Asker, command: Command) {
        let leader = self
            .data
            .iter()
            .find(|(id, host)| self.group_of.get(id) == Some(&group) && host.is_leader())
            .map(|(&id, _)| id);
        if let Some(leader) = leader {
            self.send_data(leader, asker, write(command.encode()));
        }
    }

    pub(super) fn mover_answered(&mut self, key: (u32, u64), ask: u64, answer: MoveAnswer) {
        let now = self.now_us;
        let Some(run) = self.mover.runs.get_mut(&key) else {
            return;
        };
        if run.asked.map(|(id, _)| id) != Some(ask) {
            return;
        }
        run.asked = None;
        let progress = !matches!(
            answer,
            MoveAnswer::Step {
                step: Step::Refused(_),
                ..
            }
        );
        if progress {
            run.last_progress_us = now;
        }
        self.trace.line(now, || {
            format!("mover: partition {} epoch {}: {answer:?}", key.0, key.1)
        });
        let taken = match &answer {
            MoveAnswer::Step { step, .. } => matches!(step, Step::Done | Step::AlreadyDone),
            MoveAnswer::Directory(outcome) => matches!(
                outcome,
                MoveOutcome::Committed | MoveOutcome::Aborted | MoveOutcome::AlreadyDone
            ),
            MoveAnswer::Exported { .. } => false,
        };
        let asked = run.run.ask();
        let (from, to) = (run.run.from, run.run.to);
        run.run.answered(answer);
        if let (true, Some(asked)) = (taken, asked) {
            self.step_taken(&asked, from, to);
        }
        // The next step goes at once, as the real mover's task does; a refused one waits for
        // the next tick.
        if let (true, Some((admin_leader, _))) = (progress, self.mover.leadership) {
            self.mover_ask(key, admin_leader);
        }
    }

    /// The answer of a data group to a move step.
    pub(super) fn mover_data_replied(
        &mut self,
        key: (u32, u64),
        ask: u64,
        reply: ravel::replica::Reply<KvStateMachine>,
    ) {
        match reply {
            Ok(Answer::Written {
                outcome: Outcome::MoveStep(step),
                index,
            }) => self.mover_answered(key, ask, MoveAnswer::Step { step, index }),
            other => {
                self.trace.line(self.now_us, || {
                    format!("mover: partition {} epoch {}: {other:?}", key.0, key.1)
                });
                self.mover_unanswered(key, ask);
            }
        }
    }

    /// The answer of the admin to a move command.
    pub(super) fn mover_admin_replied(
        &mut self,
        key: (u32, u64),
        ask: u64,
        reply: ravel::replica::Reply<Directory>,
    ) {
        match reply {
            Ok(Answer::Written {
                outcome: DirectoryOutcome::Move(outcome),
                ..
            }) => self.mover_answered(key, ask, MoveAnswer::Directory(outcome)),
            other => {
                self.trace.line(self.now_us, || {
                    format!("mover: partition {} epoch {}: {other:?}", key.0, key.1)
                });
                self.mover_unanswered(key, ask)
            }
        }
    }

    /// Ask `ask` failed (refused, not the leader, an error): asked again at the next tick.
    fn mover_unanswered(&mut self, key: (u32, u64), ask: u64) {
        if let Some(run) = self.mover.runs.get_mut(&key) {
            if run.asked.map(|(id, _)| id) == Some(ask) {
                run.asked = None;
            }
        }
    }
}
