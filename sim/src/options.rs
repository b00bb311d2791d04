//! What one simulation run does: cluster size, duration, workload, and which faults to inject.

use std::fmt;

use ravel::core::{PlantedBugs, ReadMode};

/// The families of faults the simulator can inject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultMix {
    /// Symmetric, one-way, minority/majority, leader-isolating and bridge partitions.
    pub partition: bool,
    pub loss: bool,
    /// Random per-message delay, which also reorders messages, and stragglers that arrive after
    /// elections have moved on.
    pub delay: bool,
    pub duplicate: bool,
    /// Crash and restart, losing writes not yet reported durable (in whole or in part).
    pub crash: bool,
    pub pause: bool,
    /// Clock offsets and rate drift within the configured bound.
    pub skew: bool,
    /// Leadership transfers and forced campaigns racing everything else.
    pub transfer: bool,
    /// A failing fsync or a full disk: the node stops (fail-stop), keeping only what was durable.
    pub disk: bool,
    /// Learners added and promoted, voters removed (the leader too), joint replacements, racing
    /// everything else; spare nodes wait outside the cluster to be added.
    pub membership: bool,
    /// A member loses its disk and rejoins through the join workflow. Not part of `all` yet:
    /// it still finds a rare liveness stall (seed 9794 on 3 nodes), under investigation.
    pub disk_loss: bool,
}

impl FaultMix {
    pub const NAMES: [&'static str; 10] = [
        "partition",
        "loss",
        "delay",
        "duplicate",
        "crash",
        "pause",
        "skew",
        "transfer",
        "disk",
        "membership",
    ];

    pub fn all() -> Self {
        FaultMix {
            partition: true,
            loss: true,
            delay: true,
            duplicate: true,
            crash: true,
            pause: true,
            skew: true,
            transfer: true,
            disk: true,
            membership: true,
            disk_loss: false,
        }
    }

    /// Parses `all`, `none`, or a comma-separated list of family names.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut mix = FaultMix::default();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name {
                "all" => mix = FaultMix::all(),
                "none" => {}
                "partition" => mix.partition = true,
                "loss" => mix.loss = true,
                "delay" | "reorder" => mix.delay = true,
                "duplicate" => mix.duplicate = true,
                "crash" => mix.crash = true,
                "pause" => mix.pause = true,
                "skew" => mix.skew = true,
                "transfer" => mix.transfer = true,
                "disk" => mix.disk = true,
                "membership" => mix.membership = true,
                "disk-loss" => mix.disk_loss = true,
                other => {
                    return Err(format!(
                        "unknown fault family `{other}`; use all, none or a list of: {}",
                        Self::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(mix)
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultMix::all() {
            return write!(f, "all");
        }
        if *self
            == (FaultMix {
                disk_loss: true,
                ..FaultMix::all()
            })
        {
            return write!(f, "all,disk-loss");
        }
        let flags = [
            self.partition,
            self.loss,
            self.delay,
            self.duplicate,
            self.crash,
            self.pause,
            self.skew,
            self.transfer,
            self.disk,
            self.membership,
        ];
        let names: Vec<&str> = Self::NAMES
            .iter()
            .zip(flags)
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
        let mut names = names;
        if self.disk_loss {
            names.push("disk-loss");
        }
        if names.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

/// The parameters of one simulated run; the seed decides everything else.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The founding voters.
    pub nodes: usize,
    /// Nodes outside the cluster that membership faults add (only with that family on).
    pub spares: usize,
    /// Simulated time with faults on; then faults heal and liveness is checked.
    pub duration_ms: u64,
    pub clients: usize,
    pub keys: usize,
    pub faults: FaultMix,
    /// `None`: the seed picks ReadIndex or Lease.
    pub read_mode: Option<ReadMode>,
    pub bugs: PlantedBugs,
    /// After faults heal, a leader must be elected and a write applied everywhere within this.
    pub liveness_bound_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            spares: 2,
            duration_ms: 10_000,
            clients: 4,
            keys: 3,
            faults: FaultMix::all(),
            read_mode: None,
            bugs: PlantedBugs::default(),
            liveness_bound_ms: 10_000,
        }
    }
}

/// A seed range from the command line: `0..1000` (end excluded) or one seed.
pub fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{text}` is not a seed range like 0..1000"))
    };
    match text.split_once("..") {
        Some((start, end)) => {
            let (start, end) = (parse(start)?, parse(end)?);
            if start >= end {
                return Err(format!("seed range {text} is empty"));
            }
            Ok(start..end)
        }
        None => {
            let seed = parse(text)?;
            Ok(seed..seed + 1)
        }
    }
}
