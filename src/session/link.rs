//! Login of a client, in this order: TLS requirement, parameter checks, database lookup,
//! max_client_conn, the method (auth_type or the HBA line), the secret (auth_file or
//! auth_query), authentication, then `no such database` and the pool's welcome (ParameterStatus
//! set + our BackendKeyData); and the tracked-parameter SET batch that makes a server match its
//! client at each checkout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::auth::Method;
use super::params::{self, Params, SERVER_DEFAULT};
use super::registry::{ClientInfo, ClientState};
use super::{auth, auth_query, startup};
use crate::config::{AuthType, Config, PoolMode};
use crate::context::{Context, Phase};
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::net::Stream;
use crate::pool::{Role, Route, StatusBlock, Welcome};
use crate::proto::build;
use crate::proto::startup::RawParams;
use crate::server::ServerConn;

/// The virtual database of the admin console.
pub const ADMIN_DB: &str = "pgbouncer";

/// The user name that gets the console without a password over the Unix socket.
const OWN_USER: &str = "pgbouncer";

/// The empty password PgBouncer gives `[users]` names and auth_users for trust logins.
static NO_PASSWORD: crate::config::Secret = crate::config::Secret::Plain(String::new());

/// A place under max_client_conn and, once the database is known, under the per-database and
/// per-user client caps; given back on drop.
pub struct ClientSlot {
    ctx: Arc<Context>,
    /// (database, user) counted by `Clients::enter`: the counts' own keys, shared, so a login
    /// allocates nothing for them.
    counted: Option<(Arc<str>, Arc<str>)>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.ctx.clients.count.fetch_sub(1, Ordering::Relaxed);
        if let Some((db, user)) = self.counted.take() {
            self.ctx.clients.leave(&db, &user);
        }
    }
}

/// PgBouncer's `check_db_connection_count` / `check_user_connection_count`: the client is
/// counted in first, then refused if that puts its database or user over the cap.
fn enter_caps(
    ctx: &Context,
    cfg: &Config,
    slot: &mut ClientSlot,
    db: &crate::config::DatabaseConfig,
    user: &str,
) -> Result<()> {
    let entered = ctx.clients.enter(&db.name, user);
    let (db_n, user_n) = (entered.db_n, entered.user_n);
    slot.counted = Some((entered.db, entered.user));
    let db_max = cfg.max_db_client_connections(db);
    if db_max > 0 && db_n > db_max {
        return Err(Error::MaxDbClientConnections);
    }
    let user_max = cfg.max_user_client_connections(user);
    if user_max > 0 && user_n > user_max {
        return Err(Error::MaxUserClientConnections);
    }
    Ok(())
}

/// What a normal client's login produced (the session adds its stream).
pub struct Welcomed {
    /// Where the client's servers come from.
    pub route: Route,
    pub settings: Arc<crate::pool::PoolSettings>,
    pub params: Params,
    pub slot: ClientSlot,
}

/// A finished login.
pub enum LoggedIn {
    /// A normal client, welcome sent.
    Client(Welcomed),
    /// An admin-console client (authenticated; the console sends its own welcome).
    Admin { user: String, admin: bool },
    /// A replication client with its own server connection (see `replication`).
    Replication {
        server: Box<ServerConn>,
        slot: ClientSlot,
        /// Its place in the (database, user) pool, as PgBouncer counts it.
        place: crate::pool::ReplicationSlot,
    },
}

/// Whether PgBouncer would have `user` in its user list without the auth_file: a `[users]`
/// name, or an auth_user (global, or of any database).
fn known_by_name(cfg: &Config, user: &str) -> bool {
    cfg.users.contains_key(user)
        || cfg.general.security.auth_user.as_deref() == Some(user)
        || cfg
            .databases
            .values()
            .any(|d| d.auth_user.as_deref() == Some(user))
}

/// The console's own user: `pgbouncer`, connecting over the Unix socket from the pooler's uid.
fn own_user(stream: &Stream, user: &str) -> bool {
    user == OWN_USER && auth::unix_peer_uid(stream) == Some(crate::sys::euid())
}

