use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;

/// 2026-11-30 21:59:25.123456789 UTC (`date -u -d @1796075965`).
fn fixed_clock() -> Duration {
    Duration::new(1_796_075_965, 123_456_789)
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The lines `log` writes through the layout with pid 12345 and the fixed clock.
fn lines(log: impl FnOnce()) -> Vec<String> {
    let out = Captured::default();
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .event_format(Layout::with(12345, fixed_clock))
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, log);
    let text = String::from_utf8(out.0.lock().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_line_has_pgbouncers_layout() {
    assert_eq!(
        lines(|| tracing::info!("listening on 127.0.0.1:6432")),
        ["2026-11-30 21:59:25.123 UTC [12345] LOG listening on 127.0.0.1:6432"]
    );
}

#[test]
fn levels_print_pgbouncers_words() {
    let got = lines(|| {
        tracing::error!(target: FATAL, "cannot load config file");
        tracing::error!("e");
        tracing::warn!("w");
        tracing::info!("i");
        tracing::debug!("d");
        tracing::trace!("t");
    });
    let words: Vec<&str> = got.iter().map(|l| &l[36..]).collect();
    assert_eq!(
        words,
        [
            "FATAL cannot load config file",
            "ERROR e",
            "WARNING w",
            "LOG i",
            "DEBUG d",
            "NOISE t"
        ]
    );
}

#[test]
fn other_fields_follow_the_message_as_key_value() {
    assert_eq!(
        lines(|| tracing::warn!(peer_id = 3, "forwarding cancellation request to peer")),
        ["2026-11-30 21:59:25.123 UTC [12345] WARNING forwarding cancellation request to peer peer_id=3"]
    );
}

#[test]
fn an_open_span_names_itself_before_the_message() {
    let got = lines(|| {
        let span = tracing::debug_span!("client", id = 7);
        let _in = span.enter();
        tracing::debug!("client disconnect while server was not ready");
    });
    assert_eq!(
        got,
        ["2026-11-30 21:59:25.123 UTC [12345] DEBUG client{id=7}: client disconnect while server was not ready"]
    );
}

#[test]
fn the_largest_pid_fits() {
    fn epoch() -> Duration {
        Duration::ZERO
    }
    let out = Captured::default();
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .event_format(Layout::with(u32::MAX, epoch))
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || tracing::warn!("x"));
    assert_eq!(
        String::from_utf8(out.0.lock().clone()).unwrap(),
        "1970-01-01 00:00:00.000 UTC [4294967295] WARNING x\n"
    );
}

fn ts(secs: u64, millis: u32) -> String {
    let mut buf = [0u8; HEADER_MAX];
    let n = timestamp(secs, millis, &mut buf);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn timestamps_at_calendar_edges() {
    assert_eq!(ts(0, 0), "1970-01-01 00:00:00.000 UTC");
    // `date -u -d @951782400` = 2000-02-29 00:00:00 (a leap day of a 400-year leap year).
    assert_eq!(ts(951_782_400, 7), "2000-02-29 00:00:00.007 UTC");
    assert_eq!(ts(4_107_542_399, 999), "2100-02-28 23:59:59.999 UTC");
    assert_eq!(ts(4_107_542_400, 0), "2100-03-01 00:00:00.000 UTC");
    assert_eq!(ts(1_735_689_599, 1), "2024-12-31 23:59:59.001 UTC");
}

#[test]
fn timestamps_agree_with_a_slow_day_count_for_150_years() {
    let mut secs = 0u64;
    let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    for _ in 0..(150 * 366) {
        assert_eq!(
            ts(secs + 3_723, 45),
            format!("{y:04}-{m:02}-{d:02} 01:02:03.045 UTC")
        );
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
fn syslog_gets_the_message_without_time_pid_and_level() {
    assert_eq!(
        message_of("2026-11-30 12:00:00.123 UTC [77] LOG C-1 login attempt: db=x\n"),
        "C-1 login attempt: db=x"
    );
    assert_eq!(
        message_of("2026-11-30 12:00:00.123 UTC [77] DEBUG client{id=1}: a [b] c"),
        "client{id=1}: a [b] c"
    );
    assert_eq!(message_of("odd"), "odd");
    assert_eq!(
        message_of("2026-11-30 12:00:00.123 UTC [77]"),
        "2026-11-30 12:00:00.123 UTC [77]"
    );
}
