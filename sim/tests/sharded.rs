//! The sharded store's simulation (an admin group, data groups, routing clients, every fault)
//! passes its checks over a range of seeds, runs the same twice, and notices planted mistakes.

use ravel::core::PlantedBugs;
use ravel::directory::DirectoryBugs;
use ravel::kv::planted::ShardBugs;
use ravel_sim::sharded::{ShardedOptions, ShardedWorld};

fn failures(seeds: std::ops::Range<u64>, options: &ShardedOptions) -> Vec<(u64, String)> {
    seeds
        .filter_map(|seed| {
            let report = ShardedWorld::new(seed, options.clone(), false).run();
            report.failure.map(|failure| (seed, failure))
        })
        .collect()
}

#[test]
fn random_sharded_schedules_keep_every_check() {
    let options = ShardedOptions::default();
    assert_eq!(failures(0..150, &options), Vec::new());
    let three = ShardedOptions {
        groups: 3,
        ..ShardedOptions::default()
    };
    assert_eq!(failures(1000..1050, &three), Vec::new());
}

#[test]
fn a_sharded_run_is_a_function_of_its_seed() {
    let mut completed = 0;
    for seed in 0..20 {
        let once = ShardedWorld::new(seed, ShardedOptions::default(), false).run();
        let twice = ShardedWorld::new(seed, ShardedOptions::default(), false).run();
        assert_eq!(once.trace_hash, twice.trace_hash, "seed {seed}");
        assert_eq!(once.operations_completed, twice.operations_completed);
        assert!(once.operations_completed >= 10, "seed {seed}: {once:?}");
        completed += once.operations_completed;
    }
    // Clients get real work done, not only the few writes liveness asks for.
    assert!(completed > 20 * 50, "{completed} operations in 20 seeds");
}

#[test]
fn planted_directory_and_core_mistakes_are_caught() {
    let planted = |bugs: DirectoryBugs, core_bugs: PlantedBugs| ShardedOptions {
        bugs,
        core_bugs,
        ..ShardedOptions::default()
    };
    for (name, seeds) in [
        ("register-ignores-token", 0..100),
        ("report-ignores-term", 0..400),
        // A move's source dropping the partition before the commit point loses its keys.
        ("drop-before-commit", 0..50),
        // Committed before the destination holds it all: the move can never be carried out.
        ("commit-before-ingest", 0..100),
    ] {
        let options = planted(
            DirectoryBugs::named(name).expect("known"),
            PlantedBugs::default(),
        );
        assert!(
            !failures(seeds.clone(), &options).is_empty(),
            "{name} went unnoticed in seeds {seeds:?}"
        );
    }
    let options = planted(
        DirectoryBugs::default(),
        PlantedBugs::by_name("vote-twice-in-term").expect("known"),
    );
    assert!(!failures(0..100, &options).is_empty());
}

/// Relocation mistakes in the data groups' state machines, each caught by the random
/// simulation (the seeds that add a group move partitions while the faults go on).
#[test]
fn planted_relocation_mistakes_are_caught() {
    for (name, seeds) in [
        // Writes taken while the partition is copied are missing at the destination.
        ("frozen-source-takes-writes", 0..50),
        // A write proposed before the freeze and applied after it is lost the same way.
        ("no-apply-time-check", 0..300),
        // An old attempt's late step (a discard wiping what the current attempt brought in,
        // a chunk mixed into it): since a new attempt waits for the old one's cleanup, only a
        // late step can do it (6 of 600 seeds).
        ("stale-epoch-accepted", 0..300),
    ] {
        let options = ShardedOptions {
            shard_bugs: ShardBugs::named(name).expect("known"),
            ..ShardedOptions::default()
        };
        assert!(
            !failures(seeds.clone(), &options).is_empty(),
            "{name} went unnoticed in seeds {seeds:?}"
        );
    }
}