/// Runs the whole login. On error the caller reports it to the client.
pub async fn login(
    ctx: &Arc<Context>,
    info: &Arc<ClientInfo>,
    stream: &mut Stream,
    raw: RawParams,
    cfg: &Arc<Config>,
    awaiting_welcome: &AtomicBool,
) -> Result<LoggedIn> {
    // PgBouncer: TLS is required of TCP clients only (Unix sockets cannot do TLS).
    if cfg.general.security.client_tls.sslmode >= crate::config::SslMode::Require
        && !stream.is_tls()
        && matches!(info.peer, crate::net::PeerAddr::Tcp(_))
    {
        return Err(Error::SslRequired);
    }
    let mut params = startup::check_params(cfg, &raw)?;
    if !params.unrecognized_protocol_options.is_empty() {
        // NegotiateProtocolVersion comes first, before any authentication request, with
        // protocol 3.0's full code (0x30000), as PostgreSQL and PgBouncer send it.
        let mut out = BytesMut::with_capacity(64);
        build::negotiate_protocol_version(
            &mut out,
            0x3_0000,
            &params.unrecognized_protocol_options,
        );
        stream.send(&out).await.map_err(Error::ClientIo)?;
    }
    if cfg.general.application_name_add_host {
        // PgBouncer appends the client's address once, at connect time.
        let suffix = format!(" - {}:{}", info.peer.host(), info.peer.port());
        match params
            .tracked
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
        {
            Some((_, v)) => v.to_mut().push_str(&suffix),
            None => params.tracked.push((
                "application_name".into(),
                suffix.trim_start().to_string().into(),
            )),
        }
    }
    *info.user.lock() = params.user.to_string();
    *info.db.lock() = params.database.to_string();
    if let Some((_, app)) = params
        .tracked
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
    {
        *info.application_name.lock() = Some(Arc::from(&**app));
    }
    if params.database == ADMIN_DB {
        if own_user(stream, params.user) {
            // PgBouncer's admin_pre_login: user `pgbouncer` over the Unix socket from our own
            // uid is an admin without a password.
            let mut out = BytesMut::with_capacity(16);
            build::auth_ok(&mut out);
            stream.send(&out).await.map_err(Error::ClientIo)?;
            if cfg.general.log_connections {
                tracing::info!("C-{} pgbouncer access from unix socket", info.id);
            }
            info.is_admin.store(true, Ordering::Relaxed);
            crate::pool::stats::PoolStats::add(&ctx.stats.console.client_login_count, 1);
            return Ok(LoggedIn::Admin {
                user: params.user.to_string(),
                admin: true,
            });
        }
        let method = method_for(cfg, info, stream, params.database, params.user)?;
        // PgBouncer's set_pool for the console: a user the auth_file does not name goes to
        // auth_query like any other (global auth_user, in the global auth_dbname).
        let found = match method {
            Method::Any | Method::Reject | Method::Cert(_) | Method::Ldap(_) => {
                cfg.userlist.get(params.user).cloned()
            }
            _ => match Box::pin(auth_query::lookup_admin(ctx, cfg, params.user)).await? {
                auth_query::Found::NoRow => return Err(Error::NoSuchUser),
                found => found.secret().cloned(),
            },
        };
        // Boxed, like every rare step below: this future is built (and copied into its box)
        // at every login, at the size of its largest step.
        Box::pin(auth::authenticate(
            stream,
            method,
            params.user,
            found.as_ref(),
            cfg.general.scram_iterations,
        ))
        .await?;
        let g = &cfg.general;
        let is_admin =
            g.auth_type == AuthType::Any || g.admin_users.iter().any(|u| u == params.user);
        let is_stats = g.stats_users.iter().any(|u| u == params.user);
        if !is_admin && !is_stats {
            return Err(Error::NotAllowed);
        }
        info.is_admin.store(true, Ordering::Relaxed);
        crate::pool::stats::PoolStats::add(&ctx.stats.console.client_login_count, 1);
        return Ok(LoggedIn::Admin {
            user: params.user.to_string(),
            admin: is_admin,
        });
    }
    // SIGTERM stops TCP accepting at once, so a TCP client logging in now was accepted before
    // it: it is let in and served like the clients already connected (refusing it failed
    // SQLAlchemy's new connections during rolling restarts; PgBouncer refuses it). Logins on
    // the Unix socket, which stays open for the console, and any after SIGINT are refused.
    let accepted_before_drain =
        ctx.phase().drains_clients() && matches!(info.peer, crate::net::PeerAddr::Tcp(_));
    if ctx.phase() != Phase::Running && !accepted_before_drain {
        return Err(Error::ShuttingDown);
    }
    let count = ctx.clients.count.fetch_add(1, Ordering::Relaxed) + 1;
    let mut slot = ClientSlot {
        ctx: ctx.clone(),
        counted: None,
    };
    if count > cfg.general.max_client_conn {
        return Err(Error::MaxClientConn);
    }
    // Borrowed when configured: a clone of the entry (a dozen strings) per login shows up in a
    // connect storm; only the `*` fallback needs its own copy.
    let db = match cfg.databases.get(params.database) {
        Some(db) => Some(std::borrow::Cow::Borrowed(db)),
        None => cfg.database(params.database).map(std::borrow::Cow::Owned),
    };
    let method = method_for(cfg, info, stream, params.database, params.user)?;
    if cfg.general.auth_type == AuthType::Ldap
        && db
            .as_deref()
            .is_some_and(|d| auth_query::auth_source(cfg, d).is_some())
    {
        // PgBouncer refuses PAM and LDAP for a database with an auth_user.
        tracing::error!("C-{} {}", info.id, Error::LdapWithAuthUser);
        return Err(Error::LdapWithAuthUser);
    }
    let found = match method {
        // Nothing to look up: no secret is used, and a refused login must not reach a server.
        // LDAP checks the password itself, like PgBouncer's PAM: auth_file is not consulted.
        Method::Any | Method::Reject | Method::Cert(_) | Method::Ldap(_) => {
            auth_query::Found::Unknown
        }
        // The auth_file answers most logins at once; auth_query's round trip is boxed.
        _ => match cfg.userlist.get(params.user) {
            Some(s) => auth_query::Found::File(s),
            None => Box::pin(auth_query::lookup(ctx, cfg, db.as_deref(), params.user)).await?,
        },
    };
    // PgBouncer adds every `[users]` name and every auth_user (global or a database's) as a user
    // with an empty password, so trust lets one in even when no auth_file line or auth_query row
    // names it; and a row auth_query found is a known user for trust whatever its secret.
    let found = match found {
        auth_query::Found::Unknown | auth_query::Found::NoRow
            if method == Method::Trust && known_by_name(cfg, params.user) =>
        {
            auth_query::Found::File(&NO_PASSWORD)
        }
        auth_query::Found::Query(None) if method == Method::Trust => {
            auth_query::Found::File(&NO_PASSWORD)
        }
        // No mock login after auth_query, as in PgBouncer: the client is told.
        auth_query::Found::NoRow => return Err(Error::NoSuchUser),
        found => found,
    };
    // AuthenticationOk goes out with the welcome below, in one write.
    let authed = auth::exchange(
        stream,
        method,
        params.user,
        found.secret(),
        cfg.general.scram_iterations,
    )
    .await?;
    // Reported after authentication since PgBouncer 1.17, so names cannot be probed.
    let db = db.ok_or_else(|| Error::NoSuchDatabase(params.database.to_string()))?;
    if !cfg.databases.contains_key(&db.name) && ctx.pools.of_db(&db.name).is_empty() {
        // The `*` entry serves a name for the first time (PgBouncer's line).
        tracing::info!(
            "C-{} registered new auto-database: {}",
            info.id,
            Clean(&db.name)
        );
    }
    if ctx.disabled_dbs.contains(&db.name) {
        return Err(Error::DatabaseDisabled(db.name.clone()));
    }
    enter_caps(ctx, cfg, &mut slot, &db, params.user)?;
    if cfg.general.auth_type == AuthType::Any && db.user.is_none() {
        return Err(Error::ServerAuth(
            "no user for database with auth_type any".into(),
        ));
    }
    if let Some(mode) = params.replication {
        let set = ctx.pools.get_or_create(cfg, &db, params.user);
        let pool = set.route(Role::Any).pool()?.clone();
        let place = Box::pin(pool.replication_slot()).await?;
        let server = Box::pin(super::replication::open(
            cfg,
            &db,
            &params,
            mode,
            authed.scram_keys,
            &ctx.dns,
        ))
        .await?;
        *info.replication.lock() = super::replication::kind(mode);
        if cfg.general.log_connections {
            tracing::info!(
                "C-{} login attempt: db={} user={} replication={}",
                info.id,
                Clean(params.database),
                Clean(params.user),
                Clean(mode)
            );
        }
        return Ok(LoggedIn::Replication {
            server: Box::new(server),
            slot,
            place,
        });
    }
    let set = ctx.pools.get_or_create(cfg, &db, params.user);
    if db.user.is_none() {
        if let auth_query::Found::Query(Some(secret)) = &found {
            // The server login uses what auth_query found (md5 secret or plain password; a
            // SCRAM secret needs the client's keys, offered just below).
            set.offer_credential(crate::pool::credential_of(secret));
        }
        if let Some((ck, sk)) = authed.scram_keys {
            set.offer_scram_keys(ck, sk);
        }
        if let Some(pw) = &authed.password {
            // The password LDAP accepted logs in to the server too (PgBouncer's ldap_auth_finish).
            set.offer_credential(crate::pool::credential_of(&crate::config::Secret::Plain(
                pw.clone(),
            )));
        }
    }
    // Static `host=` databases serve every role from their one member; a `cluster=` database's
    // clients need the role it names.
    let role = match db.cluster {
        Some(_) => crate::pool::pool_role(db.role.unwrap_or_default()),
        None => Role::Any,
    };
    let mut route = set.route(role);
    // Counted once authenticated with a pool known, as PgBouncer does: a login that then waits
    // for the pool's first server (or fails there) still counts.
    if let Ok(pool) = route.pool() {
        crate::pool::stats::PoolStats::add(&pool.stats.client_login_count, 1);
    }
    let welcome = match set.welcome() {
        Some(w) => w,
        None => {
            // A brand-new pool must log in to a server once to learn what to tell clients.
            // client_login_timeout firing during this wait names the server as the cause.
            awaiting_welcome.store(true, Ordering::Relaxed);
            let server = Box::pin(route.checkout()).await?;
            awaiting_welcome.store(false, Ordering::Relaxed);
            // Learning the welcome is no client's use of a server: PgBouncer counts no server
            // assignment for it (SHOW STATS total_server_assignment_count).
            server
                .pool()
                .stats
                .server_assignment_count
                .fetch_sub(1, Ordering::Relaxed);
            server.release_unused();
            set.welcome()
                .ok_or_else(|| Error::ServerProtocol("no welcome parameters".into()))?
        }
    };
    let kept = set.param_sets(&welcome);
    let status = kept.as_ref().and_then(|k| k.status.clone());
    let (client_params, keep) = params::for_client(cfg, &params.tracked, &welcome, kept);
    if let Some(keep) = keep {
        set.keep_param_sets(keep);
    }
    let settings = set.settings();
    let max_prepared = u64::from(cfg.general.max_prepared_statements);
    // Sized for the whole welcome: growing it (a dozen ParameterStatus, often past 512 bytes)
    // was a reallocation and a copy per login.
    let pairs = |v: &[(Arc<str>, Arc<str>)]| -> usize {
        v.iter().map(|(k, v)| k.len() + v.len() + 7).sum()
    };
    let mut out = BytesMut::with_capacity(
        128 + pairs(welcome.as_slice())
            + pairs(client_params.as_slice())
            + cfg.general.login_notify_message.len(),
    );
    build::auth_ok(&mut out);
    match status.filter(|s| {
        client_params.same(&s.params)
            && s.max_prepared == max_prepared
            && s.pool_mode == settings.pool_mode
    }) {
        Some(s) => out.extend_from_slice(&s.bytes),
        None => {
            let start = out.len();
            write_status(
                &mut out,
                &welcome,
                &client_params,
                max_prepared,
                settings.pool_mode,
            );
            set.keep_status(
                &welcome,
                StatusBlock {
                    params: client_params.shared().clone(),
                    max_prepared,
                    pool_mode: settings.pool_mode,
                    bytes: bytes::Bytes::copy_from_slice(&out[start..]),
                },
            );
        }
    }
    build::backend_key_data(&mut out, info.cancel_key.0, info.cancel_key.1);
    if !cfg.general.login_notify_message.is_empty() {
        // login_notify_message (PgBouncer 1.26): in the same write as the welcome.
        build::notice_response(&mut out, "00000", &cfg.general.login_notify_message, None);
    }
    build::ready_for_query(&mut out, b'I');
    stream.send(&out).await.map_err(Error::ClientIo)?;
    if let Some(app) = client_params.get("application_name") {
        // The shared set's string: the copy made for the login is freed.
        *info.application_name.lock() = Some(app.clone());
    }
    info.set_state(ClientState::Idle);
    if cfg.general.log_connections {
        // PgBouncer's line, with its `tls=` (the connection description, or `no`).
        tracing::info!(
            "C-{} login attempt: db={} user={} tls={}",
            info.id,
            Clean(&params.database),
            Clean(&params.user),
            info.tls.get().map(String::as_str).unwrap_or("no")
        );
    }
    Ok(LoggedIn::Client(Welcomed {
        route,
        settings,
        params: client_params,
        slot,
    }))
}

