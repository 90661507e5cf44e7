"""The suite's memory section: peak resident memory of sampling and of training each model, each in a
process of its own (benchmarks.memory_probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import RESULTS, log
from benchmarks.speed import models

REPOSITORY = Path(__file__).resolve().parent.parent  # where `python -m benchmarks.memory_probe` finds the package


def memory(dataset_name: str) -> dict:
    """Peak resident memory of sampling 500 images and of training (batch 64), each model in its own
    process (a process's peak only grows, so sampling is measured first, then training). The probes run
    at once, one thread each: memory does not depend on speed."""
    peaks, data_mb = {}, None
    path = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    probes = {name: subprocess.Popen([sys.executable, "-m", "benchmarks.memory_probe", name, dataset_name],
                                     stdout=subprocess.PIPE, text=True, env=env)
              for name in models()}
    for name, process in probes.items():
        stdout, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory probe {name} failed with exit code {process.returncode}")
        probe = json.loads(stdout.strip().splitlines()[-1])
        peaks[f"sample:{name}"] = round(probe["sample"])
        peaks[f"train:{name}"] = round(probe["train"])
        data_mb = probe["data_mb"]
        log(f"memory {name}: sampling {probe['sample']:.0f} MB, training {probe['train']:.0f} MB")
    quickstart = RESULTS / "quickstart-latest.json"
    if quickstart.is_file():
        peaks["quickstart"] = json.loads(quickstart.read_text())["peak_rss_mb"]
    return {"peak_rss_mb": peaks, "dataset_in_memory_mb": round(data_mb, 1)}
