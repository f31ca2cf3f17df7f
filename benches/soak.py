#!/usr/bin/env python3
"""Soak a running pooler: many idle clients plus busy ones, RSS and fds sampled, plotted.

    soak.py --port 6432 --pid <pooler pid> [--idle 10000] [--busy 1000] [--duration 600]
            [--interval 10] [--storm 2000] [--user U --password P --dbname D]
            [--pg-port 5432 --pool-size 20] [--out benches/soak]

Standard library only (asyncio, raw v3 protocol, md5/cleartext/SCRAM login from idle_clients.py).
Phases: (1) open --idle connections that log in and then only hold; (2) start --busy clients
that run `SELECT 1` back to back for --duration seconds while RSS (VmRSS) and open fds of
--pid are sampled every --interval s; (3) a storm of --storm extra connection attempts beyond
what is open, counting refusals by their text (PgBouncer's "no more connections allowed
(max_client_conn)") and other errors; (4) all clients leave, and the server connections left
at PostgreSQL (--pg-port, counted with psql) are compared with --pool-size.
Writes <out>.svg (RSS and fds over time) and <out>.json + <out>.md (figures); exit 1 when a busy
query failed, a login failed before the limit, or more servers are left than the pool allows.
"""

import argparse
import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idle_clients import Scram, error_text, md5_response, startup_packet  # noqa: E402

REFUSAL = "no more connections allowed (max_client_conn)"


async def read_msg(reader):
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], await reader.readexactly(length - 4) if length > 4 else b""


