//! `pgbouncer.ini` syntax: lines, comments, sections, `%include`, `key = value`, and the
//! dispatch of each setting to its section's parser.
//!
//! Owns the walk over the file(s) and the collection of every problem into one `ConfigErrors`.
//! The meaning of the values lives in `ini/general.rs` (`[pgbouncer]`), `ini/entries.rs`
//! (`[databases]`, `[users]`, `[clusters]`) and `ini/value.rs` (shared value syntax). The only I/O it does is
//! reading `%include`d files. It never panics on any input and never puts a password in a message.

mod entries;
mod general;
mod peers;
mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(in crate::config) use value::shown;

use super::keys::{find_key, NO_EFFECT_YET};
use super::{Config, ConfigErrors, ConfigIssue};

/// PgBouncer (libusual) stops at this include depth; so do we, which also breaks include cycles.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Parses the text of a `pgbouncer.ini`. `path` names the file in messages and anchors
/// `%include`s: an include is looked up relative to the current directory (as PgBouncer does) and,
/// when not found there, relative to the directory of the including file.
///
/// Every problem found is returned at once. `auth_file` is not read here (`Config::load` does it).
pub fn parse_ini_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut parser = Parser {
        cfg: Config {
            path: path.to_path_buf(),
            ..Config::default()
        },
        issues: Vec::new(),
        section: Section::None,
        cluster_refs: HashMap::new(),
    };
    parser.parse_text(text, path, 0);
    parser.finish()
}

/// Applies one `[pgbouncer]` setting to a loaded config (console `SET`). Refuses unknown and
/// unimplemented keys and bad values; on error `cfg` is unchanged. A restart-only key is
/// accepted and left unchanged, exactly as PgBouncer's `cf_set` does once the config is loaded
/// (its console answers `SET key=value` and SHOW CONFIG keeps the old value); the log says so.
pub(crate) fn set_general(cfg: &mut Config, key: &str, value: &str) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let info = find_key(&lower).ok_or_else(|| format!("unknown setting {key}"))?;
    if !info.reloadable {
        tracing::warn!(
            "SET {}: the setting cannot change while running, keeping the current value",
            info.name
        );
        return Ok(());
    }
    if !info.implemented {
        return Err(format!("setting {} is not supported", info.name));
    }
    if info.name == "conffile" {
        // As in PgBouncer: the next RELOAD/SIGHUP reads this file instead.
        cfg.path = PathBuf::from(value);
    } else {
        let mut g = cfg.general.clone();
        general::apply(&mut g, info.name, value)?;
        cfg.general = g;
    }
    match cfg.raw_general.iter_mut().find(|(k, _)| k == info.name) {
        Some(slot) => slot.1 = value.to_string(),
        None => cfg
            .raw_general
            .push((info.name.to_string(), value.to_string())),
    }
    Ok(())
}

/// The section the following `key = value` lines belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the first section header.
    None,
    Databases,
    Users,
    Pgbouncer,
    Peers,
    /// Ours: Patroni clusters (`name = patroni=http://host:port,...`).
    Clusters,
    /// An unknown header (already reported); its lines are skipped without more errors.
    Unknown,
}

/// Where a line is, for messages.
#[derive(Debug, Clone, Copy)]
struct Loc<'a> {
    file: &'a str,
    line: usize,
}

/// One pass over the main file and its includes. The current section carries across
/// `%include` boundaries in both directions, exactly like PgBouncer's single parser state.
struct Parser {
    cfg: Config,
    issues: Vec<ConfigIssue>,
    section: Section,
    /// Where each database entry naming a `cluster=` was written (by database name; a later
    /// entry of the same name replaces it). Checked once the whole file is read, because
    /// `[clusters]` may come after `[databases]`.
    cluster_refs: HashMap<String, (String, usize)>,
}

