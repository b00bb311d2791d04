//! The admin's leader carries out the moves its directory records: for every one (in flight, or
//! rolled back and not yet cleaned up) a task runs a [`MoveRun`] — the same sans-IO driver the
//! sharded simulator runs — delivering its asks over gRPC: move steps to the groups (through the
//! relocation service, which writes them through the group's log), exports from a source
//! replica, and the directory's own commands through this replica's log.
//!
//! The tasks live as long as this replica leads in one term: on losing the leadership (or a new
//! term) they are dropped mid-ask, and the next leader starts them again from its own record;
//! every ask is idempotent, so whatever was done is not done twice. An uncommitted move that
//! makes no progress for the admin's `move_give_up` (a group unreachable, say) is rolled back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Duration, Instant};

use super::local_directory;
use crate::client::Client;
use crate::core::Role;
use crate::directory::{
    Answer, Ask, Directory, DirectoryCommand, DirectoryOutcome, Move, MoveOutcome, MoveRun,
};
use crate::kv::shard::Step;
use crate::kv::{Command, MoveStep};
use crate::server::event_loop::{Request, WriteResult};
use crate::server::handle::NodeHandle;
use crate::server::metrics::Metrics;
use crate::server::proto::ravel::move_step_response::Result as StepResult;
use crate::server::proto::ravel::MoveStepResponse;
use crate::sharding::{GroupId, PartitionId};

/// How often the leader looks for moves to run.
const TICK: Duration = Duration::from_millis(100);
/// An uncommitted move with no step taken for this long is rolled back, unless the admin is
/// set otherwise (`ravel admin --move-give-up-ms`).
pub const GIVE_UP_AFTER_DEFAULT: Duration = Duration::from_secs(10);
/// How long one ask to a group may take, and the pause after one that got nowhere.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The tasks carrying out moves, by partition and epoch: dropped with the task that owns them
/// (the admin stopping), they stop too.
#[derive(Default)]
struct Runs(BTreeMap<(PartitionId, u64), JoinHandle<()>>);

impl Drop for Runs {
    fn drop(&mut self) {
        for run in self.0.values() {
            run.abort();
        }
    }
}

/// Runs the moves whenever this replica leads the admin group, until the node stops.
pub(super) async fn move_partitions(
    node: NodeHandle<Directory>,
    metrics: Metrics,
    give_up_after: Duration,
    #[cfg(feature = "planted-bugs")] bugs: crate::directory::DirectoryBugs,
) {
    let mut term = None;
    let mut runs = Runs::default();
    let pacer = Arc::new(Pacer::default());
    loop {
        sleep(TICK).await;
        let Ok(view) = node.view().await else {
            return;
        };
        let leading = (view.status.role == Role::Leader).then_some(view.status.term);
        if leading != term {
            // Dropped: their tasks stop mid-ask; the steps they took stand (idempotent).
            runs = Runs::default();
            term = leading;
        }
        let Ok(directory) = local_directory(&node).await else {
            continue;
        };
        let totals = directory.moves().totals();
        metrics.observe_move_totals([totals.started, totals.committed, totals.rolled_back]);
        pacer.set_rate(directory.moves().rate());
        if term.is_none() {
            continue;
        }
        runs.0.retain(|_, run| !run.is_finished());
        for moving in directory.moves().runs() {
            runs.0
                .entry((moving.partition, moving.epoch))
                .or_insert_with(|| {
                    #[allow(unused_mut)]
                    let mut run = MoveRun::new(moving);
                    #[cfg(feature = "planted-bugs")]
                    {
                        run = run.plant(bugs);
                    }
                    tokio::spawn(carry_out(
                        node.clone(),
                        metrics.clone(),
                        pacer.clone(),
                        give_up_after,
                        *moving,
                        run,
                    ))
                });
        }
    }
}

