"""Where a training step's time goes: torch.profiler's operator table for one model (batch 64).

    uv run python benchmarks/profile_step.py diffusion-seed [--rows 15]

Model names are those of benchmarks/run.py's throughput section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from run import _models, _step  # noqa: E402

from vaediff.data import load_dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(_models()))
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    dataset = load_dataset("mnist-5k")
    objective, build = _models()[args.model]
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    images, labels = dataset.train.as_float(slice(0, 64)), dataset.train.labels[:64]
    _step(objective, model, optimizer, images, labels, 0)  # warm-up: allocations, first-call costs
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(args.steps):
            _step(objective, model, optimizer, images, labels, step + 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())
