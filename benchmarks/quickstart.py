"""Time the default `vaediff quickstart` end to end and measure its peak resident memory.

    uv run python -m benchmarks.quickstart [--minutes 15] [--dataset mnist-5k]

Runs it in a child process (its peak RSS comes from the kernel's accounting of that child), then reads
the report's numbers. Writes benchmarks/results/quickstart-latest.json, which the suite's memory
section (benchmarks.memory) includes as peak_rss_mb.quickstart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RESULTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--keep", metavar="DIR", help="run into DIR and keep it (default: a temporary directory)")
    args = parser.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vaediff-quickstart-")) / "qs"
    command = [sys.executable, "-m", "vaediff", "quickstart", "--out", str(out), "--minutes", str(args.minutes),
               "--dataset", args.dataset, "--overwrite"]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"quickstart failed with exit code {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
        return 1
    accuracies = {}
    for model in ("vae", "cvae", "diffusion", "latent-diffusion"):
        metrics = json.loads((out / model / "metrics.json").read_text())
        accuracies[model] = {k: metrics.get(k) for k in ("class_accuracy", "fid", "samples_per_second", "nll_nats")}
    result = {"minutes_budget": args.minutes, "dataset": args.dataset, "wall_minutes": round(seconds / 60, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024), "models": accuracies,
              "best_diffusion_class_accuracy": max(accuracies[m]["class_accuracy"] for m in ("diffusion", "latent-diffusion")),
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
