//! The routing table `ravel bench` clients share on a sharded store: read from the admin at the
//! start, and read again when a group refuses a key as not its own (a partition moved while the
//! bench ran) — once for all the clients that saw the same table go stale.

use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use tokio::time::Duration;

use crate::routed_client::{read_overview, RoutedError, RoutingTable};

const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct BenchRoutes {
    admin: Vec<String>,
    /// The table and its generation (how many times it was read).
    current: RwLock<(u64, Arc<RoutingTable>)>,
    /// Held while the table is read again, so one client reads it for all.
    reading: Mutex<()>,
}

impl BenchRoutes {
    /// Reads the table from `admin`; also answers the number of groups.
    pub async fn read(admin: Vec<String>) -> Result<(Self, usize), RoutedError> {
        let overview = read_overview(&admin, READ_TIMEOUT).await?;
        let table = Arc::new(RoutingTable::new(&overview));
        let routes = BenchRoutes {
            admin,
            current: RwLock::new((0, table)),
            reading: Mutex::new(()),
        };
        Ok((routes, overview.groups.len()))
    }

    /// The table now, with its generation.
    pub fn current(&self) -> (u64, Arc<RoutingTable>) {
        self.current.read().expect("not poisoned").clone()
    }

    /// Reads the table again unless it was read since generation `seen`.
    pub async fn refresh(&self, seen: u64) {
        let _reading = self.reading.lock().await;
        if self.current().0 != seen {
            return;
        }
        if let Ok(overview) = read_overview(&self.admin, READ_TIMEOUT).await {
            let table = Arc::new(RoutingTable::new(&overview));
            *self.current.write().expect("not poisoned") = (seen + 1, table);
        }
    }
}