impl Parser {
    fn issue(&mut self, loc: Loc<'_>, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: loc.file.to_string(),
            line: loc.line,
            key: key.to_string(),
            message: message.into(),
            value: None,
        });
    }

    /// A `[pgbouncer]` line PgBouncer's parser would refuse: the value goes into the log line.
    fn bad_value(&mut self, loc: Loc<'_>, key: &str, value: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: loc.file.to_string(),
            line: loc.line,
            key: key.to_string(),
            message: message.into(),
            value: Some(value.to_string()),
        });
    }

    fn unimplemented(&mut self, what: String) {
        if !self.cfg.unimplemented_keys.contains(&what) {
            self.cfg.unimplemented_keys.push(what);
        }
    }

    fn parse_text(&mut self, text: &str, path: &Path, depth: usize) {
        let file = path.display().to_string();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let loc = Loc {
                file: &file,
                line: i + 1,
            };
            self.parse_line(raw, loc, path, depth);
        }
    }

    fn parse_line(&mut self, raw: &str, loc: Loc<'_>, path: &Path, depth: usize) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            return;
        }
        if let Some(rest) = line.strip_prefix("%include") {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                self.include(rest.trim(), loc, path, depth);
                return;
            }
        }
        if let Some(rest) = line.strip_prefix('[') {
            self.section_header(rest, loc);
            return;
        }
        match split_key_value(line) {
            Ok((key, value)) => self.setting(&key, value, loc),
            Err(message) => self.issue(loc, "", message),
        }
    }

    fn section_header(&mut self, after_bracket: &str, loc: Loc<'_>) {
        let Some((name, trailing)) = after_bracket.split_once(']') else {
            self.issue(loc, "", "syntax error: section header without closing ']'");
            self.section = Section::Unknown;
            return;
        };
        let trailing = trailing.trim();
        if !(trailing.is_empty() || trailing.starts_with(';') || trailing.starts_with('#')) {
            self.issue(loc, "", "syntax error: text after section header");
        }
        let name = name.trim();
        self.section = match name.to_ascii_lowercase().as_str() {
            "databases" => Section::Databases,
            "users" => Section::Users,
            "pgbouncer" => Section::Pgbouncer,
            "clusters" => Section::Clusters,
            "peers" => Section::Peers,
            _ => {
                let shown = value::shown(name);
                self.issue(
                    loc,
                    &format!("[{shown}]"),
                    "unknown section (expected [databases], [users], [pgbouncer], [clusters] \
                     or [peers])",
                );
                Section::Unknown
            }
        };
    }

    fn include(&mut self, target: &str, loc: Loc<'_>, path: &Path, depth: usize) {
        if target.is_empty() {
            self.issue(loc, "%include", "syntax error: %include needs a file name");
            return;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            self.issue(
                loc,
                "%include",
                format!("include nesting deeper than {MAX_INCLUDE_DEPTH} (include loop?)"),
            );
            return;
        }
        let resolved = resolve_include(target, path);
        match std::fs::read_to_string(&resolved) {
            Ok(text) => {
                tracing::debug!(file = %resolved.display(), "processing %include");
                self.parse_text(&text, &resolved, depth + 1);
            }
            Err(e) => self.issue(
                loc,
                "%include",
                format!("cannot read included file {}: {e}", resolved.display()),
            ),
        }
    }

    fn setting(&mut self, key: &str, value: &str, loc: Loc<'_>) {
        match self.section {
            Section::None => self.issue(
                loc,
                key,
                "setting outside of any section (expected a [section] header first)",
            ),
            Section::Databases => self.database(key, value, loc),
            Section::Users => self.user(key, value, loc),
            Section::Pgbouncer => self.general(key, value, loc),
            Section::Peers => self.peer(key, value, loc),
            Section::Clusters => self.cluster(key, value, loc),
            Section::Unknown => {}
        }
    }

    fn database(&mut self, name: &str, connstr: &str, loc: Loc<'_>) {
        if name == "pgbouncer" {
            self.issue(
                loc,
                name,
                "database name \"pgbouncer\" is reserved for the admin console",
            );
            return;
        }
        let outcome = entries::parse_database(name, connstr);
        for message in outcome.errors {
            self.issue(loc, name, message);
        }
        for key in outcome.unimplemented {
            self.unimplemented(format!("[databases] {name}: {key}"));
        }
        match outcome.value.as_ref().and_then(|db| db.cluster.as_ref()) {
            Some(_) => {
                self.cluster_refs
                    .insert(name.to_string(), (loc.file.to_string(), loc.line));
            }
            None => {
                self.cluster_refs.remove(name);
            }
        }
        if let Some(db) = outcome.value {
            if name == "*" {
                self.cfg.fallback_database = Some(db);
            } else {
                self.cfg.databases.insert(name.to_string(), db);
            }
        }
    }

    fn peer(&mut self, id: &str, settings: &str, loc: Loc<'_>) {
        match peers::parse_peer(id, settings) {
            Ok((id, peer)) => {
                self.cfg.peers.insert(id, peer);
            }
            Err(messages) => {
                for message in messages {
                    self.issue(loc, id, message);
                }
            }
        }
    }

    fn cluster(&mut self, name: &str, settings: &str, loc: Loc<'_>) {
        if name == "*" {
            self.issue(loc, name, "a cluster needs a name (\"*\" is not one)");
            return;
        }
        let outcome = entries::parse_cluster(name, settings);
        for message in outcome.errors {
            self.issue(loc, name, message);
        }
        if let Some(cluster) = outcome.value {
            self.cfg.clusters.insert(name.to_string(), cluster);
        }
    }

    fn user(&mut self, name: &str, settings: &str, loc: Loc<'_>) {
        let outcome = entries::parse_user(name, settings);
        for message in outcome.errors {
            self.issue(loc, name, message);
        }
        for key in outcome.unimplemented {
            self.unimplemented(format!("[users] {name}: {key}"));
        }
        if let Some(user) = outcome.value {
            self.cfg.users.insert(name.to_string(), user);
        }
    }

    fn general(&mut self, key: &str, value: &str, loc: Loc<'_>) {
        let lower = key.to_ascii_lowercase();
        let Some(info) = find_key(&lower) else {
            self.bad_value(loc, key, value, "unknown setting");
            return;
        };
        match self
            .cfg
            .raw_general
            .iter_mut()
            .find(|(k, _)| k == info.name)
        {
            Some(slot) => slot.1 = value.to_string(),
            None => self
                .cfg
                .raw_general
                .push((info.name.to_string(), value.to_string())),
        }
        if info.name == "conffile" {
            // PgBouncer's cf_config_file: the file the next RELOAD/SIGHUP reads.
            self.cfg.path = PathBuf::from(value);
            return;
        }
        if !info.implemented {
            self.unimplemented(info.name.to_string());
            return;
        }
        if let Err(message) = general::apply(&mut self.cfg.general, info.name, value) {
            self.bad_value(loc, info.name, value, message);
        } else if NO_EFFECT_YET.contains(&info.name) {
            self.unimplemented(info.name.to_string());
        }
    }

    fn finish(mut self) -> Result<Config, ConfigErrors> {
        self.check_cluster_refs();
        if self.issues.is_empty() {
            Ok(self.cfg)
        } else {
            Err(ConfigErrors(self.issues))
        }
    }
}

