//! What the admin shows people and scripts: the system's status (`GET /v1/status`, JSON) and the
//! same as a small HTML page (`GET /`) with no external assets, refreshed every two seconds.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::directory::{Directory, Move, MovePhase};
use crate::server::event_loop::{role_name, NodeView};

#[derive(Debug, Serialize)]
pub struct SystemStatus {
    pub admin: AdminStatus,
    /// False until the admin group's first replica has set the system's settings.
    pub initialized: bool,
    pub partitions: u32,
    pub group_size: u32,
    pub groups: Vec<GroupStatus>,
    /// Partitions moving between groups, and rolled-back moves not yet cleaned up.
    pub moves: Vec<MoveStatus>,
    /// Partitions the table still has to move to reach the one it aims at.
    pub moves_pending: usize,
    /// The latest moves that ended, oldest first ("finished" or "rolled-back").
    pub moves_ended: Vec<MoveStatus>,
    /// Moves ever started, committed and rolled back.
    pub move_totals: MoveCounts,
}

#[derive(Debug, Serialize)]
pub struct MoveCounts {
    pub started: u64,
    pub committed: u64,
    pub rolled_back: u64,
}

#[derive(Debug, Serialize)]
pub struct MoveStatus {
    pub partition: u32,
    pub from: u64,
    pub to: u64,
    pub epoch: u64,
    /// In flight: "copying", "committed" or "rolled-back"; ended: "finished" or "rolled-back".
    pub phase: &'static str,
}

