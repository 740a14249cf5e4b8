#!/usr/bin/env python3
"""Engine benchmark: evidex against DuckDB, Polars and the disk's floor, same files.

For each size (events over 90 days, generated once per size with `evidex generate`
and kept in bench/out/data-N), measures in the same run, three times each, medians:

  (a) a 30-day window, decision in (block, redact, escalate), severity high or
      above, to CSV and to NDJSON;
  (b) the whole 30-day window, to CSV and to NDJSON;
  (c) the preview count of (a);

with evidex without redaction rules (the peers do not redact), evidex with its
default rules, DuckDB, Polars, and the floor: `dd` writing evidex's output bytes to
the same disk (bs=8M, O_DIRECT like evidex's writer, from the page cache). Same
scope, same columns, same order (timestamp, id) for all tools; each run is its own
child process and MB is its peak RSS (wait4). Results go to bench/out/results.md
and standard output as one table.

Usage: bench/run.sh [ROWS ...]   (defaults to 1000000 2000000 10000000)
"""

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
EVIDEX = os.environ.get("BENCH_EVIDEX_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "evidex"))
SIZES = [int(a.replace("_", "")) for a in sys.argv[1:]] or [1_000_000, 2_000_000, 10_000_000]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
END = "2026-03-31"
FROM, TO = "2026-03-01", "2026-03-30"  # 30 whole UTC days
START_TS, END_TS = "2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z"
DECISIONS = ["block", "redact", "escalate"]
SEVERITIES = ["high", "critical"]
COLUMNS = [
    "id", "timestamp", "decision", "severity", "policy", "gateway_id", "consumer_group",
    "reason_code", "consumer", "user_id", "request_id", "config_version", "provider", "model",
    "input_tokens", "output_tokens", "cost_usd", "latency_ms", "input", "output",
    "policies_evaluated", "metadata",
]
PY = sys.executable


def run(cmd, env=None, stdout=subprocess.DEVNULL):
    """Runs cmd; returns (seconds, peak RSS in MB, stdout bytes)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE, env=env)
    out = p.stdout.read() if stdout is None else b""
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        shown = " ".join(str(c) for c in cmd)[:300]
        raise SystemExit(f"command failed: {shown}\n{err.decode(errors='replace')[-3000:]}")
    return secs, usage.ru_maxrss / 1024, out


# Peers do not redact: comparisons with them run evidex without redaction rules; the
# redaction cost is measured separately, evidex against itself.
NO_REDACTION = {**os.environ, "EVIDEX_REDACTION__DETECTORS": "[]"}


DEFAULT_RULES = {k: v for k, v in os.environ.items() if not k.startswith("EVIDEX_REDACTION")}


def data_dir(rows):
    return OUT / f"data-{rows}"


def evidex(rows, *args, stdout=subprocess.DEVNULL, env=NO_REDACTION):
    return run([EVIDEX, "--data", str(data_dir(rows)), *args], stdout=stdout, env=env)


def setup(rows):
    OUT.mkdir(parents=True, exist_ok=True)
    marker = data_dir(rows) / "generated.json"
    if marker.exists():
        return json.loads(marker.read_text())
    secs, rss, _ = evidex(rows, "generate", "--rows", str(rows), "--days", "90", "--end", END, "--seed", "1")
    csecs, _, _ = evidex(rows, "compact", "--min-files", "2")
    info = {"generate_s": secs, "generate_rss_mb": rss, "compact_s": csecs}
    marker.write_text(json.dumps(info))
    return info


def parquet_files(rows):
    _, _, out = evidex(rows, "tables", "--files", stdout=None)
    files, current = [], None
    for line in out.decode().splitlines():
        if not line.startswith(" "):
            current = line.split(":")[0]
        elif current == "events":
            files.append(line.strip().removeprefix("file://"))
    if not files:
        raise SystemExit("no event files found")
    return files


DUCK = r"""
import duckdb, json, sys
files, sql = json.load(open(sys.argv[1])), sys.argv[2]
con = duckdb.connect()
con.execute("SET threads TO 2")
listing = "[" + ",".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({listing})")
r = con.execute(sql).fetchall()
if r and len(r) == 1 and len(r[0]) == 1: print(r[0][0])
"""

POLARS = r"""
import polars as pl, json, sys
from datetime import datetime, timezone
files, what, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
cols = json.loads(sys.argv[4])
lf = pl.scan_parquet(files)
start = datetime(2026, 3, 1, tzinfo=timezone.utc); end = datetime(2026, 3, 31, tzinfo=timezone.utc)
lf = lf.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
if what != "full":
    lf = lf.filter(pl.col("decision").is_in(["block", "redact", "escalate"]) & pl.col("severity").is_in(["high", "critical"]))
if what == "count":
    print(lf.select(pl.len()).collect().item())
else:
    lf = lf.sort(["timestamp", "id"]).select(cols)
    (lf.sink_ndjson(out) if out.endswith(".ndjson") else lf.sink_csv(out))
"""


def duck_sql(kind, out):
    where = f"timestamp >= TIMESTAMPTZ '{START_TS}' AND timestamp < TIMESTAMPTZ '{END_TS}'"
    if kind != "full":
        where += " AND decision IN ('block','redact','escalate') AND severity IN ('high','critical')"
    if kind == "count":
        return f"SELECT count(*) FROM events WHERE {where}"
    fmt = "(FORMAT JSON)" if out.endswith(".ndjson") else "(HEADER)"
    return f"COPY (SELECT {', '.join(COLUMNS)} FROM events WHERE {where} ORDER BY timestamp, id) TO '{out}' {fmt}"


def median(results):
    """Median (seconds, MB) of runs, by time; MB is the largest of the runs."""
    ordered = sorted(results)
    return ordered[len(ordered) // 2][0], max(r[1] for r in results)


def floor(path):
    """Seconds for dd to write the bytes of `path` to the same disk (median of RUNS)."""
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    target = str(OUT / "floor.out")
    times = []
    for _ in range(RUNS):
        secs, _, _ = run(["dd", f"if={path}", f"of={target}", "bs=8M", "oflag=direct", "status=none"])
        times.append(secs)
        os.remove(target)
    return sorted(times)[len(times) // 2]


def measure(rows):
    info = setup(rows)
    files = parquet_files(rows)
    fj = str(OUT / "files.json")
    Path(fj).write_text(json.dumps(files))
    filt = []
    for d in DECISIONS:
        filt += ["--decision", d]
    filt += ["--min-severity", "high"]
    scope = ["--from", FROM, "--to", TO]
    big = ["--split-rows", "1000000000"]
    results = []
    for label, kind, fmt in [
        ("(a) filtered -> CSV", "filtered", "csv"),
        ("(a) filtered -> NDJSON", "filtered", "ndjson"),
        ("(b) whole -> CSV", "full", "csv"),
        ("(b) whole -> NDJSON", "full", "ndjson"),
    ]:
        out = str(OUT / f"evidex-{kind}.{fmt}")
        args = ["export", *scope, *(filt if kind == "filtered" else []), "--format", fmt, "--output", out, *big]
        dout, pout = str(OUT / f"duckdb-{kind}.{fmt}"), str(OUT / f"polars-{kind}.{fmt}")
        runs = {"evidex": [], "redacted": [], "duckdb": [], "polars": []}
        # Interleaved, so a slow stretch of the machine hits every tool alike.
        for _ in range(RUNS):
            runs["evidex"].append(evidex(rows, *args)[:2])
            runs["redacted"].append(evidex(rows, *args, env=DEFAULT_RULES)[:2])
            runs["duckdb"].append(run([PY, "-c", DUCK, fj, duck_sql(kind, dout)])[:2])
            runs["polars"].append(run([PY, "-c", POLARS, fj, kind, pout, json.dumps(COLUMNS)])[:2])
        evidex(rows, *args)  # the plain output, for its size and the floor
        res = {k: median(v) for k, v in runs.items()}
        res["bytes"] = os.path.getsize(out)
        res["floor"] = floor(out)
        for f in (out, dout, pout, *glob.glob(glob.escape(out) + ".*")):
            os.remove(f)
        results.append((label, res))
    # (c) the preview count; the counts of all three must agree.
    pe = [evidex(rows, "preview", *scope, *filt, stdout=None) for _ in range(RUNS + 1)][1:]
    pd = [run([PY, "-c", DUCK, fj, duck_sql("count", "")], stdout=None) for _ in range(RUNS)]
    pp = [run([PY, "-c", POLARS, fj, "count", "", "[]"], stdout=None) for _ in range(RUNS)]
    counts = {pe[0][2].strip(), pd[0][2].strip(), pp[0][2].strip()}
    if len(counts) != 1:
        raise SystemExit(f"preview counts differ: evidex {pe[0][2]!r} duckdb {pd[0][2]!r} polars {pp[0][2]!r}")
    results.append((
        f"(c) preview count ({int(pe[0][2]):,})",
        {"evidex": median([r[:2] for r in pe]), "duckdb": median([r[:2] for r in pd]),
         "polars": median([r[:2] for r in pp])},
    ))
    return info, len(files), results


def main():
    lines = [
        f"Benchmark: events over 90 days, a 30-day window; 2 cores; median of {RUNS} runs, "
        "wall seconds and peak RSS (MB) of each process.",
        f"Command: `bench/run.sh {' '.join(str(n) for n in SIZES)}`.",
        "",
        "| events | workload | evidex s | MB | evidex, default redaction s | MB | DuckDB s | MB "
        "| Polars s | MB | floor (dd) s | best peer / evidex | evidex / floor | redaction cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for rows in SIZES:
        info, nfiles, results = measure(rows)
        notes.append(
            f"{rows:,} events: {nfiles} Parquet files, generated in {info['generate_s']:.0f} s "
            f"(peak {info['generate_rss_mb']:.0f} MB)."
        )
        for label, r in results:
            best = min(r["duckdb"][0], r["polars"][0])
            ev = r["evidex"]
            red = r.get("redacted")
            fl = r.get("floor")
            lines.append(
                f"| {rows:,} | {label} | {ev[0]:.2f} | {ev[1]:.0f} "
                + (f"| {red[0]:.2f} | {red[1]:.0f} " if red else "| | ")
                + f"| {r['duckdb'][0]:.2f} | {r['duckdb'][1]:.0f} | {r['polars'][0]:.2f} | {r['polars'][1]:.0f} "
                + (f"| {fl:.2f} ({r['bytes'] / 1e6:,.0f} MB) " if fl is not None else "| ")
                + f"| {best / ev[0]:.2f}x "
                + (f"| {ev[0] / fl:.2f}x " if fl else "| ")
                + (f"| {red[0] / ev[0]:.2f}x |" if red else "| |")
            )
        print("\n".join(lines[-len(results):]), flush=True)
    text = "\n".join(lines + [""] + notes) + "\n"
    (OUT / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
