//! The directory's state and how each command changes it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::command::{DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery};
use super::moves::Moves;
use crate::core::{LogIndex, NodeId, Term};
use crate::replica::{Applied, SnapshotImage, StateMachine};
use crate::sharding::{GroupId, PartitionTable, Placement, PARTITIONS_DEFAULT};

/// Labels a server may carry, at most, and bytes per label name or value.
const LABELS_MAX: usize = 16;
const LABEL_BYTES_MAX: usize = 256;
/// Bytes of a server's address, at most.
const ADDRESS_BYTES_MAX: usize = 256;

/// Directory mistakes the sharded simulator must catch (feature `planted-bugs`; never in a
/// release of the node).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct DirectoryBugs {
    /// Record a reported leader whatever its term: a late report of an older term wins.
    pub report_ignores_term: bool,
    /// Give a retried registration a new id instead of the one its token got.
    pub register_ignores_token: bool,
    /// The mover drops a partition at its source as soon as it is frozen, before the move's
    /// commit point (and exports what is left: nothing).
    pub drop_before_commit: bool,
    /// The mover commits a move once the destination ingested the first chunk, not the last:
    /// the owner switches before the destination holds the partition.
    pub commit_before_ingest: bool,
}

#[cfg(feature = "planted-bugs")]
impl DirectoryBugs {
    pub const NAMES: [&'static str; 4] = [
        "report-ignores-term",
        "register-ignores-token",
        "drop-before-commit",
        "commit-before-ingest",
    ];

    pub fn named(name: &str) -> Option<Self> {
        let mut bugs = DirectoryBugs::default();
        match name {
            "report-ignores-term" => bugs.report_ignores_term = true,
            "register-ignores-token" => bugs.register_ignores_token = true,
            "drop-before-commit" => bugs.drop_before_commit = true,
            "commit-before-ingest" => bugs.commit_before_ingest = true,
            _ => return None,
        }
        Some(bugs)
    }
}

/// Fixed when the directory is created.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct DirectorySettings {
    /// Partitions of the key space, for the life of the system.
    pub partitions: u32,
    /// Replicas a group is filled to before a new group is started.
    pub group_size: u32,
    /// The partition table is placed once this many groups have a member; until then no key
    /// has an owner.
    pub initial_groups: u32,
    /// The first id given to a server; the directory's own replicas use ids below it.
    pub first_server_id: NodeId,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DirectorySettings {
            partitions: PARTITIONS_DEFAULT,
            group_size: 3,
            initial_groups: 1,
            first_server_id: 100,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ServerInfo {
    pub address: String,
    pub labels: Vec<(String, String)>,
    pub group: GroupId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct GroupInfo {
    pub members: BTreeSet<NodeId>,
    /// The latest leader heard of, if it is still a member.
    pub leader: Option<NodeId>,
    /// The term of the latest leader heard of: reports of older terms are ignored.
    pub leader_term: Term,
    /// The member told to start the group rather than join it (the first one placed in it while
    /// it was empty), until it leaves. A retried registration of it must get the same answer —
    /// start it — or it would try to join members that are waiting to join it.
    pub founder: Option<NodeId>,
    /// Being retired: its partitions move away, no new server is placed in it.
    pub retiring: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Directory {
    settings: DirectorySettings,
    servers: BTreeMap<NodeId, ServerInfo>,
    groups: BTreeMap<GroupId, GroupInfo>,
    table: Option<PartitionTable>,
    next_server: NodeId,
    next_group: GroupId,
    /// Each registered server's request token, so that a retried request gets the same answer.
    tokens: BTreeMap<u64, NodeId>,
    /// Where the directory's own replicas are reached.
    replica_addresses: BTreeMap<NodeId, String>,
    /// Partitions moving between groups, and the table they move towards.
    moves: Moves,
    /// False until the settings are set by `Initialize` (a directory made with
    /// [`Directory::new`] has them from the start).
    initialized: bool,
    applied_index: LogIndex,
    #[cfg(feature = "planted-bugs")]
    bugs: DirectoryBugs,
}

/// Bounds on the settings, so a typo cannot make a system that cannot work.
const PARTITIONS_MAX: u32 = 1 << 16;
const GROUP_SIZE_MAX: u32 = 9;
const INITIAL_GROUPS_MAX: u32 = 1024;

impl DirectorySettings {
    /// Why these settings cannot make a working system, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!(
                "partitions must be 1 to {PARTITIONS_MAX}, not {}",
                self.partitions
            ));
        }
        if !(1..=GROUP_SIZE_MAX).contains(&self.group_size) {
            return Err(format!(
                "the group size must be 1 to {GROUP_SIZE_MAX}, not {}",
                self.group_size
            ));
        }
        if !(1..=INITIAL_GROUPS_MAX.min(self.partitions)).contains(&self.initial_groups) {
            return Err(format!(
                "the initial groups must be 1 to {} (and at most the partitions), not {}",
                INITIAL_GROUPS_MAX, self.initial_groups
            ));
        }
        if self.first_server_id == 0 {
            return Err("the first server id must be at least 1".to_string());
        }
        Ok(())
    }
}

