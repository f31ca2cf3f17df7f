//! Text that clients (or servers echoing them) control, made safe for a log line.
//!
//! The subscriber's own ANSI sanitization is off (see `init_logging` in main.rs): it formats
//! every line a character at a time, ~10k instructions per login for text that is almost
//! never hostile. Instead the fields a client can choose (user and database names, error texts
//! quoting them, server messages) go through [`Clean`], which checks a whole chunk at once and
//! escapes only when a control character is present, so an escape sequence in a user name
//! cannot reach the reader's terminal and a newline cannot forge a second log line.

use std::fmt::{self, Display, Write};

/// Displays `T` with its control characters (C0, DEL, C1) escaped as `\u{1b}`, `\n`, ...
pub struct Clean<T>(pub T);

impl<T: Display> Display for Clean<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaper(f), "{}", self.0)
    }
}

struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !suspect(s) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    self.0.write_char(e)?;
                }
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A byte that may start a control character: C0 and DEL, or 0xC2, the UTF-8 lead byte of C1
/// (U+0080..U+009F; it also leads harmless Latin-1 signs, which then take the slow path).
fn suspect(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged() {
        assert_eq!(Clean("app_user ©é").to_string(), "app_user ©é");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            Clean("\x1b[31mred\x07\nfake line\u{9b}").to_string(),
            "\\u{1b}[31mred\\u{7}\\nfake line\\u{9b}"
        );
    }
}
