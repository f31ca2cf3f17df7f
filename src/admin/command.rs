//! One console statement: PgBouncer's grammar (`WORD [WORD] [;]`, `SET key = value|'string'`,
//! `SET key TO ...`), then dispatch to SHOW, SET or a control command.
//!
//! The parser is a hand-written equivalent of PgBouncer's three regexes (case-insensitive words
//! of `[0-9a-z_]` or double-quoted identifiers; single-quoted SET values; the same length caps),
//! so anything PgBouncer rejects as `invalid command` is rejected here too. It does no I/O.

use super::{control, set, show, AdminSession, CommandError, Reply};

/// PgBouncer's buffers: a command name shorter than 16 bytes, an argument or SET key shorter
/// than 64, a SET value shorter than 256. Longer ones are `bad arguments`.
const MAX_CMD: usize = 16;
const MAX_ARG: usize = 64;
const MAX_VAL: usize = 256;

/// A parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `WORD [WORD]`: the command and its (unquoted) argument, empty when absent.
    Command { name: String, arg: String },
    /// `SET key = value`.
    Set { key: String, value: String },
}

/// Why a statement was refused before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Matches none of the forms: `invalid command '...', use SHOW HELP;`.
    Syntax,
    /// Right form, a part too long: `bad arguments`.
    BadArguments,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A word; `raw_len` counts the quotes of a quoted identifier (PgBouncer's length check).
    Word {
        text: String,
        quoted: bool,
        raw_len: usize,
    },
    /// A single-quoted string.
    Str {
        text: String,
        raw_len: usize,
    },
    Eq,
    Semi,
}

/// Splits a statement into tokens. Two words (or a word and a string) must be separated by
/// whitespace, as PgBouncer's `WS1` demands.
fn lex(text: &str) -> Result<Vec<Tok>, ParseError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut space = false;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            space = true;
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'=' => {
                i += 1;
                Tok::Eq
            }
            b';' => {
                i += 1;
                Tok::Semi
            }
            b'"' | b'\'' => {
                let (text, end) = quoted(text, i, c).ok_or(ParseError::Syntax)?;
                i = end;
                if c == b'"' {
                    // PgBouncer's quoted WORD needs at least one character inside.
                    if text.is_empty() {
                        return Err(ParseError::Syntax);
                    }
                    Tok::Word {
                        text,
                        quoted: true,
                        raw_len: end - start,
                    }
                } else {
                    Tok::Str {
                        text,
                        raw_len: end - start,
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Tok::Word {
                    text: text[start..i].to_string(),
                    quoted: false,
                    raw_len: i - start,
                }
            }
            _ => return Err(ParseError::Syntax),
        };
        let wordy = |t: &Tok| matches!(t, Tok::Word { .. } | Tok::Str { .. });
        if !space && wordy(&tok) && out.last().is_some_and(wordy) {
            return Err(ParseError::Syntax);
        }
        out.push(tok);
        space = false;
    }
    Ok(out)
}

/// Reads a `q`-quoted token starting at `start` (doubled quotes escape). Returns the text and
/// the index after the closing quote.
fn quoted(text: &str, start: usize, q: u8) -> Option<(String, usize)> {
    let b = text.as_bytes();
    let mut i = start + 1;
    let mut out = Vec::new();
    loop {
        let c = *b.get(i)?;
        if c == q {
            if b.get(i + 1) == Some(&q) {
                out.push(q);
                i += 2;
                continue;
            }
            return Some((String::from_utf8(out).ok()?, i + 1));
        }
        out.push(c);
        i += 1;
    }
}

fn word(tok: &Tok) -> Option<(&str, bool, usize)> {
    match tok {
        Tok::Word {
            text,
            quoted,
            raw_len,
        } => Some((text, *quoted, *raw_len)),
        _ => None,
    }
}

/// Parses one statement.
pub fn parse(text: &str) -> Result<Statement, ParseError> {
    let mut toks = lex(text)?;
    if toks.last() == Some(&Tok::Semi) {
        toks.pop();
    }
    if toks.contains(&Tok::Semi) {
        return Err(ParseError::Syntax);
    }
    let is_kw =
        |t: &Tok, kw: &str| matches!(word(t), Some((w, false, _)) if w.eq_ignore_ascii_case(kw));
    match toks.as_slice() {
        [name] | [name, _] if word(name).is_some() => {
            let (name, _, name_len) = word(name).expect("invariant: checked above");
            let arg = match toks.get(1) {
                None => None,
                Some(t) => Some(word(t).ok_or(ParseError::Syntax)?),
            };
            if name_len >= MAX_CMD || arg.is_some_and(|(_, _, len)| len >= MAX_ARG) {
                return Err(ParseError::BadArguments);
            }
            Ok(Statement::Command {
                name: name.to_string(),
                arg: arg.map(|(a, _, _)| a.to_string()).unwrap_or_default(),
            })
        }
        [set, key, op, value] if is_kw(set, "set") && (*op == Tok::Eq || is_kw(op, "to")) => {
            let (key, _, key_len) = word(key).ok_or(ParseError::Syntax)?;
            let (value, value_len) = match value {
                Tok::Str { text, raw_len } => (text.as_str(), *raw_len),
                t => word(t)
                    .map(|(w, _, len)| (w, len))
                    .ok_or(ParseError::Syntax)?,
            };
            if key_len >= MAX_ARG || value_len >= MAX_VAL {
                return Err(ParseError::BadArguments);
            }
            Ok(Statement::Set {
                key: key.to_string(),
                value: value.to_string(),
            })
        }
        _ => Err(ParseError::Syntax),
    }
}