impl Directory {
    /// A directory with its settings (a test's, or one restored).
    pub fn new(settings: DirectorySettings) -> Self {
        let mut directory = Directory::awaiting_settings();
        let outcome = directory.initialize(settings);
        assert_eq!(outcome, DirectoryOutcome::Initialized, "valid settings");
        directory
    }

    /// A directory replica as it starts: its settings come from the log (`Initialize`), so
    /// every replica applies registrations with the same ones.
    pub fn awaiting_settings() -> Self {
        let settings = DirectorySettings::default();
        Directory {
            next_server: settings.first_server_id,
            settings,
            servers: BTreeMap::new(),
            groups: BTreeMap::new(),
            table: None,
            next_group: 1,
            tokens: BTreeMap::new(),
            replica_addresses: BTreeMap::new(),
            moves: Moves::default(),
            initialized: false,
            applied_index: 0,
            #[cfg(feature = "planted-bugs")]
            bugs: DirectoryBugs::default(),
        }
    }

    /// Plants mistakes for the simulator to find.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bugs: DirectoryBugs) {
        self.bugs = bugs;
    }

    fn initialize(&mut self, settings: DirectorySettings) -> DirectoryOutcome {
        if self.initialized {
            return if settings == self.settings {
                DirectoryOutcome::Initialized
            } else {
                DirectoryOutcome::Refused(format!(
                    "the system's settings were fixed when it was created ({:?}); they cannot \
                     change",
                    self.settings
                ))
            };
        }
        if let Err(reason) = settings.check() {
            return DirectoryOutcome::Refused(reason);
        }
        assert!(
            self.servers.is_empty(),
            "no server registers before the settings"
        );
        self.next_server = settings.first_server_id;
        self.settings = settings;
        self.initialized = true;
        DirectoryOutcome::Initialized
    }

    pub fn settings(&self) -> &DirectorySettings {
        &self.settings
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    pub fn replica_addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.replica_addresses
    }

    pub fn table(&self) -> Option<&PartitionTable> {
        self.table.as_ref()
    }

    pub fn groups(&self) -> &BTreeMap<GroupId, GroupInfo> {
        &self.groups
    }

    pub fn servers(&self) -> &BTreeMap<NodeId, ServerInfo> {
        &self.servers
    }

    pub fn moves(&self) -> &Moves {
        &self.moves
    }

    fn execute(&mut self, command: DirectoryCommand) -> DirectoryOutcome {
        match command {
            DirectoryCommand::Initialize(settings) => self.initialize(settings),
            DirectoryCommand::Register {
                token,
                address,
                labels,
            } => self.register(token, address, labels),
            DirectoryCommand::Leave { node } => self.leave(node),
            DirectoryCommand::ReportLeader {
                group,
                leader,
                term,
            } => self.report_leader(group, leader, term),
            DirectoryCommand::RecordReplicaAddress { node, address } => {
                self.replica_addresses.insert(node, address);
                DirectoryOutcome::AddressRecorded
            }
            DirectoryCommand::CommitMove { partition, epoch } => {
                let Some(table) = self.table.as_mut() else {
                    return DirectoryOutcome::Refused("no partition table yet".to_string());
                };
                DirectoryOutcome::Move(self.moves.commit(table, partition, epoch))
            }
            DirectoryCommand::AbortMove { partition, epoch } => {
                let Some(table) = self.table.as_ref() else {
                    return DirectoryOutcome::Refused("no partition table yet".to_string());
                };
                DirectoryOutcome::Move(self.moves.abort(table, partition, epoch))
            }
            DirectoryCommand::FinishMove { partition, epoch } => {
                let Some(table) = self.table.as_ref() else {
                    return DirectoryOutcome::Refused("no partition table yet".to_string());
                };
                DirectoryOutcome::Move(self.moves.finish(table, partition, epoch))
            }
            DirectoryCommand::ForgetMove { partition, epoch } => {
                let Some(table) = self.table.as_ref() else {
                    return DirectoryOutcome::Refused("no partition table yet".to_string());
                };
                DirectoryOutcome::Move(self.moves.forget(table, partition, epoch))
            }
            DirectoryCommand::RetireGroup { group } => self.retire_group(group),
            DirectoryCommand::SetMoveLimit { limit } => {
                let Some(table) = self.table.as_ref() else {
                    return DirectoryOutcome::Refused("no partition table yet".to_string());
                };
                match self.moves.set_limit(table, limit) {
                    Ok(()) => DirectoryOutcome::MoveLimitSet,
                    Err(reason) => DirectoryOutcome::Refused(reason),
                }
            }
            DirectoryCommand::SetMoveRate { bytes_per_second } => {
                match self.moves.set_rate(bytes_per_second) {
                    Ok(()) => DirectoryOutcome::MoveRateSet,
                    Err(reason) => DirectoryOutcome::Refused(reason),
                }
            }
        }
    }

    fn register(
        &mut self,
        token: u64,
        address: String,
        labels: Vec<(String, String)>,
    ) -> DirectoryOutcome {
        if !self.initialized {
            return DirectoryOutcome::NotInitialized;
        }
        #[cfg(feature = "planted-bugs")]
        let token_checked = !self.bugs.register_ignores_token;
        #[cfg(not(feature = "planted-bugs"))]
        let token_checked = true;
        if let Some(&node) = self.tokens.get(&token).filter(|_| token_checked) {
            return self.registered(node);
        }
        if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
            return DirectoryOutcome::Refused(format!(
                "a server's address must have 1 to {ADDRESS_BYTES_MAX} bytes"
            ));
        }
        let too_long = |text: &String| text.len() > LABEL_BYTES_MAX;
        if labels.len() > LABELS_MAX
            || labels
                .iter()
                .any(|(name, value)| name.is_empty() || too_long(name) || too_long(value))
        {
            return DirectoryOutcome::Refused(format!(
                "at most {LABELS_MAX} labels, each a non-empty name and a value of at most \
                 {LABEL_BYTES_MAX} bytes"
            ));
        }
        // The group with the fewest replicas below the target size, else a new one; never one
        // being retired.
        let group = self
            .groups
            .iter()
            .filter(|(_, info)| (info.members.len() as u32) < self.settings.group_size)
            .filter(|(_, info)| !info.retiring)
            .min_by_key(|(&id, info)| (info.members.len(), id))
            .map(|(&id, _)| id)
            .unwrap_or_else(|| {
                let id = self.next_group;
                self.next_group += 1;
                self.groups.insert(id, GroupInfo::default());
                id
            });
        let node = self.next_server;
        self.next_server += 1;
        self.servers.insert(
            node,
            ServerInfo {
                address,
                labels,
                group,
            },
        );
        let info = self.groups.get_mut(&group).expect("chosen above");
        if info.members.is_empty() {
            info.founder = Some(node);
        }
        info.members.insert(node);
        self.tokens.insert(token, node);
        self.place_table_once_enough_groups();
        self.place_group_once_staffed(group);
        self.registered(node)
    }

    /// The answer to a registered server: its group, the group's leader, and where to join.
    fn registered(&self, node: NodeId) -> DirectoryOutcome {
        let group = self.servers[&node].group;
        let info = &self.groups[&group];
        let mut others: Vec<NodeId> = info
            .members
            .iter()
            .copied()
            .filter(|&member| member != node)
            .collect();
        if info.founder == Some(node) {
            others.clear();
        }
        // The leader's first: the join workflow asks it directly.
        others.sort_by_key(|&member| (Some(member) != info.leader, member));
        DirectoryOutcome::Registered {
            node,
            group,
            partitions: self.settings.partitions,
            leader: info.leader,
            seeds: others
                .into_iter()
                .map(|member| self.servers[&member].address.clone())
                .collect(),
        }
    }

    /// The first table, once `initial_groups` groups have members; never recomputed after.
    fn place_table_once_enough_groups(&mut self) {
        let staffed: BTreeSet<GroupId> = self
            .groups
            .iter()
            .filter(|(_, info)| !info.members.is_empty())
            .map(|(&id, _)| id)
            .collect();
        if self.table.is_none() && staffed.len() as u32 >= self.settings.initial_groups {
            let owners = Placement::default().initial(self.settings.partitions, &staffed);
            self.table = Some(PartitionTable::new(owners));
        }
    }

    /// A group that has just reached its target size and owns nothing gets its share of the
    /// table: the table moves towards one with the group added, a few partitions at a time.
    fn place_group_once_staffed(&mut self, group: GroupId) {
        let Some(table) = &self.table else {
            return;
        };
        let staffed = self.groups[&group].members.len() as u32 >= self.settings.group_size;
        let owners = self.moves.target().unwrap_or(table.owners()).to_vec();
        if !staffed || owners.contains(&group) {
            return;
        }
        let placed: BTreeSet<GroupId> = owners.iter().copied().collect();
        let target = Placement::default().add_group(&owners, &placed, group);
        if target.contains(&group) {
            self.moves.aim_at(table, target);
        }
    }

    /// Retires `group`: the table moves towards one without it, each of its partitions to the
    /// first remaining group clockwise with room (nothing else moves). Refused for the last
    /// group that owns partitions.
    fn retire_group(&mut self, group: GroupId) -> DirectoryOutcome {
        let Some(info) = self.groups.get(&group) else {
            return DirectoryOutcome::Refused(format!("group {group} does not exist"));
        };
        let Some(table) = &self.table else {
            return DirectoryOutcome::Refused(
                "no partition table yet: there is nothing to move".to_string(),
            );
        };
        let owners = self.moves.target().unwrap_or(table.owners()).to_vec();
        let moving_away = |owners: &[GroupId]| {
            let current = owners.iter().filter(|&&owner| owner == group).count();
            current.max(table.load(group)) as u32
        };
        if info.retiring {
            return DirectoryOutcome::Retiring {
                partitions: moving_away(&owners),
            };
        }
        let mut placed: BTreeSet<GroupId> = owners.iter().copied().collect();
        placed.insert(group);
        if placed.len() < 2 {
            return DirectoryOutcome::Refused(format!(
                "group {group} is the only group that owns partitions; add a group before \
                 retiring it"
            ));
        }
        let target = Placement::default().remove_group(&owners, &placed, group);
        let partitions = moving_away(&owners);
        self.groups.get_mut(&group).expect("found above").retiring = true;
        if partitions > 0 {
            let table = self.table.as_ref().expect("found above");
            self.moves.aim_at(table, target);
        }
        DirectoryOutcome::Retiring { partitions }
    }

    fn leave(&mut self, node: NodeId) -> DirectoryOutcome {
        let Some(server) = self.servers.get(&node) else {
            return DirectoryOutcome::Refused(format!(
                "node {node} is not a server of this system"
            ));
        };
        let group = server.group;
        let info = &self.groups[&group];
        // Owned now, or to be owned once the moves in flight end.
        let owned = self
            .table
            .as_ref()
            .map_or(0, |table| table.load(group))
            .max(self.moves.target().map_or(0, |target| {
                target.iter().filter(|&&owner| owner == group).count()
            }));
        if info.members.len() == 1 && owned > 0 {
            return DirectoryOutcome::Refused(format!(
                "node {node} is the last replica of group {group}, which owns {owned} partitions; \
                 move them to another group first"
            ));
        }
        self.servers.remove(&node);
        self.tokens.retain(|_, registered| *registered != node);
        let info = self
            .groups
            .get_mut(&group)
            .expect("a server's group exists");
        info.members.remove(&node);
        if info.leader == Some(node) {
            info.leader = None;
        }
        if info.founder == Some(node) {
            info.founder = None;
        }
        let info = &self.groups[&group];
        let mut members: Vec<NodeId> = info.members.iter().copied().collect();
        members.sort_by_key(|&member| (Some(member) != info.leader, member));
        DirectoryOutcome::Left {
            group,
            members: members
                .into_iter()
                .map(|member| self.servers[&member].address.clone())
                .collect(),
        }
    }

    fn report_leader(&mut self, group: GroupId, leader: NodeId, term: Term) -> DirectoryOutcome {
        let Some(info) = self.groups.get_mut(&group) else {
            return DirectoryOutcome::Refused(format!("group {group} does not exist"));
        };
        if !info.members.contains(&leader) {
            return DirectoryOutcome::Refused(format!(
                "node {leader} is not a member of group {group}"
            ));
        }
        #[cfg(feature = "planted-bugs")]
        let term_checked = !self.bugs.report_ignores_term;
        #[cfg(not(feature = "planted-bugs"))]
        let term_checked = true;
        let stale =
            term < info.leader_term || (term == info.leader_term && info.leader != Some(leader));
        if term_checked && stale {
            return DirectoryOutcome::LeaderStale {
                recorded: info.leader_term,
            };
        }
        info.leader = Some(leader);
        info.leader_term = term;
        DirectoryOutcome::LeaderRecorded
    }
}