/// The ParameterStatus messages of a welcome: the server's parameters with the client's values,
/// the client's tracked values the server does not report, then PgBouncer 1.26's own three.
fn write_status(
    out: &mut BytesMut,
    welcome: &Welcome,
    client_params: &Params,
    max_prepared: u64,
    pool_mode: PoolMode,
) {
    // A tracked name the server reports is the welcome's own `Arc` (see `params::for_client`),
    // and the server reports each name once: identity finds the pairs without ~170
    // case-insensitive comparisons.
    for (k, v) in welcome.iter() {
        let v = client_params
            .iter()
            .find(|(n, _)| Arc::ptr_eq(n, k))
            .map(|(_, v)| v)
            .unwrap_or(v);
        build::parameter_status(out, k, v);
    }
    for (k, v) in client_params.iter() {
        if &**v != SERVER_DEFAULT && !welcome.iter().any(|(n, _)| Arc::ptr_eq(n, k)) {
            build::parameter_status(out, k, v);
        }
    }
    // PgBouncer 1.26 announces itself to every client: its version, the global
    // max_prepared_statements and this pool's mode.
    build::parameter_status(out, "pgbouncer.version", crate::admin::PGBOUNCER_VERSION);
    build::parameter_status(
        out,
        "pgbouncer.max_prepared_statements",
        crate::logsafe::decimal(max_prepared, &mut [0; 20]),
    );
    build::parameter_status(out, "pgbouncer.pool_mode", pool_mode.as_str());
}

