//! The secret provider: a user's secret from the auth_file, else from `auth_query` run over the
//! pool of (auth_dbname, auth_user), at every login that needs it (as PgBouncer does).
//!
//! The query runs on a server taken from the pool through its public checkout/checkin, with the
//! extended protocol and the user name as `$1`, as PgBouncer does. Secrets are never logged or
//! put into error texts. A user the query does not find is refused with PgBouncer's "no such
//! user" (PgBouncer has no mock login for auth_query); a row with a NULL secret is a user that
//! no password matches.

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use crate::config::{Config, DatabaseConfig, Secret};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::server::ServerConn;

/// Where auth_query runs for a database, if it is configured for it: (auth db name, auth user,
/// query). Per-database keys win over the global ones.
pub fn auth_source<'a>(
    cfg: &'a Config,
    db: &'a DatabaseConfig,
) -> Option<(&'a str, &'a str, &'a str)> {
    let sec = &cfg.general.security;
    let user = db.auth_user.as_deref().or(sec.auth_user.as_deref())?;
    let dbname = db
        .auth_dbname
        .as_deref()
        .or(sec.auth_dbname.as_deref())
        .unwrap_or(db.name.as_str());
    let query = db.auth_query.as_deref().unwrap_or(sec.auth_query.as_str());
    Some((dbname, user, query))
}

/// Where auth_query runs for a login to the admin console (`pgbouncer`) by a user the
/// auth_file does not name: PgBouncer's global auth_user, in the global auth_dbname, else in
/// the console's own database, which [`lookup_admin`] refuses as PgBouncer does.
pub fn admin_source(cfg: &Config) -> Option<(&str, &str, &str)> {
    let sec = &cfg.general.security;
    let user = sec.auth_user.as_deref()?;
    let dbname = sec
        .auth_dbname
        .as_deref()
        .unwrap_or(crate::session::link::ADMIN_DB);
    Some((dbname, user, sec.auth_query.as_str()))
}

/// What the provider found.
pub enum Found<'a> {
    /// From the auth_file, borrowed from the login's config snapshot: a clone was a malloc
    /// (and a free) per login.
    File(&'a Secret),
    /// auth_query returned a row (`None`: its secret is NULL or empty, so no password matches).
    Query(Option<Secret>),
    /// auth_query returned no row: PgBouncer's "no such user".
    NoRow,
    /// Nowhere to look: an unknown user.
    Unknown,
}

impl Found<'_> {
    /// The secret, if any.
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Found::File(s) => Some(s),
            Found::Query(Some(s)) => Some(s),
            _ => None,
        }
    }
}

/// The user's secret: the auth_file first, then auth_query when `db` configures it.
pub async fn lookup<'a>(
    ctx: &Arc<Context>,
    cfg: &'a Config,
    db: Option<&DatabaseConfig>,
    user: &str,
) -> Result<Found<'a>> {
    if let Some(s) = cfg.userlist.get(user) {
        return Ok(Found::File(s));
    }
    lookup_in(ctx, cfg, db.and_then(|d| auth_source(cfg, d)), user).await
}

/// The secret of a user logging in to the admin console: the auth_file, then auth_query as
/// [`admin_source`] says (PgBouncer runs it for the console too).
pub async fn lookup_admin<'a>(
    ctx: &Arc<Context>,
    cfg: &'a Config,
    user: &str,
) -> Result<Found<'a>> {
    if let Some(s) = cfg.userlist.get(user) {
        return Ok(Found::File(s));
    }
    lookup_in(ctx, cfg, admin_source(cfg), user).await
}

async fn lookup_in(
    ctx: &Arc<Context>,
    cfg: &Config,
    source: Option<(&str, &str, &str)>,
    user: &str,
) -> Result<Found<'static>> {
    let Some((auth_db, auth_user, query)) = source else {
        return Ok(Found::Unknown);
    };
    // Checked before the cache, as PgBouncer checks at every login: a DISABLEd auth database
    // refuses logins that need it at once (texts as PgBouncer logs them).
    if auth_db == crate::session::link::ADMIN_DB {
        tracing::error!("cannot use the reserved \"pgbouncer\" database as an auth_dbname");
        return Err(Error::BouncerConfig);
    }
    if ctx.disabled_dbs.contains(auth_db) {
        return Err(Error::AuthDatabaseDisabled(auth_db.to_string()));
    }
    let Some(auth_db_cfg) = cfg.database(auth_db) else {
        tracing::error!(
            "authentication database \"{}\" is not configured",
            crate::logsafe::Clean(auth_db)
        );
        return Err(Error::BouncerConfig);
    };
    let set = ctx.pools.get_or_create(cfg, &auth_db_cfg, auth_user);
    let mut lease = set.route(crate::pool::Role::Any).checkout().await?;
    let answer = run_query(&mut lease, query, user, cfg.general.max_packet_size).await;
    let reusable = answer.is_ok() && lease.tx_status == b'I' && lease.buf.is_empty();
    lease.release(reusable);
    // Run at every login, as PgBouncer does: a changed password, or a role the query now
    // answers NULL for (PgBouncer 1.24.1+'s default query does for an expired VALID UNTIL),
    // takes effect at the next login.
    Ok(found_of(answer?))
}

