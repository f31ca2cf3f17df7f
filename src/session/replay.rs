//! The one request the pooler sends again after its server died: a lone `BEGIN`.
//!
//! The rule is that nothing is ever replayed unless it provably had no effect. A simple Query
//! holding only `BEGIN` (or `START TRANSACTION`), sent on a server that was idle, whose server
//! closed before answering a single byte, qualifies: a transaction start changes nothing that
//! outlives its backend, and that backend is gone. So the client, who was between
//! transactions, sees latency instead of an error while the router holds for the next leader.
//! Anything else (a statement that may have run, a commit that may have happened) is never sent
//! twice.

use bytes::Bytes;

/// Most bytes a lone BEGIN frame can have (`START TRANSACTION` with some blanks and `;`).
const MAX_FRAME: usize = 64;

/// The frame when `buf` holds exactly one simple Query whose text is a bare transaction start.
pub fn lone_begin(buf: &[u8]) -> Option<Bytes> {
    if buf.len() > MAX_FRAME || buf.len() < 6 || buf[0] != b'Q' {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len + 1 != buf.len() {
        return None;
    }
    let text = buf[5..].strip_suffix(b"\0")?;
    let text = std::str::from_utf8(text).ok()?;
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let bare = matches!(
        words.as_slice(),
        ["begin"] | ["begin", "transaction"] | ["begin", "work"] | ["start", "transaction"]
    );
    bare.then(|| Bytes::copy_from_slice(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Vec<u8> {
        let mut v = vec![b'Q'];
        v.extend_from_slice(&((text.len() + 5) as u32).to_be_bytes());
        v.extend_from_slice(text.as_bytes());
        v.push(0);
        v
    }

    #[test]
    fn only_a_bare_transaction_start_qualifies() {
        for ok in [
            "BEGIN",
            "begin;",
            " Begin Transaction ; ",
            "START TRANSACTION",
            "begin work",
        ] {
            assert!(lone_begin(&q(ok)).is_some(), "{ok}");
        }
        for no in [
            "BEGIN; INSERT INTO t VALUES (1)",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "COMMIT",
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "",
        ] {
            assert!(lone_begin(&q(no)).is_none(), "{no}");
        }
        // Something pipelined after it, a truncated frame, another message type.
        let mut two = q("BEGIN");
        two.extend(q("SELECT 1"));
        assert!(lone_begin(&two).is_none());
        let whole = q("BEGIN");
        assert!(lone_begin(&whole[..whole.len() - 1]).is_none());
        let mut parse = q("BEGIN");
        parse[0] = b'P';
        assert!(lone_begin(&parse).is_none());
    }
}
