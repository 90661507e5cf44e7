"""Guidance scale and guidance interval on one trained diffusion or latent-diffusion run.

    uv run python -m benchmarks.guidance_interval RUN [--samples 1000] [--steps 10]
        [--plan 2:0:1,3:0.1:0.7,...]

Each point of the plan (guidance:lo:hi) draws the same samples (seed 0, classes 0..9 in turn) with the
run's sampler, guided only at the steps with lo <= t/T <= hi, and scores them with the data set's
evaluator (`report.quality_point`, as the report's curves do): class accuracy, FID, KID and images/s.
The default plan is the sweep behind the latent preset's guidance (docs/performance.md, "Guidance in a
limited interval").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaediff.errors import ConfigError

DEFAULT_PLAN = "2:0:1,2:0.2:1,2:0:0.6,2.5:0:0.8,2.5:0.2:0.8,2.5:0:0.7,3:0:0.7,3:0.1:0.7,3:0.2:0.7,4:0.2:0.7"


def parse_plan(text: str) -> list[tuple[float, tuple[float, float]]]:
    points = []
    for item in text.split(","):
        try:
            guidance, low, high = (float(part) for part in item.split(":"))
        except ValueError:
            raise ConfigError(f"--plan: expected guidance:lo:hi, got {item!r}") from None
        points.append((guidance, (low, high)))
    return points


def sweep(run_dir: Path, plan: list[tuple[float, tuple[float, float]]], samples: int, steps: int | None) -> list[dict]:
    from vaediff.console import progress_bar
    from vaediff.data import load_dataset
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.families import load_run
    from vaediff.report import quality_point

    run = load_run(run_dir)
    if not hasattr(run, "sampler_settings"):
        raise ConfigError(f"{run_dir}: a {run.model_type} run has no guidance to sweep")
    settings = run.config["settings"]
    dataset = load_dataset(settings["dataset"], settings.get("data_dir"))
    evaluator = load_or_train_evaluator(dataset, progress=False)
    return [quality_point(run, evaluator, dataset, samples, 0,
                          run.sampler_settings(steps=steps, guidance=guidance, guidance_interval=interval))
            for guidance, interval in progress_bar(plan, desc="guidance points", unit="point")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a trained diffusion or latent-diffusion run directory")
    parser.add_argument("--samples", type=int, default=1000, help="samples per point (default: 1000)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's)")
    parser.add_argument("--plan", default=DEFAULT_PLAN, help="comma-separated guidance:lo:hi points")
    args = parser.parse_args(argv)
    try:
        rows = sweep(args.run, parse_plan(args.plan), args.samples, args.steps)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2))
    print("\n| guidance | interval (t/T) | class accuracy | FID | KID | images/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        low, high = row["guidance_interval"]
        print(f"| {row['guidance']:g} | {low:g}-{high:g} | {row['class_accuracy']:.3f} | {row['fid']:.2f} | "
              f"{row['kid']:.4f} | {row['samples_per_second']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