/// The directory encoded (it is small: encoded on the replica's thread).
#[derive(Debug)]
pub struct DirectoryImage(Bytes);

impl SnapshotImage for DirectoryImage {
    fn encode(self: Box<Self>) -> Bytes {
        self.0
    }
}

impl StateMachine for Directory {
    type Outcome = DirectoryOutcome;
    type Query = DirectoryQuery;
    type ReadAnswer = DirectoryAnswer;
    type Image = DirectoryImage;

    fn apply(&mut self, index: LogIndex, command: &Bytes) -> Applied<DirectoryOutcome> {
        assert_eq!(
            index,
            self.applied_index + 1,
            "entries must be applied in order"
        );
        self.applied_index = index;
        match DirectoryCommand::decode(command) {
            Ok(command) => {
                let registered = match &command {
                    DirectoryCommand::RecordReplicaAddress { node, address } => {
                        Some((*node, address.clone()))
                    }
                    _ => None,
                };
                Applied {
                    outcome: self.execute(command),
                    registered,
                }
            }
            Err(error) => Applied {
                outcome: DirectoryOutcome::Invalid(error.to_string()),
                registered: None,
            },
        }
    }

    fn skip(&mut self, index: LogIndex) {
        assert_eq!(
            index,
            self.applied_index + 1,
            "entries must be applied in order"
        );
        self.applied_index = index;
    }

    fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    fn read(&self, query: &DirectoryQuery) -> DirectoryAnswer {
        match query {
            DirectoryQuery::Route(partition) => DirectoryAnswer::Route(
                self.table
                    .as_ref()
                    .and_then(|table| table.owner(*partition))
                    .map(|(group, epoch)| (group, epoch, self.groups[&group].leader)),
            ),
            DirectoryQuery::Group(group) => DirectoryAnswer::Group(self.groups.get(group).cloned()),
            DirectoryQuery::Server(node) => {
                DirectoryAnswer::Server(self.servers.get(node).cloned())
            }
            DirectoryQuery::Overview => DirectoryAnswer::Overview(Box::new(self.clone())),
        }
    }

    fn snapshot(&self) -> DirectoryImage {
        DirectoryImage(Bytes::from(crate::storage::encode_exact(self)))
    }

    fn restore(image: &[u8]) -> Result<Self, String> {
        crate::storage::decode(image).map_err(|error| error.to_string())
    }

    fn registration(node: NodeId, address: &str) -> Bytes {
        DirectoryCommand::RecordReplicaAddress {
            node,
            address: address.to_string(),
        }
        .encode()
    }

    fn addresses(&self) -> Vec<(NodeId, String)> {
        self.replica_addresses
            .iter()
            .map(|(&node, address)| (node, address.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(directory: &mut Directory, command: DirectoryCommand) -> DirectoryOutcome {
        let index = directory.applied_index + 1;
        StateMachine::apply(directory, index, &command.encode()).outcome
    }

    fn register(directory: &mut Directory, token: u64) -> DirectoryOutcome {
        let address = format!("10.0.0.{token}:7379");
        apply(
            directory,
            DirectoryCommand::Register {
                token,
                address,
                labels: vec![("zone".to_string(), "a".to_string())],
            },
        )
    }

    fn registered(outcome: DirectoryOutcome) -> (NodeId, GroupId) {
        match outcome {
            DirectoryOutcome::Registered { node, group, .. } => (node, group),
            other => panic!("not registered: {other:?}"),
        }
    }

    #[test]
    fn servers_fill_a_group_to_its_size_then_start_the_next_and_ids_are_never_reused() {
        let mut directory = Directory::new(DirectorySettings {
            initial_groups: 2,
            ..DirectorySettings::default()
        });
        let placed: Vec<(NodeId, GroupId)> = (1..=7)
            .map(|token| registered(register(&mut directory, token)))
            .collect();
        assert_eq!(
            placed,
            vec![
                (100, 1),
                (101, 1),
                (102, 1),
                (103, 2),
                (104, 2),
                (105, 2),
                (106, 3)
            ]
        );
        // The table was placed when the second group got its first member, over those two.
        let table = directory.table().expect("two groups staffed");
        assert!(table.owners().iter().all(|&group| group == 1 || group == 2));
        assert!(table.load(1) > 0 && table.load(2) > 0 && table.load(3) == 0);
        // A server that leaves frees a place in its group, but not its id; the group with the
        // fewest replicas comes first (ties: the lowest group id).
        assert_eq!(
            apply(&mut directory, DirectoryCommand::Leave { node: 101 }),
            DirectoryOutcome::Left {
                group: 1,
                // The remaining members, to leave the group's configuration through.
                members: vec!["10.0.0.1:7379".to_string(), "10.0.0.3:7379".to_string()]
            }
        );
        assert_eq!(registered(register(&mut directory, 8)), (107, 3));
        assert_eq!(registered(register(&mut directory, 9)), (108, 1));
    }

    #[test]
    fn servers_wait_for_the_settings_which_are_set_once() {
        let mut directory = Directory::awaiting_settings();
        assert_eq!(
            register(&mut directory, 1),
            DirectoryOutcome::NotInitialized
        );
        assert!(directory.servers().is_empty());
        let bad = DirectorySettings {
            group_size: 0,
            ..DirectorySettings::default()
        };
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::Initialize(bad)),
            DirectoryOutcome::Refused(_)
        ));
        assert!(!directory.is_initialized());
        let settings = DirectorySettings {
            group_size: 5,
            first_server_id: 1000,
            ..DirectorySettings::default()
        };
        let initialize = DirectoryCommand::Initialize(settings.clone());
        assert_eq!(
            apply(&mut directory, initialize.clone()),
            DirectoryOutcome::Initialized
        );
        // The same settings again (a retried proposal) are fine; others are refused.
        assert_eq!(
            apply(&mut directory, initialize),
            DirectoryOutcome::Initialized
        );
        assert!(matches!(
            apply(
                &mut directory,
                DirectoryCommand::Initialize(DirectorySettings::default())
            ),
            DirectoryOutcome::Refused(_)
        ));
        assert_eq!(directory.settings(), &settings);
        assert_eq!(registered(register(&mut directory, 1)), (1000, 1));
    }

