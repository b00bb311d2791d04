//! `ravel moves`: the partitions of a sharded store moving between groups now, those still to
//! move, the latest moves that ended, and the totals — what an operator watches while a group
//! is added or retired.

use std::time::Duration;

use super::exit::ExitCode;
use super::{AdminEndpoints, WriteOut};
use crate::server::proto::ravel::{OverviewResponse, PartitionMove};

pub async fn moves(admin: AdminEndpoints, write_out: WriteOut) -> ExitCode {
    let deadline = Duration::from_secs_f64(admin.timeout.max(0.1));
    let overview = match crate::routed_client::read_overview(&admin.admin, deadline).await {
        Ok(overview) => overview,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::of_routed(&error);
        }
    };
    match write_out {
        WriteOut::Json => println!("{:#}", document(&overview)),
        WriteOut::Table => print!("{}", table(&overview)),
    }
    ExitCode::Success
}

/// A rate as `ravel move-rate` takes it: bytes per second, with an optional unit (KiB, MiB,
/// GiB, KB, MB, GB; case ignored) and an optional "/s"; 0 or "unlimited" for no limit.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lower = lower.strip_suffix("/s").unwrap_or(&lower);
    if lower == "unlimited" {
        return Ok(0);
    }
    let digits = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let unit_bytes: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {trimmed:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{trimmed:?} is not a rate: e.g. 8MiB, 500KB, 0 (unlimited)"))?;
    let bytes = number * unit_bytes;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{trimmed:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// A rate as people read it.
pub fn rate_name(bytes_per_second: u64) -> String {
    if bytes_per_second == 0 {
        return "unlimited".to_string();
    }
    let mib = bytes_per_second as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.1} MiB/s")
    } else {
        format!("{:.0} KiB/s", bytes_per_second as f64 / 1024.0)
    }
}

fn as_json(moving: &PartitionMove) -> serde_json::Value {
    serde_json::json!({
        "partition": moving.partition,
        "from": moving.from_group,
        "to": moving.to_group,
        "epoch": moving.epoch,
        "phase": moving.phase,
    })
}

fn document(overview: &OverviewResponse) -> serde_json::Value {
    serde_json::json!({
        "in_flight": overview.moves.iter().map(as_json).collect::<Vec<_>>(),
        "pending": overview.moves_pending,
        "limit": overview.move_limit,
        "rate_bytes_per_second": overview.move_rate,
        "ended": overview.moves_ended.iter().map(as_json).collect::<Vec<_>>(),
        "started": overview.moves_started,
        "committed": overview.moves_committed,
        "rolled_back": overview.moves_rolled_back,
    })
}

fn table(overview: &OverviewResponse) -> String {
    let mut text = format!(
        "{} moves started, {} committed, {} rolled back; {} partitions still to move, at most {} \
         at once, {}\n",
        overview.moves_started,
        overview.moves_committed,
        overview.moves_rolled_back,
        overview.moves_pending,
        overview.move_limit,
        rate_name(overview.move_rate)
    );
    for (title, moves) in [
        ("in flight", &overview.moves),
        ("ended (latest last)", &overview.moves_ended),
    ] {
        if moves.is_empty() {
            text.push_str(&format!("{title}: none\n"));
            continue;
        }
        text.push_str(&format!("{title}:\n"));
        text.push_str(&format!(
            "  {:<10} {:<6} {:<6} {:<6} PHASE\n",
            "PARTITION", "FROM", "TO", "EPOCH"
        ));
        for moving in moves {
            text.push_str(&format!(
                "  {:<10} {:<6} {:<6} {:<6} {}\n",
                moving.partition, moving.from_group, moving.to_group, moving.epoch, moving.phase
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moving(partition: u32, phase: &str) -> PartitionMove {
        PartitionMove {
            partition,
            from_group: 1,
            to_group: 3,
            epoch: 2,
            phase: phase.to_string(),
        }
    }

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("unlimited"), Ok(0));
        assert_eq!(parse_rate("1048576"), Ok(1 << 20));
        assert_eq!(parse_rate("8MiB"), Ok(8 << 20));
        assert_eq!(parse_rate("8 mib/s"), Ok(8 << 20));
        assert_eq!(parse_rate("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_rate("500KB"), Ok(500_000));
        assert!(parse_rate("8 furlongs").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("1e30GB").is_err());
        assert_eq!(rate_name(16 << 20), "16.0 MiB/s");
        assert_eq!(rate_name(0), "unlimited");
    }

    #[test]
    fn shows_moves_in_flight_and_ended_with_totals() {
        let overview = OverviewResponse {
            moves: vec![moving(7, "copying")],
            moves_ended: vec![moving(4, "finished"), moving(5, "rolled-back")],
            moves_pending: 12,
            move_limit: 4,
            moves_started: 3,
            moves_committed: 1,
            moves_rolled_back: 1,
            ..Default::default()
        };
        let text = table(&overview);
        assert!(
            text.starts_with(
                "3 moves started, 1 committed, 1 rolled back; 12 partitions still to move"
            ),
            "{text}"
        );
        assert!(
            text.contains("  7          1      3      2      copying\n"),
            "{text}"
        );
        assert!(
            text.contains("  5          1      3      2      rolled-back\n"),
            "{text}"
        );
        let json = document(&overview);
        assert_eq!(json["in_flight"][0]["partition"], 7);
        assert_eq!(json["ended"][1]["phase"], "rolled-back");
        assert_eq!(json["pending"], 12);
        assert_eq!(json["rolled_back"], 1);
        let empty = table(&OverviewResponse::default());
        assert!(
            empty.contains("in flight: none\nended (latest last): none\n"),
            "{empty}"
        );
    }
}
