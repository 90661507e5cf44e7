"""Issue 39: what `--precision auto` decides on this host, what its probe costs, and what bf16 gains.

    uv run python -m benchmarks.precision      # about 3 minutes on a 2-core CPU; nothing else running

For the fast and seed diffusion presets and flow matching at their recipes' batch (32) and at 128: training
steps timed in fp32 and in bf16 autocast, interleaved over rounds in one process (a slow spell hits both),
the ratio of the medians; then the decision auto takes (training/precision.py: its own probe, timed, with an
empty cache). The CPU model and flags are printed beside the ratios. Writes
benchmarks/results/<date>-<host>-precision.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.gpu import recipes
from benchmarks.harness import commit, cpu_description, interleaved_medians, log, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from vaediff.data import load_dataset
    from vaediff.training.loop import _probe_step
    from vaediff.training.precision import choose_precision, time_steps

    dataset, device = load_dataset("mnist-5k"), torch.device("cpu")
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "cpu": cpu_description(),
               "commit": commit(), "threads": torch.get_num_threads(), "models": {}}
    for name, (objective, build) in recipes(tiny=False).items():
        for batch in (32, 128):
            torch.manual_seed(0)
            step = _probe_step(objective, build(), dataset, batch, device)
            seconds = interleaved_medians({p: partial(time_steps, step, device, p, steps=3) for p in ("fp32", "bf16")},
                                          args.rounds)
            ratio = seconds["fp32"] / seconds["bf16"]
            entry = {"fp32_images_per_s": round(batch / seconds["fp32"], 1),
                     "bf16_images_per_s": round(batch / seconds["bf16"]), "bf16_speedup": round(ratio, 2)}
            if batch == 32:  # the recipes' batch: what auto decides there, and what its probe costs
                with tempfile.TemporaryDirectory() as cache:
                    torch.manual_seed(0)
                    started = time.perf_counter()
                    choice = choose_precision("auto", device, f"{name}|32", _probe_step(objective, build(), dataset,
                                                                                        32, device), Path(cache))
                    entry.update(auto=choice.chosen, auto_ratio=round(choice.ratio or 0, 2),
                                 probe_s=round(time.perf_counter() - started, 1))
            results["models"][f"{name}/{batch}"] = entry
            log(f"{name}/{batch}: {entry}")
    rows = "".join(f"| {key} | {e['fp32_images_per_s']} | {e['bf16_images_per_s']} | {e['bf16_speedup']}x | "
                   f"{e.get('auto', '')} | {e.get('probe_s', '')} |\n" for key, e in results["models"].items())
    text = (f"# --precision auto on this host\n\nCPU: {results['cpu']}, {results['threads']} threads\n\n"
            f"| model/batch | fp32 images/s | bf16 images/s | bf16 speed-up | auto | probe s |\n|---|---|---|---|---|---|\n"
            f"{rows}")
    write_results(results, "precision", text)


if __name__ == "__main__":
    main()
