"""Issue 39: does `vaediff train --compile` (torch.compile) pay on this host?

    uv run python -m benchmarks.compile [--rounds 5] [--tiny]     # a few minutes on a 2-core CPU; nothing else running

For the fast and seed diffusion presets and flow matching at the recipes' batch (32): the training step
(training/loop._probe_step: loss, backward, AdamW) of the eager network and of torch.compile's, in fp32; the
compiled one's first calls (inductor compiling its kernels) timed apart, then steady steps timed in
interleaved rounds (a slow spell hits both), the ratio of the medians, and the training minutes after
which compiling has paid for itself. The CPU model is printed beside the ratios. Writes
benchmarks/results/<date>-<host>-compile.json and .md (`--tiny`: tiny networks, printed only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import time
from functools import partial

import torch

from benchmarks.gpu import recipes
from benchmarks.harness import commit, cpu_description, interleaved_medians, log, write_results


def measure(name: str, objective, build, dataset, batch: int, rounds: int) -> dict:
    from vaediff.training.loop import _probe_step
    from vaediff.training.precision import time_steps

    device = torch.device("cpu")
    torch.manual_seed(0)
    eager = _probe_step(objective, build(), dataset, batch, device)
    torch.manual_seed(0)
    compiled = _probe_step(objective, torch.compile(build()), dataset, batch, device)
    started = time.perf_counter()
    compiled()  # the first call compiles (the backward's graph too)
    compiled()
    compile_s = time.perf_counter() - started
    seconds = interleaved_medians({name: partial(time_steps, step, device, "fp32", steps=3)
                                   for name, step in (("eager", eager), ("compiled", compiled))}, rounds)
    eager_s, compiled_s = seconds["eager"], seconds["compiled"]
    saved = eager_s - compiled_s
    entry = {"eager_images_per_s": round(batch / eager_s, 1), "compiled_images_per_s": round(batch / compiled_s, 1),
             "speedup": round(eager_s / compiled_s, 3), "compile_seconds": round(compile_s, 1),
             "pays_after_minutes": round(compile_s / saved * eager_s / 60, 2) if saved > 0 else None}
    log(f"{name}: {entry}")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny networks, one round: a check that it runs")
    args = parser.parse_args(argv)
    from vaediff.data import load_dataset

    dataset = load_dataset("mnist-5k")
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "cpu": cpu_description(),
               "commit": commit(), "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": 32,
               "models": {name: measure(name, objective, build, dataset, 32, 1 if args.tiny else args.rounds)
                          for name, (objective, build) in recipes(tiny=args.tiny).items()}}
    rows = "".join(f"| {name} | {e['eager_images_per_s']} | {e['compiled_images_per_s']} | {e['speedup']}x | "
                   f"{e['compile_seconds']} | {e['pays_after_minutes']} |\n" for name, e in results["models"].items())
    text = (f"# torch.compile of the training step on this host (fp32, batch 32)\n\nCPU: {results['cpu']}, "
            f"{results['threads']} threads, torch {results['torch']}\n\n| model | eager images/s | compiled images/s | "
            f"speed-up | compile s | pays after (training min) |\n|---|---|---|---|---|---|\n{rows}")
    if args.tiny:
        print(json.dumps(results, indent=2))
        print(text)
    else:
        write_results(results, "compile", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
