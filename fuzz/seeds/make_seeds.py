#!/usr/bin/env python3
"""Writes the hand-written seed inputs of the fuzz targets into fuzz/seeds/<target>/.

The seeds are committed; this script only documents how each binary seed is laid out and
rebuilds them (python3 fuzz/seeds/make_seeds.py). Each target's input layout is described at
the top of its fuzz_targets/<target>.rs.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def frame(tag, body):
    return tag + struct.pack(">I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def startup(params, code=3 << 16):
    body = struct.pack(">I", code) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


SSL_REQUEST = struct.pack(">II", 8, 80877103)
GSSENC_REQUEST = struct.pack(">II", 8, 80877104)
CANCEL = struct.pack(">IIII", 16, 80877102, 4242, 0x5EC2E7)
STARTUP = startup([
    ("user", "alice"),
    ("database", "app_db"),
    ("application_name", "psql"),
    ("client_encoding", "UTF8"),
    ("options", "-c search_path=app\\ schema --statement-timeout=5s"),
])

# A real ErrorResponse body as PostgreSQL 16 sends it for a wrong password.
ERROR_BODY = (
    b"SFATAL\0VFATAL\0C28P01\0"
    b'Mpassword authentication failed for user "alice"\0'
    b"Fauth.c\0L326\0Rauth_failed\0\0"
)

# --- client_frame: [max_byte, whole_byte, chunk_seed] + stream ---------------------------------
simple = frame(b"Q", cstr("select 1")) + frame(b"X", b"")
write("client_frame", "simple_query", bytes([0x20, 0xFF, 3]) + simple)
extended = (
    frame(b"P", cstr("") + cstr("select $1::int") + struct.pack(">H", 0))
    + frame(b"B", cstr("") + cstr("") + struct.pack(">HHIsH", 0, 1, 1, b"7", 0))
    + frame(b"D", b"P\0")
    + frame(b"E", cstr("") + struct.pack(">I", 0))
    + frame(b"S", b"")
)
write("client_frame", "extended_query", bytes([0x10, 0x05, 7]) + extended)
server_login = (
    frame(b"R", struct.pack(">I", 0))
    + frame(b"S", cstr("server_version") + cstr("16.4"))
    + frame(b"K", struct.pack(">II", 4242, 99))
    + frame(b"Z", b"I")
)
write("client_frame", "server_login", bytes([0x7F, 0x0A, 1]) + server_login)
# A DataRow announcing 100 KiB with only its start present: streamed in pieces.
big = b"D" + struct.pack(">I", 100 * 1024) + b"\0\1" + b"x" * 40
write("client_frame", "streamed_row", bytes([0xA0, 0x00, 5]) + big)
write("client_frame", "error_response", bytes([0x40, 0xFF, 9]) + frame(b"E", ERROR_BODY))

# --- startup: [limit_byte] + packets ----------------------------------------------------------
write("startup", "startup_packet", b"\xff" + STARTUP)
write("startup", "ssl_then_startup", b"\x00" + SSL_REQUEST + STARTUP)
write("startup", "ssl_request", b"\x00" + SSL_REQUEST)
write("startup", "gssenc_request", b"\x00" + GSSENC_REQUEST)
write("startup", "cancel_request", b"\x10" + CANCEL)
write("startup", "protocol_3_2", b"\x00" + startup([("user", "bob"), ("_pq_.x", "1")], (3 << 16) | 2))
write("startup", "protocol_2", b"\x00" + struct.pack(">II", 296, 2 << 16) + b"\0" * 288)
write("startup", "options", b"\x00-c search_path=a\\ b --work-mem=64MB -cgeqo=off")

# --- server_messages: one message body ----------------------------------------------------------
write("server_messages", "error_response", ERROR_BODY)
write("server_messages", "parameter_status", cstr("server_version") + cstr("16.4"))
write("server_messages", "backend_key_data", struct.pack(">II", 4242, 0x5EC2E7))
write("server_messages", "auth_sasl", struct.pack(">I", 10) + cstr("SCRAM-SHA-256") + cstr("SCRAM-SHA-256-PLUS") + b"\0")
write("server_messages", "auth_md5", struct.pack(">I", 5) + b"\x01\x02\x03\x04")
write("server_messages", "auth_sasl_continue", struct.pack(">I", 11) + b"r=abc,s=c2FsdA==,i=4096")
write("server_messages", "password_message", cstr("md5a3556571e93b0d20722ba62be61e8c2d"))
client_first = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
write("server_messages", "sasl_initial_response",
      cstr("SCRAM-SHA-256") + struct.pack(">I", len(client_first)) + client_first)

# --- scram: [mode] + first \0 second; "@N" is replaced by the negotiated nonce ------------------
SECRET = ("SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$"
          "8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=")
PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
write("scram", "secret", b"\x00" + SECRET.encode())
write("scram", "server_side", b"\x01" + client_first + b"\0" + f"c=biws,r=@N,p={PROOF}".encode())
write("scram", "client_side_keys", b"\x02" + b"r=@N3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\0"
      + b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
write("scram", "client_side_password", b"\x82" + b"r=@Nx,s=QSXCR+Q6sek8bf92,i=2\0v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
write("scram", "exchange_ascii", b"\x03pencil\0salt")
write("scram", "exchange_unicode", "\x07p\u00e4ss w\u00f6rd\u00a0\u00ad\0\x01\x02".encode())

# --- ini_config: [mode] + text ----------------------------------------------------------------
INI = """;; sample pgbouncer.ini
[databases]
app_db = host=10.0.0.5 port=5432 dbname=app_db pool_size=10 pool_mode=transaction
reporting = host=replica.local dbname=app_db user=report password='s3cr et' application_name=rep
"quoted name" = host=/var/run/postgresql
* = host=10.0.0.5 port=5432

