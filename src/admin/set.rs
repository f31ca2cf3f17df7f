//! `SET key = value`: the fake driver parameters (any console user, answered `SET ignored`), and
//! the `[pgbouncer]` settings that may change at run time (admin users; tag `SET key=value`,
//! or ERROR `SET failed`).

use super::show::fake_param;
use super::{AdminSession, CommandError, Reply};

/// Runs one SET.
pub fn run(s: &AdminSession, key: &str, value: &str) -> Result<Reply, CommandError> {
    if fake_param(key).is_some() {
        return Ok(Reply::Tag {
            tag: "SET".into(),
            notice: Some(("SET ignored".into(), None)),
        });
    }
    if !s.admin {
        return Err(CommandError::new("admin access needed"));
    }
    let mut cfg = (*s.ctx.config()).clone();
    if let Err(why) = cfg.set_general(key, value) {
        tracing::warn!(
            "SET {} failed: {}",
            crate::logsafe::Clean(key),
            crate::logsafe::Clean(&why)
        );
        return Err(CommandError::new("SET failed"));
    }
    s.ctx.replace_config(cfg);
    tracing::info!("SET {key}={value} command issued");
    Ok(Reply::Tag {
        tag: format!("SET {key}={value}"),
        notice: None,
    })
}
