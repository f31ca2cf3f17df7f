//! Host lists (`host=a,b,...`): the connector of each member pool reports to its set whether the
//! host could be reached, so the set can send checkouts to the other hosts (`PoolSet::host_failed`)
//! and take the host back once it logs a server in (`PoolSet::host_ok`).
//! A host name that resolves to several addresses is resolved through the DNS cache
//! (`server::dns`: reused for dns_max_ttl, a failure remembered for dns_nxdomain_ttl); each
//! connect starts at the next address and falls through to the others, so a DNS change is seen
//! within dns_max_ttl. A server that does not satisfy the database's target_session_attrs is
//! set aside the same way, so the clients move to the next host. Owns no state beyond the link to its set.

use std::sync::{Arc, Weak};

use super::connector::{ConnectFuture, Connector};
use super::set::PoolSet;
use crate::error::Error;
use crate::server::{ServerCredential, ServerTarget};

/// Wraps a connector for one member of a host-list set.
pub struct FallThrough {
    inner: Arc<dyn Connector>,
    /// Weak: the set owns its members' pools, which own this connector.
    set: Weak<PoolSet>,
}

impl FallThrough {
    /// `inner`, reporting reachability to `set`.
    pub fn wrap(inner: Arc<dyn Connector>, set: Weak<PoolSet>) -> Arc<dyn Connector> {
        Arc::new(FallThrough { inner, set })
    }
}

impl Connector for FallThrough {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        cred: &'a ServerCredential,
        max_packet: u32,
    ) -> ConnectFuture<'a> {
        Box::pin(async move {
            let result = self.inner.connect(target, cred, max_packet).await;
            if let Some(set) = self.set.upgrade() {
                match &result {
                    Ok(_) => set.host_ok(&target.host, target.port),
                    // Only a host that cannot be reached is set aside; a login the server
                    // refuses is the same on every host and is reported as it is.
                    Err(Error::ServerConnect { addr, source }) => {
                        if source.to_string().contains("lookup") {
                            // PgBouncer's words, which its operators grep for.
                            tracing::warn!("{addr} closing because: server DNS lookup failed");
                        }
                        set.host_failed(&target.host, target.port, "is unreachable")
                    }
                    // A server of the wrong kind (target_session_attrs): the next host may be
                    // the right one.
                    Err(Error::TargetSessionAttrs { .. }) => set.host_failed(
                        &target.host,
                        target.port,
                        "does not satisfy target_session_attrs",
                    ),
                    Err(_) => {}
                }
            }
            result
        })
    }
}
