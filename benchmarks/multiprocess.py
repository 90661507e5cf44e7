"""Training throughput of one process against N processes (torchrun, gloo on CPU, NCCL on GPUs).

    uv run python -m benchmarks.multiprocess [--processes 2] [--model diffusion] [--steps 40]

Each configuration trains twice through the real CLI, for `--steps` and for 5 optimizer steps; the
difference of the wall times divided by the difference of the steps is the time per step without start-up
costs. On a CPU the machine's threads are split between the processes (OMP_NUM_THREADS), so the
comparison is of one process using every core against N processes sharing them.
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

import torch


def _wall_seconds(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def seconds_per_step(processes: int, model: str, steps: int, batch: int, work: Path) -> float:
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "vaediff"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "vaediff"]
    times = {}
    for count in (5, steps):
        out = work / f"{processes}-{count}"
        times[count] = _wall_seconds([*launcher, "train", model, "--out", str(out), "--max-steps", str(count),
                                      "--batch-size", str(batch), "--checkpoint-every", "100000"], env)
    return (times[steps] - times[5]) / (steps - 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default="diffusion")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        one = seconds_per_step(1, args.model, args.steps, args.batch_size, Path(scratch))
        many = seconds_per_step(args.processes, args.model, args.steps, args.batch_size, Path(scratch))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu, {os.cpu_count()} cores"
    result = {"model": args.model, "batch_size": args.batch_size, "device": device,
              "images_per_second_1_process": round(args.batch_size / one, 1),
              f"images_per_second_{args.processes}_processes": round(args.batch_size / many, 1),
              "speedup": round(one / many, 2), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
