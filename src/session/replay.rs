//! The one request the pooler sends again after its server died: a lone `BEGIN`.
//!
//! The rule is that nothing is ever replayed unless it provably had no effect. A simple Query
//! holding only `BEGIN` (or `START TRANSACTION`), sent on a server that was idle, whose server
//! closed before answering a single byte, qualifies: a transaction start changes nothing that
//! outlives its backend, and that backend is gone. So the client, who was between
//! transactions, sees latency instead of an error while the router holds for the next leader.
//! Anything else (a statement that may have run, a commit that may have happened) is never sent
//! twice.

/// Most bytes a lone BEGIN frame can have (`START TRANSACTION` with some blanks and `;`).
const MAX_FRAME: usize = 64;

/// A copy of a lone BEGIN frame, kept inline: every simple Query up to [`MAX_FRAME`] bytes is
/// examined (pgbench's select-only query is one), and TPC-B-like transactions start with a
/// BEGIN of their own, so neither the test nor the copy may cost an allocation.
pub struct Frame {
    bytes: [u8; MAX_FRAME],
    len: u8,
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The frame when `buf` holds exactly one simple Query whose text is a bare transaction start.
pub fn lone_begin(buf: &[u8]) -> Option<Frame> {
    if buf.len() > MAX_FRAME || buf.len() < 6 || buf[0] != b'Q' {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len + 1 != buf.len() {
        return None;
    }
    let text = buf[5..].strip_suffix(b"\0")?;
    // Most queries are told apart by their first five letters: nothing else is scanned then.
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = text.get(start..start + 5)?;
    if !head.eq_ignore_ascii_case(b"begin") && !head.eq_ignore_ascii_case(b"start") {
        return None;
    }
    // Trailing blanks, then any `;`s, as in `BEGIN ; `; words compare without case.
    let text = text.trim_ascii_end();
    let end = text.iter().rposition(|b| *b != b';').map_or(0, |i| i + 1);
    let mut words = text[..end]
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let is = |w: &[u8], k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    // The first word decides for nearly every query (a short SELECT is no BEGIN): the rest of
    // the text is not scanned then.
    let first = words.next()?;
    let begin = is(first, "begin");
    if !begin && !is(first, "start") {
        return None;
    }
    let bare = match (words.next(), words.next()) {
        (None, _) => begin,
        (Some(w), None) => is(w, "transaction") || (begin && is(w, "work")),
        _ => false,
    };
    bare.then(|| {
        let mut bytes = [0; MAX_FRAME];
        bytes[..buf.len()].copy_from_slice(buf);
        Frame {
            bytes,
            len: buf.len() as u8,
        }
    })
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
            "BEGIN;;",
            "\tbegin\n",
        ] {
            let frame = lone_begin(&q(ok));
            assert_eq!(frame.as_deref(), Some(&q(ok)[..]), "{ok}");
        }
        for no in [
            "BEGIN; INSERT INTO t VALUES (1)",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "COMMIT",
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "",
            ";",
            "begin; begin",
            "begin transaction work",
            "beginn",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
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
