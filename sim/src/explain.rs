//! `--explain`: a failing seed's story in words, from its trace — which check failed and what
//! it guards, who led in the terms before, which faults struck, and the last steps of the nodes
//! (or the client operations on the key) the violation names.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::trace::stamped;

/// How far back (simulated µs) faults are listed.
const FAULTS_WINDOW_US: u64 = 3_000_000;
/// How many of the involved nodes' last lines are shown.
const LAST_STEPS: usize = 30;
const LEADERS_SHOWN: usize = 8;

/// The check a failure report names, and what that check guards. A shrunk run counts only if
/// it fails the same check.
pub fn check_of(failure: &str) -> (&'static str, &'static str) {
    const CHECKS: [(&str, &str, &str); 27] = [
        ("election safety", "election safety", "at most one leader per term (Raft §5.2)"),
        ("leader completeness", "leader completeness", "every leader holds every entry committed before its term (§5.4)"),
        ("log matching", "log matching", "two logs with an entry of the same index and term agree up to it (§5.3)"),
        ("committed entries differ", "committed entries agree", "an index, once committed anywhere, holds the same entry everywhere (§5.4.3)"),
        ("state machine safety", "state machine safety", "every node applies the committed entry at each index (§5.4.3)"),
        ("state machines of nodes", "replicas agree", "replicas that applied the same index hold identical state"),
        ("linearizability", "linearizability", "the clients' history has a sequential order consistent with real time"),
        ("liveness", "liveness", "once faults heal, a leader is elected and a write applied everywhere in bounded time"),
        ("with durable votes of only", "election quorum", "a leader won durable votes of a majority of the voters it counted with"),
        ("durable on only", "commit quorum", "a commit rests on durable copies held by a majority of the voters it counted with (both majorities while joint)"),
        ("votes before it ever joined", "no outsider votes", "a node that never joined the cluster casts no vote"),
        ("while joining again", "no vote before admission", "a member back without its disk forgot the votes it cast: it votes only once admitted again"),
        ("it joined, back without its disk", "join answered after readmission", "a member back without its disk is told it joined only after a leader removed it or held it as a learner"),
        ("it joined, but", "join answered once a voter", "a node told it joined is a voter in the configuration the answering leader committed"),
        ("before any leader did", "commit by a leader", "only a leader decides that an index is committed; others learn it"),
        ("without an election of its own", "term rises", "a term rises only by an election (never a pre-vote) or by adopting a message's term"),
        (" sent term ", "sent terms", "no node sends a term above its own, but for a pre-vote request or grant (a term no one started)"),
        ("outlives the promise", "lease promise", "while a lease holds, the voters free to vote make no majority: it ends before the lockouts it rests on"),
        ("lease from term", "lease", "while a leader may answer reads from its lease, no other node leads in a later term (§6.4.1)"),
        ("check-quorum:", "check-quorum", "a leader that hears from no majority of its voters steps down within two election_timeout_min_ms intervals (thesis §6.2)"),
        ("uncommitted configuration changes", "one change at a time", "a log holds at most one uncommitted configuration change"),
        ("before any entry of its term committed", "change after own-term commit", "a leader changes the configuration only after an entry of its term committed"),
        ("installs a snapshot", "snapshot installs committed state", "a snapshot covers only committed entries, ending in the committed entry at its index"),
        ("went back", "monotonic", "terms and commit indexes never move backwards"),
        ("refused", "honest peer messages", "an honest peer never sends a message the receiver must refuse"),
        ("nondeterminism", "determinism", "two runs of a seed are identical"),
        ("panic", "core assertion", "an invariant the code asserts itself"),
    ];
    CHECKS
        .iter()
        .find(|(phrase, _, _)| failure.contains(phrase))
        .map_or(("other", "see the message"), |&(_, name, guards)| {
            (name, guards)
        })
}

