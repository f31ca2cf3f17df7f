//! Text that clients (or servers echoing them) control, made safe for a log line.
//!
//! The subscriber's own ANSI sanitization is off (see `init_logging` in main.rs): it formats
//! every line a character at a time, ~10k instructions per login for text that is almost
//! never hostile. Instead the fields a client can choose (user and database names, error texts
//! quoting them, server messages) go through [`Clean`], which checks a whole chunk at once and
//! escapes only when a control character is present, so an escape sequence in a user name
//! cannot reach the reader's terminal and a newline cannot forge a second log line.
//!
//! Also a piece of every connect/disconnect line that std's formatting makes dear: IPv4 socket
//! addresses ([`write_socket_addr`]), and the calendar arithmetic the log timestamp
//! (`logformat`) and SHOW's times share ([`civil_from_days`]).

use std::fmt::{self, Display, Write};
use std::net::SocketAddr;

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

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (never negative here):
/// (year, month 1-12, day 1-31) of the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The decimal digits of `n`, written at the end of `buf` (20 bytes hold any u64) and returned:
/// the one integer formatter of the log and login paths, where std's `Display` goes through
/// `pad_integral` (see the module comment).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// Writes `addr` as std's `Display` does (`1.2.3.4:5432`, `[::1]:5432`), IPv4 in one piece:
/// std formats each octet and the port as padded integers, ~1.4k instructions per
/// disconnect line.
pub fn write_socket_addr(f: &mut impl Write, addr: &SocketAddr) -> fmt::Result {
    let SocketAddr::V4(v4) = addr else {
        return write!(f, "{addr}");
    };
    // "255.255.255.255:65535" is 21 bytes.
    let mut buf = [0u8; 21];
    let mut n = 0;
    let push_num = |buf: &mut [u8; 21], n: &mut usize, v: u32| {
        let mut room = [0; 20];
        let digits = decimal(u64::from(v), &mut room).as_bytes();
        buf[*n..*n + digits.len()].copy_from_slice(digits);
        *n += digits.len();
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        push_num(&mut buf, &mut n, u32::from(octet));
    }
    buf[n] = b':';
    n += 1;
    push_num(&mut buf, &mut n, u32::from(v4.port()));
    f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_every_u64() {
        for n in [0, 7, 10, 200, 4_294_967_295, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn socket_addresses_print_as_std_does() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:5432",
            "255.255.255.255:65535",
            "10.20.3.4:60000",
            "[::1]:6432",
            "[2001:db8::1]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            write_socket_addr(&mut s, &addr).unwrap();
            assert_eq!(s, addr.to_string());
        }
    }

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
