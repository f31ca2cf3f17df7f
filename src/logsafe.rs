//! Text that clients (or servers echoing them) control, made safe for a log line.
//!
//! The subscriber's own ANSI sanitization is off (see `init_logging` in main.rs): it formats
//! every line a character at a time, ~10k instructions per login for text that is almost
//! never hostile. Instead the fields a client can choose (user and database names, error texts
//! quoting them, server messages) go through [`Clean`], which checks a whole chunk at once and
//! escapes only when a control character is present, so an escape sequence in a user name
//! cannot reach the reader's terminal and a newline cannot forge a second log line.
//!
//! Also the two pieces of every connect/disconnect line that std's formatting makes dear:
//! the timestamp ([`Timestamp`], the subscriber's own RFC 3339 layout written in one piece
//! instead of seven padded integers) and IPv4 socket addresses ([`write_socket_addr`]).

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

/// The log timestamp, `2026-11-30T21:59:25.123456Z` (UTC, microseconds), exactly the
/// subscriber's default `SystemTime` layout, but built in a stack buffer and written once: the
/// default writes seven zero-padded integers through `pad_integral`, ~2k instructions per line,
/// a tenth of what a login costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timestamp;

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut buf = [0u8; 27];
        let n = rfc3339(now.as_secs(), now.subsec_micros(), &mut buf);
        w.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Writes `secs` (since 1970, UTC) and `micros` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`; returns the
/// length. Years past 9999 are not representable in 27 bytes and are clamped to 9999 (the
/// subscriber would print `+10000`; no clock reads that).
fn rfc3339(secs: u64, micros: u32, out: &mut [u8; 27]) -> usize {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let y = y.min(9999);
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(micros.min(999_999)), 6);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[26] = b'Z';
    27
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
        let mut digits = [0u8; 5];
        let mut len = 0;
        let mut v = v;
        loop {
            digits[len] = b'0' + (v % 10) as u8;
            len += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..len).rev() {
            buf[*n] = digits[i];
            *n += 1;
        }
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

    fn ts(secs: u64, micros: u32) -> String {
        let mut buf = [0u8; 27];
        let n = rfc3339(secs, micros, &mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn timestamps_match_the_subscriber_layout() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000Z");
        // `date -u -d @951782400` = 2000-02-29 00:00:00 (a leap day of a 400-year leap year).
        assert_eq!(ts(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(ts(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(ts(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(ts(1_796_075_965, 123_456), "2026-11-30T21:59:25.123456Z");
        assert_eq!(ts(1_735_689_599, 1), "2024-12-31T23:59:59.000001Z");
    }

    #[test]
    fn timestamps_agree_with_the_subscriber_for_a_span_of_days() {
        // Every day from 1970-01-01 on for 150 years against a slow, obvious day count.
        let mut secs = 0u64;
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for _ in 0..(150 * 366) {
            let want = format!("{y:04}-{m:02}-{d:02}T00:00:00.000000Z");
            assert_eq!(ts(secs, 0), want);
            secs += 86_400;
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
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
