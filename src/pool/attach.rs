//! RELOAD of a `cluster=` database: which router routes a pool set, and moving the set to
//! another cluster's router when its `cluster=` changes. Pools::reconfigure decides when.

use std::sync::Arc;

use super::{PoolSet, Pools, Role};
use crate::config::Config;

impl Pools {
    /// The role a cluster router routes `set` for, if one does.
    pub(super) fn routed_role(&self, set: &Arc<PoolSet>) -> Option<Role> {
        self.routers.iter().find_map(|r| r.value().role_of(set))
    }

    /// A `cluster=` database whose `cluster=` changed on reload (or whose cluster was removed
    /// and came back): its set leaves the old router and joins the new one, which replaces its
    /// members at once (the old cluster's servers close as they are released), so its clients,
    /// connected ones included, are served by the new cluster from their next transaction.
    pub(super) fn reattach(&self, set: &Arc<PoolSet>, cluster: &str, role: Role, cfg: &Config) {
        let routed: Vec<String> = self
            .routers
            .iter()
            .filter(|r| r.value().role_of(set).is_some())
            .map(|r| r.key().clone())
            .collect();
        if routed == [cluster] {
            return;
        }
        for r in self.routers() {
            r.detach(set);
        }
        match self.router(cluster, cfg) {
            Some(r) => {
                tracing::info!(
                    "{}: now routed by cluster {cluster} for role {}",
                    set.key,
                    role.as_str()
                );
                r.add_set(set, role);
            }
            None => {
                tracing::warn!(
                    "database {}: cluster {cluster} is not known; its clients wait for it",
                    set.key.db
                );
                // Nothing routes it now: the old cluster's members must not keep serving.
                for m in set.members() {
                    set.remove_member(&m.host, m.port);
                }
            }
        }
    }
}
