//! A client of the sharded store: it routes each key for itself — key → partition (the portable
//! hash of `sharding::partition`) → group (the admin's partition table) → the group's leader —
//! from a cached copy of the admin's directory, refreshed when a group cannot be reached or the
//! copy is older than [`OVERVIEW_MAX_AGE`]. Each group is reached through a pool of ordinary
//! [`Client`]s (which follow "not leader" redirects themselves), so connections and the
//! leader each one found are reused by later requests. Shared by every task of a process (the
//! admin's HTTP API, the CLI): all methods take `&self`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use thiserror::Error;
use tokio::time::{timeout, Duration, Instant};

use crate::client::{Client, ClientError};
use crate::server::proto::ravel::{self as pb, directory_client::DirectoryClient};
use crate::server::ApiError;
use crate::sharding::{partition_of, GroupId, PartitionId};

/// A cached directory older than this is read again before the next request.
const OVERVIEW_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a refresh may take when a cached copy can stand in.
const STALE_REFRESH_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A request its group refused as not its own is sent again this often, at most, this far apart.
const NOT_OWNED_RETRIES_MAX: u32 = 20;
const NOT_OWNED_PAUSE: Duration = Duration::from_millis(100);
/// A write to a partition that is moving (frozen at its source while its pairs are copied) is
/// sent again this often, at most, this far apart: a move freezes a partition for about the
/// time its pairs take to copy, well under these 10 s.
const MOVING_RETRIES_MAX: u32 = 200;
const MOVING_PAUSE: Duration = Duration::from_millis(50);
/// Idle clients kept per group (each holds its connections).
const POOL_PER_GROUP_MAX: usize = 64;

#[derive(Clone, Debug, Error)]
pub enum RoutedError {
    /// The admin has no partition table yet: no data group has a member.
    #[error("no data group exists yet, so no key has an owner: start data nodes with `ravel node --admin ADDR` and retry")]
    NoGroups,
    #[error("the admin could not be reached ({0}); is `ravel admin` running, and does it have a quorum?")]
    AdminUnreachable(String),
    /// Partition `partition` is owned by a group the directory has no member address for.
    #[error("partition {partition} belongs to group {group}, which has no members; retry once its nodes are back")]
    GroupEmpty {
        partition: PartitionId,
        group: GroupId,
    },
    #[error("{0}")]
    Group(ClientError),
}

/// Where a key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub partition: PartitionId,
    pub group: GroupId,
    /// The group's members' addresses, the leader's first.
    pub endpoints: Arc<[String]>,
}

struct Cached {
    overview: Arc<pb::OverviewResponse>,
    table: Arc<RoutingTable>,
    read_at: Instant,
}

pub struct RoutedClient {
    admin: Vec<String>,
    /// Each request's deadline, per group call.
    pub timeout: Duration,
    /// The token every group call carries (groups whose nodes check `--auth-tokens`); set
    /// once, before the first call (an admin replica sets it when its services are built).
    token: std::sync::OnceLock<String>,
    cached: Mutex<Option<Cached>>,
    /// Held while the directory is read: requests that find it stale together (a group's
    /// leader died under load) wait for one read instead of each asking the admin.
    refreshing: tokio::sync::Mutex<()>,
    pools: Mutex<BTreeMap<GroupId, Vec<Client>>>,
}

