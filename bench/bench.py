#!/usr/bin/env python3
"""Engine benchmark: evidex against DuckDB and Polars on the same Parquet files.

Generates N events over 90 days with `evidex generate`, compacts, then measures in
the same run, for each tool, wall time and the peak RSS of the process that did the
work (each run is its own child process, measured with wait4):

  (a) a 30-day window, decision in (block, redact, escalate), severity high or
      above, to CSV and to NDJSON;
  (b) the whole 30-day window to CSV;
  (c) the preview count of (a).

Same scope, same columns, same order (timestamp, id) for all three tools. Results go
to bench/out/results.md and standard output.

Usage: bench/run.sh [ROWS]   (defaults to 10,000,000)
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
EVIDEX = os.environ.get("BENCH_EVIDEX_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "evidex"))
ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
DATA = OUT / f"data-{ROWS}"
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


def evidex(*args, stdout=subprocess.DEVNULL, env=NO_REDACTION):
    return run([EVIDEX, "--data", str(DATA), *args], stdout=stdout, env=env)


def setup():
    OUT.mkdir(parents=True, exist_ok=True)
    marker = DATA / "generated.json"
    if marker.exists():
        return json.loads(marker.read_text())
    secs, rss, _ = evidex("generate", "--rows", str(ROWS), "--days", "90", "--end", END, "--seed", "1")
    csecs, _, _ = evidex("compact", "--min-files", "2")
    info = {"generate_s": secs, "generate_rss_mb": rss, "compact_s": csecs}
    marker.write_text(json.dumps(info))
    return info


def parquet_files():
    _, _, out = evidex("tables", "--files", stdout=None)
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


def main():
    info = setup()
    files = parquet_files()
    fj = str(OUT / "files.json")
    Path(fj).write_text(json.dumps(files))
    filt = []
    for d in DECISIONS:
        filt += ["--decision", d]
    filt += ["--min-severity", "high"]
    scope = ["--from", FROM, "--to", TO]
    big = ["--split-rows", "1000000000"]
    workloads = [
        ("(a) filtered 30 days -> CSV", "filtered", "csv"),
        ("(a) filtered 30 days -> NDJSON", "filtered", "ndjson"),
        ("(b) whole 30 days -> CSV", "full", "csv"),
    ]
    rows = []
    for label, kind, fmt in workloads:
        res = {}
        out = str(OUT / f"evidex-{kind}.{fmt}")
        args = ["export", *scope, *(filt if kind == "filtered" else []), "--format", fmt, "--output", out, *big]
        res["evidex"] = evidex(*args)[:2]
        res["evidex_bytes"] = os.path.getsize(out)
        dout = str(OUT / f"duckdb-{kind}.{fmt}")
        res["duckdb"] = run([PY, "-c", DUCK, fj, duck_sql(kind, dout)])[:2]
        pout = str(OUT / f"polars-{kind}.{fmt}")
        res["polars"] = run([PY, "-c", POLARS, fj, kind, pout, json.dumps(COLUMNS)])[:2]
        for f in (out, dout, pout):
            os.remove(f)
        rows.append((label, res))
    # (d) redaction cost: the (a) CSV export with every built-in detector against
    # the same export without rules, best of 3 each, alternating.
    red_args = ["export", *scope, *filt, "--format", "csv", "--output", str(OUT / "red.csv"), *big]
    plain, redacted = [], []
    for _ in range(3):
        plain.append(evidex(*red_args)[:2])
        redacted.append(evidex(*red_args, env=dict(os.environ))[:2])
    os.remove(OUT / "red.csv")
    p_best, r_best = min(plain), min(redacted)
    # (c) the preview count, best of 5 (first run warms the page cache).
    pe = min((evidex("preview", *scope, *filt, stdout=None) for _ in range(5)), key=lambda r: r[0])
    pd = min((run([PY, "-c", DUCK, fj, duck_sql("count", "")], stdout=None) for _ in range(3)), key=lambda r: r[0])
    pp = min((run([PY, "-c", POLARS, fj, "count", "", "[]"], stdout=None) for _ in range(3)), key=lambda r: r[0])
    counts = {pe[2].strip(), pd[2].strip(), pp[2].strip()}
    if len(counts) != 1:
        raise SystemExit(f"preview counts differ: evidex {pe[2]!r} duckdb {pd[2]!r} polars {pp[2]!r}")

    lines = [
        f"Benchmark: {ROWS:,} events over 90 days ({len(files)} Parquet files), 2 cores; "
        f"generated in {info['generate_s']:.0f} s (peak {info['generate_rss_mb']:.0f} MB), compacted in {info['compact_s']:.0f} s.",
        f"Command: `bench/run.sh {ROWS}`. Times are wall seconds of one run; RSS is the peak of the process.",
        "",
        "| workload | evidex s | evidex MB | DuckDB s | DuckDB MB | Polars s | Polars MB | best peer / evidex |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        best = min(r["duckdb"][0], r["polars"][0])
        lines.append(
            f"| {label} | {r['evidex'][0]:.2f} | {r['evidex'][1]:.0f} | {r['duckdb'][0]:.2f} | {r['duckdb'][1]:.0f} "
            f"| {r['polars'][0]:.2f} | {r['polars'][1]:.0f} | {best / r['evidex'][0]:.1f}x |"
        )
    best = min(pd[0], pp[0])
    lines.append(
        f"| (c) preview count ({pe[2].decode().strip()} records) | {pe[0]:.3f} | {pe[1]:.0f} | {pd[0]:.3f} | {pd[1]:.0f} "
        f"| {pp[0]:.3f} | {pp[1]:.0f} | {best / pe[0]:.1f}x |"
    )
    lines += [
        "",
        "Redaction (all built-in detectors on input, output, metadata and policy results) on workload (a) CSV, best of 3:",
        "",
        "| export | evidex s | evidex MB |",
        "|---|---|---|",
        f"| without redaction rules | {p_best[0]:.2f} | {p_best[1]:.0f} |",
        f"| with the default rules | {r_best[0]:.2f} | {r_best[1]:.0f} |",
        f"| overhead | {r_best[0] / p_best[0]:.2f}x | |",
    ]
    text = "\n".join(lines) + "\n"
    (OUT / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
