//! `auth_ident_file`: PostgreSQL's pg_ident.conf user name maps, for the `map=NAME` option of HBA
//! `peer` and `cert` lines (PgBouncer 1.23+).
//!
//! A line is `MAPNAME SYSTEM-USERNAME DATABASE-USERNAME`. The system name is matched exactly, or,
//! when it starts with `/`, as a regular expression (unanchored, as in PostgreSQL) whose first
//! capture group replaces `\1` in the database name. A database name of `all` (unquoted) allows
//! any user. Double quotes keep spaces and make `all` a plain name; `#` starts a comment.
//! Pure: the file is read once by [`IdentMap::load`], and checking does no I/O.

use std::path::Path;

use regex::Regex;

/// What a line's system-user field matches.
#[derive(Debug, Clone)]
enum System {
    Exact(String),
    Pattern(Regex),
}

/// What a line's database-user field allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    All,
    /// A name; with a regex system field, `\1` in it is replaced by the first capture.
    Name(String),
}

#[derive(Debug, Clone)]
struct Line {
    map: String,
    system: System,
    target: Target,
}

/// A parsed ident map file, in file order (any matching line allows the login).
#[derive(Debug, Clone, Default)]
pub struct IdentMap {
    lines: Vec<Line>,
}

impl PartialEq for IdentMap {
    // Regexes have no equality; their source text stands for them (Config derives PartialEq).
    fn eq(&self, other: &Self) -> bool {
        let key = |m: &IdentMap| {
            m.lines
                .iter()
                .map(|l| {
                    let sys = match &l.system {
                        System::Exact(s) => (false, s.clone()),
                        System::Pattern(r) => (true, r.as_str().to_string()),
                    };
                    (l.map.clone(), sys, l.target.clone())
                })
                .collect::<Vec<_>>()
        };
        key(self) == key(other)
    }
}

impl Eq for IdentMap {}

impl IdentMap {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<IdentMap, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        IdentMap::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses ident map text; an error names the line.
    pub fn parse(text: &str) -> Result<IdentMap, String> {
        let mut lines = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let f = tokens(raw).map_err(|e| format!("line {}: {e}", no + 1))?;
            if f.is_empty() {
                continue;
            }
            lines.push(parse_line(&f).map_err(|e| format!("line {}: {e}", no + 1))?);
        }
        Ok(IdentMap { lines })
    }

    /// Whether map `map` lets the OS or certificate user `system` log in as `user`.
    pub fn allows(&self, map: &str, system: &str, user: &str) -> bool {
        self.lines
            .iter()
            .filter(|l| l.map == map)
            .any(|l| l.allows(system, user))
    }
}

impl Line {
    fn allows(&self, system: &str, user: &str) -> bool {
        match (&self.system, &self.target) {
            (System::Exact(s), Target::All) => s == system,
            (System::Exact(s), Target::Name(n)) => s == system && n == user,
            (System::Pattern(r), target) => {
                let Some(caps) = r.captures(system) else {
                    return false;
                };
                match target {
                    Target::All => true,
                    Target::Name(n) if n.contains("\\1") => match caps.get(1) {
                        Some(c) => n.replacen("\\1", c.as_str(), 1) == user,
                        // PostgreSQL refuses a `\1` the expression has no group for.
                        None => false,
                    },
                    Target::Name(n) => n == user,
                }
            }
        }
    }
}

/// One field: its text without quotes, and whether any part was quoted.
type Token = (String, bool);

/// Splits on whitespace outside double quotes; `""` inside quotes is one `"`; `#` outside quotes
/// ends the line.
fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            '#' if !in_quotes => break,
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() || quoted {
                    out.push((std::mem::take(&mut cur), quoted));
                }
                quoted = false;
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted name".to_string());
    }
    if !cur.is_empty() || quoted {
        out.push((cur, quoted));
    }
    Ok(out)
}

fn parse_line(f: &[Token]) -> Result<Line, String> {
    let [(map, _), (system, _), (target, target_quoted)] = f else {
        return Err(format!(
            "expected MAPNAME SYSTEM-USERNAME DATABASE-USERNAME, got {} fields",
            f.len()
        ));
    };
    if map.starts_with('@')
        || map == "include"
        || map == "include_dir"
        || map == "include_if_exists"
    {
        return Err(format!("includes are not supported (\"{map}\")"));
    }
    let system = match system.strip_prefix('/') {
        // PostgreSQL reads a quoted "/..." as a regular expression too.
        Some(re) => System::Pattern(
            Regex::new(re).map_err(|e| format!("invalid regular expression \"{re}\": {e}"))?,
        ),
        None => System::Exact(system.clone()),
    };
    let target = match (target.as_str(), target_quoted) {
        ("all", false) => Target::All,
        (t, false) if t.starts_with('+') => {
            return Err(format!("group names are not supported (\"{t}\")"));
        }
        (t, false) if t.starts_with('/') => {
            return Err(format!(
                "regular expressions as database user names are not supported (\"{t}\")"
            ));
        }
        (t, _) => Target::Name(t.to_string()),
    };
    Ok(Line {
        map: map.clone(),
        system,
        target,
    })
}

#[cfg(test)]
mod tests;