/// The story of a failed run, from its recorded trace lines.
pub fn explain(failure: &str, lines: &[(u64, String)]) -> String {
    let mut text = String::new();
    let (check, guards) = check_of(failure);
    let violation_at = lines
        .iter()
        .rev()
        .find(|(_, line)| line.starts_with("VIOLATION"))
        .or(lines.last())
        .map_or(0, |(at, _)| *at);
    let before = |at: &u64| *at <= violation_at;
    let _ = writeln!(text, "What failed: the {check} check — {guards}.");
    let _ = writeln!(text, "  {failure}");

    let leaders: Vec<&(u64, String)> = lines
        .iter()
        .filter(|(at, line)| before(at) && line.contains(" becomes Leader in term "))
        .collect();
    let _ = writeln!(text, "\nWho led (the last {LEADERS_SHOWN} elections won):");
    if leaders.is_empty() {
        let _ = writeln!(text, "  no node became leader");
    }
    for (at, line) in leaders.iter().rev().take(LEADERS_SHOWN).rev() {
        let _ = writeln!(text, "  {}", stamped(*at, line));
    }

    let _ = writeln!(
        text,
        "\nFaults in the {} s before:",
        FAULTS_WINDOW_US / 1_000_000
    );
    let window_start = violation_at.saturating_sub(FAULTS_WINDOW_US);
    let faults: Vec<&(u64, String)> = lines
        .iter()
        .filter(|(at, line)| *at >= window_start && before(at) && is_fault(line))
        .filter(|(_, line)| !line.contains("(incarnation 1,"))
        .collect();
    if faults.is_empty() {
        let _ = writeln!(text, "  none");
    }
    for (at, line) in faults {
        let _ = writeln!(text, "  {}", stamped(*at, line));
    }

    if let Some(key) = key_named(failure) {
        let _ = writeln!(text, "\nThe last operations on key {key}:");
        for line in operations_on(lines, &key) {
            let _ = writeln!(text, "  {line}");
        }
    }
    let nodes = nodes_named(failure);
    if !nodes.is_empty() {
        let named: Vec<String> = nodes.iter().map(|id| format!("n{id}")).collect();
        let _ = writeln!(
            text,
            "\nThe last steps of {} before the violation:",
            named.join(", ")
        );
        let mentions = |line: &str| {
            named.iter().any(|node| {
                line.split(|c: char| !c.is_alphanumeric())
                    .any(|word| word == node.as_str())
            })
        };
        let steps: Vec<&(u64, String)> = lines
            .iter()
            .filter(|(at, line)| before(at) && !line.starts_with("client") && mentions(line))
            .collect();
        for (at, line) in steps.iter().rev().take(LAST_STEPS).rev() {
            let _ = writeln!(text, "  {}", stamped(*at, line));
        }
    }
    text
}

/// Lines that record a fault, a membership change or a recovery.
fn is_fault(line: &str) -> bool {
    const MARKERS: [&str; 18] = [
        "partition",
        "isolate",
        "cut ",
        "heals",
        "crash",
        " starts (",
        "pauses",
        "resumes",
        "deaf",
        "disk",
        "fsync",
        "lease attack",
        "transfer leadership",
        "forced campaign",
        "membership change",
        "asks n",
        "bridge",
        "hears no one",
    ];
    !line.starts_with("client")
        && !line.starts_with("seed ")
        && MARKERS.iter().any(|marker| line.contains(marker))
}

/// The node ids a violation names: `node 3`, `nodes 2 and 5`, `leader 1`, `n4`.
fn nodes_named(failure: &str) -> BTreeSet<u64> {
    let words: Vec<&str> = failure
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let mut nodes = BTreeSet::new();
    for (position, word) in words.iter().enumerate() {
        let next = words.get(position + 1).and_then(|w| w.parse::<u64>().ok());
        match *word {
            "node" | "nodes" | "leader" => nodes.extend(next),
            "and" if position > 0 && words[position - 1].parse::<u64>().is_ok() => {
                nodes.extend(next)
            }
            _ => {
                if let Some(id) = word.strip_prefix('n').and_then(|id| id.parse().ok()) {
                    nodes.insert(id);
                }
            }
        }
    }
    nodes
}

/// The key a linearizability failure names (`the history of key k2`).
fn key_named(failure: &str) -> Option<String> {
    let rest = failure.split("of key ").nth(1)?;
    let key: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!key.is_empty()).then_some(key)
}

