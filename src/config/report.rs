//! A rejected config in the log, in PgBouncer's words: operators' greps and PgBouncer's test
//! suite look for them. The console caller and `--check` keep our own `file:line: key: problem`
//! text (`ConfigIssue`'s Display); this only decides the log lines, and writes nothing else.

use tracing::Level;

use super::{ConfigErrors, ConfigIssue};
use crate::logsafe::Clean;

impl ConfigIssue {
    /// The lines PgBouncer's loader logs for this problem, with their levels.
    ///
    /// A `[pgbouncer]` value its parser refuses is `ERROR invalid value "<value>" for parameter
    /// <key> in configuration (<file>:<line>)` (libusual's cfparser; our reason follows after
    /// `: `). Newer PgBouncer range-checks `max_prepared_statements` itself and also logs
    /// `WARNING invalid max_prepared_statements = <value>` (its test_prepared.py greps that).
    pub fn log_lines(&self) -> Vec<(Level, String)> {
        let Some(value) = &self.value else {
            return vec![(Level::ERROR, self.to_string())];
        };
        let mut lines = Vec::with_capacity(2);
        if self.key == "max_prepared_statements" {
            lines.push((Level::WARN, format!("invalid {} = {value}", self.key)));
        }
        lines.push((
            Level::ERROR,
            format!(
                "invalid value \"{value}\" for parameter {} in configuration ({}:{}): {}",
                self.key, self.file, self.line, self.message
            ),
        ));
        lines
    }
}

impl ConfigErrors {
    /// Logs every problem (see [`ConfigIssue::log_lines`]). The caller adds what happens next:
    /// `config file loading failed` on a reload, FATAL `cannot load config file` at start-up.
    pub fn log(&self) {
        for (level, text) in self.0.iter().flat_map(ConfigIssue::log_lines) {
            // A value may hold any byte the file does; no escape sequence reaches a terminal.
            let text = Clean(&text);
            match level {
                Level::WARN => tracing::warn!("{text}"),
                _ => tracing::error!("{text}"),
            }
        }
    }
}
