"""Flow maps against flow matching at equal training minutes, on Fashion-MNIST, on this CPU.

    uv run python -m benchmarks.meanflow [--minutes 10] [--samples 1000] [--keep-runs] [--tiny]

Trains flow, meanflow (iMF), meanflow (--objective mf) for --minutes each, and meanflow --init from a flow
run trained for half of them (that run's minutes counted: half flow, half meanflow). Scores meanflow at
1, 2 and 4 steps and flow at 8 with the data set's evaluator (`report.quality_point`, as the report's curves
do: class accuracy, FID and its interval, images/s), iMF at 1 step across the report's guidance sweep (one
model), and the seed's sampler (DDPM over 1,000 steps, on a seed-preset network) for the images/s ratio.
`--tiny` (under a minute): mnist-5k, seconds of training, 100 samples, a quickly trained evaluator in a
scratch cache, and the DDPM timing over 50 of its 1,000 steps scaled by 20; its numbers only show the
script works. Prints JSON and a table with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.harness import cpu_description, log, steps_trained, write_results
from benchmarks.quality import quality

MEANFLOW_STEPS = (1, 2, 4)
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # the report's (report/curves.py)
REUSE = [False]  # --keep-runs


def train(model_type: str, out: Path, dataset: str, minutes: float, options: dict, tiny: bool):
    from vaediff.families import load_run, train_run

    if (out / "loss.csv").is_file() and (out / "config.json").is_file() and REUSE[0]:
        log(f"reusing {out} (--keep-runs)")
        return load_run(out)
    limits = {"max_steps": 8, "batch_size": 16} if tiny else {"minutes": minutes}
    return train_run(model_type, out, dataset, options=options, train_options=limits, overwrite=True,
                     progress=False, figures=False)


def quick_evaluator(dataset, cache: Path):
    """--tiny: an evaluator trained in seconds into a scratch cache (what the tests do), not the real one."""
    from vaediff.evaluator_network import RECIPE_VERSION, feature_scale, train_evaluator
    from vaediff.runs import atomic_save_safetensors, atomic_write_json

    os.environ["VAEDIFF_CACHE_DIR"] = str(cache)
    net, accuracy = train_evaluator(dataset, image_passes=1000, progress=False)
    directory = cache / "evaluators" / f"{dataset.key}-v{RECIPE_VERSION}"
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(net.state_dict(), directory / "model.safetensors")
    atomic_write_json(directory / "evaluator.json", {"test_accuracy": accuracy,
                                                     "feature_scale": feature_scale(net, dataset.train)})


def train_all(dataset: str, minutes: float, work: Path, tiny: bool) -> dict:
    """{name: run}: flow, meanflow iMF and MF for `minutes` each; iMF from a flow run, half and half."""
    runs = {"flow": train("flow", work / "flow", dataset, minutes, {}, tiny)}
    for objective in ("imf", "mf"):
        log(f"training meanflow ({objective}) for {minutes} min")
        runs[f"meanflow-{objective}"] = train("meanflow", work / f"meanflow-{objective}", dataset, minutes,
                                              {"objective": objective}, tiny)
    log(f"training flow {minutes / 2:g} min, then meanflow --init from it {minutes / 2:g} min")
    half = train("flow", work / "flow-half", dataset, minutes / 2, {}, tiny)
    runs["meanflow-imf-init"] = train("meanflow", work / "meanflow-imf-init", dataset, minutes / 2,
                                      {"objective": "imf", "init": str(half.run_dir)}, tiny)
    return runs


def seed_images_per_second(dataset: str, work: Path, tiny: bool) -> dict:
    """The seed's sampler (DDPM, every one of 1,000 timesteps, unguided) on a seed-preset network: its speed
    does not depend on training, so the network is trained one step."""
    from vaediff.families import train_run
    from vaediff.generation import timed_draw

    run = train_run("diffusion", work / "seed", dataset, options={"preset": "seed"},
                    train_options={"max_steps": 1, "batch_size": 16}, overwrite=True, progress=False, figures=False)
    settings = run.seed_sampler()
    count, steps = (10, 50) if tiny else (20, settings["steps"])
    _, _, seconds = timed_draw(run, count, 0, {**settings, "steps": steps})
    seconds *= settings["steps"] / steps  # --tiny: 50 of the 1,000 steps, scaled (the cost is per step)
    return {"images_per_second": round(count / seconds, 4), "steps": settings["steps"], "images": count,
            "steps_timed": steps}


def measure(runs: dict, dataset, evaluator, samples: int, sweep_points: tuple[float, ...]) -> dict:
    """Quality and speed at each point: meanflow at 1, 2, 4 steps (its default guidance), flow at 8."""
    points = {"flow": [quality(runs["flow"], evaluator, dataset, samples, runs["flow"].sampler_settings(steps=8))]}
    for name, run in runs.items():
        if name.startswith("meanflow"):
            points[name] = [quality(run, evaluator, dataset, samples, run.sampler_settings(steps=s))
                            for s in MEANFLOW_STEPS]
    imf = runs["meanflow-imf"]
    sweep = [quality(imf, evaluator, dataset, samples, imf.sampler_settings(steps=1, guidance=g))
             for g in sweep_points]
    return {"points": points, "imf_guidance_sweep": sweep}


def table(result: dict) -> str:
    rows = ["| run | steps | guidance | FID | class accuracy | images/s |", "|---|---|---|---|---|---|"]
    for name, points in result["points"].items():
        rows += [f"| {name} | {p['steps']} | {p['guidance']:g} | {p['fid']:.2f} | {p['class_accuracy']:.3f} | "
                 f"{p['images_per_second']:.1f} |" for p in points]
    rows += [f"| meanflow-imf (sweep) | 1 | {p['guidance']:g} | {p['fid']:.2f} | {p['class_accuracy']:.3f} | "
             f"{p['images_per_second']:.1f} |" for p in result["imf_guidance_sweep"]]
    seed = result["seed_sampler"]
    budget = "8 training steps (--tiny)" if result["tiny"] else f"{result['minutes']:g} training minutes"
    rows += [f"| diffusion seed (DDPM) | {seed['steps']} | 1 | - | - | {seed['images_per_second']:.3g} |", "",
             f"CPU: {result['cpu']}; {budget} a model; {result['samples']} samples a "
             f"point; meanflow 1 step / DDPM 1,000 images/s: {result['one_step_vs_ddpm1000']:.0f}x"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a scratch directory)")
    parser.add_argument("--keep-runs", action="store_true", help="reuse runs already trained in --work")
    parser.add_argument("--tiny", action="store_true", help="a check that the script runs, in under a minute")
    args = parser.parse_args(argv)
    REUSE[0] = args.keep_runs
    from vaediff.data import load_dataset
    from vaediff.evaluator_network import load_or_train_evaluator

    work = args.work or Path(tempfile.mkdtemp(prefix="meanflow-bench-"))
    name, samples = ("mnist-5k", 50) if args.tiny else ("fashion-mnist", args.samples)
    dataset = load_dataset(name)
    if args.tiny:
        quick_evaluator(dataset, work / "cache")
    evaluator = load_or_train_evaluator(dataset, progress=False)
    started = time.perf_counter()
    runs = train_all(name, args.minutes, work, args.tiny)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "dataset": name, "tiny": args.tiny,
              "minutes": args.minutes, "samples": samples,
              "steps_trained": {n: steps_trained(r.run_dir) for n, r in runs.items()},
              **measure(runs, dataset, evaluator, samples, (1.0, 6.0) if args.tiny else GUIDANCE_SWEEP), "seed_sampler": seed_images_per_second(name, work, args.tiny)}
    one_step = result["points"]["meanflow-imf"][0]["images_per_second"]
    result["one_step_vs_ddpm1000"] = round(one_step / result["seed_sampler"]["images_per_second"], 1)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.tiny:  # a check of the script: printed, not kept in benchmarks/results/
        print(json.dumps(result, indent=2))
        print(table(result))
    else:
        write_results(result, "meanflow", table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