/// What every handler gets: the session, the argument and the statement as sent.
pub struct Cmd<'a> {
    /// The console session running the statement.
    pub s: &'a AdminSession,
    /// The argument (empty when none).
    pub arg: &'a str,
    /// The query text as received, for `invalid command '...'`.
    pub text: &'a str,
}

impl Cmd<'_> {
    /// PgBouncer's answer to anything it does not understand.
    pub fn syntax_error(&self) -> CommandError {
        syntax_error(self.text)
    }

    /// Refuses stats-only users.
    pub fn require_admin(&self) -> Result<(), CommandError> {
        if self.s.admin {
            Ok(())
        } else {
            Err(CommandError::new("admin access needed"))
        }
    }
}

fn syntax_error(text: &str) -> CommandError {
    CommandError::new(format!("invalid command '{text}', use SHOW HELP;"))
}

/// Runs one statement.
pub async fn run(s: &AdminSession, text: &str) -> Result<Reply, CommandError> {
    let stmt = match parse(text) {
        Ok(stmt) => stmt,
        Err(ParseError::Syntax) => return Err(syntax_error(text)),
        Err(ParseError::BadArguments) => return Err(CommandError::new("bad arguments")),
    };
    match stmt {
        Statement::Set { key, value } => set::run(s, &key, &value),
        Statement::Command { name, arg } => {
            let cmd = Cmd { s, arg: &arg, text };
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "show" | "select" => show::run(&cmd),
                _ => control::run(&cmd, &name).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str, arg: &str) -> Result<Statement, ParseError> {
        Ok(Statement::Command {
            name: name.into(),
            arg: arg.into(),
        })
    }

    fn set(key: &str, value: &str) -> Result<Statement, ParseError> {
        Ok(Statement::Set {
            key: key.into(),
            value: value.into(),
        })
    }

    #[test]
    fn commands() {
        assert_eq!(parse("SHOW POOLS"), cmd("SHOW", "POOLS"));
        assert_eq!(parse("  show\tstats ;  "), cmd("show", "stats"));
        assert_eq!(parse("RELOAD;"), cmd("RELOAD", ""));
        assert_eq!(parse("pause \"My Db\""), cmd("pause", "My Db"));
        assert_eq!(parse("pause \"a\"\"b\""), cmd("pause", "a\"b"));
        assert_eq!(parse("kill_client 42"), cmd("kill_client", "42"));
    }

    #[test]
    fn sets() {
        assert_eq!(
            parse("SET default_pool_size = 5"),
            set("default_pool_size", "5")
        );
        assert_eq!(parse("set verbose=1;"), set("verbose", "1"));
        assert_eq!(parse("SET verbose TO 2"), set("verbose", "2"));
        assert_eq!(
            parse("set server_reset_query = 'DISCARD ''ALL'''"),
            set("server_reset_query", "DISCARD 'ALL'")
        );
        assert_eq!(
            parse("set server_check_query = ''"),
            set("server_check_query", "")
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "",
            ";",
            "select 1 + 1",
            "show pools; show stats",
            "show pools stats",
            "show *",
            "show \"unterminated",
            "set a = b c",
            "set = 1",
            "pause ''",
            "show \"\"",
            "show\"pools\"",
        ] {
            assert_eq!(parse(bad), Err(ParseError::Syntax), "{bad:?}");
        }
        // `select 1` has the right shape; it fails later as an unknown SHOW.
        assert_eq!(parse("select 1"), cmd("select", "1"));
    }

    #[test]
    fn length_caps_give_bad_arguments() {
        assert_eq!(parse(&"x".repeat(16)), Err(ParseError::BadArguments));
        assert_eq!(parse(&"x".repeat(15)), cmd(&"x".repeat(15), ""));
        assert_eq!(
            parse(&format!("pause {}", "d".repeat(64))),
            Err(ParseError::BadArguments)
        );
        assert!(parse(&format!("pause {}", "d".repeat(63))).is_ok());
        assert_eq!(
            parse(&format!("set k = '{}'", "v".repeat(254))),
            Err(ParseError::BadArguments)
        );
        assert!(parse(&format!("set k = '{}'", "v".repeat(253))).is_ok());
    }
}
