"""Issue 39's targets: `--precision auto` against fp32 over training minutes, with quality at equal steps.

    uv run python -m benchmarks.precision_targets [--minutes 10] [--samples 1000] [--work DIR] [--tiny]

Fast diffusion preset and flow, on Fashion-MNIST at the preset's batch: an fp32 run trains `--minutes`
(N optimizer steps); an `auto` run, its precision cache empty (so its probe is paid and timed), trains the
same N steps. Both calls are timed whole (data, model, probe, training, saving), so auto's optimizer steps
in the fp32 run's time are N * fp32 seconds / auto seconds (the step's speed is steady over a run).
Both runs are evaluated on `--samples` samples (evaluate_run, seed 0) and compared by the report's own
test (report.verdict, 95%) on FID and class accuracy: equal steps, so a difference is bf16's numerics.

Seed preset: its training step timed in fp32 and bf16 in interleaved rounds (as benchmarks/precision.py)
and auto's probe timed with an empty cache; auto's steps in `--minutes` are (minutes - probe) at the speed
of what it chose, against the faster precision's steps in the whole minutes.

`--tiny` (a minute): mnist-5k, 8 steps, 50 samples, an evaluator trained in seconds; it only shows the
script works. The CPU is printed beside the ratios. The fp32 runs are left in --work as `diffusion/` and
`flow/`, which `benchmarks.meanflow --work DIR --keep-runs` reuses (the same recipes, minutes and data).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.harness import cpu_description, interleaved_medians, log, steps_trained, write_results

MODELS = {"diffusion": {"preset": "fast"}, "flow": {}}  # run name -> family options (model type: the name)


def timed_train(model_type: str, out: Path, dataset: str, options: dict, limits: dict) -> float:
    """Seconds of one train_run call (figures off)."""
    from vaediff.families import train_run

    started = time.perf_counter()
    train_run(model_type, out, dataset, options=options, train_options=limits, overwrite=True, progress=False,
              figures=False)
    return time.perf_counter() - started


def auto_against_fp32(model_type: str, options: dict, dataset_name: str, work: Path, minutes: float,
                      samples: int, tiny: bool) -> dict:
    """The fp32 run for `minutes`, the auto run for as many steps, both timed; both evaluated and compared."""
    from vaediff.evaluate import evaluate_run
    from vaediff.report import summarize_runs, verdict

    fp32_dir, auto_dir = work / model_type, work / f"{model_type}-auto"
    limits = {"max_steps": 8, "batch_size": 16} if tiny else {"minutes": minutes}
    log(f"{model_type}: fp32 for {limits}")
    fp32_seconds = timed_train(model_type, fp32_dir, dataset_name, options, {**limits, "precision": "fp32"})
    steps = steps_trained(fp32_dir)
    log(f"{model_type}: auto for the same {steps} steps, with an empty precision cache")
    saved = os.environ.get("VAEDIFF_CACHE_DIR")
    os.environ["VAEDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="precision-cache-")
    try:
        auto_limits = {"max_steps": steps, **({"batch_size": 16} if tiny else {}), "precision": "auto"}
        auto_seconds = timed_train(model_type, auto_dir, dataset_name, options, auto_limits)
    finally:
        if saved is None:
            del os.environ["VAEDIFF_CACHE_DIR"]
        else:
            os.environ["VAEDIFF_CACHE_DIR"] = saved
    from vaediff.runs import read_run_config

    choice = read_run_config(auto_dir).get("settings", {}).get("precision", {})
    for directory in (fp32_dir, auto_dir):
        evaluate_run(directory, n_samples=samples, seed=0, likelihood={"test_images": 20}, ignore_unused=True,
                     progress=False)
    fp32, auto = summarize_runs([fp32_dir, auto_dir], group_seeds=False)
    quality = {}
    for key in ("fid", "class_accuracy"):
        tested = verdict(auto, fp32, key)
        quality[key] = {"fp32": round(fp32.value(key), 4), "auto": round(auto.value(key), 4),
                        "clearly_different": bool(tested[0]) if tested else None,
                        "statistic": round(tested[1], 2) if tested else None}
    worse = [k for k, q in quality.items() if q["clearly_different"]
             and (q["auto"] > q["fp32"] if k == "fid" else q["auto"] < q["fp32"])]
    return {"steps": steps, "fp32_seconds": round(fp32_seconds, 1), "auto_seconds": round(auto_seconds, 1),
            "auto_steps_per_fp32_step": round(fp32_seconds / auto_seconds, 3), "auto_chose": choice.get("chosen"),
            "probe_ratio": choice.get("ratio"), "quality_at_equal_steps": quality, "auto_clearly_worse_in": worse}


def seed_preset(minutes: float, rounds: int, tiny: bool) -> dict:
    """fp32 and bf16 step times (interleaved rounds), auto's probe and choice: steps each gets in `minutes`."""
    from benchmarks.gpu import recipes
    from vaediff.data import load_dataset
    from vaediff.training.loop import _probe_step
    from vaediff.training.precision import choose_precision, time_steps

    objective, build = recipes(tiny)["seed"]
    dataset, device, batch = load_dataset("mnist-5k"), torch.device("cpu"), 32
    torch.manual_seed(0)
    step = _probe_step(objective, build(), dataset, batch, device)
    step_seconds = interleaved_medians({p: partial(time_steps, step, device, p, steps=3) for p in ("fp32", "bf16")},
                                       rounds)
    with tempfile.TemporaryDirectory() as cache:
        torch.manual_seed(0)
        started = time.perf_counter()
        choice = choose_precision("auto", device, "seed|32", _probe_step(objective, build(), dataset, batch, device),
                                  Path(cache))
        probe = time.perf_counter() - started
    budget = minutes * 60
    best = min(step_seconds, key=step_seconds.get)
    auto_steps = max(0.0, budget - probe) / step_seconds[choice.chosen]
    best_steps = budget / step_seconds[best]
    return {"step_seconds": {k: round(v, 4) for k, v in step_seconds.items()}, "faster": best,
            "auto_chose": choice.chosen, "probe_seconds": round(probe, 1), "auto_steps": round(auto_steps),
            "faster_steps": round(best_steps), "auto_share_of_faster": round(auto_steps / best_steps, 3)}


