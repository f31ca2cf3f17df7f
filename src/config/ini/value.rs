//! The value syntax shared by `[pgbouncer]`, `[databases]` and `[users]`: numbers, seconds,
//! booleans, lists, pool modes and quoting.
//!
//! Pure functions from `&str` to a typed value or a message saying what was expected. They must not
//! know which key they serve (the caller adds that) and never echo more than a short prefix of input.

use std::time::Duration;

use crate::config::PoolMode;

/// Longest part of a bad value repeated in a message.
const SHOWN_MAX_CHARS: usize = 64;

/// A value as quoted in a message: control characters escaped, long values cut.
pub(in crate::config) fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_MAX_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if value.chars().count() > SHOWN_MAX_CHARS {
        out.push_str("...");
    }
    out
}

fn expected(what: &str, value: &str) -> String {
    format!("expected {what}, got \"{}\"", shown(value))
}

/// An integer the way C `strtol(s, _, 0)` reads it, as PgBouncer's `[pgbouncer]` settings do:
/// decimal, `0x` hex, or octal with a leading `0`. Negative values are refused (no setting of ours
/// takes one).
pub(super) fn c_uint(value: &str, max: u64) -> Result<u64, String> {
    let what = "a non-negative integer";
    let digits = value.strip_prefix('+').unwrap_or(value);
    let parsed = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse::<u64>()
    };
    // from_str_radix accepts a sign of its own; refuse it after our prefix handling.
    if digits.contains(['+', '-']) {
        return Err(expected(what, value));
    }
    match parsed {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(format!(
            "value \"{}\" is too large (maximum {max})",
            shown(value)
        )),
        Err(_) => Err(expected(what, value)),
    }
}

/// A plain decimal integer, as `[databases]` and `[users]` settings take.
pub(super) fn dec_u32(value: &str) -> Result<u32, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected("a non-negative integer", value));
    }
    value
        .parse::<u32>()
        .map_err(|_| format!("value \"{}\" is too large", shown(value)))
}

/// Seconds, fractions allowed (`0.5`), as PgBouncer's time settings.
pub(super) fn seconds(value: &str) -> Result<Duration, String> {
    let what = "a number of seconds";
    let secs: f64 = value.parse().map_err(|_| expected(what, value))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(expected(what, value));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("value \"{}\" is too large", shown(value)))
}

/// `0/1/yes/no/on/off/true/false` (any case); like PgBouncer, any other integer is true when non-zero.
pub(super) fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => value
            .parse::<i64>()
            .map(|n| n != 0)
            .map_err(|_| expected("a boolean (0/1, yes/no, on/off, true/false)", value)),
    }
}

/// A comma-separated list: items trimmed, empty items dropped.
pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `session`, `transaction` or `statement` (any case).
pub(super) fn pool_mode(value: &str) -> Result<PoolMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "session" => Ok(PoolMode::Session),
        "transaction" => Ok(PoolMode::Transaction),
        "statement" => Ok(PoolMode::Statement),
        _ => Err(expected("session, transaction or statement", value)),
    }
}

/// Reads a SQL double-quoted name whose opening quote is already consumed; `""` is a quote.
/// Returns the name and the text after the closing quote, or `None` when it is not closed.
pub(super) fn unquote_double(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        if s[i + 1..].starts_with('"') {
            out.push('"');
            chars.next();
        } else {
            return Some((out, &s[i + 1..]));
        }
    }
    None
}