impl RoutedClient {
    pub fn new(admin: Vec<String>) -> Self {
        assert!(!admin.is_empty(), "an admin endpoint to ask");
        RoutedClient {
            admin,
            timeout: Duration::from_secs(5),
            token: std::sync::OnceLock::new(),
            cached: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            pools: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes every group call carry `token` from now on (a second call changes nothing).
    pub fn set_token(&self, token: String) {
        let _ = self.token.set(token);
    }

    /// The admin's directory, from the cache unless it is old or `fresh` is asked. When the
    /// admin cannot answer (it is electing a leader, say), a cached copy is used however old:
    /// routing must not stop with the admin, which is not on the data path.
    pub async fn overview(&self, fresh: bool) -> Result<Arc<pb::OverviewResponse>, RoutedError> {
        Ok(self.directory(fresh).await?.0)
    }

    /// The directory and its routing table (see [`RoutedClient::overview`]).
    async fn directory(
        &self,
        fresh: bool,
    ) -> Result<(Arc<pb::OverviewResponse>, Arc<RoutingTable>), RoutedError> {
        let cached = self.cached();
        if let Some((directory, read_at)) = &cached {
            if !fresh && read_at.elapsed() < OVERVIEW_MAX_AGE {
                return Ok(directory.clone());
            }
        }
        let wanted_after = Instant::now();
        let _reading = self.refreshing.lock().await;
        // Read by another request while this one waited: that is as fresh as asked for.
        let cached = self.cached();
        if let Some((directory, read_at)) = &cached {
            if *read_at >= wanted_after {
                return Ok(directory.clone());
            }
        }
        let deadline = if cached.is_some() {
            STALE_REFRESH_TIMEOUT.min(self.timeout)
        } else {
            self.timeout
        };
        match read_overview(&self.admin, deadline).await {
            Ok(overview) => {
                let table = Arc::new(RoutingTable::new(&overview));
                let overview = Arc::new(overview);
                *self.cached.lock().expect("not poisoned") = Some(Cached {
                    overview: overview.clone(),
                    table: table.clone(),
                    read_at: Instant::now(),
                });
                Ok((overview, table))
            }
            Err(error) => match cached {
                Some((directory, _)) => {
                    tracing::debug!(%error, "the admin did not answer; routing by the cached directory");
                    Ok(directory)
                }
                None => Err(error),
            },
        }
    }

    /// The cached directory and when it was read.
    #[allow(clippy::type_complexity)]
    fn cached(&self) -> Option<((Arc<pb::OverviewResponse>, Arc<RoutingTable>), Instant)> {
        self.cached
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|cached| {
                (
                    (cached.overview.clone(), cached.table.clone()),
                    cached.read_at,
                )
            })
    }

    /// Where `key` goes, by the cached directory (or a fresh one with `fresh`).
    pub async fn route(&self, key: &[u8], fresh: bool) -> Result<Route, RoutedError> {
        self.directory(fresh).await?.1.route(key)
    }

    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<u64, RoutedError> {
        self.on_owner(&key, |mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let result = client.put(key, value).await;
                (client, result)
            }
        })
        .await
    }

    /// A read at the owning group: linearizable unless `stale`.
    pub async fn get(&self, key: Bytes, stale: bool) -> Result<Option<Bytes>, RoutedError> {
        self.on_owner(&key, |mut client| {
            let key = key.clone();
            async move {
                let result = client.get(key, stale).await;
                (client, result)
            }
        })
        .await
    }

    pub async fn delete(&self, key: Bytes) -> Result<bool, RoutedError> {
        self.on_owner(&key, |mut client| {
            let key = key.clone();
            async move {
                let result = client.delete(key).await;
                (client, result)
            }
        })
        .await
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent), at the owning group.
    pub async fn compare_and_swap(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    ) -> Result<(bool, Option<Bytes>), RoutedError> {
        self.on_owner(&key, |mut client| {
            let (key, expected, new) = (key.clone(), expected.clone(), new.clone());
            async move {
                let result = client.compare_and_swap(key, expected, new).await;
                (client, result)
            }
        })
        .await
    }

    /// Runs `call` with a client of the group that owns `key`. When the group cannot be
    /// reached at all, or the cached directory names no owner, the directory is read again
    /// (groups and members may have changed) and the call made once more — only if it is known
    /// not to have taken effect.
    async fn on_owner<T, F, Fut>(&self, key: &[u8], mut call: F) -> Result<T, RoutedError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = (Client, Result<T, ClientError>)>,
    {
        let mut fresh = false;
        let (mut not_owned_retries, mut moving_retries) = (0, 0);
        loop {
            // A cached directory that knows no owner may predate the groups: read it again.
            let route = match self.route(key, fresh).await {
                Ok(route) => route,
                Err(RoutedError::NoGroups | RoutedError::GroupEmpty { .. }) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let client = self.take_client(&route);
            let (client, result) = call(client).await;
            let unreachable = matches!(result, Err(ClientError::Unreachable { .. }));
            if !unreachable {
                self.give_back(route.group, client);
            }
            match result {
                Ok(value) => return Ok(value),
                Err(ClientError::Unreachable { .. }) if !fresh => fresh = true,
                // Refused by the group, so not applied: safe to send again once the directory
                // is read again (the group may not have claimed its partitions yet, or the
                // partition moved).
                Err(ClientError::Api(ApiError::NotOwned { .. }))
                    if not_owned_retries < NOT_OWNED_RETRIES_MAX =>
                {
                    not_owned_retries += 1;
                    fresh = true;
                    tokio::time::sleep(NOT_OWNED_PAUSE).await;
                }
                // Refused, not applied: the move ends soon, either way. The directory is read
                // again once it commits (the source then answers "not owned").
                Err(ClientError::Api(ApiError::Moving { .. }))
                    if moving_retries < MOVING_RETRIES_MAX =>
                {
                    moving_retries += 1;
                    tokio::time::sleep(MOVING_PAUSE).await;
                }
                Err(error) => return Err(RoutedError::Group(error)),
            }
        }
    }

    fn take_client(&self, route: &Route) -> Client {
        let pooled = self
            .pools
            .lock()
            .expect("not poisoned")
            .get_mut(&route.group)
            .and_then(Vec::pop);
        let mut client = pooled.unwrap_or_else(|| Client::new(route.endpoints.to_vec()));
        client.timeout = self.timeout;
        client.token = self.token.get().cloned();
        client
    }

    fn give_back(&self, group: GroupId, client: Client) {
        let mut pools = self.pools.lock().expect("not poisoned");
        let pool = pools.entry(group).or_default();
        if pool.len() < POOL_PER_GROUP_MAX {
            pool.push(client);
        }
    }
}

