//! `--timeline FILE.html`: a run as a picture, one self-contained page that opens offline — a
//! lane per node coloured by role with its term written in, crashes as gaps, messages as arrows
//! from send to delivery (filterable by kind), faults as shaded spans, client operations as
//! bars in lanes of their own, and the violation marked in red.
//!
//! Built from the replay trace's lines, the same text `--replay` prints, so the picture shows
//! nothing the trace does not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};

/// The page for a run whose trace is `lines` (as `--replay` prints them); `failure` is its report.
pub fn render(title: &str, lines: &[(u64, String)], failure: Option<&str>) -> String {
    let data = parse(lines, failure);
    PAGE.replace("__TITLE__", &html_escape(title))
        .replace("__DATA__", &data.to_string().replace("</", "<\\/"))
}

/// The picture's data, from trace lines.
fn parse(lines: &[(u64, String)], failure: Option<&str>) -> Value {
    let mut nodes: BTreeSet<u64> = BTreeSet::new();
    let mut roles = Vec::new();
    let mut downs = Vec::new();
    let mut down_since: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sends: BTreeMap<(u64, u64, String, String), VecDeque<u64>> = BTreeMap::new();
    let mut messages = Vec::new();
    let mut faults = Vec::new();
    let mut open_fault: Option<(u64, String)> = None;
    let mut ops: BTreeMap<(u64, u64), Value> = BTreeMap::new();
    let mut violation = Value::Null;
    let end_us = lines.last().map_or(0, |(at, _)| *at);
    for (at, line) in lines {
        let at = *at;
        if let Some(text) = line.strip_prefix("VIOLATION: ") {
            violation = json!({ "at": at, "text": text });
            continue;
        }
        if let Some(rest) = line.strip_prefix("client ") {
            parse_client(at, rest, &mut ops);
            continue;
        }
        if line.starts_with("network heals") || line.starts_with("faults end") {
            if let Some((from, text)) = open_fault.take() {
                faults.push(json!({ "from": from, "to": at, "text": text }));
            }
            continue;
        }
        if is_partition(line) {
            if let Some((from, text)) = open_fault.take() {
                faults.push(json!({ "from": from, "to": at, "text": text }));
            }
            open_fault = Some((at, line.clone()));
            continue;
        }
        let Some((node, rest)) = node_prefix(line) else {
            continue;
        };
        nodes.insert(node);
        if let Some((kind, to, term)) = message(rest, " -> ") {
            sends
                .entry((node, to, kind.to_string(), term.to_string()))
                .or_default()
                .push_back(at);
        } else if let Some((kind, from, term)) = message(rest, " <- ") {
            let key = (from, node, kind.to_string(), term.to_string());
            if let Some(sent) = sends.get_mut(&key).and_then(VecDeque::pop_front) {
                messages.push(json!({
                    "from": from, "to": node, "sent": sent, "at": at, "kind": kind,
                    "text": format!("n{from} -> n{node} {}", rest.trim_start_matches(" <- ").split_once(' ').map_or("", |(_, detail)| detail)),
                }));
            }
        } else if let Some(role_text) = rest.strip_prefix(" becomes ") {
            // `n3 becomes Leader in term 4`
            let mut words = role_text.split_whitespace();
            let role = words.next().unwrap_or("?");
            let term = role_text
                .split("in term ")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .unwrap_or("?");
            roles.push(json!({ "node": node, "at": at, "role": role, "term": term }));
        } else if rest.starts_with(" crashes")
            || rest.starts_with(" stops gracefully")
            || rest.contains("the node stops")
        {
            down_since.entry(node).or_insert(at);
        } else if rest.starts_with(" starts (") {
            if let Some(from) = down_since.remove(&node) {
                downs.push(json!({ "node": node, "from": from, "to": at }));
            }
            roles.push(json!({ "node": node, "at": at, "role": "Follower", "term": "" }));
        } else if rest.starts_with(" pauses")
            || rest.starts_with(": disk full for")
            || rest.contains("loses its disk")
            || rest.contains("goes deaf")
            || rest.contains("membership change")
            || rest.contains("forced campaign")
            || rest.contains("transfer leadership")
            || rest.contains("fsync fails")
        {
            faults.push(json!({ "from": at, "to": at, "node": node, "text": line }));
        }
    }
    if let Some((from, text)) = open_fault {
        faults.push(json!({ "from": from, "to": end_us, "text": text }));
    }
    for (node, from) in down_since {
        downs.push(json!({ "node": node, "from": from, "to": end_us }));
    }
    let clients: BTreeSet<u64> = ops.keys().map(|(client, _)| *client).collect();
    json!({
        "nodes": nodes,
        "clients": clients,
        "end": end_us,
        "roles": roles,
        "downs": downs,
        "messages": messages,
        "faults": faults,
        "ops": ops.into_values().collect::<Vec<_>>(),
        "violation": violation,
        "failure": failure,
    })
}

