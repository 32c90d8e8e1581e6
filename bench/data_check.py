"""Benchmark `skyfuse datasets check`: wall time of the CLI on a folder, and thread vs process pools.

Usage: .venv/bin/python bench/data_check.py [FOLDER] [--repeats N]
(default FOLDER: ../shared/data/whu-rs19). Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from skyfuse.data.check import check_folder

REPO = Path(__file__).resolve().parents[1]


def _cli_seconds(folder: Path) -> float:
    """End to end, as a user runs it: interpreter start, imports, scan, decode, report."""
    exe = Path(sys.executable).with_name("skyfuse")
    cmd = [str(exe), "datasets", "check", str(folder), "--json"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", default=str(REPO.parent / "shared/data/whu-rs19"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(args.folder)
    check_folder(folder, workers=1)  # warm the page cache so every row reads from memory
    rows = []
    for executor, workers in (("thread", 1), ("thread", 2), ("process", 2), ("thread", 4)):
        times = []
        for _ in range(args.repeats):
            report = check_folder(folder, workers=workers, executor=executor)
            times.append(report.seconds)
        rate = report.total / statistics.median(times)
        rows.append((f"check_folder {executor} x{workers}", statistics.median(times), rate))
    cli = statistics.median(_cli_seconds(folder) for _ in range(args.repeats))
    rows.append(("skyfuse datasets check (CLI, default workers)", cli, report.total / cli))
    print(
        f"folder: {folder} ({report.total} images, {len(report.classes)} classes);"
        f" cpu_count={os.cpu_count()}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"| run | seconds (median of {args.repeats}) | images/s |")
    print("|---|---|---|")
    for name, sec, rate in rows:
        print(f"| {name} | {sec:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