fn found_of(row: Option<Option<Secret>>) -> Found<'static> {
    match row {
        Some(secret) => Found::Query(secret),
        None => Found::NoRow,
    }
}

/// Parse/Bind/Execute/Sync of `query` with `$1 = user`; expects (name, secret) columns.
async fn run_query(
    conn: &mut ServerConn,
    query: &str,
    user: &str,
    max_packet: u32,
) -> Result<Option<Option<Secret>>> {
    let bad = |e: &dyn std::fmt::Display| Error::AuthQuery(e.to_string());
    let mut out = BytesMut::with_capacity(query.len() + user.len() + 64);
    frontend::parse("", query, std::iter::empty(), &mut out).map_err(|e| bad(&e))?;
    frontend::bind(
        "",
        "",
        Some(0),
        Some(user),
        |v, buf| {
            buf.put_slice(v.as_bytes());
            Ok(IsNull::No)
        },
        Some(0),
        &mut out,
    )
    .map_err(|_| Error::AuthQuery("cannot encode the user name".into()))?;
    frontend::execute("", 0, &mut out).map_err(|e| bad(&e))?;
    frontend::sync(&mut out);
    conn.stream.send(&out).await.map_err(Error::ServerIo)?;
    let mut found: Option<Option<Secret>> = None;
    let mut failure: Option<Error> = None;
    loop {
        let frame = conn.read_frame(max_packet).await?;
        match frame.tag {
            b'T' => {
                let n = match frame.body.get(..2) {
                    Some(b) => i16::from_be_bytes([b[0], b[1]]),
                    None => return Err(Error::ServerProtocol("short RowDescription".into())),
                };
                if n != 2 && failure.is_none() {
                    failure = Some(Error::AuthQuery(format!(
                        "expected 2 columns from auth_query, not {n}"
                    )));
                }
            }
            b'D' if failure.is_none() && found.is_none() => {
                found = Some(parse_row(&frame.body)?);
            }
            b'E' if failure.is_none() => {
                let msg = crate::proto::build::parse_error_fields(&frame.body)
                    .map(|f| f.message)
                    .unwrap_or_default();
                failure = Some(Error::AuthQuery(msg));
            }
            b'Z' => {
                conn.tx_status = frame.body.first().copied().unwrap_or(b'I');
                break;
            }
            _ => {}
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(found)
}

/// The secret column of a DataRow (the name column is not needed); NULL = cannot log in.
fn parse_row(body: &[u8]) -> Result<Option<Secret>> {
    let short = || Error::AuthQuery("short DataRow".into());
    let mut b = body;
    if b.remaining() < 2 || b.get_i16() != 2 {
        return Err(Error::AuthQuery(
            "expected 2 columns from auth_query".into(),
        ));
    }
    let mut secret = None;
    for i in 0..2 {
        if b.remaining() < 4 {
            return Err(short());
        }
        let len = b.get_i32();
        if len < 0 && i == 0 {
            // PgBouncer drops the auth server here and tells the client "bouncer config error"
            // (a lookup function returning a row of NULLs for an unknown user does this).
            return Err(Error::AuthQuery(
                "auth_query response contained null user name".into(),
            ));
        }
        if len < 0 {
            continue;
        }
        let len = len as usize;
        if b.remaining() < len {
            return Err(short());
        }
        if i == 1 {
            secret = Some(String::from_utf8_lossy(&b[..len]).into_owned());
        }
        b.advance(len);
    }
    Ok(secret.filter(|s| !s.is_empty()).map(|s| classify(&s)))
}

/// pg_authid's forms: `md5…`, `SCRAM-SHA-256$…`, anything else is a plain password.
fn classify(s: &str) -> Secret {
    if s.len() == 35 && s.starts_with("md5") {
        Secret::Md5(s.to_string())
    } else if s.starts_with("SCRAM-SHA-256$") {
        Secret::Scram(s.to_string())
    } else {
        Secret::Plain(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(cols.len() as i16);
        for c in cols {
            match c {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        b.to_vec()
    }

    #[test]
    fn rows_give_secrets() {
        let md5 = "md5".to_string() + &"a".repeat(32);
        assert_eq!(
            parse_row(&row(&[Some("u"), Some(&md5)])).unwrap(),
            Some(Secret::Md5(md5.clone()))
        );
        assert_eq!(parse_row(&row(&[Some("u"), None])).unwrap(), None);
        assert!(parse_row(&row(&[None, None])).is_err());
        assert!(parse_row(&row(&[Some("u")])).is_err());
        assert!(parse_row(&row(&[Some("u"), Some("x")])[..8]).is_err());
        assert!(matches!(
            classify("SCRAM-SHA-256$4096:c2FsdA==$a:b"),
            Secret::Scram(_)
        ));
    }
}
