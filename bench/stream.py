"""Benchmark of the SIEM event stream (not a timed test; run by bench/stream.sh).

Starts `evidex serve` (release build) on a fresh data directory, ingests EVENTS
realistic events over HTTP in 1,000-event batches from 8 clients (so the table has
the many small commits a live gateway fleet makes), then measures:
  1. throughput of one client following GET /v1/events/stream from no cursor to
     the end, limit=10000, in each profile (and `evidex stream` to /dev/null);
  2. visible-after-ingest latency: single events ingested one at a time while a
     follower long-polls with wait=30; the time from the ingest response to the
     follower holding the event; and whether a plain request (no wait) sent right
     after the ingest response already returns it;
  3. the server's peak resident memory (VmHWM).
Prints a Markdown report and writes it to bench/out/stream.md. Every event ingested
must come back exactly once, or the run fails.
"""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EVIDEX = os.environ.get("STREAM_EVIDEX_BIN", str(TARGET / "release" / "evidex"))
EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = 1000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def request(host, port, token, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    data = r.read()
    headers = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, headers, data


def follow(host, port, token, profile, limit=10000, keep_ids=False):
    """Reads the whole stream; returns (records, bytes, seconds, ids)."""
    c = http.client.HTTPConnection(host, port, timeout=300)
    cursor, records, size, ids = "", 0, 0, []
    t0 = time.perf_counter()
    while True:
        path = f"/v1/events/stream?limit={limit}&profile={profile}&cursor={urllib.parse.quote(cursor)}"
        c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, body[:300]
        cursor = r.getheader("Evidex-Cursor")
        n = int(r.getheader("Evidex-Records"))
        records += n
        size += len(body)
        if keep_ids:
            ids.extend(json.loads(line)["id"] for line in body.splitlines())
        if r.getheader("Evidex-At-End") == "true" and n == 0:
            break
    return records, size, time.perf_counter() - t0, ids


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="evidex-stream-"))
    data = tmp / "data"
    src = tmp / "src.ndjson"
    subprocess.run([EVIDEX, "--data", str(data), "generate", "--rows", str(EVENTS), "--days", "30",
                    "--end", "2026-11-29", "--seed", "7", "--output", str(src)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tok = {}
    for role in ("ingest", "siem"):
        tok[role] = subprocess.run([EVIDEX, "--data", str(data), "token", "create", "--role", role],
                                   check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([EVIDEX, "--data", str(data), "serve", "--listen", "127.0.0.1:0", "--workers", "0"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = server.stderr.readline()
    addr = [w for w in line.split() if w.startswith("http://")][0].rstrip("/")[len("http://"):]
    host, port = addr.split(":")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    report = []
    try:
        lines = src.read_bytes().splitlines(keepends=True)
        batches = [b"".join(lines[i:i + BATCH]) for i in range(0, len(lines), BATCH)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            for status, _, body in pool.map(
                    lambda b: request(host, port, tok["ingest"], "POST", "/v1/ingest/events", b), batches):
                assert status == 200, body
        ingest_s = time.perf_counter() - t0
        commits = len(list((data / "events" / "_delta_log").glob("*.json")))
        report.append(f"Ingested {len(lines):,} events over HTTP in {ingest_s:.1f} s "
                      f"({len(lines) / ingest_s:,.0f} events/s), {commits} Delta commits.\n")

        report.append("| reader | records | bytes | seconds | events/s | MB/s |")
        report.append("|---|---|---|---|---|---|")
        # Exactly once first (an untimed walk with small pages that parses every
        # line), then the timed walks, which only count.
        records, _, _, ids = follow(host, port, tok["siem"], "native", limit=997, keep_ids=True)
        want = {json.loads(l)["id"] for l in lines}
        assert records == len(ids) == len(want) and set(ids) == want, "duplicates or losses"
        for profile in ("native", "ecs", "ocsf", "splunk_hec"):
            records, size, secs, _ = follow(host, port, tok["siem"], profile)
            assert records == len(lines), (records, len(lines))
            report.append(f"| HTTP, profile {profile}, limit 10000 | {records:,} | {size:,} | {secs:.2f} | "
                          f"{records / secs:,.0f} | {size / secs / 1e6:.0f} |")
        t0 = time.perf_counter()
        out = subprocess.run([EVIDEX, "--data", str(data), "stream", "--limit", "10000"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
        secs = time.perf_counter() - t0
        n = out.count(b"\n")
        assert n == len(lines)
        report.append(f"| `evidex stream` (native) to a pipe | {n:,} | {len(out):,} | {secs:.2f} | "
                      f"{n / secs:,.0f} | {len(out) / secs / 1e6:.0f} |")

        # Latency: a follower long-polls at the end while single events arrive.
        _, h, _ = request(host, port, tok["siem"], "GET", "/v1/events/stream?since=2999-01-01T00:00:00Z")
        cursor = h["evidex-cursor"]
        seen = {}
        stop = threading.Event()

        def follower():
            nonlocal cursor
            c = http.client.HTTPConnection(host, int(port), timeout=60)
            while not stop.is_set():
                c.request("GET", f"/v1/events/stream?wait=30&cursor={urllib.parse.quote(cursor)}",
                          headers={"Authorization": f"Bearer {tok['siem']}"})
                r = c.getresponse()
                body = r.read()
                now = time.perf_counter()
                cursor = r.getheader("Evidex-Cursor")
                for l in body.splitlines():
                    seen[json.loads(l)["id"]] = now

        th = threading.Thread(target=follower, daemon=True)
        th.start()
        time.sleep(0.5)
        acked, immediate = {}, 0
        template = json.loads(lines[0])
        for i in range(30):
            ev = dict(template, id=f"latency-{i}", timestamp="2026-11-29T12:00:00Z")
            status, _, body = request(host, port, tok["ingest"], "POST", "/v1/ingest/events",
                                      json.dumps(ev).encode())
            assert status == 200, body
            acked[ev["id"]] = time.perf_counter()
            time.sleep(0.3)
        deadline = time.time() + 10
        while len([k for k in acked if k in seen]) < len(acked) and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        delays = [(seen[k] - acked[k]) * 1000 for k in acked if k in seen]
        assert len(delays) == len(acked), f"{len(acked) - len(delays)} events never seen"
        report.append("")
        report.append(f"Visible after the ingest response, follower long-polling with wait=30 "
                      f"({len(delays)} single events): p50 {pct(delays, 50):.0f} ms, "
                      f"p95 {pct(delays, 95):.0f} ms, max {max(delays):.0f} ms.")
        # Without wait: the first request after the ingest answer.
        _, h, _ = request(host, port, tok["siem"], "GET", "/v1/events/stream?since=2999-01-01T00:00:00Z")
        cursor = h["evidex-cursor"]
        hits = 0
        for i in range(10):
            ev = dict(template, id=f"nowait-{i}", timestamp="2026-11-29T12:00:00Z")
            request(host, port, tok["ingest"], "POST", "/v1/ingest/events", json.dumps(ev).encode())
            _, h, page = request(host, port, tok["siem"], "GET",
                                 f"/v1/events/stream?limit=10000&cursor={urllib.parse.quote(cursor)}")
            ids = [json.loads(l)["id"] for l in page.splitlines()]
            hits += ev["id"] in ids
            cursor = h["evidex-cursor"]
        report.append(f"Without wait: {hits} of 10 events were in the page of the first request "
                      f"sent after their ingest response.")
        with open(f"/proc/{server.pid}/status") as f:
            hwm = [l for l in f if l.startswith("VmHWM")][0].split()[1]
        report.append(f"Server peak resident memory over the whole run: {int(hwm) / 1024:.0f} MiB.")
    finally:
        server.kill()
    text = "\n".join(report) + "\n"
    print(text)
    (OUT / "stream.md").write_text(text)


if __name__ == "__main__":
    main()
