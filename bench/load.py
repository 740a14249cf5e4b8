"""Load test of the HTTP service (not a timed test; run by bench/load.sh).

Starts `evidex serve` (release build) on a fresh data directory and measures:
  1. ingest throughput over HTTP: 1,000-event NDJSON batches from concurrent
     clients, each response meaning the events are durably committed;
  2. concurrent job creation: many clients creating export jobs at once;
  3. API latency (job list and job status) while a large export runs.
Prints a Markdown report and writes it to bench/out/load.md.

LOAD_DATA_FROM=DIR starts from a copy of an existing data directory instead of an
empty one (e.g. bench/out/data-1000000, made by bench/run.sh: 90 days of events):
ingest into a lake that already holds files and keys, as a server that has run for
months does. The events sent are then dated a year later (their 30 days end
2027-03-31), so the checks count only them; the copied lake must hold nothing from
2027-03 on. The copy keeps its key index (renamed for its new location), as a
restarted server does; one warm-up request before the timing loads the table state.
"""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
EVIDEX = os.environ.get("LOAD_EVIDEX_BIN", str(TARGET / "release" / "evidex"))
EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
SENDERS = int(os.environ.get("LOAD_SENDERS", "16"))
BATCH = 1000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


class Api:
    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.local.c = c
        return c

    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        for attempt in range(2):
            c = self.conn()
            try:
                t0 = time.perf_counter()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, data, time.perf_counter() - t0
            except (http.client.HTTPException, ConnectionError):
                self.local.c = None
                if attempt:
                    raise


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="evidex-load-"))
    data = tmp / "data"
    src = tmp / "src.ndjson"
    base = os.environ.get("LOAD_DATA_FROM")
    year = 2027 if base else 2026
    if base:
        __import__("shutil").copytree(base, data)
        # The key index lives under a folder named by the lake's location (the first
        # 16 hex digits of the SHA-256 of its file:// URL): rename the copy's, so the
        # server finds its keys as a restarted server would instead of reading them
        # all again.
        index = data / "_state" / "key-index"
        digest = lambda p: __import__("hashlib").sha256(f"file://{p.resolve()}/".encode()).hexdigest()[:16]
        old, new = digest(Path(base)), digest(data)
        for d in (index.iterdir() if index.is_dir() else []):
            if d.name.startswith(old):
                d.rename(index / (new + d.name[len(old):]))
        os.sync()  # the copy's writeback would otherwise run during the timing
    subprocess.run([EVIDEX, "--data", str(data), "generate", "--rows", str(EVENTS), "--days", "30",
                    "--end", f"{year}-03-31", "--seed", "3", "--output", str(src)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tok = {}
    for role in ("admin", "ingest", "compliance"):
        tok[role] = subprocess.run([EVIDEX, "--data", str(data), "token", "create", "--role", role],
                                   check=True, capture_output=True, text=True).stdout.strip()
    # Step 2 creates 200 jobs with one token: above the per-token cap of queued and
    # running exports (limits.concurrent_exports, 20 by default) and of creates a
    # minute (limits.create_per_minute, 60).
    env = dict(os.environ, EVIDEX_LIMITS__CONCURRENT_EXPORTS="1000",
               EVIDEX_LIMITS__CREATE_PER_MINUTE="1000")
    server = subprocess.Popen([EVIDEX, "--data", str(data), "serve", "--listen", "127.0.0.1:0", "--workers", "1"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    line = server.stderr.readline()
    addr = [w for w in line.split() if w.startswith("http://")][0].rstrip("/")[len("http://"):]
    host, port = addr.split(":")
    port = int(port)
    lines = src.read_bytes().splitlines(keepends=True)
    # Live gateways send events as they happen: in time order. (The generator writes
    # them day by day in random order within a day; a backfill of old data would
    # arrive like that.)
    order = os.environ.get("LOAD_ORDER", "live")
    if order == "live":
        lines.sort(key=lambda l: json.loads(l)["timestamp"])
    # Re-sends in the mix: a forwarder retries events already stored, re-stamped with
    # another timestamp (here: the same instant with millisecond precision, or the
    # next day). `id` alone is the key, so they must all come back as duplicates.
    resend = float(os.environ.get("LOAD_RESEND", "0.1"))
    per_batch = int(BATCH * resend)
    rng = __import__("random").Random(7)
    batches = []
    for i in range(0, len(lines), BATCH):
        batch = list(lines[i:i + BATCH])
        if i >= BATCH and per_batch:
            for old in rng.sample(lines[:i], min(per_batch, i)):
                ev = json.loads(old)
                ts = ev["timestamp"]
                if rng.random() < 0.5:
                    ev["timestamp"] = ts[:23] + "Z"
                else:
                    t = __import__("datetime").datetime.fromisoformat(ts.replace("Z", "+00:00"))
                    ev["timestamp"] = (t + __import__("datetime").timedelta(days=1)).isoformat()
                batch.append((json.dumps(ev) + "\n").encode())
        batches.append(b"".join(batch))
    resent = sum(b.count(b"\n") for b in batches) - len(lines)
    report = []
    try:
        # 1. Ingest.
        ing = Api(host, port, tok["ingest"])
        lat = []
        lock = threading.Lock()

        def send(b):
            status, body, secs = ing.call("POST", "/v1/ingest/events", b)
            if status != 200:
                raise SystemExit(f"ingest failed: {status} {body[:300]!r}")
            with lock:
                lat.append(secs)
            j = json.loads(body)
            if j["rejected"]:
                raise SystemExit(f"ingest rejected lines: {j['errors'][:3]}")
            return j["accepted"], j.get("duplicates", 0)

        def cpu(pid):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        if base:
            send(b'{"id":"load-warm-up","timestamp":"2027-02-01T00:00:00Z","decision":"allow",'
                 b'"severity":"info","policy":"p","gateway_id":"g","consumer_group":"c"}\n')
            # Then the key index's background work on the keys it just read (merging
            # its tables) ends before the timing, as on a server that has long been up.
            idle_by = time.time() + 300
            while time.time() < idle_by:
                before = cpu(server.pid)
                time.sleep(1)
                if cpu(server.pid) - before < 0.05:
                    break
        # LOAD_PERF=FILE samples the server during the ingest only (`perf record`,
        # software cpu-clock event; read it with `perf report -i FILE`). Extra perf
        # arguments in LOAD_PERF_ARGS, e.g. "--call-graph dwarf,16384 -F 499".
        perf = None
        if os.environ.get("LOAD_PERF"):
            extra = os.environ.get("LOAD_PERF_ARGS", "-F 1999").split()
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", *extra, "-p",
                                     str(server.pid), "-o", os.environ["LOAD_PERF"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        c0, me0 = cpu(server.pid), time.process_time()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SENDERS) as pool:
            answers = list(pool.map(send, batches))
        if perf:
            perf.send_signal(__import__("signal").SIGINT)
            perf.wait()
        accepted = sum(a for a, _ in answers)
        duplicates = sum(d for _, d in answers)
        ingest_secs = time.perf_counter() - t0
        server_cpu, client_cpu = cpu(server.pid) - c0, time.process_time() - me0
        rate = accepted / ingest_secs
        adm = Api(host, port, tok["admin"])
        _, metrics, _ = adm.call("GET", "/metrics")
        commits = [l for l in metrics.decode().splitlines() if l.startswith("evidex_ingest_commits_total")]
        status, body, _ = adm.call("POST", "/v1/exports/preview",
                                   json.dumps({"from": f"{year}-03-01", "to": f"{year}-04-30"}))
        stored = json.loads(body)["records"]
        if duplicates != resent or stored != len(lines):
            raise SystemExit(f"re-sends: {resent} sent, {duplicates} reported as duplicates; "
                             f"{stored} stored of {len(lines)} distinct events")
        report.append(("ingest, %d-event NDJSON batches (+%d%% re-sent ids), %d clients, %s order"
                       % (BATCH, round(resend * 100), SENDERS, order)
                       + (f", into a copy of {Path(base).name}" if base else ""),
                       f"{accepted:,} events ({resent:,} re-sent with another timestamp, all "
                       f"reported as duplicates; {stored:,} stored) in {ingest_secs:.1f} s = "
                       f"**{rate:,.0f} events/s**; "
                       f"request p50 {pct(lat, 50)*1000:.0f} ms, p99 {pct(lat, 99)*1000:.0f} ms; "
                       f"{commits[0].split()[-1] if commits else '?'} Delta commits; "
                       f"CPU: server {server_cpu:.2f} s, load clients {client_cpu:.2f} s"))
        print(report[-1][1], flush=True)

        # 2. Concurrent job creation.
        comp = Api(host, port, tok["compliance"])
        create_lat = []

        def create(i):
            body = json.dumps({"name": f"load-{i}", "from": f"{year}-03-30", "to": f"{year}-03-31",
                               "format": "csv", "filters": {"decision": ["block"]}})
            status, data_, secs = comp.call("POST", "/v1/exports", body)
            if status != 201:
                raise SystemExit(f"create failed: {status} {data_[:300]!r}")
            with lock:
                create_lat.append(secs)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(200)))
        report.append(("create 200 export jobs, 8 clients",
                       f"p50 {pct(create_lat, 50)*1000:.1f} ms, p99 {pct(create_lat, 99)*1000:.1f} ms"))
        # Let the small jobs drain.
        while True:
            _, body, _ = comp.call("GET", "/v1/exports?status=queued&limit=1")
            if not json.loads(body)["items"]:
                break
            time.sleep(0.5)

        # 3. Latency of list and status while a large export runs.
        status, body, _ = comp.call("POST", "/v1/exports", json.dumps(
            {"name": "big", "from": f"{year}-03-01", "to": f"{year}-03-31", "format": "json"}))
        big = json.loads(body)["id"]
        list_lat, get_lat = [], []
        running = True

        def poll(kind):
            api = Api(host, port, tok["compliance"])
            while running:
                if kind == "list":
                    _, _, s = api.call("GET", "/v1/exports?limit=50")
                    list_lat.append(s)
                else:
                    _, _, s = api.call("GET", f"/v1/exports/{big}")
                    get_lat.append(s)
                time.sleep(0.005)

        threads = [threading.Thread(target=poll, args=(k,)) for k in ("list", "get", "list", "get")]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        while True:
            _, body, _ = comp.call("GET", f"/v1/exports/{big}")
            job = json.loads(body)
            if job["status"] not in ("queued", "processing"):
                break
            time.sleep(0.2)
        export_secs = time.perf_counter() - t0
        running = False
        for t in threads:
            t.join()
        report.append((f"job list (50 jobs) while a {job['progress']['rows_written']:,}-row JSON export runs ({export_secs:.1f} s)",
                       f"{len(list_lat)} requests, p50 {pct(list_lat, 50)*1000:.1f} ms, p99 **{pct(list_lat, 99)*1000:.1f} ms**"))
        report.append(("job status during the same export",
                       f"{len(get_lat)} requests, p50 {pct(get_lat, 50)*1000:.1f} ms, p99 **{pct(get_lat, 99)*1000:.1f} ms**"))
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", str(tmp)])
    text = "| measurement | result |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in report)
    (OUT / "load.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
