//! The `auth_file` (userlist.txt): `"user" "secret"` lines, and the classification of each secret
//! as plain text, an MD5 hash or a SCRAM-SHA-256 verifier.
//!
//! Owns parsing only; reading the file is `Config::load`'s job. It must never put a secret into an
//! error message or `Debug` output (the `Debug` of `Secret` is redacted for that reason).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::{ConfigErrors, ConfigIssue};

/// A stored password as the auth file spells it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A cleartext password.
    Plain(String),
    /// The full `md5<32 hex digits>` string: md5(password || username).
    Md5(String),
    /// The full `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` verifier.
    Scram(String),
}

impl Secret {
    /// Classifies a secret as PgBouncer does: `md5` + 32 hex digits is an MD5 hash, a
    /// `SCRAM-SHA-256$` prefix a SCRAM verifier, anything else plain text.
    pub fn classify(secret: &str) -> Secret {
        let is_md5 = secret.len() == 35
            && secret.starts_with("md5")
            && secret.bytes().skip(3).all(|b| b.is_ascii_hexdigit());
        if is_md5 {
            Secret::Md5(secret.to_string())
        } else if secret.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(secret.to_string())
        } else {
            Secret::Plain(secret.to_string())
        }
    }

    /// The secret exactly as stored (including the `md5` / `SCRAM-SHA-256$` prefix).
    pub fn as_str(&self) -> &str {
        match self {
            Secret::Plain(s) | Secret::Md5(s) | Secret::Scram(s) => s,
        }
    }
}

/// Redacted: shows only the kind of secret, never its text.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Secret::Plain(_) => "Plain",
            Secret::Md5(_) => "Md5",
            Secret::Scram(_) => "Scram",
        };
        write!(f, "{kind}(<redacted>)")
    }
}

/// The users of the auth file, by name. A later line for the same user replaces an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserList {
    users: HashMap<String, Secret>,
}

impl UserList {
    /// The stored secret of `user`.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// `true` when the file had no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// All users and their secrets, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.users
            .iter()
            .map(|(name, secret)| (name.as_str(), secret))
    }
}

/// Parses an auth file. One user per line: `"name" "secret"`, each field double-quoted with `""`
/// for a literal quote; anything after the second field is ignored. Blank lines and lines starting
/// with `;` are skipped. Every malformed line is reported (by line number, never by content).
pub fn parse_userlist(text: &str, path: &Path) -> Result<UserList, ConfigErrors> {
    let file = path.display().to_string();
    let mut list = UserList::default();
    let mut issues = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        match parse_line(line) {
            Ok((user, secret)) => {
                list.users.insert(user, Secret::classify(&secret));
            }
            Err((user, message)) => issues.push(ConfigIssue {
                file: file.clone(),
                line: i + 1,
                key: user,
                message: message.to_string(),
                value: None,
            }),
        }
    }
    if issues.is_empty() {
        Ok(list)
    } else {
        Err(ConfigErrors(issues))
    }
}

/// One non-comment line. The error carries the user name when it was read (it is not a secret).
fn parse_line(line: &str) -> Result<(String, String), (String, &'static str)> {
    const EXPECTED: &str = "expected \"user\" \"secret\" (double-quoted, \"\" for a quote)";
    let Some((user, rest)) = line.strip_prefix('"').and_then(read_quoted) else {
        return Err((String::new(), EXPECTED));
    };
    if user.is_empty() {
        return Err((user, "empty user name"));
    }
    let rest = rest.trim_start();
    let Some((secret, _ignored)) = rest.strip_prefix('"').and_then(read_quoted) else {
        return Err((user, EXPECTED));
    };
    Ok((user, secret))
}

/// Reads a double-quoted field whose opening quote is consumed; `""` is a quote. Returns the field
/// and the text after the closing quote, or `None` when the quote is never closed.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if matches!(chars.peek(), Some((_, '"'))) {
            out.push('"');
            chars.next();
        } else {
            return Some((out, &s[i + 1..]));
        }
    }
    None
}
