"""Where a training step's time goes: torch.profiler's operator table for one model (batch 64).

    uv run python -m benchmarks.profile_step diffusion-seed [--rows 15]

Model names are those of the suite's throughput section (benchmarks.speed.models).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.speed import models, train_step
from vaediff.data import load_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(models()))
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    dataset = load_dataset("mnist-5k")
    objective, build = models()[args.model]
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    images, labels = dataset.train.as_float(slice(0, 64)), dataset.train.labels[:64]
    train_step(objective, model, optimizer, images, labels, 0)  # warm-up: allocations, first-call costs
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(args.steps):
            train_step(objective, model, optimizer, images, labels, step + 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())
