//! SHOW CONFIG: every `[pgbouncer]` setting, sorted by key, with its value in force (as written,
//! or as changed by SET), PgBouncer's default, and whether it can change without a restart.

use super::{rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::config::GENERAL_KEYS;

pub fn config(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cfg = cmd.s.ctx.config();
    let data = GENERAL_KEYS
        .iter()
        .map(|k| {
            let value = match k.name {
                "conffile" => cfg.path.display().to_string(),
                _ => cfg
                    .raw_general
                    .iter()
                    .find(|(name, _)| name == k.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| k.default.to_string()),
            };
            vec![
                text(k.name),
                text(value),
                text(k.default),
                text(if k.reloadable { "yes" } else { "no" }),
            ]
        })
        .collect();
    let cols = [
        ("key", oid::TEXT),
        ("value", oid::TEXT),
        ("default", oid::TEXT),
        ("changeable", oid::TEXT),
    ];
    Ok(rows(&cols, data))
}
