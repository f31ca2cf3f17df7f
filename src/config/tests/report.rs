//! The log lines of a rejected config (`report.rs`): PgBouncer's texts.

use tracing::Level;

use super::*;

fn lines(text: &str) -> Vec<(Level, String)> {
    errors(text)
        .iter()
        .flat_map(ConfigIssue::log_lines)
        .collect()
}

#[test]
fn a_bad_value_is_logged_in_pgbouncers_words() {
    assert_eq!(
        lines("[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = lots\n"),
        [(
            Level::ERROR,
            format!(
                "invalid value \"lots\" for parameter default_pool_size in configuration \
                 (test.ini:3): {}",
                general_error("default_pool_size = lots")
            )
        )]
    );
}

#[test]
fn an_unknown_key_quotes_its_value_too() {
    assert_eq!(
        lines("[pgbouncer]\nfoo_bar = 1\n"),
        [(
            Level::ERROR,
            "invalid value \"1\" for parameter foo_bar in configuration (test.ini:2): \
             unknown setting"
                .to_string()
        )]
    );
}

#[test]
fn max_prepared_statements_out_of_range_also_warns() {
    for v in ["-1", "3147483648"] {
        let got = lines(&format!("[pgbouncer]\nmax_prepared_statements = {v}\n"));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            (
                Level::WARN,
                format!("invalid max_prepared_statements = {v}")
            )
        );
        assert_eq!(got[1].0, Level::ERROR);
        assert!(
            got[1].1.starts_with(&format!(
                "invalid value \"{v}\" for parameter max_prepared_statements in configuration \
                 (test.ini:2): "
            )),
            "{got:?}"
        );
    }
    for v in ["0", "1", "2147483647"] {
        parse(&format!("[pgbouncer]\nmax_prepared_statements = {v}\n"));
    }
}

#[test]
fn other_problems_keep_our_file_line_key_text() {
    let got = lines("[nosuchsection]\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Level::ERROR);
    assert!(got[0].1.starts_with("test.ini:1: "), "{got:?}");
}