/// The last client operations on `key`, each with its outcome when it has one.
fn operations_on(lines: &[(u64, String)], key: &str) -> Vec<String> {
    const SHOWN: usize = 24;
    let quoted = format!("on b\"{key}\"");
    // `client 2: op 113 Put(..) on b"k1" -> n2`, answered by `client 2: op 113 -> ...`.
    let op_of = |line: &str| -> Option<String> {
        let (client, rest) = line.split_once(": op ")?;
        let op = rest.split_whitespace().next()?;
        Some(format!("{client}: op {op} "))
    };
    let started: Vec<&(u64, String)> = lines
        .iter()
        .filter(|(_, line)| line.starts_with("client") && line.contains(&quoted))
        .collect();
    let mut shown = Vec::new();
    for (at, line) in started.iter().rev().take(SHOWN).rev() {
        let mut entry = stamped(*at, line);
        if let Some(prefix) = op_of(line) {
            let answer = lines.iter().find(|(answered_at, answer)| {
                answered_at >= at && answer.starts_with(&prefix) && !answer.contains(&quoted)
            });
            if let Some((answered_at, answer)) = answer {
                let outcome = answer
                    .split_once(&prefix)
                    .map_or("", |(_, outcome)| outcome);
                let _ = write!(
                    entry,
                    "   => {} at {}.{:03} ms",
                    outcome.trim_start_matches("-> "),
                    answered_at / 1000,
                    answered_at % 1000
                );
            }
        }
        shown.push(entry);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_and_key_a_violation_names_are_found() {
        let nodes = nodes_named("election safety: nodes 3 and 2 are both leader of term 1");
        assert_eq!(nodes.into_iter().collect::<Vec<_>>(), vec![2, 3]);
        let nodes = nodes_named("leader 5 (term 14) committed index 83 durable on only 2 of 4");
        assert_eq!(nodes.into_iter().collect::<Vec<_>>(), vec![5]);
        assert_eq!(
            key_named("linearizability: the history of key k2 (71 operations) has no order"),
            Some("k2".to_string())
        );
        assert_eq!(
            check_of("node 3 (Follower) moved from term 0 to 1 without an election of its own").0,
            "term rises"
        );
        assert_eq!(
            check_of("leader 1 (term 1) committed index 5 (term 1) durable on only 1 of 3").0,
            "commit quorum"
        );
        let rival = "node 2 leads in term 7 while node 1's lease from term 6 still holds";
        assert_eq!(check_of(rival).0, "lease");
        assert_eq!(
            nodes_named(rival).into_iter().collect::<Vec<_>>(),
            vec![1, 2]
        );
        let outlived = "node 1's lease from term 4 outlives the promise it rests on: voters [2, 3]";
        assert_eq!(check_of(outlived).0, "lease promise");
        let lingering = "check-quorum: node 3 still leads term 2 though it has heard from no \
                         majority of its voters {1, 2, 3} (outgoing {}) for 400 ms of its clock";
        assert_eq!(check_of(lingering).0, "check-quorum");
        let amnesiac = "node 1 votes for node 2 in term 9 while joining again after losing its \
                        disk (not admitted yet)";
        assert_eq!(check_of(amnesiac).0, "no vote before admission");
        let told = "node 2 told node 4 it joined, but node 4 is no voter in the configuration \
                    node 2 committed (voters {1, 2, 3})";
        assert_eq!(check_of(told).0, "join answered once a voter");
        let retried = "node 1 told node 3 it joined, back without its disk, though no leader \
                       has held it out of its voters since the loss (answered as a retry: it \
                       may count what it forgot)";
        assert_eq!(check_of(retried).0, "join answered after readmission");
        let counted = "leader 2 (term 1) committed index 15 (term 1) durable on only 1 of 3 of \
                       the voters it counts with (voters {1, 2, 3}, outgoing {}): on [1] (what \
                       [3] acknowledged since losing its disk does not count: not admitted \
                       again yet)";
        assert_eq!(check_of(counted).0, "commit quorum");
        assert_eq!(
            nodes_named(lingering).into_iter().collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn an_operation_is_shown_with_its_outcome() {
        let lines = vec![
            (1_000, "client 2: op 7 Get on b\"k1\" -> n3".to_string()),
            (1_500, "n3 -> n1 ReadIndex t2 seq=1".to_string()),
            (2_000, "client 2: op 7 -> Value(None)".to_string()),
        ];
        let shown = operations_on(&lines, "k1");
        assert_eq!(shown.len(), 1);
        assert!(shown[0].contains("=> Value(None) at 2.000 ms"), "{shown:?}");
    }
}