def table(result: dict) -> str:
    rows = ["| model | steps | fp32 s | auto s | auto chose | steps ratio | FID fp32 / auto | accuracy fp32 / auto "
            "| auto clearly worse in |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        q = r["quality_at_equal_steps"]
        rows.append(f"| {name} | {r['steps']} | {r['fp32_seconds']} | {r['auto_seconds']} | {r['auto_chose']} | "
                    f"{r['auto_steps_per_fp32_step']}x | {q['fid']['fp32']} / {q['fid']['auto']} | "
                    f"{q['class_accuracy']['fp32']} / {q['class_accuracy']['auto']} | "
                    f"{', '.join(r['auto_clearly_worse_in']) or 'nothing'} |")
    seed = result["seed"]
    rows += ["", f"Seed preset: step {seed['step_seconds']} s, faster {seed['faster']}; auto chose "
             f"{seed['auto_chose']} (probe {seed['probe_seconds']} s): {seed['auto_steps']} steps in "
             f"{result['minutes']:g} min against {seed['faster_steps']} ({seed['auto_share_of_faster']:.1%})",
             "", f"CPU: {result['cpu']}; {result['dataset']}; {result['samples']} samples a run"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for the seed preset")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a scratch directory)")
    parser.add_argument("--tiny", action="store_true", help="a check that the script runs")
    args = parser.parse_args(argv)
    from benchmarks.meanflow import quick_evaluator
    from vaediff.data import load_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="precision-targets-"))
    name, samples = ("mnist-5k", 50) if args.tiny else ("fashion-mnist", args.samples)
    if args.tiny:
        quick_evaluator(load_dataset(name), work / "cache")
    started = time.perf_counter()
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "threads": torch.get_num_threads(),
              "dataset": name, "minutes": args.minutes, "samples": samples, "tiny": args.tiny,
              "models": {model_type: auto_against_fp32(model_type, options, name, work, args.minutes, samples,
                                                       args.tiny)
                         for model_type, options in MODELS.items()},
              "seed": seed_preset(args.minutes, 1 if args.tiny else args.rounds, args.tiny)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.tiny:
        import json

        print(json.dumps(result, indent=2))
        print(table(result))
    else:
        write_results(result, "precision-targets", table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