/// Carries one move out to its end (or until dropped).
async fn carry_out(
    node: NodeHandle<Directory>,
    metrics: Metrics,
    pacer: Arc<Pacer>,
    give_up_after: Duration,
    moving: Move,
    mut run: MoveRun,
) {
    let (partition, epoch) = (moving.partition, moving.epoch);
    tracing::info!(
        partition,
        epoch,
        from = moving.from,
        to = moving.to,
        phase = ?moving.phase,
        "carrying out a move"
    );
    let mut groups = Groups::default();
    let started = Instant::now();
    let mut last_progress = started;
    let mut clock = WritesRefused::default();
    let mut shipped = 0u64;
    while let Some(ask) = run.ask() {
        if !run.is_committed() && last_progress.elapsed() > give_up_after {
            tracing::warn!(
                partition,
                epoch,
                "a move made no progress for {give_up_after:?}; giving up (an attempt is \
                 rolled back, a cleanup skips the destination's discard)"
            );
            run.give_up();
            last_progress = Instant::now();
            continue;
        }
        if matches!(
            &ask,
            Ask::Source(Command::Move {
                step: MoveStep::Freeze,
                ..
            })
        ) {
            clock.freezing();
        }
        // The step after which the partition takes writes again (at one group or the other).
        let writable_again = matches!(
            &ask,
            Ask::Source(Command::Move {
                step: MoveStep::Unfreeze,
                ..
            }) | Ask::Destination(Command::Move {
                step: MoveStep::Activate,
                ..
            })
        );
        let answer = match ask {
            Ask::Source(command) => groups.step(&node, run.from, command).await,
            Ask::Destination(command) => groups.step(&node, run.to, command).await,
            Ask::Export {
                partition,
                after,
                applied_at_least,
            } => {
                groups
                    .export(&node, run.from, partition, after, applied_at_least)
                    .await
            }
            Ask::Admin(command) => directory_write(&node, command).await,
        };
        let moved_on = match &answer {
            Some(Answer::Step {
                step: Step::Refused(reason),
                ..
            }) => {
                tracing::debug!(partition, epoch, %reason, "a move step was refused");
                false
            }
            Some(Answer::Directory(MoveOutcome::Refused(reason))) => {
                tracing::debug!(partition, epoch, %reason, "a move command was refused");
                // Still answered: the run decides (an abort refused because the move
                // committed goes forward).
                true
            }
            Some(_) => true,
            None => false,
        };
        if let Some(answer) = answer {
            match &answer {
                Answer::Directory(outcome) => tracing::info!(partition, epoch, ?outcome, "move"),
                Answer::Exported { pairs, .. } => {
                    let bytes: usize = pairs
                        .iter()
                        .map(|(key, value)| key.len() + value.len())
                        .sum();
                    shipped += bytes as u64;
                    metrics.shipped_move_bytes(bytes as u64);
                    pacer.pace(bytes as u64).await;
                }
                Answer::Step {
                    step: Step::Done | Step::AlreadyDone,
                    ..
                } if writable_again => clock.writable(),
                Answer::Step { .. } => {}
            }
            run.answered(answer);
        }
        if moved_on {
            last_progress = Instant::now();
        } else {
            sleep(RETRY_PAUSE).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let refused = clock.refused();
    metrics.move_ended(seconds, refused.map(|refused| refused.as_secs_f64()));
    tracing::info!(
        partition,
        epoch,
        from = moving.from,
        to = moving.to,
        committed = run.is_committed(),
        total_ms = (seconds * 1000.0) as u64,
        writes_refused_ms = refused.map(|refused| refused.as_millis() as u64),
        bytes_shipped = shipped,
        "move carried out"
    );
}

/// Keeps all moves together to the operator's rate: each exported chunk waits for its slot
/// (the slots of the chunks before it, at the rate) before it is shipped on.
#[derive(Default)]
struct Pacer {
    /// Bytes per second; 0: unlimited.
    rate: AtomicU64,
    /// When the bytes shipped so far have had their time.
    free_at: Mutex<Option<Instant>>,
}

impl Pacer {
    fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    async fn pace(&self, bytes: u64) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let start = {
            let mut free_at = self.free_at.lock().expect("not poisoned");
            let now = Instant::now();
            let start = free_at.map_or(now, |free_at| free_at.max(now));
            *free_at = Some(start + Duration::from_secs_f64(bytes as f64 / rate as f64));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// How long a move's partition refused writes, as its carrier saw it: from when it first asked
/// the source to freeze to when the destination answered that it serves the partition
/// (committed) or the source that it unfroze it (rolled back). A carrier that took the move up
/// from an admin leader before it measures from its own (repeated) freeze, a lower bound, or —
/// if it took the move up after the freeze — not at all.
#[derive(Default)]
struct WritesRefused {
    frozen: Option<Instant>,
    refused: Option<Duration>,
}

impl WritesRefused {
    fn freezing(&mut self) {
        self.frozen.get_or_insert_with(Instant::now);
    }

    fn writable(&mut self) {
        if let Some(frozen) = self.frozen.take() {
            self.refused = Some(frozen.elapsed());
        }
    }

    fn refused(&self) -> Option<Duration> {
        self.refused
    }
}

/// A group's answer to a move step, as the mover's driver takes it.
pub fn step_answer(response: MoveStepResponse) -> Answer {
    let step = match response.result() {
        StepResult::Done => Step::Done,
        StepResult::AlreadyDone => Step::AlreadyDone,
        StepResult::Refused | StepResult::Unspecified => Step::Refused(response.reason),
    };
    Answer::Step {
        step,
        index: response.index,
    }
}

/// Writes a directory command through this replica's log (it leads; if it no longer does, the
/// write fails and the task is about to be dropped anyway).
async fn directory_write(
    node: &NodeHandle<Directory>,
    command: DirectoryCommand,
) -> Option<Answer> {
    let written: WriteResult<DirectoryOutcome> = node
        .ask(|reply| Request::Write {
            command: command.encode(),
            may_forward: false,
            reply,
        })
        .await
        .ok()?;
    match written.outcome {
        DirectoryOutcome::Move(outcome) => Some(Answer::Directory(outcome)),
        other => {
            tracing::warn!(?other, "a move command answered with another outcome");
            None
        }
    }
}

/// A client per group, built from the directory as this replica applied it (the group's leader
/// first) and built again after a call that failed (its members may have changed).
#[derive(Default)]
struct Groups {
    clients: BTreeMap<GroupId, Client>,
}

impl Groups {
    async fn client(
        &mut self,
        node: &NodeHandle<Directory>,
        group: GroupId,
    ) -> Option<&mut Client> {
        if let std::collections::btree_map::Entry::Vacant(vacant) = self.clients.entry(group) {
            let directory = local_directory(node).await.ok()?;
            let info = directory.groups().get(&group)?;
            let mut members: Vec<u64> = info.leader.into_iter().collect();
            members.extend(info.members.iter().filter(|&&id| Some(id) != info.leader));
            let endpoints: Vec<String> = members
                .iter()
                .filter_map(|id| directory.servers().get(id))
                .map(|server| server.address.clone())
                .collect();
            if endpoints.is_empty() {
                return None;
            }
            let mut client = Client::new(endpoints);
            client.timeout = ASK_TIMEOUT;
            client.token = node.auth.service_token();
            vacant.insert(client);
        }
        self.clients.get_mut(&group)
    }

    async fn step(
        &mut self,
        node: &NodeHandle<Directory>,
        group: GroupId,
        command: Command,
    ) -> Option<Answer> {
        let client = self.client(node, group).await?;
        match client.move_step(command.encode()).await {
            Ok(response) => Some(step_answer(response)),
            Err(error) => {
                tracing::debug!(group, %error, "a move step went unanswered");
                self.clients.remove(&group);
                None
            }
        }
    }

    async fn export(
        &mut self,
        node: &NodeHandle<Directory>,
        group: GroupId,
        partition: PartitionId,
        after: Option<Bytes>,
        applied_at_least: u64,
    ) -> Option<Answer> {
        let client = self.client(node, group).await?;
        match client.export(partition, after, applied_at_least).await {
            Ok(Some((pairs, last))) => Some(Answer::Exported { pairs, last }),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(group, %error, "an export went unanswered");
                self.clients.remove(&group);
                None
            }
        }
    }
}
