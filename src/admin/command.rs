//! Parsing of one console statement and dispatch to the command that answers it.

use super::{oid, AdminSession, CommandError, Reply, PGBOUNCER_VERSION};

/// Runs one statement.
pub async fn run(s: &AdminSession, text: &str) -> Result<Reply, CommandError> {
    let _ = s;
    let stmt = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = stmt.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["show" | "select", "version"] => Ok(Reply::Rows {
            columns: vec![("version", oid::TEXT)],
            rows: vec![vec![Some(format!("PgBouncer {PGBOUNCER_VERSION}"))]],
        }),
        _ => Err(CommandError::new(format!(
            "invalid command '{text}', use SHOW HELP;"
        ))),
    }
}