/// `n12 rest` -> (12, " rest").
fn node_prefix(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix('n')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// ` -> n2 Append t4 ...` -> (Append, 2, t4), with `arrow` ` -> ` or ` <- `.
fn message<'a>(rest: &'a str, arrow: &str) -> Option<(&'a str, u64, &'a str)> {
    let rest = rest.strip_prefix(arrow)?;
    let (peer, rest) = node_prefix(rest)?;
    let mut words = rest.split_whitespace();
    let kind = words.next()?;
    let term = words.next()?;
    term.starts_with('t').then_some((kind, peer, term))
}

fn is_partition(line: &str) -> bool {
    [
        "partition ",
        "isolate leader",
        "cut one-way",
        "lease attack",
        "bridge ",
    ]
    .iter()
    .any(|start| line.starts_with(start))
}

/// `client 2: op 17 Put(..) on b"k1" -> n3` starts an operation; `client 2: op 17 -> Done`,
/// `... timed out`, `... outcome unknown` end it.
fn parse_client(at: u64, rest: &str, ops: &mut BTreeMap<(u64, u64), Value>) {
    let Some((client, rest)) = rest.split_once(": op ") else {
        return;
    };
    let Ok(client) = client.parse::<u64>() else {
        return;
    };
    let Some((op, rest)) = rest.split_once(' ') else {
        return;
    };
    let Ok(op) = op.parse::<u64>() else {
        return;
    };
    match ops.get_mut(&(client, op)) {
        None => {
            ops.insert(
                (client, op),
                json!({ "client": client, "op": op, "from": at, "to": Value::Null, "text": rest, "outcome": "" }),
            );
        }
        Some(value) => {
            value["to"] = json!(at);
            value["outcome"] = json!(rest.trim_start_matches("-> "));
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const PAGE: &str = include_str!("timeline.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_becomes_lanes_arrows_faults_operations_and_the_violation() {
        let lines: Vec<(u64, String)> = [
            (0, "n1 becomes Leader in term 2"),
            (1_000, "n1 -> n2 Append t2 prev=(3,2) entries=1 commit=3"),
            (1_800, "n2 <- n1 Append t2 prev=(3,2) entries=1 commit=3"),
            (2_000, "client 1: op 4 Put(b\"c1-1\") on b\"k0\" -> n1"),
            (3_000, "isolate leader n1"),
            (4_000, "n2 crashes (0 unsynced writes survive)"),
            (5_000, "network heals"),
            (6_000, "n2 starts (incarnation 2, term 2, commit 3)"),
            (7_000, "client 1: op 4 -> Done"),
            (
                8_000,
                "VIOLATION: election safety: nodes 1 and 2 are both leader of term 2",
            ),
        ]
        .into_iter()
        .map(|(at, text)| (at, text.to_string()))
        .collect();
        let data = parse(&lines, Some("election safety"));
        assert_eq!(data["nodes"], json!([1, 2]));
        assert_eq!(data["messages"][0]["sent"], json!(1_000));
        assert_eq!(data["messages"][0]["at"], json!(1_800));
        assert_eq!(data["faults"][0]["from"], json!(3_000));
        assert_eq!(data["faults"][0]["to"], json!(5_000));
        assert_eq!(
            data["downs"][0],
            json!({ "node": 2, "from": 4_000, "to": 6_000 })
        );
        assert_eq!(data["ops"][0]["to"], json!(7_000));
        assert_eq!(data["ops"][0]["outcome"], json!("Done"));
        assert_eq!(data["violation"]["at"], json!(8_000));
        let page = render("seed 1", &lines, Some("election safety"));
        assert!(
            page.contains("<canvas") && page.contains("\"violation\""),
            "{page}"
        );
        assert!(!page.contains("__DATA__"));
    }
}
