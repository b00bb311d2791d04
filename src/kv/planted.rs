//! Test-only (feature `planted-bugs`, which the `ravel` binary refuses): relocation mistakes
//! planted in a data group's state machine, so the simulators can show they notice them.
//!
//! They are set per thread, not passed in: a group's state machine is also rebuilt from a
//! snapshot (`StateMachine::restore`), which takes only the image, and a planted bug must
//! survive that. Each simulated seed runs on one thread and plants before it starts.

use std::cell::Cell;

/// Mistakes in how a data group holds a moving partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardBugs {
    /// No freeze at the source: a frozen partition still takes writes, which the copy to the
    /// destination then misses.
    pub frozen_source_takes_writes: bool,
    /// No ownership check when a write applies, only when it is proposed: a write proposed
    /// before the freeze and applied after it (or after the drop) changes a partition that is
    /// no longer the group's to change.
    pub no_apply_time_check: bool,
    /// The destination takes the steps of an older, rolled-back attempt as the current one's
    /// (a stale epoch accepted): a late chunk goes into the incoming data, and the old
    /// attempt's discard removes what the current one brought in.
    pub stale_epoch_accepted: bool,
}

impl ShardBugs {
    pub const NAMES: [&'static str; 3] = [
        "frozen-source-takes-writes",
        "no-apply-time-check",
        "stale-epoch-accepted",
    ];

    pub fn named(name: &str) -> Option<Self> {
        let mut bugs = ShardBugs::default();
        match name {
            "frozen-source-takes-writes" => bugs.frozen_source_takes_writes = true,
            "no-apply-time-check" => bugs.no_apply_time_check = true,
            "stale-epoch-accepted" => bugs.stale_epoch_accepted = true,
            _ => return None,
        }
        Some(bugs)
    }
}

thread_local! {
    static PLANTED: Cell<ShardBugs> = const { Cell::new(ShardBugs {
        frozen_source_takes_writes: false,
        no_apply_time_check: false,
        stale_epoch_accepted: false,
    }) };
}

/// Plants `bugs` in every data group's state machine on this thread from now on.
pub fn plant(bugs: ShardBugs) {
    PLANTED.with(|planted| planted.set(bugs));
}

pub fn planted() -> ShardBugs {
    PLANTED.with(Cell::get)
}