    #[test]
    fn a_retried_registration_gets_the_same_answer() {
        let mut directory = Directory::new(DirectorySettings::default());
        let first = register(&mut directory, 42);
        assert_eq!(register(&mut directory, 42), first);
        assert_eq!(directory.servers().len(), 1);
    }

    /// The founder of a group, asking again (it crashed before it started the group), must be
    /// told to start it, not to join the members that registered since and wait to join it.
    #[test]
    fn a_retried_registration_of_a_founder_still_starts_the_group() {
        let mut directory = Directory::new(DirectorySettings::default());
        let seeds = |outcome: DirectoryOutcome| match outcome {
            DirectoryOutcome::Registered { seeds, .. } => seeds,
            other => panic!("not registered: {other:?}"),
        };
        assert!(seeds(register(&mut directory, 1)).is_empty());
        assert_eq!(seeds(register(&mut directory, 2)), vec!["10.0.0.1:7379"]);
        assert!(seeds(register(&mut directory, 1)).is_empty());
        assert_eq!(seeds(register(&mut directory, 2)), vec!["10.0.0.1:7379"]);
        // Once the founder leaves, no one is told to start the group again.
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::Leave { node: 100 }),
            DirectoryOutcome::Left { .. }
        ));
        assert!(seeds(register(&mut directory, 3)).contains(&"10.0.0.2:7379".to_string()));
    }

    /// A third group, once staffed, gets its share of the table: moves start towards a table
    /// with it (only to it, a few at a time, each at a new epoch); committed and finished one
    /// by one, they reach a table within the load bound, and the target is gone.
    #[test]
    fn a_new_group_gets_its_share_through_moves() {
        let mut directory = Directory::new(DirectorySettings {
            partitions: 32,
            initial_groups: 2,
            ..DirectorySettings::default()
        });
        for token in 1..=8 {
            register(&mut directory, token);
        }
        assert!(
            directory.moves().in_flight().is_empty(),
            "group 3 not staffed yet"
        );
        let before = directory.table().expect("placed").clone();
        register(&mut directory, 9);
        assert!(!directory.moves().in_flight().is_empty());
        let mut finished = 0;
        while let Some((&partition, moving)) = directory.moves().in_flight().iter().next() {
            let (from, epoch) = before.owner(partition).expect("in range");
            assert_eq!((moving.from, moving.to), (from, 3));
            assert_eq!(moving.epoch, epoch + 1);
            let epoch = moving.epoch;
            for command in [
                DirectoryCommand::CommitMove { partition, epoch },
                DirectoryCommand::FinishMove { partition, epoch },
            ] {
                assert!(matches!(
                    apply(&mut directory, command),
                    DirectoryOutcome::Move(_)
                ));
            }
            finished += 1;
        }
        let table = directory.table().expect("placed");
        let cap = crate::sharding::capacity(32, 3, crate::sharding::LoadFactor::DEFAULT);
        assert!((1..=3).all(|group| table.load(group) as u32 <= cap));
        assert_eq!(table.load(3), finished);
        assert!(finished >= 32 / 3);
        assert_eq!(directory.moves().target(), None);
    }

    #[test]
    fn a_group_keeps_the_leader_of_the_highest_term_it_heard_of() {
        let mut directory = Directory::new(DirectorySettings::default());
        for token in 1..=3 {
            register(&mut directory, token);
        }
        let report = |leader, term| DirectoryCommand::ReportLeader {
            group: 1,
            leader,
            term,
        };
        assert_eq!(
            apply(&mut directory, report(100, 5)),
            DirectoryOutcome::LeaderRecorded
        );
        assert_eq!(
            apply(&mut directory, report(101, 4)),
            DirectoryOutcome::LeaderStale { recorded: 5 }
        );
        assert_eq!(
            apply(&mut directory, report(101, 5)),
            DirectoryOutcome::LeaderStale { recorded: 5 },
            "two leaders in one term: the first report stands"
        );
        assert_eq!(
            apply(&mut directory, report(100, 5)),
            DirectoryOutcome::LeaderRecorded
        );
        assert_eq!(
            apply(&mut directory, report(102, 7)),
            DirectoryOutcome::LeaderRecorded
        );
        assert!(matches!(
            apply(&mut directory, report(999, 9)),
            DirectoryOutcome::Refused(_)
        ));
        assert_eq!(directory.groups()[&1].leader, Some(102));
        match directory.read(&DirectoryQuery::Route(0)) {
            DirectoryAnswer::Route(Some((1, 1, Some(102)))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_replica_of_a_group_that_owns_partitions_cannot_leave() {
        let mut directory = Directory::new(DirectorySettings::default());
        let (node, _) = registered(register(&mut directory, 1));
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::Leave { node }),
            DirectoryOutcome::Refused(reason) if reason.contains("owns 271 partitions")
        ));
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::Leave { node: 5 }),
            DirectoryOutcome::Refused(_)
        ));
    }

    /// Commits and finishes every move the directory starts until none is in flight, showing
    /// each to `look` first; returns how many there were.
    fn carry_out_moves(
        directory: &mut Directory,
        mut look: impl FnMut(&crate::directory::Move),
    ) -> u32 {
        let mut moved = 0;
        while let Some((&partition, moving)) = directory.moves().in_flight().iter().next() {
            look(moving);
            let epoch = moving.epoch;
            for command in [
                DirectoryCommand::CommitMove { partition, epoch },
                DirectoryCommand::FinishMove { partition, epoch },
            ] {
                assert!(matches!(
                    apply(directory, command),
                    DirectoryOutcome::Move(_)
                ));
            }
            moved += 1;
        }
        moved
    }

    /// A retired group's partitions all move away (only away from it, to groups within the
    /// load bound); no new server is placed in it; once it owns nothing its last replica may
    /// leave. The only group that owns partitions cannot retire.
    #[test]
    fn a_retired_group_moves_its_partitions_away_and_then_may_leave() {
        let mut directory = Directory::new(DirectorySettings {
            partitions: 32,
            initial_groups: 2,
            group_size: 1,
            ..DirectorySettings::default()
        });
        for token in 1..=3 {
            register(&mut directory, token);
        }
        // Group 3 staffed: it gets its share first.
        carry_out_moves(&mut directory, |_| {});
        let owned = directory.table().expect("placed").load(2) as u32;
        assert!(owned > 0);
        assert_eq!(
            apply(&mut directory, DirectoryCommand::RetireGroup { group: 2 }),
            DirectoryOutcome::Retiring { partitions: owned }
        );
        assert_eq!(
            apply(&mut directory, DirectoryCommand::RetireGroup { group: 2 }),
            DirectoryOutcome::Retiring { partitions: owned },
            "retiring again changes nothing"
        );
        assert!(
            matches!(
                apply(&mut directory, DirectoryCommand::Leave { node: 101 }),
                DirectoryOutcome::Refused(_)
            ),
            "not yet: it owns partitions"
        );
        let moved = carry_out_moves(&mut directory, |moving| {
            assert_eq!(moving.from, 2, "only the retiring group's partitions move");
        });
        assert_eq!(moved, owned);
        let table = directory.table().expect("placed");
        assert_eq!(table.load(2), 0);
        let cap = crate::sharding::capacity(32, 2, crate::sharding::LoadFactor::DEFAULT);
        assert!(table.load(1) <= cap as usize && table.load(3) <= cap as usize);
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::Leave { node: 101 }),
            DirectoryOutcome::Left { group: 2, .. }
        ));
        // A new server is never placed in the retiring group, though it has room now.
        let (_, group) = registered(register(&mut directory, 4));
        assert_ne!(group, 2);
        // With groups 1 and 4 retired too, group 3 owns everything and cannot retire.
        for group in [1, group] {
            apply(&mut directory, DirectoryCommand::RetireGroup { group });
            carry_out_moves(&mut directory, |_| {});
        }
        assert_eq!(directory.table().expect("placed").load(3), 32);
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::RetireGroup { group: 3 }),
            DirectoryOutcome::Refused(reason) if reason.contains("only group")
        ));
        assert!(matches!(
            apply(&mut directory, DirectoryCommand::RetireGroup { group: 9 }),
            DirectoryOutcome::Refused(_)
        ));
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut directory = Directory::new(DirectorySettings::default());
        let before = directory.clone();
        let empty = DirectoryCommand::Register {
            token: 1,
            address: String::new(),
            labels: Vec::new(),
        };
        assert!(matches!(
            apply(&mut directory, empty),
            DirectoryOutcome::Refused(_)
        ));
        let labels = DirectoryCommand::Register {
            token: 2,
            address: "a:1".to_string(),
            labels: vec![(String::new(), "x".to_string())],
        };
        assert!(matches!(
            apply(&mut directory, labels),
            DirectoryOutcome::Refused(_)
        ));
        let garbage = StateMachine::apply(&mut directory, 3, &Bytes::from_static(b"\x01\xff\xff"));
        assert!(matches!(garbage.outcome, DirectoryOutcome::Invalid(_)));
        assert_eq!(directory.servers, before.servers);
        assert_eq!(directory.next_server, before.next_server);
    }

    #[test]
    fn a_snapshot_restores_the_same_directory() {
        let mut directory = Directory::new(DirectorySettings::default());
        for token in 1..=4 {
            register(&mut directory, token);
        }
        apply(
            &mut directory,
            DirectoryCommand::RecordReplicaAddress {
                node: 1,
                address: "10.0.1.1:7379".to_string(),
            },
        );
        let image = Box::new(directory.snapshot()).encode();
        let restored = Directory::restore(&image).expect("restores");
        assert_eq!(restored, directory);
        assert_eq!(restored.addresses(), vec![(1, "10.0.1.1:7379".to_string())]);
        assert!(Directory::restore(&image[..image.len() - 1]).is_err());
    }

    mod random_commands {
        use super::*;
        use proptest::prelude::*;

        fn command() -> impl Strategy<Value = DirectoryCommand> {
            prop_oneof![
                4 => (0u64..40).prop_map(|token| DirectoryCommand::Register {
                    token,
                    address: format!("10.0.0.{token}:7379"),
                    labels: Vec::new(),
                }),
                1 => (95u64..140).prop_map(|node| DirectoryCommand::Leave { node }),
                1 => (0u64..6).prop_map(|group| DirectoryCommand::RetireGroup { group }),
                1 => (0u32..70).prop_map(|limit| DirectoryCommand::SetMoveLimit { limit }),
                1 => (0u64..(4 << 20)).prop_map(|bytes_per_second| {
                    DirectoryCommand::SetMoveRate { bytes_per_second }
                }),
                2 => (0u64..6, 95u64..140, 0u64..10).prop_map(|(group, leader, term)| {
                    DirectoryCommand::ReportLeader { group, leader, term }
                }),
                2 => (0u32..4, 0u32..271, 1u64..5).prop_map(|(kind, partition, epoch)| {
                    match kind {
                        0 => DirectoryCommand::CommitMove { partition, epoch },
                        1 => DirectoryCommand::AbortMove { partition, epoch },
                        2 => DirectoryCommand::ForgetMove { partition, epoch },
                        _ => DirectoryCommand::FinishMove { partition, epoch },
                    }
                }),
            ]
        }

        /// The directory's invariants, whatever is asked of it in whatever order.
        fn check(directory: &Directory) {
            let mut seen = BTreeSet::new();
            for (&group, info) in &directory.groups {
                assert!(info.members.len() as u32 <= directory.settings.group_size);
                for &member in &info.members {
                    assert!(seen.insert(member), "node {member} in two groups");
                    assert_eq!(directory.servers[&member].group, group);
                }
                if let Some(leader) = info.leader {
                    assert!(
                        info.members.contains(&leader),
                        "leader {leader} not a member"
                    );
                }
            }
            assert_eq!(
                seen.len(),
                directory.servers.len(),
                "a server outside every group"
            );
            assert!(directory
                .servers
                .keys()
                .all(|&node| node < directory.next_server));
            if let Some(table) = &directory.table {
                for &owner in table.owners() {
                    assert!(
                        directory.groups.contains_key(&owner),
                        "partition of group {owner}"
                    );
                }
                for &owner in directory.moves.target().unwrap_or_default() {
                    assert!(
                        directory.groups.contains_key(&owner),
                        "target group {owner}"
                    );
                }
                assert_eq!(directory.moves.check(table), Ok(()));
            }
        }

        proptest! {
            /// Any sequence of commands keeps every server in exactly one group of at most the
            /// target size, every leader a member, every owner a group; leaders' terms only
            /// grow; and two replicas applying the same log agree byte for byte.
            #[test]
            fn any_sequence_keeps_the_invariants_and_replicas_agree(
                commands in proptest::collection::vec(command(), 1..80),
            ) {
                let mut one = Directory::new(DirectorySettings::default());
                let mut other = Directory::new(DirectorySettings::default());
                for command in commands {
                    let terms_before: BTreeMap<GroupId, Term> = one
                        .groups
                        .iter()
                        .map(|(&group, info)| (group, info.leader_term))
                        .collect();
                    let answer = apply(&mut one, command.clone());
                    prop_assert_eq!(answer, apply(&mut other, command));
                    check(&one);
                    for (group, term) in terms_before {
                        if let Some(info) = one.groups.get(&group) {
                            prop_assert!(info.leader_term >= term);
                        }
                    }
                }
                prop_assert_eq!(
                    Box::new(one.snapshot()).encode(),
                    Box::new(other.snapshot()).encode()
                );
            }
        }
    }
}
