"""Which recipe levers move meanflow's one-step quality at a CPU budget: `--init` runs that differ in one setting.

    uv run python -m benchmarks.meanflow_levers --init FLOW_RUN [--minutes 5] [--samples 1000] [--tiny]

Each variant trains `vaediff train meanflow --init FLOW_RUN --minutes M --model-config VARIANT` (the issue-40
protocol's second half: benchmarks.meanflow's `flow-half/` is the natural FLOW_RUN) and is scored at 1, 2 and 4
steps with the data set's evaluator (report.quality_point: FID, class accuracy), seed 0:
- `default`: the recipe as shipped (25% of draws with r != t, t and r ~ logit-normal(-0.4, 1));
- `more-intervals`: 75% of draws with r != t (MeanFlow's CIFAR-10 share);
- `wider-times`: that, and t, r ~ logit-normal(0, 1.6), so intervals reach t = 1 (pure noise, where one step
  starts) and r = 0 more often.
Minutes are equal; steps are not (a draw with r != t costs a JVP). `--tiny`: mnist-5k, 4 steps a variant,
50 samples, a quickly trained evaluator; its numbers only show the script works.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.harness import cpu_description, log, steps_trained, write_results
from benchmarks.meanflow import quick_evaluator
from benchmarks.quality import quality

VARIANTS = {"default": {}, "more-intervals": {"equal_share": 0.25},
            "wider-times": {"equal_share": 0.25, "logit_mean": 0.0, "logit_std": 1.6}}
STEPS = (1, 2, 4)


def measure_variant(name: str, overrides: dict, init: str, dataset, evaluator, args, work: Path) -> dict:
    from vaediff.families import train_run

    limits = {"max_steps": 4, "batch_size": 16} if args.tiny else {"minutes": args.minutes}
    log(f"training {name}: --init {init}, --model-config '{json.dumps(overrides)}'")
    run = train_run("meanflow", work / name, dataset.name, options={"objective": "imf", "init": init,
                                                                    "model": overrides},
                    train_options=limits, overwrite=True, progress=False, figures=False)
    points = [quality(run, evaluator, dataset, args.samples, run.sampler_settings(steps=steps)) for steps in STEPS]
    return {"model_config": overrides, "steps_trained": steps_trained(run.run_dir), "points": points}


def table(result: dict) -> str:
    head = " | ".join(f"FID {s} / acc {s}" for s in STEPS)
    rows = [f"| variant | --model-config | steps trained | {head} |", "|---|---|---|" + "---|" * len(STEPS)]
    for name, variant in result["variants"].items():
        cells = " | ".join(f"{p['fid']:.2f} / {p['class_accuracy']:.3f}" for p in variant["points"])
        rows.append(f"| {name} | `{json.dumps(variant['model_config'])}` | {variant['steps_trained']} | {cells} |")
    budget = "4 training steps (--tiny)" if result["tiny"] else f"{result['minutes']:g} training minutes"
    rows += ["", f"--init {result['init']}; {budget} a variant; {result['samples']} samples a point; "
                 f"CPU: {result['cpu']}"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", required=True, help="a flow run's directory (the variants start from it)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a scratch directory)")
    parser.add_argument("--tiny", action="store_true", help="a check that the script runs")
    args = parser.parse_args(argv)
    from vaediff.data import load_dataset
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.runs import read_run_config

    work = args.work or Path(tempfile.mkdtemp(prefix="meanflow-levers-"))
    if args.tiny:
        args.samples = 50
    dataset = load_dataset(read_run_config(args.init)["settings"]["dataset"])
    if args.tiny:
        quick_evaluator(dataset, work / "cache")
    evaluator = load_or_train_evaluator(dataset, progress=False)
    started = time.perf_counter()
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "dataset": dataset.name, "init": args.init,
              "tiny": args.tiny, "minutes": args.minutes, "samples": args.samples,
              "variants": {name: measure_variant(name, overrides, args.init, dataset, evaluator, args, work)
                           for name, overrides in VARIANTS.items()}}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.tiny:
        print(table(result))
    else:
        write_results(result, "meanflow-levers", table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
