use super::*;

fn body(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn named_parse_is_renamed_and_unnamed_passes() {
    let mut c = ClientStatements::default();
    assert_eq!(
        c.rewrite(b'P', &body(&[b"\0", b"select 1\0", &[0, 0]]), &|_| false),
        Rewrite::Keep
    );
    let rw = c.rewrite(
        b'P',
        &body(&[b"s1\0", b"select $1\0", &[0, 1, 0, 0, 0, 23]]),
        &|_| false,
    );
    let Rewrite::Replace {
        bytes,
        parse,
        inject,
        ..
    } = rw
    else {
        panic!("named Parse must be rewritten")
    };
    assert!(inject.is_none());
    let id = parse.unwrap();
    let name = format!("OLLY_{id}\0");
    assert_eq!(bytes[0], b'P');
    assert_eq!(&bytes[5..5 + name.len()], name.as_bytes());
    assert_eq!(
        &bytes[5 + name.len()..],
        &body(&[b"select $1\0", &[0, 1, 0, 0, 0, 23]])[..]
    );
    assert_eq!(
        u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize,
        bytes.len() - 1
    );
    assert_eq!(c.len(), 1);
}

#[test]
fn bind_injects_parse_only_where_missing_and_close_forgets() {
    let mut c = ClientStatements::default();
    let Rewrite::Replace {
        parse: Some(id), ..
    } = c.rewrite(b'P', &body(&[b"s1\0", b"select 1\0", &[0, 0]]), &|_| false)
    else {
        panic!()
    };
    let bind = body(&[b"p1\0", b"s1\0", &[0, 0, 0, 0, 0, 0]]);
    // On a server that has it: only the rename.
    let Rewrite::Replace { bytes, inject, .. } = c.rewrite(b'B', &bind, &|x| x == id) else {
        panic!()
    };
    assert!(inject.is_none());
    assert_eq!(bytes[0], b'B');
    // On a server that lacks it: a Parse first, then the Bind.
    let Rewrite::Replace { bytes, inject, .. } = c.rewrite(b'B', &bind, &|_| false) else {
        panic!()
    };
    assert_eq!(inject, Some(id));
    assert_eq!(bytes[0], b'P');
    let plen = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize + 1;
    assert_eq!(bytes[plen], b'B');
    // Describe of the statement behaves like Bind; of a portal it is left alone.
    assert!(matches!(
        c.rewrite(b'D', b"Ss1\0", &|_| true),
        Rewrite::Replace { .. }
    ));
    assert_eq!(c.rewrite(b'D', b"Pp1\0", &|_| true), Rewrite::Keep);
    // Close forgets the name; later Binds of it pass through (the server reports 26000).
    let Rewrite::Replace { closed, .. } = c.rewrite(b'C', b"Ss1\0", &|_| true) else {
        panic!()
    };
    assert_eq!(closed, Some(id));
    assert_eq!(c.rewrite(b'B', &bind, &|_| true), Rewrite::Keep);
    // Unknown names and malformed bodies are left for the server to judge.
    assert_eq!(c.rewrite(b'B', b"p\0nope\0", &|_| true), Rewrite::Keep);
    assert_eq!(c.rewrite(b'B', b"garbage", &|_| true), Rewrite::Keep);
    assert_eq!(c.rewrite(b'P', b"", &|_| true), Rewrite::Keep);
}

#[test]
fn acks_swallow_injected_and_drop_skipped_on_error() {
    let mut a = Acks::default();
    a.parse_sent(1, false);
    a.parse_sent(2, true);
    assert!(!a.parse_complete());
    assert!(a.parse_complete());
    // Epoch 0: two Parses, an error makes the server skip them until Sync.
    a.parse_sent(3, true);
    a.sent_epoch += 1; // Sync
    a.parse_sent(4, true);
    assert_eq!(a.error(), vec![(3, true)]);
    a.done_epoch += 1; // its ReadyForQuery
    assert!(a.parse_complete());
    assert!(a.is_empty());
}

#[test]
fn parse_of_a_held_name_goes_out_under_the_old_server_name() {
    let mut c = ClientStatements::default();
    let Rewrite::Replace { parse, .. } =
        c.rewrite(b'P', &body(&[b"s1\0", b"select 1\0", &[0, 0]]), &|_| true)
    else {
        panic!("rewritten");
    };
    let id = parse.unwrap();
    let sname = format!("OLLY_{id}\0");
    // The server has it: only the Parse, under the existing name, marked duplicate.
    let again = body(&[b"s1\0", b"select 2\0", &[0, 0]]);
    let Rewrite::Replace {
        bytes,
        inject,
        parse,
        duplicate,
        ..
    } = c.rewrite(b'P', &again, &|x| x == id)
    else {
        panic!("rewritten");
    };
    assert!(duplicate && inject.is_none() && parse.is_none());
    assert_eq!(&bytes[5..5 + sname.len()], sname.as_bytes());
    assert!(bytes.ends_with(b"select 2\0\0\0"));
    // The server lacks it: the old statement is injected first, so the server still refuses.
    let Rewrite::Replace { bytes, inject, .. } = c.rewrite(b'P', &again, &|_| false) else {
        panic!("rewritten");
    };
    assert_eq!(inject, Some(id));
    assert_eq!(
        bytes
            .windows(sname.len())
            .filter(|w| *w == sname.as_bytes())
            .count(),
        2
    );
    assert_eq!(c.len(), 1, "the old statement stays");
}

#[test]
fn errors_name_the_clients_statement() {
    let mut c = ClientStatements::default();
    let Rewrite::Replace { parse, .. } =
        c.rewrite(b'P', &body(&[b"mine\0", b"select 1\0", &[0, 0]]), &|_| true)
    else {
        panic!("rewritten");
    };
    let id = parse.unwrap();
    let err = |msg: &str| body(&[b"SERROR\0C42P05\0M", msg.as_bytes(), b"\0\0"]);
    let renamed = c
        .rename_in_error(&err(&format!(
            "prepared statement \"OLLY_{id}\" already exists"
        )))
        .expect("renamed");
    assert_eq!(renamed[0], b'E');
    assert_eq!(
        u32::from_be_bytes(renamed[1..5].try_into().unwrap()) as usize,
        renamed.len() - 1
    );
    assert_eq!(
        &renamed[5..],
        &err("prepared statement \"mine\" already exists")[..]
    );
    let bind = format!(
        "bind message supplies 1 parameters, but prepared statement \"OLLY_{id}\" requires 0"
    );
    assert_eq!(
        &c.rename_in_error(&err(&bind)).expect("renamed")[5..],
        &err("bind message supplies 1 parameters, but prepared statement \"mine\" requires 0")[..]
    );
    // Other statements, other text, half-names and identifiers are left alone.
    assert!(c
        .rename_in_error(&err("prepared statement \"OLLY_999999999\" x"))
        .is_none());
    assert!(c.rename_in_error(&err("division by zero")).is_none());
    assert!(c
        .rename_in_error(&err("prepared statement \"OLLY_"))
        .is_none());
    let half = format!("prepared statement \"OLLY_{id}");
    assert!(c.rename_in_error(&err(&half)).is_none());
    let column = format!("column \"OLLY_{id}\" does not exist");
    assert!(c.rename_in_error(&err(&column)).is_none());
}