impl Parser {
    /// Every `cluster=` must name a `[clusters]` entry of the final file.
    fn check_cluster_refs(&mut self) {
        let mut refs: Vec<_> = self.cluster_refs.drain().collect();
        refs.sort_by(|a, b| (&a.1 .0, a.1 .1).cmp(&(&b.1 .0, b.1 .1)));
        for (db, (file, line)) in refs {
            let entry = if db == "*" {
                self.cfg.fallback_database.as_ref()
            } else {
                self.cfg.databases.get(&db)
            };
            let Some(cluster) = entry.and_then(|d| d.cluster.clone()) else {
                continue;
            };
            if !self.cfg.clusters.contains_key(&cluster) {
                let loc = Loc { file: &file, line };
                self.issue(
                    loc,
                    &db,
                    format!(
                        "cluster: no cluster named \"{}\" in [clusters]",
                        value::shown(&cluster)
                    ),
                );
            }
        }
    }
}

/// Splits `key = value` (the line is already trimmed). The key is either bare
/// (`[A-Za-z0-9_.*-]+`, PgBouncer's set) or SQL double-quoted with `""` for a quote.
fn split_key_value(line: &str) -> Result<(String, &str), String> {
    let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let (key, rest) = value::unquote_double(quoted)
            .ok_or_else(|| "syntax error: unterminated quoted name".to_string())?;
        if key.is_empty() {
            return Err("syntax error: empty quoted name".to_string());
        }
        (key, rest)
    } else {
        let end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-*".contains(c)))
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(end);
        if key.is_empty() {
            return Err(
                "syntax error: expected a name (letters, digits, _ . - * or a \"quoted name\")"
                    .to_string(),
            );
        }
        (key.to_string(), rest)
    };
    let Some(value) = rest.trim_start_matches([' ', '\t']).strip_prefix('=') else {
        return Err(format!(
            "syntax error: expected '=' after \"{}\"",
            value::shown(&key)
        ));
    };
    Ok((key, value.trim()))
}

/// `%include` lookup: as written (so relative to the current directory, like PgBouncer), else
/// relative to the including file's directory.
fn resolve_include(target: &str, including: &Path) -> PathBuf {
    let as_written = PathBuf::from(target);
    if as_written.is_absolute() || as_written.exists() {
        return as_written;
    }
    match including.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            let beside = dir.join(&as_written);
            if beside.exists() {
                beside
            } else {
                as_written
            }
        }
        _ => as_written,
    }
}
