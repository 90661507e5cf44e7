"""The benchmarks' shared harness: where results go, a timestamped log, the host's CPU and the commit, and
writing a result as JSON plus a Markdown table."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_results(results: dict, kind: str, table: str, shown: dict | None = None) -> Path:
    """benchmarks/results/<date>-<host>[-kind].json (all of `results`) and .md (`table`); prints `shown`
    (default: the results) as JSON, then the table. Returns the path without its suffix."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    host = results.get("host") or socket.gethostname()
    stem = RESULTS / f"{results['date']}-{host}{'-' + kind if kind else ''}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table.rstrip("\n") + "\n")
    print(json.dumps(results if shown is None else shown, indent=2))
    print(table)
    return stem


def cpu_description() -> str:
    """The CPU model and the vector flags that set its matmul peak (lscpu), printed beside every ratio."""
    try:
        fields = dict(line.split(":", 1) for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma"))]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, {' '.join(flags)}"


def commit() -> str:
    """The checked-out commit, short (or "unknown" outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def steps_trained(run_dir: Path) -> int:
    """The optimizer steps a run has trained: the last row of its loss.csv."""
    import csv

    with (run_dir / "loss.csv").open() as handle:
        return int(list(csv.DictReader(handle))[-1]["step"])


def interleaved_medians(timers: dict, rounds: int) -> dict[str, float]:
    """{name: median seconds} of each timer (a call that returns the seconds it measured), called in turn
    over `rounds` rounds, so a slow spell of the host hits every one of them."""
    import statistics

    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: statistics.median(values) for name, values in times.items()}
