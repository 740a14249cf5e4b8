#!/usr/bin/env python3
"""Report benchmark: the PDF evidence report of a whole quarter.

Uses the data set of bench.py (N events over 90 days ending 2026-03-31, generated once
and kept under bench/out), renders `--format pdf` for 2026-01-01..2026-03-31 (the
whole data set: every event is in the quarter) with the default redaction rules, three
times, and reports wall time and the peak RSS of the evidex process against the
targets (under 10 s, under 500 MB). Each run is verified with `evidex verify`.

Usage: bench/report.sh [ROWS]   (defaults to 10,000,000)
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (shares the data set and the measuring helpers)

TARGET_S, TARGET_MB = 10.0, 500.0


def main():
    bench.setup()
    out = bench.OUT / "quarter-report.pdf"
    args = ["export", "--from", "2026-01-01", "--to", "2026-03-31", "--format", "pdf",
            "--name", "Q1 2026 evidence", "--output", str(out)]
    runs = [bench.evidex(*args, env=dict(os.environ))[:2] for _ in range(3)]
    bench.evidex("verify", str(out), env=dict(os.environ))
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True).stdout
    pages = next((l.split()[-1] for l in info.splitlines() if l.startswith("Pages:")), "?")
    size = os.path.getsize(out)
    worst_s = max(r[0] for r in runs)
    worst_mb = max(r[1] for r in runs)
    verdict = "meets" if worst_s < TARGET_S and worst_mb < TARGET_MB else "MISSES"
    lines = [
        f"PDF report of a quarter: {bench.ROWS:,} events (2026-01-01..2026-03-31), default redaction, 2 cores.",
        f"Command: `bench/report.sh {bench.ROWS}`. {pages} pages, {size / 1024:.0f} KiB; verified with `evidex verify`.",
        "",
        "| run | wall s | peak RSS MB |",
        "|---|---|---|",
        *[f"| {i + 1} | {s:.2f} | {mb:.0f} |" for i, (s, mb) in enumerate(runs)],
        "",
        f"Worst of three: {worst_s:.2f} s, {worst_mb:.0f} MB; target < {TARGET_S:.0f} s and < {TARGET_MB:.0f} MB: {verdict}.",
    ]
    text = "\n".join(lines) + "\n"
    (bench.OUT / "report.md").write_text(text)
    print(text)
    if verdict != "meets":
        sys.exit(1)


if __name__ == "__main__":
    main()
