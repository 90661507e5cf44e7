"""Does a study's budget hold on this host, and does fixed work give the same numbers twice?

    uv run python -m benchmarks.study_budget [--budgets 15 6] [--fixed-runs 2] [--keep DIR]

Runs, one after another in child processes on one machine (nothing else should run meanwhile):
`vaediff quickstart --minutes M` for each budget, then `vaediff quickstart --work fixed` `--fixed-runs`
times with the same seed. Prints a JSON and a table: each budgeted study's time against its budget (by
the study's own clock in quickstart.json, and end to end with the interpreter's start), the sample counts
its plan chose, the fixed study's time beside them, and whether the fixed runs' metrics.json values are
identical (speed figures aside). The CPU model and flags are printed with them. Writes
benchmarks/results/study-budget-latest.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RESULTS, cpu_description
from vaediff.families import quickstart_types
from vaediff.runs import read_history

MODELS = tuple(quickstart_types())  # the registry's quickstart models, one run each (one seed)
TIMING_KEYS = {"samples_per_second", "run"}  # what may differ between two runs of the same fixed work


def run_study(out: Path, *flags: str) -> dict:
    command = [sys.executable, "-m", "vaediff", "quickstart", "--out", str(out), "--overwrite", *flags]
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:  # a budget refused on this host is a result too
        return {"flags": " ".join(flags), "refused": finished.stderr.strip().splitlines()[-1:],
                "wall_minutes": round(wall / 60, 2)}
    state = json.loads((out / "quickstart.json").read_text())
    plan = state["plan"]
    return {"flags": " ".join(flags), "study_minutes": round(state["elapsed_s"] / 60, 2),
            "wall_minutes": round(wall / 60, 2), "eval_samples": plan["eval_samples"],
            "curve_samples": plan["curve_samples"], "likelihood_images": plan["likelihood_images"],
            "steps": {m: _steps(out / m) for m in MODELS},
            "fid": {m: json.loads((out / m / "metrics.json").read_text())["fid"] for m in MODELS},
            "stage_seconds": state["stage_seconds"]}


def _steps(run_dir: Path) -> int:
    return int(read_history(run_dir)[-1]["step"])


def identical_metrics(first: Path, second: Path) -> dict[str, list[str]]:
    """Per model, the metrics.json keys whose values differ between two studies (timings aside)."""
    differing = {}
    for model in MODELS:
        a, b = (json.loads((d / model / "metrics.json").read_text()) for d in (first, second))
        differing[model] = sorted(k for k in set(a) | set(b) if k not in TIMING_KEYS and a.get(k) != b.get(k))
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="*", default=[15.0, 6.0])
    parser.add_argument("--fixed-runs", type=int, default=2)
    parser.add_argument("--keep", metavar="DIR", help="write the studies under DIR (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vaediff-budget-"))
    result: dict = {"cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"), "budgeted": [], "fixed": []}
    for minutes in args.budgets:
        study = run_study(root / f"budget-{minutes:g}", "--minutes", f"{minutes:g}")
        study["budget_minutes"] = minutes
        study["within_5_percent"] = "study_minutes" in study and study["study_minutes"] <= 1.05 * minutes
        result["budgeted"].append(study)
    for index in range(args.fixed_runs):
        # one seed, as the budgeted studies (fixed work trains two by default): the same runs to compare
        result["fixed"].append(run_study(root / f"fixed-{index}", "--work", "fixed", "--seeds", "1"))
    if args.fixed_runs >= 2 and not any("refused" in study for study in result["fixed"]):
        result["fixed_differences"] = identical_metrics(root / "fixed-0", root / "fixed-1")
        result["fixed_identical"] = not any(result["fixed_differences"].values())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "study-budget-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nCPU: {result['cpu']}")
    print("| study | budget (min) | study's clock (min) | end to end (min) | samples / curve / bits-dim images | "
          "steps diffusion, flow | FID diffusion, flow |")
    print("|---|---|---|---|---|---|---|")
    for study in result["budgeted"] + result["fixed"]:
        if "refused" in study:
            print(f"| `{study['flags']}` | refused: {' '.join(study['refused'])} |")
            continue
        print(f"| `{study['flags']}` | {study.get('budget_minutes', '–')} | {study['study_minutes']} | "
              f"{study['wall_minutes']} | {study['eval_samples']} / {study['curve_samples']} / "
              f"{study['likelihood_images']} | {study['steps']['diffusion']}, {study['steps']['flow']} | "
              f"{study['fid']['diffusion']:.3g}, {study['fid']['flow']:.3g} |")
    if "fixed_identical" in result:
        print(f"fixed work twice: metrics identical: {result['fixed_identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
