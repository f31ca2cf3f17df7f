//! Checking a client's cleartext password against LDAP (auth_type ldap, HBA ldap lines) with the
//! options of `auth::ldap`: the binds and the search run on the session's own task (ldap3 on
//! tokio), so a slow directory delays only the client that waits for it.
//!
//! It owns the network side only. What the client is told is the caller's: one text for every
//! failure, while the reason (server down, no such entry, wrong password) goes to the log.

use std::future::Future;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, SearchEntry};

use crate::auth::ldap::{filter_for, user_fits_filter, LdapOptions, Mode, Scope};

/// PgBouncer's LDAP_OPT_NETWORK_TIMEOUT: how long one server may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// libldap's variable for the CA file that LDAP servers' certificates must chain to (without it,
/// the system's roots).
const CA_ENV: &str = "LDAPTLS_CACERT";

/// The TLS settings of a connection: the CA of `LDAPTLS_CACERT`, read at each TLS login so a
/// replaced file takes effect without a restart (asynchronously: no blocking read on the loop).
async fn settings(opts: &LdapOptions) -> Result<LdapConnSettings, String> {
    let settings = LdapConnSettings::new()
        .set_conn_timeout(CONNECT_TIMEOUT)
        .set_starttls(opts.starttls);
    let Some(path) = std::env::var_os(CA_ENV).filter(|_| opts.uses_tls()) else {
        return Ok(settings);
    };
    let origin = format!("{CA_ENV}={}", path.to_string_lossy());
    let pem = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("cannot read {origin}: {e}"))?;
    let config = crate::net::tls::ldap_client_config(&pem, &origin)?;
    Ok(settings.set_config(config))
}

/// Whether `password` is `user`'s LDAP password; `Err` says why not (for the log).
pub async fn check(opts: &LdapOptions, user: &str, password: &str) -> Result<(), String> {
    // An empty password would be an anonymous bind, which many servers accept.
    if password.is_empty() {
        return Err(format!("empty password for user \"{user}\""));
    }
    let dn = match &opts.mode {
        Mode::Simple { prefix, suffix } => format!("{prefix}{user}{suffix}"),
        Mode::Search {
            base_dn,
            bind_dn,
            bind_password,
            filter,
            scope,
        } => {
            if !user_fits_filter(user) {
                return Err("invalid character in user name for LDAP authentication".into());
            }
            let filter = filter_for(filter, user);
            let scope = match scope {
                Scope::Base => ldap3::Scope::Base,
                Scope::One => ldap3::Scope::OneLevel,
                Scope::Sub => ldap3::Scope::Subtree,
            };
            with_server(opts, |mut ldap| async move {
                ldap.simple_bind(bind_dn, bind_password)
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| {
                        format!(
                            "could not perform initial LDAP bind for ldapbinddn \"{bind_dn}\": {e}"
                        )
                    })?;
                let found = ldap
                    .search(base_dn, scope, &filter, vec!["1.1"])
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| format!("could not search LDAP for filter \"{filter}\": {e}"));
                let _ = ldap.unbind().await;
                let (entries, _) = found?;
                match entries.len() {
                    1 => Ok(entries
                        .into_iter()
                        .next()
                        .map(|e| SearchEntry::construct(e).dn)
                        .unwrap_or_default()),
                    0 => Err(format!("LDAP user \"{user}\" does not exist")),
                    n => Err(format!(
                        "LDAP user \"{user}\" is not unique ({n} entries for \"{filter}\")"
                    )),
                }
            })
            .await?
        }
    };
    with_server(opts, |mut ldap| async move {
        let r = ldap
            .simple_bind(&dn, password)
            .await
            .and_then(|r| r.success())
            .map(|_| ())
            .map_err(|e| format!("LDAP login failed for user {dn}: {e}"));
        let _ = ldap.unbind().await;
        r
    })
    .await
}

/// Connects to the first server that answers and runs `op` while driving that connection in the
/// same task (no spawned driver to track).
async fn with_server<T, F, Fut>(opts: &LdapOptions, op: F) -> Result<T, String>
where
    F: FnOnce(ldap3::Ldap) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut errors = Vec::new();
    let mut connected = None;
    for url in opts.urls() {
        match LdapConnAsync::with_settings(settings(opts).await?, &url).await {
            Ok(c) => {
                connected = Some((url, c));
                break;
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    let Some((url, (conn, ldap))) = connected else {
        return Err(format!("could not connect to LDAP: {}", errors.join("; ")));
    };
    let op = op(ldap);
    let drive = conn.drive();
    tokio::pin!(op, drive);
    tokio::select! {
        biased;
        r = &mut op => r,
        d = &mut drive => Err(format!("LDAP connection to {url} ended: {d:?}")),
    }
}
