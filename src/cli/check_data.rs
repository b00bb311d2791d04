//! `ravel check-data DIR`: the offline check of a stopped node's data directory
//! (`storage::check_data_dir`), printed for a person or as JSON.

use std::path::Path;

use super::{ExitCode, WriteOut};
use crate::storage::{check_data_dir, DataReport, Standing};

pub fn run(dir: &Path, write_out: WriteOut) -> ExitCode {
    let report = match check_data_dir(dir) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::Failure;
        }
    };
    match write_out {
        WriteOut::Json => println!("{:#}", json(dir, &report)),
        WriteOut::Table => print_table(dir, &report),
    }
    if report.is_sound() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

fn standing_name(standing: Option<Standing>) -> &'static str {
    match standing {
        None => "not recorded",
        Some(Standing::Founder) => "founded its cluster",
        Some(Standing::Joining) => "joining, not admitted yet",
        Some(Standing::Admitted) => "admitted",
        Some(Standing::Removed) => "removed from its cluster",
    }
}

fn print_table(dir: &Path, report: &DataReport) {
    println!("data directory: {}", dir.display());
    match &report.identity {
        Some((identity, standing)) => println!(
            "identity:       node {} of cluster {} ({})",
            identity.node_id,
            identity.cluster_id,
            standing_name(*standing)
        ),
        None => println!("identity:       none readable"),
    }
    if report.snapshots.is_empty() {
        println!("snapshots:      none");
    }
    for snapshot in &report.snapshots {
        println!(
            "snapshot:       index {} term {}, {} bytes{}",
            snapshot.index,
            snapshot.term,
            snapshot.bytes,
            if snapshot.damage.is_some() {
                " (DAMAGED)"
            } else {
                ""
            }
        );
    }
    let bytes: u64 = report.segments.iter().map(|segment| segment.bytes).sum();
    if report.last_index >= report.first_index {
        println!(
            "log:            entries {}..={} (last term {}), {} segments, {bytes} bytes",
            report.first_index,
            report.last_index,
            report.last_term,
            report.segments.len()
        );
    } else {
        println!(
            "log:            no entries after index {}, {} segments, {bytes} bytes",
            report.snapshot_index,
            report.segments.len()
        );
    }
    match report.hard_state {
        Some(state) => println!(
            "hard state:     term {}, vote {}, commit {}",
            state.term,
            state
                .vote
                .map_or("none".to_string(), |vote| vote.to_string()),
            state.commit
        ),
        None => println!("hard state:     none recorded"),
    }
    for repair in &report.repairable {
        println!("repaired on start: {repair}");
    }
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    if report.is_sound() {
        println!("verdict:        sound: the node starts from it and loses nothing");
    } else {
        println!(
            "verdict:        DAMAGED: the node refuses to start from it (or has lost committed \
             entries); restore it from a backup, or move it aside and let the node rejoin with \
             an empty --data-dir and --join ADDR"
        );
    }
}

fn json(dir: &Path, report: &DataReport) -> serde_json::Value {
    let identity = report.identity.as_ref().map(|(identity, standing)| {
        serde_json::json!({
            "node_id": identity.node_id,
            "cluster_id": identity.cluster_id,
            "standing": standing_name(*standing),
        })
    });
    serde_json::json!({
        "dir": dir.display().to_string(),
        "sound": report.is_sound(),
        "identity": identity,
        "snapshots": report.snapshots.iter().map(|snapshot| serde_json::json!({
            "path": snapshot.path.display().to_string(),
            "index": snapshot.index,
            "term": snapshot.term,
            "bytes": snapshot.bytes,
            "damage": snapshot.damage,
        })).collect::<Vec<_>>(),
        "segments": report.segments.iter().map(|segment| serde_json::json!({
            "path": segment.path.display().to_string(),
            "bytes": segment.bytes,
            "records": segment.records,
            "first_index": segment.entries.map(|(first, _)| first),
            "last_index": segment.entries.map(|(_, last)| last),
        })).collect::<Vec<_>>(),
        "first_index": report.first_index,
        "last_index": report.last_index,
        "last_term": report.last_term,
        "hard_state": report.hard_state.map(|state| serde_json::json!({
            "term": state.term,
            "vote": state.vote,
            "commit": state.commit,
        })),
        "repaired_on_start": report.repairable,
        "problems": report.problems,
    })
}