/// The method for this login: auth_type, or the first matching line of auth_hba_file.
fn method_for<'c>(
    cfg: &'c Config,
    info: &ClientInfo,
    stream: &Stream,
    database: &str,
    user: &str,
) -> Result<Method<'c>> {
    if cfg.general.auth_type != AuthType::Hba {
        return Ok(Method::of(cfg.general.auth_type, cfg.ldap.as_ref()));
    }
    let Some(hba) = cfg.hba.as_ref() else {
        return Err(Error::NoAuthMethod);
    };
    let peer = crate::auth::hba::Peer {
        addr: match &info.peer {
            crate::net::PeerAddr::Tcp(a) => Some(a.ip()),
            crate::net::PeerAddr::Unix => None,
        },
        tls: stream.is_tls(),
        database,
        user,
    };
    hba.rule(&peer)
        .map(|rule| Method::of_hba(rule, cfg.ident.as_ref()))
        .ok_or(Error::NoAuthMethod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse_ini_str(text, std::path::Path::new("t.ini"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn auth_users_and_users_section_names_are_known_for_trust() {
        // PgBouncer adds each to its user list with an empty password (issue #1116).
        let c = cfg("[databases]\nd = host=h auth_user=dbauth\n\
                     [pgbouncer]\nauth_user = globalauth\n[users]\nlimited = pool_size=1\n");
        for name in ["dbauth", "globalauth", "limited"] {
            assert!(known_by_name(&c, name), "{name}");
        }
        assert!(!known_by_name(&c, "stranger"));
    }

    #[test]
    fn the_console_database_is_refused_as_the_global_auth_dbname() {
        let e = crate::config::parse_ini_str(
            "[pgbouncer]\nauth_dbname = pgbouncer\n",
            std::path::Path::new("t.ini"),
        )
        .expect_err("refused");
        assert!(
            e.to_string()
                .contains("cannot use the reserved \"pgbouncer\" database as an auth_dbname"),
            "{e}"
        );
        // The console's auth_query runs in the global auth_dbname, else (refused) in itself.
        let c = cfg("[pgbouncer]\nauth_user = a\nauth_dbname = real\n");
        assert_eq!(auth_query::admin_source(&c).map(|s| s.0), Some("real"));
        let c = cfg("[pgbouncer]\nauth_user = a\n");
        assert_eq!(auth_query::admin_source(&c).map(|s| s.0), Some(ADMIN_DB));
        assert!(auth_query::admin_source(&cfg("[pgbouncer]\n")).is_none());
    }
}
