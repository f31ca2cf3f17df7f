use super::*;
use crate::server::statements::StatementCache;

#[test]
fn names_map_to_shared_statements_and_errors_get_the_client_name() {
    let cache = StatementCache::default();
    let mut c = ClientStatements::default();
    let st = cache.intern(b"select 1\0\0\0");
    c.insert(b"s1", st.clone());
    assert!(c.get(b"").is_none());
    assert_eq!(c.get(b"s1").map(|s| s.id), Some(st.id));

    let mut body = Vec::new();
    body.extend_from_slice(b"SERROR\0C42P05\0M");
    body.extend_from_slice(
        format!("prepared statement \"OLLY_{}\" already exists", st.id).as_bytes(),
    );
    body.extend_from_slice(b"\0\0");
    let renamed = c.rename_in_error(&body).expect("renamed");
    let text = String::from_utf8_lossy(&renamed[5..]).to_string();
    assert!(
        text.contains("prepared statement \"s1\" already exists"),
        "{text}"
    );
    assert_eq!(
        u32::from_be_bytes(renamed[1..5].try_into().unwrap()) as usize,
        renamed.len() - 1
    );

    // An identifier that only looks like a pooler name is left alone.
    assert!(c
        .rename_in_error(b"Mrelation \"OLLY_1\" does not exist\0\0")
        .is_none());

    c.forget(b"s1", st.id + 1);
    assert_eq!(c.len(), 1, "forget checks the id");
    c.forget(b"s1", st.id);
    assert!(c.is_empty());
}
