"""An A/A test of the report's verdicts: how often does it call one of two seeds of the same recipe clearly
better?

    uv run python -m benchmarks.aa_test [--seeds 4] [--samples 1000] [--keep DIR]

Trains each recipe (fixed optimizer steps, only `--seed` differs) with `--seeds` seeds on mnist-5k and
evaluates every run on `--samples` samples, then compares runs of the same recipe, where every difference
is noise and "clearly different" is a false alarm:

- single seed: every pair of seeds, one run against the other, as a one-seed study's report does (the
  bootstrap over samples, the trained network held fixed);
- seed groups: every split of the seeds into two halves, the report's test over seed groups (Welch's t,
  each seed's variance floored at its own sampling variance).

At the 5% level a calibrated test calls about 5% of these clearly different. Prints a JSON and a table
(per recipe and metric: pairs, clear calls, rate); writes benchmarks/results/aa-test-latest.json. The work
is fixed in steps and samples, so the numbers do not depend on the host (the time does).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RESULTS, cpu_description

# (model type, optimizer steps): the recipes, at the step counts a few-minute study trains
RECIPES = (("diffusion", 700), ("flow", 700), ("cvae", 2000))
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "is", "class_accuracy")


def train_and_evaluate(model_type: str, steps: int, seed: int, samples: int, directory: Path) -> Path:
    from vaediff.evaluate import evaluate_run
    from vaediff.families import train_run

    if not (directory / "metrics.json").is_file():
        train_run(model_type, directory, "mnist-5k", None, {}, {"max_steps": steps, "seed": seed},
                  overwrite=True, progress=False, figures=False)
        evaluate_run(directory, n_samples=samples, seed=seed, likelihood={"test_images": 20},
                     ignore_unused=True, progress=False)
    return directory


def halves(count: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every split of seeds 0..count-1 into two equal halves, each split once (the half with seed 0 first)."""
    seeds = range(count)
    return [(first, tuple(s for s in seeds if s not in first))
            for first in itertools.combinations(seeds, count // 2) if 0 in first]


def clear_calls(first, second, metrics) -> dict[str, bool]:
    from vaediff.report import verdict

    calls = {}
    for key in metrics:
        tested = verdict(first, second, key)
        if tested is not None:
            calls[key] = bool(tested[0])
    return calls


def aa_rates(run_dirs: list[Path]) -> dict:
    """Clear calls between runs of one recipe: single seeds pairwise, and seed groups split in halves."""
    from vaediff.report import group_by_seed, summarize_runs

    runs = summarize_runs(run_dirs, group_seeds=False)
    single = [clear_calls(a, b, METRICS) for a, b in itertools.combinations(runs, 2)]
    grouped = [clear_calls(group_by_seed([runs[i] for i in first])[0], group_by_seed([runs[i] for i in second])[0],
                           METRICS) for first, second in halves(len(runs))]
    return {"single_seed": _tally(single), "seed_groups": _tally(grouped)}


def _tally(calls: list[dict[str, bool]]) -> dict:
    per_metric = {}
    for key in METRICS:
        values = [c[key] for c in calls if key in c]
        if values:
            per_metric[key] = {"comparisons": len(values), "clear": sum(values)}
    comparisons = sum(m["comparisons"] for m in per_metric.values())
    clear = sum(m["clear"] for m in per_metric.values())
    return {"comparisons": comparisons, "clear": clear, "rate": round(clear / comparisons, 3) if comparisons else None,
            "per_metric": per_metric}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per recipe, an even number (default: 4)")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples per run (default: 1000)")
    parser.add_argument("--keep", metavar="DIR", help="train under DIR and reuse what it holds (default: a "
                        "temporary directory)")
    args = parser.parse_args()
    if args.seeds < 4 or args.seeds % 2:
        parser.error("--seeds must be an even number, 4 or more (two seed groups of two or more)")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vaediff-aa-"))
    started = time.perf_counter()
    result: dict = {"cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds,
                    "samples": args.samples, "recipes": {}}
    fids = {}
    for model_type, steps in RECIPES:
        name = f"{model_type} --max-steps {steps}"
        print(f"{name}: {args.seeds} seeds", file=sys.stderr, flush=True)
        dirs = [train_and_evaluate(model_type, steps, seed, args.samples, root / f"{model_type}-{steps}-seed{seed}")
                for seed in range(args.seeds)]
        result["recipes"][name] = aa_rates(dirs)
        fids[name] = [round(json.loads((d / "metrics.json").read_text())["fid"], 3) for d in dirs]
        result["recipes"][name]["fid_by_seed"] = fids[name]
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aa-test-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nCPU: {result['cpu']}; {args.seeds} seeds per recipe, {args.samples} samples per run, "
          f"{result['minutes']} min")
    print("| recipe | FID by seed | single seed: clear / comparisons | rate | seed groups: clear / comparisons | rate |")
    print("|---|---|---|---|---|---|")
    for name, rates in result["recipes"].items():
        single, grouped = rates["single_seed"], rates["seed_groups"]
        print(f"| `{name}` | {', '.join(f'{v:.2f}' for v in rates['fid_by_seed'])} | "
              f"{single['clear']} / {single['comparisons']} | {single['rate']:.0%} | "
              f"{grouped['clear']} / {grouped['comparisons']} | {grouped['rate']:.0%} |")
    totals = {kind: [sum(r[kind][k] for r in result["recipes"].values()) for k in ("clear", "comparisons")]
              for kind in ("single_seed", "seed_groups")}
    print(f"| all | | {totals['single_seed'][0]} / {totals['single_seed'][1]} | "
          f"{totals['single_seed'][0] / totals['single_seed'][1]:.0%} | {totals['seed_groups'][0]} / "
          f"{totals['seed_groups'][1]} | {totals['seed_groups'][0] / totals['seed_groups'][1]:.0%} |")
    print("(a comparison: one metric between two runs, or two seed groups, of the same recipe; at the 5% level "
          "a calibrated test calls about 5% clear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