/// The directory reduced to what routing needs, built once per directory read: a request then
/// costs one hash and two lookups.
#[derive(Debug)]
pub struct RoutingTable {
    partitions: u32,
    /// `owners[p]` owns partition `p`; empty until the admin placed the table.
    owners: Vec<GroupId>,
    /// Each group's members' addresses, the leader's first.
    endpoints: BTreeMap<GroupId, Arc<[String]>>,
}

impl RoutingTable {
    pub fn new(overview: &pb::OverviewResponse) -> Self {
        let addresses: BTreeMap<u64, &str> = overview
            .servers
            .iter()
            .map(|server| (server.id, server.address.as_str()))
            .collect();
        let endpoints = overview
            .groups
            .iter()
            .map(|group| {
                let mut members = group.members.clone();
                members.sort_by_key(|&member| (member != group.leader_id, member));
                let endpoints: Vec<String> = members
                    .iter()
                    .filter_map(|member| addresses.get(member).map(|address| address.to_string()))
                    .collect();
                (group.id, Arc::from(endpoints))
            })
            .collect();
        RoutingTable {
            partitions: overview.partitions,
            owners: overview.owners.iter().map(|owner| owner.group_id).collect(),
            endpoints,
        }
    }

    /// Where `key` goes.
    pub fn route(&self, key: &[u8]) -> Result<Route, RoutedError> {
        if self.owners.is_empty() || self.partitions == 0 {
            return Err(RoutedError::NoGroups);
        }
        let partition = partition_of(key, self.partitions);
        let group = *self
            .owners
            .get(partition as usize)
            .ok_or(RoutedError::NoGroups)?;
        match self.endpoints.get(&group) {
            Some(endpoints) if !endpoints.is_empty() => Ok(Route {
                partition,
                group,
                endpoints: endpoints.clone(),
            }),
            _ => Err(RoutedError::GroupEmpty { partition, group }),
        }
    }
}

/// Asks each admin endpoint in turn for the directory until one answers or `deadline` passes.
pub async fn read_overview(
    admin: &[String],
    deadline: Duration,
) -> Result<pb::OverviewResponse, RoutedError> {
    let until = Instant::now() + deadline;
    let mut last_error = String::from("no endpoint");
    while Instant::now() < until {
        for endpoint in admin {
            let channel = match crate::server::connect(endpoint, CONNECT_TIMEOUT).await {
                Ok(channel) => channel,
                Err(error) => {
                    last_error = format!("{endpoint}: {error}");
                    continue;
                }
            };
            let left = until.saturating_duration_since(Instant::now());
            let mut client = DirectoryClient::new(channel);
            match timeout(left, client.overview(pb::OverviewRequest {})).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => {
                    last_error = format!("{endpoint}: {}", crate::client::failure_text(&status))
                }
                Err(_) => last_error = format!("{endpoint}: timed out"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(RoutedError::AdminUnreachable(last_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overview() -> pb::OverviewResponse {
        pb::OverviewResponse {
            partitions: 4,
            servers: [(101, 1), (102, 1), (103, 2)]
                .into_iter()
                .map(|(id, group_id)| pb::DirectoryServer {
                    id,
                    address: format!("10.0.0.{id}:7379"),
                    group_id,
                    labels: Default::default(),
                })
                .collect(),
            groups: vec![
                pb::DirectoryGroup {
                    id: 1,
                    members: vec![101, 102],
                    leader_id: 102,
                    ..Default::default()
                },
                pb::DirectoryGroup {
                    id: 2,
                    members: vec![],
                    ..Default::default()
                },
            ],
            owners: [1, 2, 1, 2]
                .into_iter()
                .map(|group_id| pb::PartitionOwner { group_id, epoch: 1 })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_goes_to_its_partitions_owner_leader_first() {
        let overview = overview();
        // Find a key of each partition.
        let key_of = |wanted: u32| {
            (0..1000)
                .map(|i| format!("key-{i}"))
                .find(|key| partition_of(key.as_bytes(), 4) == wanted)
                .expect("some key hashes there")
        };
        let table = RoutingTable::new(&overview);
        let route_0 = table.route(key_of(0).as_bytes()).expect("owned");
        assert_eq!(route_0.group, 1);
        assert_eq!(
            route_0.endpoints.to_vec(),
            vec!["10.0.0.102:7379".to_string(), "10.0.0.101:7379".to_string()]
        );
        assert!(matches!(
            table.route(key_of(1).as_bytes()),
            Err(RoutedError::GroupEmpty {
                partition: 1,
                group: 2
            })
        ));
        let empty = pb::OverviewResponse::default();
        assert!(matches!(
            RoutingTable::new(&empty).route(b"anything"),
            Err(RoutedError::NoGroups)
        ));
    }
}
