#!/usr/bin/env python3
"""Open N authenticated, idle PostgreSQL client connections and hold them.

Used by benches/pgbench_compare.sh to measure a pooler's memory per idle client.
Standard library only: raw sockets, the v3 StartupMessage, md5 (and, for completeness,
cleartext and SCRAM-SHA-256) authentication, then wait for ReadyForQuery and send nothing
more until told to stop. With --sslmode require each connection first sends SSLRequest and
completes a TLS handshake (no certificate check, like libpq's sslmode=require).

    idle_clients.py --port 6432 -n 2000 [--host 127.0.0.1] [--user bench] [--password bench_pw]
                    [--dbname bench] [--batch 50] [--hold 600] [--timeout 30]
                    [--sslmode disable|require]

Prints "READY <n>" on stdout (flushed) once all N connections reached ReadyForQuery, then
sleeps until SIGTERM/SIGINT or --hold seconds, sends Terminate on each and exits 0.
Exits 1 (after printing the first error) if any connection could not be established.
"""

import argparse
import base64
import hashlib
import hmac
import os
import resource
import signal
import socket
import ssl
import struct
import sys
import time


class PgError(Exception):
    pass


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(max(need, soft), hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        print(f"warning: open-files limit {soft} < {need} needed", file=sys.stderr)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise PgError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def read_message(sock):
    header = recv_exact(sock, 5)
    kind = header[:1]
    (length,) = struct.unpack("!I", header[1:])
    body = recv_exact(sock, length - 4) if length > 4 else b""
    return kind, body


def send_message(sock, kind, payload):
    sock.sendall(kind + struct.pack("!I", len(payload) + 4) + payload)


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode("utf-8", "replace")
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')} ({fields.get(b'C', '')})"


def startup_packet(user, dbname):
    params = b""
    for k, v in (("user", user), ("database", dbname), ("application_name", "idle_clients")):
        params += k.encode() + b"\0" + v.encode() + b"\0"
    params += b"\0"
    payload = struct.pack("!I", 196608) + params  # protocol 3.0
    return struct.pack("!I", len(payload) + 4) + payload


SSL_REQUEST = struct.pack("!II", 8, 80877103)


def start_tls(sock, context):
    """SSLRequest, then the handshake; the server must answer 'S'."""
    sock.sendall(SSL_REQUEST)
    answer = recv_exact(sock, 1)
    if answer != b"S":
        raise PgError(f"server refused TLS (answered {answer!r})")
    return context.wrap_socket(sock)


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


class Scram:
    """Client side of SCRAM-SHA-256 (no channel binding)."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        msg = ("n,," + self.first_bare).encode()
        return b"SCRAM-SHA-256\0" + struct.pack("!i", len(msg)) + msg

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise PgError("SCRAM: server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_no_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{final_no_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{final_no_proof},p={base64.b64encode(proof).decode()}".encode()


def finish_login(sock, user, password):
    """Answers the authentication exchange and reads up to ReadyForQuery."""
    scram = None
    while True:
        kind, body = read_message(sock)
        if kind == b"R":
            (code,) = struct.unpack("!I", body[:4])
            if code == 0:  # AuthenticationOk
                continue
            if code == 3:  # cleartext
                send_message(sock, b"p", password.encode() + b"\0")
            elif code == 5:  # md5
                send_message(sock, b"p", md5_response(user, password, body[4:8]).encode() + b"\0")
            elif code == 10:  # SASL
                mechs = [m for m in body[4:].split(b"\0") if m]
                if b"SCRAM-SHA-256" not in mechs:
                    raise PgError(f"unsupported SASL mechanisms {mechs}")
                scram = Scram(password)
                send_message(sock, b"p", scram.client_first())
            elif code == 11:  # SASLContinue
                send_message(sock, b"p", scram.client_final(body[4:].decode()))
            elif code == 12:  # SASLFinal
                continue
            else:
                raise PgError(f"unsupported authentication request {code}")
        elif kind == b"E":
            raise PgError(error_text(body))
        elif kind == b"Z":
            return
        # S (ParameterStatus), K (BackendKeyData), N (Notice): ignored


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default=os.environ.get("PGPASSWORD", "bench_pw"))
    ap.add_argument("--dbname", default="bench")
    ap.add_argument("-n", "--clients", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50, help="connections started at once")
    ap.add_argument("--hold", type=float, default=600.0, help="seconds to hold them at most")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-connection login timeout")
    ap.add_argument("--sslmode", choices=("disable", "require"), default="disable")
    args = ap.parse_args()

    tls = None
    if args.sslmode == "require":
        # require = encrypt, trust any certificate (the bench's are self-signed).
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE

    raise_fd_limit(args.clients + 64)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    socks = []
    started = time.monotonic()
    failed = 0
    first_error = None
    packet = startup_packet(args.user, args.dbname)
    remaining = args.clients
    while remaining > 0 and not stop["flag"]:
        batch = []
        for _ in range(min(args.batch, remaining)):
            try:
                s = socket.create_connection((args.host, args.port), timeout=args.timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    s = start_tls(s, tls)
                s.sendall(packet)
                batch.append(s)
            except (OSError, PgError) as e:
                failed += 1
                first_error = first_error or f"connect: {e}"
        remaining -= min(args.batch, remaining)
        for s in batch:
            try:
                finish_login(s, args.user, args.password)
                socks.append(s)
            except (OSError, PgError) as e:
                failed += 1
                first_error = first_error or f"login: {e}"
                s.close()
    elapsed = time.monotonic() - started

    if failed:
        print(f"FAILED {failed} of {args.clients} connections; first error: {first_error}", flush=True)
        for s in socks:
            s.close()
        return 1

    print(f"READY {len(socks)} ({elapsed:.1f} s)", flush=True)
    deadline = time.monotonic() + args.hold
    while not stop["flag"] and time.monotonic() < deadline:
        time.sleep(0.2)
    for s in socks:
        try:
            send_message(s, b"X", b"")
        except OSError:
            pass
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