[users]
report = pool_mode=session max_user_connections=5

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
admin_users = pooler, admin
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
server_reset_query = DISCARD ALL
query_timeout = 0
ignore_startup_parameters = extra_float_digits,options
%include /etc/pgbouncer/extra.ini
"""
USERLIST = ('"alice" "md5a3556571e93b0d20722ba62be61e8c2d"\n'
            '"bob" "plain ""quoted"" secret"\n'
            ';"comment" "x"\n'
            f'"report" "{SECRET}"\n')
write("ini_config", "pgbouncer_ini", b"\x00" + INI.encode())
write("ini_config", "userlist", b"\x00" + USERLIST.encode())
write("ini_config", "password_entry", b"\x02host=db.local port=5432 dbname=app\n[pgbouncer]\nlisten_port = 6432\n")

# patroni_cluster: the /cluster answers the discovery unit tests use, and one api_url.
import re  # noqa: E402

with open(os.path.join(HERE, "..", "..", "src", "discovery", "tests", "mod.rs")) as f:
    fixtures = f.read()
for name, body in re.findall(r'pub const (\w+): &str = r#"(.*?)"#;', fixtures, re.S):
    write("patroni_cluster", name.lower() + ".json", body)
write("patroni_cluster", "url.txt", "http://[::1]:8008/patroni")

# pipeline: byte 0 odd = the differential run, one byte per operation: op + 11 * arg
# (fuzz_targets/pipeline.rs). Names "", "a", "b", "c" = 0..3; queries 0..5 (4 = a syntax
# error, 5 = fails at Execute); Parse's arg is name + 4 * query.
def op(code, arg=0):
    return bytes([code + 11 * arg])


PARSE, BIND, DESC_S, DESC_P, EXECUTE, CLOSE_S, CLOSE_P, SYNC, QUERY, DELIVER, SWITCH = range(11)
prepared_cycle = (op(PARSE, 1) + op(BIND, 1) + op(DESC_P) + op(EXECUTE) + op(SYNC)
                  + op(DELIVER, 7) + op(BIND, 1) + op(EXECUTE) + op(SYNC))
write("pipeline", "prepared_cycle", b"\x01" + prepared_cycle)
# Client 1 on server 1 uses "a", then client 0 on server 1 prepares the same text: a shared
# statement the pooler answers itself; then an eviction (cap 2) and a Close.
shared = (op(PARSE, 1) + op(SYNC) + op(SWITCH, 3) + op(PARSE, 2) + op(PARSE, 3 + 4)
          + op(PARSE, 1 + 8) + op(BIND, 2) + op(EXECUTE) + op(CLOSE_S, 2) + op(SYNC)
          + op(SWITCH, 1) + op(BIND, 1) + op(EXECUTE) + op(SYNC))
write("pipeline", "shared_and_evicted", b"\x01" + shared)
# Errors mid-pipeline: a syntax error, a duplicate name, a division by zero, late delivery.
errors = (op(PARSE, 1) + op(PARSE, 2 + 16) + op(BIND, 2) + op(EXECUTE) + op(SYNC)
          + op(PARSE, 1) + op(DELIVER, 2) + op(PARSE, 3 + 20) + op(BIND, 3) + op(EXECUTE)
          + op(BIND, 1) + op(SYNC) + op(QUERY, 1) + op(BIND, 1) + op(SYNC) + op(QUERY, 3))
write("pipeline", "errors_mid_pipeline", b"\x01" + errors)
# Byte 0 even: hostile frames, records [side, tag, len, body].
write("pipeline", "hostile_frames", b"\x00" + b"\x00P\x0aa\x00SELECT 1\x00" + b"\x00S\x00" + b"\x01Z\x01I")

# peers: the text after a [peers] header.
write("peers", "two_peers", "1 = host=10.0.0.1 port=6432\n"
      "2 = host='pooler-b.svc' port=5432 pool_size=4\n[pgbouncer]\npeer_id = 1\n")
write("peers", "unix_and_errors", "3 = host=/var/run/pooler\n0 = host=x\n16384 = host=y\n"
      "4 = port=70000\n5 = host=@abstract\n6 = host=a bogus=1\n")

# host_list: byte 0 even = the whole connection string, odd = after `db = host=`.
write("host_list", "ports_per_host", b"\x00host=pg-a,pg-b,/var/run/pg port=5432,5433,5434 "
      b"dbname=app load_balance_hosts=round-robin\n")
write("host_list", "one_port", b"\x01pg-a, pg-b , pg-c port=6543 load_balance_hosts=disable\n")
write("host_list", "mismatch", b"\x01a,b,c port=1,2 dbname=x\n")

# operator_env: byte 0 bit 0 = userlist mounted; values split at 0xFF in the order of VARS
# (fuzz_targets/operator_env.rs); 0xFE = unset.
def env(*values):
    return b"\xff".join(v if isinstance(v, bytes) else v.encode() for v in values)


UNSET = b"\xfe"
write("operator_env", "operator_defaults", b"\x00" + env(
    "acid-db", "5432", "pooler", "pooler-secret", "pooler", "transaction", "5432", "20", "10",
    "10000", "40", "robot_zmon", UNSET, UNSET, UNSET, UNSET))
write("operator_env", "tls_and_include", b"\x01" + env(
    "acid-db.default.svc", UNSET, "pooler", UNSET, UNSET, "session", "6432", UNSET, UNSET,
    UNSET, UNSET, UNSET, "/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt", "/etc/extra.ini"))
write("operator_env", "hostile_values", b"\x00" + env(
    "db", "x", "us\"er", "pw\nnext", "s", "transaction\nauth_type = trust", "99999"))
# A Parse that fails, then a Close of its name before the error arrives, then a Bind of it.
write("pipeline", "failed_parse_then_close", b"\x01" + op(PARSE, 1 + 16) + op(CLOSE_S, 1)
      + op(SYNC) + op(BIND, 1) + op(EXECUTE) + op(SYNC))