def msg(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


async def login(a):
    """Opens and authenticates one connection; returns (reader, writer) or raises RuntimeError."""
    reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
    writer.write(startup_packet(a.user, a.dbname))
    scram = None
    while True:
        kind, body = await read_msg(reader)
        if kind == b"R":
            (code,) = struct.unpack("!I", body[:4])
            if code == 3:
                writer.write(msg(b"p", a.password.encode() + b"\0"))
            elif code == 5:
                writer.write(msg(b"p", md5_response(a.user, a.password, body[4:8]).encode() + b"\0"))
            elif code == 10:
                scram = Scram(a.password)
                writer.write(msg(b"p", scram.client_first()))
            elif code == 11:
                writer.write(msg(b"p", scram.client_final(body[4:].decode())))
        elif kind == b"E":
            writer.close()
            raise RuntimeError(error_text(body))
        elif kind == b"Z":
            return reader, writer


async def query(reader, writer, sql):
    writer.write(msg(b"Q", sql.encode() + b"\0"))
    await writer.drain()
    err = None
    while True:
        kind, body = await read_msg(reader)
        if kind == b"E":
            err = error_text(body)
        elif kind == b"Z":
            if err:
                raise RuntimeError(err)
            return


def sample(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb, len(os.listdir(f"/proc/{pid}/fd"))


def svg(samples, path, title):
    """Two polylines (RSS MiB, open fds) against seconds, each scaled to its own axis."""
    w, h, left, right, top, bottom = 900, 420, 70, 70, 40, 50
    t_max = max(s["t"] for s in samples) or 1
    rss = [s["rss_kb"] / 1024 for s in samples]
    fds = [s["fds"] for s in samples]
    r_max, f_max = max(rss) * 1.1 or 1, max(fds) * 1.1 or 1

    def pts(vals, vmax):
        return " ".join(
            f"{left + (s['t'] / t_max) * (w - left - right):.1f},"
            f"{top + (1 - v / vmax) * (h - top - bottom):.1f}"
            for s, v in zip(samples, vals)
        )

    ticks = []
    for i in range(6):
        y = top + i * (h - top - bottom) / 5
        ticks.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end" fill="#c0392b">'
                     f'{r_max * (1 - i / 5):.0f}</text>')
        ticks.append(f'<text x="{w - right + 6}" y="{y + 4:.0f}" fill="#2c3e80">{f_max * (1 - i / 5):.0f}</text>')
        x = left + i * (w - left - right) / 5
        ticks.append(f'<text x="{x:.0f}" y="{h - bottom + 18}" text-anchor="middle">{t_max * i / 5:.0f}</text>')
    body = "\n".join(ticks)
    with open(path, "w") as f:
        f.write(f'''<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>
<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#999"/>
{body}
<text x="{w / 2}" y="{h - 12}" text-anchor="middle">seconds since the busy phase started</text>
<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle" fill="#c0392b">RSS (MiB)</text>
<text x="{w - 14}" y="{h / 2}" transform="rotate(90 {w - 14} {h / 2})" text-anchor="middle" fill="#2c3e80">open fds</text>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{pts(rss, r_max)}"/>
<polyline fill="none" stroke="#2c3e80" stroke-width="2" stroke-dasharray="5,3" points="{pts(fds, f_max)}"/>
</svg>
''')


async def main(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + a.busy + a.storm + 200
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    out = {"idle": a.idle, "busy": a.busy, "duration_s": a.duration, "storm": a.storm}
    rss0, fds0 = sample(a.pid)
    out["rss_kb_before"], out["fds_before"] = rss0, fds0

    # 1. Idle clients, in batches so that the accept queue is not the thing measured.
    idle, login_errors = [], []
    for i in range(0, a.idle, 200):
        res = await asyncio.gather(*(login(a) for _ in range(min(200, a.idle - i))), return_exceptions=True)
        for r in res:
            (login_errors.append(str(r)) if isinstance(r, BaseException) else idle.append(r))
    await asyncio.sleep(2)
    rss_idle, fds_idle = sample(a.pid)
    out["idle_connected"] = len(idle)
    out["rss_kb_idle"] = rss_idle
    out["rss_bytes_per_idle_client"] = round((rss_idle - rss0) * 1024 / max(1, len(idle)))
    print(f"idle: {len(idle)} connected, RSS {rss0} -> {rss_idle} kB, fds {fds0} -> {fds_idle}", flush=True)

    # 2. Busy clients for the duration, sampling.
    stop = time.monotonic() + a.duration
    counts = {"queries": 0, "errors": []}

    async def busy():
        try:
            r, w = await login(a)
        except Exception as e:  # noqa: BLE001 - every failure is a figure of the soak
            login_errors.append(str(e))
            return
        while time.monotonic() < stop:
            try:
                await query(r, w, "SELECT 1")
                counts["queries"] += 1
            except Exception as e:  # noqa: BLE001
                counts["errors"].append(str(e))
                return
        w.close()

    samples, t0 = [], time.monotonic()

    async def sampler():
        while time.monotonic() < stop:
            rss, fds = sample(a.pid)
            samples.append({"t": round(time.monotonic() - t0, 1), "rss_kb": rss, "fds": fds, "queries": counts["queries"]})
            print(f"t={samples[-1]['t']}s rss={rss}kB fds={fds} queries={counts['queries']}", flush=True)
            await asyncio.sleep(a.interval)
        rss, fds = sample(a.pid)
        samples.append({"t": round(time.monotonic() - t0, 1), "rss_kb": rss, "fds": fds, "queries": counts["queries"]})

    await asyncio.gather(sampler(), *(busy() for _ in range(a.busy)))
    out["samples"] = samples
    out["queries"] = counts["queries"]
    out["busy_errors"] = counts["errors"][:20]
    out["busy_error_count"] = len(counts["errors"])
    steady = [s["rss_kb"] for s in samples[len(samples) // 3:]] or [0]
    out["rss_kb_min_after_warmup"], out["rss_kb_max_after_warmup"] = min(steady), max(steady)
    out["rss_growth_kb_after_warmup"] = samples[-1]["rss_kb"] - steady[0]

    # 3. Storm: attempts beyond what is open; refusals counted by text.
    res = await asyncio.gather(*(login(a) for _ in range(a.storm)), return_exceptions=True)
    refused = [r for r in res if isinstance(r, BaseException) and REFUSAL in str(r)]
    other = [str(r) for r in res if isinstance(r, BaseException) and REFUSAL not in str(r)]
    for r in res:
        if not isinstance(r, BaseException):
            r[1].close()
    out["storm_refused_max_client_conn"], out["storm_other_errors"] = len(refused), other[:10]
    out["storm_accepted"] = a.storm - len(refused) - len(other)
    out["login_errors"] = login_errors[:20]
    out["login_error_count"] = len(login_errors)

    # 4. Everyone leaves.
    for r, w in idle:
        w.write(msg(b"X", b""))
        w.close()
    await asyncio.sleep(3)
    out["rss_kb_after"], out["fds_after"] = sample(a.pid)
    if a.pg_port:
        cnt = subprocess.run(
            ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(a.pg_port), "-U", a.pg_user, "-d", a.dbname, "-c",
             f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{a.dbname}' AND pid <> pg_backend_pid()"],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": a.pg_password})
        out["servers_left"] = int(cnt.stdout.strip() or -1)
    svg(samples, a.out + ".svg",
        f"ollyscale-pooler soak: {len(idle)} idle + {a.busy} busy clients, {a.duration}s")
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=1)
    figures = {k: v for k, v in out.items() if k != "samples"}
    with open(a.out + ".md", "w") as f:
        f.write("| figure | value |\n| --- | --- |\n")
        for k, v in figures.items():
            f.write(f"| {k} | {v} |\n")
    print(json.dumps(figures, indent=1))
    ok = (out["busy_error_count"] == 0 and not other and len(idle) == a.idle
          and (not a.pg_port or 0 <= out["servers_left"] <= a.pool_size))
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--idle", type=int, default=10000)
    p.add_argument("--busy", type=int, default=1000)
    p.add_argument("--duration", type=int, default=600)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--storm", type=int, default=2000)
    p.add_argument("--user", default="olly")
    p.add_argument("--password", default="olly_pw")
    p.add_argument("--dbname", default="testdb")
    p.add_argument("--pg-port", type=int, default=0)
    p.add_argument("--pg-user", default="olly")
    p.add_argument("--pg-password", default="olly_pw")
    p.add_argument("--pool-size", type=int, default=20)
    p.add_argument("--out", default="benches/soak")
    sys.exit(asyncio.run(main(p.parse_args())))