impl MoveStatus {
    fn of(moving: &Move, phase: &'static str) -> Self {
        MoveStatus {
            partition: moving.partition,
            from: moving.from,
            to: moving.to,
            epoch: moving.epoch,
            phase,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AdminStatus {
    /// The admin replica that answered (this status is its view).
    pub replica: u64,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_address: Option<String>,
    pub applied_index: u64,
    pub replicas: BTreeMap<u64, String>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub leader_term: u64,
    /// Partitions the group owns.
    pub partitions: usize,
    /// Being retired: its partitions move away.
    pub retiring: bool,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub id: u64,
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

impl SystemStatus {
    pub fn of(directory: &Directory, view: &NodeView) -> Self {
        let table = directory.table();
        SystemStatus {
            admin: AdminStatus {
                replica: view.status.id,
                role: role_name(view.status.role),
                term: view.status.term,
                leader: view.status.leader,
                leader_address: view.leader_address.clone(),
                applied_index: view.status.applied,
                replicas: directory.replica_addresses().clone(),
            },
            initialized: directory.is_initialized(),
            partitions: directory.settings().partitions,
            group_size: directory.settings().group_size,
            groups: directory
                .groups()
                .iter()
                .map(|(&id, group)| GroupStatus {
                    id,
                    leader: group.leader,
                    leader_term: group.leader_term,
                    partitions: table.map_or(0, |table| table.load(id)),
                    retiring: group.retiring,
                    members: group
                        .members
                        .iter()
                        .map(|&member| {
                            let server = &directory.servers()[&member];
                            MemberStatus {
                                id: member,
                                address: server.address.clone(),
                                labels: server.labels.iter().cloned().collect(),
                            }
                        })
                        .collect(),
                })
                .collect(),
            moves: directory
                .moves()
                .runs()
                .map(|moving| MoveStatus::of(moving, moving.phase.name()))
                .collect(),
            moves_pending: table.map_or(0, |table| directory.moves().pending(table)),
            moves_ended: directory
                .moves()
                .ended()
                .map(|moving| match moving.phase {
                    MovePhase::RolledBack => MoveStatus::of(moving, MovePhase::RolledBack.name()),
                    _ => MoveStatus::of(moving, "finished"),
                })
                .collect(),
            move_totals: {
                let totals = directory.moves().totals();
                MoveCounts {
                    started: totals.started,
                    committed: totals.committed,
                    rolled_back: totals.rolled_back,
                }
            },
        }
    }
}

/// Escapes text for HTML (addresses and labels come from the servers that registered).
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn node(id: Option<u64>) -> String {
    id.map_or_else(|| "none".to_string(), |id| id.to_string())
}

/// The page: the admin group, then one row per data group.
pub fn render(status: &SystemStatus) -> String {
    let mut page = String::new();
    let admin = &status.admin;
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Ravel — sharded store</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d2330; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #d8dce6; padding: .35rem .8rem; text-align: left; }}
th {{ background: #f1f3f8; }}
.leader {{ font-weight: 600; color: #0a6b2d; }}
.none {{ color: #a33; }}
.bar {{ background: #4a78c2; height: .7rem; display: inline-block; }}
</style></head><body>
<h1>Ravel sharded store</h1>
<p>Admin replica {replica} ({role}, term {term}); admin leader: <span class="{leader_class}">{leader}</span>;
applied index {applied}. {partitions} partitions, groups of {group_size}.</p>
"#,
        replica = admin.replica,
        role = admin.role,
        term = admin.term,
        leader_class = if admin.leader.is_some() {
            "leader"
        } else {
            "none"
        },
        leader = escape(&match (&admin.leader, &admin.leader_address) {
            (Some(id), Some(address)) => format!("{id} at {address}"),
            (id, _) => node(*id),
        }),
        applied = admin.applied_index,
        partitions = status.partitions,
        group_size = status.group_size,
    );
    page.push_str("<h2>Admin replicas</h2>\n<table><tr><th>id</th><th>address</th></tr>\n");
    for (id, address) in &admin.replicas {
        let _ = writeln!(page, "<tr><td>{id}</td><td>{}</td></tr>", escape(address));
    }
    page.push_str("</table>\n<h2>Data groups</h2>\n");
    if status.groups.is_empty() {
        page.push_str(
            "<p class=\"none\">No data group yet: start data nodes with \
             <code>ravel node --admin ADDR</code>.</p>\n",
        );
    } else {
        page.push_str(
            "<table id=\"groups\"><tr><th>group</th><th>leader</th><th>term</th>\
             <th>partitions</th><th></th><th>members</th></tr>\n",
        );
        for group in &status.groups {
            let members: Vec<String> = group
                .members
                .iter()
                .map(|member| {
                    let class = if Some(member.id) == group.leader {
                        " class=\"leader\""
                    } else {
                        ""
                    };
                    format!(
                        "<span{class}>{} ({})</span>",
                        member.id,
                        escape(&member.address)
                    )
                })
                .collect();
            let width = if status.partitions == 0 {
                0
            } else {
                group.partitions * 200 / status.partitions as usize
            };
            let _ = writeln!(
                page,
                "<tr><td>{id}</td><td class=\"{leader_class}\">{leader}</td><td>{term}</td>\
                 <td>{partitions}</td><td><span class=\"bar\" style=\"width:{width}px\"></span></td>\
                 <td>{members}</td></tr>",
                id = group.id,
                leader_class = if group.leader.is_some() { "leader" } else { "none" },
                leader = node(group.leader),
                term = group.leader_term,
                partitions = if group.retiring {
                    format!("{} (retiring)", group.partitions)
                } else {
                    group.partitions.to_string()
                },
                members = members.join(", "),
            );
        }
        page.push_str("</table>\n");
    }
    if status.moves_pending > 0 || !status.moves.is_empty() || !status.moves_ended.is_empty() {
        let totals = &status.move_totals;
        let _ = writeln!(
            page,
            "<h2>Moving partitions</h2>\n<p>{} partitions still to move; {} moves started, {} \
             committed, {} rolled back.</p>",
            status.moves_pending, totals.started, totals.committed, totals.rolled_back
        );
        for (id, title, moves) in [
            ("moves", "In flight", &status.moves),
            ("moves-ended", "Ended (latest last)", &status.moves_ended),
        ] {
            if moves.is_empty() {
                continue;
            }
            let _ = writeln!(
                page,
                "<h3>{title}</h3>\n<table id=\"{id}\"><tr><th>partition</th><th>from group</th>\
                 <th>to group</th><th>epoch</th><th>phase</th></tr>"
            );
            for moving in moves {
                let _ = writeln!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    moving.partition, moving.from, moving.to, moving.epoch, moving.phase
                );
            }
            page.push_str("</table>\n");
        }
    }
    page.push_str(
        "<h2>API</h2>\n<p><code>POST /put {\"key\": K, \"val\": V}</code>, \
         <code>POST /get {\"key\": K}</code>, <code>POST /delete {\"key\": K}</code>, \
         <code>GET /v1/status</code>.</p>\n</body></html>\n",
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_servers_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        let status = SystemStatus {
            admin: AdminStatus {
                replica: 1,
                role: "leader",
                term: 3,
                leader: Some(1),
                leader_address: Some("127.0.0.1:7300".to_string()),
                applied_index: 9,
                replicas: BTreeMap::new(),
            },
            initialized: true,
            partitions: 271,
            group_size: 3,
            groups: vec![GroupStatus {
                id: 1,
                leader: None,
                leader_term: 0,
                partitions: 271,
                retiring: true,
                members: vec![MemberStatus {
                    id: 100,
                    address: "<img src=x onerror=alert(1)>".to_string(),
                    labels: BTreeMap::new(),
                }],
            }],
            moves: vec![MoveStatus {
                partition: 7,
                from: 1,
                to: 2,
                epoch: 2,
                phase: "copying",
            }],
            moves_pending: 3,
            moves_ended: vec![MoveStatus {
                partition: 5,
                from: 2,
                to: 1,
                epoch: 4,
                phase: "rolled-back",
            }],
            move_totals: MoveCounts {
                started: 2,
                committed: 0,
                rolled_back: 1,
            },
        };
        let page = render(&status);
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("271 (retiring)"), "{page}");
        assert!(
            page.contains("<td>7</td><td>1</td><td>2</td><td>2</td><td>copying</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td>5</td><td>2</td><td>1</td><td>4</td><td>rolled-back</td>"),
            "{page}"
        );
        assert!(
            page.contains("2 moves started, 0 committed, 1 rolled back"),
            "{page}"
        );
    }
}
