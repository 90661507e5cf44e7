"""Flow maps against flow matching and diffusion at equal training minutes, on Fashion-MNIST, on this CPU.

    uv run python -m benchmarks.meanflow [--minutes 10] [--samples 1000] [--work DIR --keep-runs] [--tiny]

Trains pixel diffusion (fast preset), flow, meanflow (iMF), meanflow (--objective mf) for --minutes each, and
meanflow --init from a flow run trained for half of them (that run's minutes counted: half flow, half
meanflow). `--keep-runs` reuses runs already in --work (benchmarks.precision_targets leaves its fp32
`diffusion/` and `flow/` there: the same recipes, minutes and data). Scored with the data set's evaluator
(`report.quality_point`, as the report's curves do: class accuracy, FID and its interval, images/s):
- against network evaluations per image: meanflow 1 to 32 steps (one pass a step, guidance an input),
  diffusion (DPM-Solver++) and flow (Euler) 1 to 16 steps with guidance (two passes a step);
- the targets: meanflow at 1 and 2 steps against flow at 8, by the report's own test (report.verdict);
- iMF at 1 step across the report's guidance sweep (one model), and with the guidance interval [0.1, 0.7];
- the web demo's grid (serve.Demo.generate, 16 images, 1 step) timed, and the seed's sampler (DDPM over
  1,000 steps, on a seed-preset network) for the images/s ratio.
Two figures beside the results: <stem>-evaluations.png and <stem>-guidance.png. `--tiny` (a minute or two):
mnist-5k, seconds of training, 50 samples, fewer points, a quickly trained evaluator in a scratch cache, the
DDPM timing over 50 of its 1,000 steps scaled by 20; its numbers only show the script works.
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

MEANFLOW_STEPS = (1, 2, 4, 8, 16, 32)   # one network evaluation a step
GUIDED_STEPS = (1, 2, 4, 8, 16)         # diffusion and flow with guidance: two evaluations a step
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # the report's (report/curves.py)
LIMITED_INTERVAL = (0.1, 0.7)           # guidance only where 0.1 <= t <= 0.7 (Kynkaanniemi et al. 2024)
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
    """{name: run}: diffusion, flow, meanflow iMF and MF for `minutes` each; iMF from a flow run, half and half."""
    runs = {"diffusion": train("diffusion", work / "diffusion", dataset, minutes, {"preset": "fast"}, tiny),
            "flow": train("flow", work / "flow", dataset, minutes, {}, tiny)}
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


def point(run, dataset, evaluator, samples: int, evaluations_per_step: int, **settings) -> dict:
    measured = quality(run, evaluator, dataset, samples, run.sampler_settings(**settings))
    return {**measured, "evaluations": measured["steps"] * evaluations_per_step}


def measure(runs: dict, dataset, evaluator, samples: int, tiny: bool) -> dict:
    """Every run's points against network evaluations, the MF run's at 1, 2, 4, the iMF guidance sweep."""
    meanflow_steps, guided_steps = ((1, 2), (1, 4)) if tiny else (MEANFLOW_STEPS, GUIDED_STEPS)
    curves = {name: [point(runs[name], dataset, evaluator, samples, 2, steps=s) for s in guided_steps]
              for name in ("diffusion", "flow")}
    for name in ("meanflow-imf", "meanflow-imf-init"):
        curves[name] = [point(runs[name], dataset, evaluator, samples, 1, steps=s) for s in meanflow_steps]
    curves["meanflow-mf"] = [point(runs["meanflow-mf"], dataset, evaluator, samples, 1, steps=s)
                             for s in meanflow_steps[:3]]
    imf = runs["meanflow-imf"]
    sweep = [point(imf, dataset, evaluator, samples, 1, steps=1, guidance=g)
             for g in ((1.0, 6.0) if tiny else GUIDANCE_SWEEP)]
    limited = [point(imf, dataset, evaluator, samples, 1, steps=1, guidance=g, guidance_interval=LIMITED_INTERVAL)
               for g in ((6.0,) if tiny else (2.0, 4.0, 6.0))]
    flow_8 = next((p for p in curves["flow"] if p["steps"] == 8), None) or point(runs["flow"], dataset, evaluator,
                                                                              samples, 2, steps=8)
    return {"curves": curves, "flow_8": flow_8, "imf_guidance_sweep": sweep, "imf_limited_interval": limited}


def targets(result: dict) -> dict:
    """Meanflow at 1 and 2 steps (iMF from scratch, and from a flow run) against flow at 8 steps."""
    from vaediff.report import verdict
    from vaediff.report.statistics import RunSummary

    flow_8 = result["flow_8"]

    def summary(name: str, measured: dict) -> RunSummary:
        return RunSummary(name, Path(name), name, measured)

    checks = {}
    for name in ("meanflow-imf", "meanflow-imf-init"):
        for p in result["curves"][name][:2]:
            tests = {key: verdict(summary(name, p), summary("flow", flow_8), key) for key in ("fid", "class_accuracy")}
            checks[f"{name}@{p['steps']}"] = {
                "fid_ratio": round(p["fid"] / flow_8["fid"], 3),
                "accuracy_gap": round(flow_8["class_accuracy"] - p["class_accuracy"], 4),
                "clearly_worse_fid": bool(tests["fid"] and tests["fid"][0] and p["fid"] > flow_8["fid"]),
                "clearly_worse_accuracy": bool(tests["class_accuracy"] and tests["class_accuracy"][0]
                                               and p["class_accuracy"] < flow_8["class_accuracy"])}
    return checks


def demo_seconds(run_dir: Path) -> dict:
    """The web demo's answer to one request (16 images at the run's defaults), as `serve` computes it: the
    median of 5 after one warm-up."""
    import statistics

    from vaediff.serve import Demo

    demo = Demo([run_dir])
    name = demo.run_names()[0]
    settings = demo.runs[name].sampler_settings()
    request = (name, "0", "16", settings["sampler"], str(settings["steps"]), f"{settings['guidance']:g}", "0")
    times = []
    for _ in range(6):
        started = time.perf_counter()
        picture, status = demo.generate(*request)
        times.append(time.perf_counter() - started)
        if picture is None:
            raise RuntimeError(status)
    return {"images": 16, "steps": settings["steps"], "median_seconds": round(statistics.median(times[1:]), 4)}


def figures(result: dict, stem: Path) -> None:
    from vaediff.figures import plot_curves

    labels = {"diffusion": "diffusion (DPM-Solver++, guided)", "flow": "flow (Euler, guided)",
              "meanflow-imf": "meanflow iMF", "meanflow-imf-init": "meanflow iMF --init (half flow)",
              "meanflow-mf": "meanflow MF"}
    panels = (("fid", "FID ↓"), ("class_accuracy", "class accuracy ↑"))
    plot_curves({labels[n]: points for n, points in result["curves"].items()}, "evaluations",
                Path(f"{stem}-evaluations.png"), f"{result['dataset']}, {result['minutes']:g} training min each",
                "network evaluations per image", log_x=True, panels=panels)
    plot_curves({"meanflow iMF, 1 step, guided everywhere": result["imf_guidance_sweep"],
                 f"1 step, guided in {list(LIMITED_INTERVAL)}": result["imf_limited_interval"]}, "guidance",
                Path(f"{stem}-guidance.png"), "one meanflow model, guidance chosen when sampling", "guidance scale",
                panels=panels)


def table(result: dict) -> str:
    rows = ["| run | steps | evaluations | guidance | FID | class accuracy | images/s |", "|---|---|---|---|---|---|---|"]
    listed = [(name, p) for name, points in result["curves"].items() for p in points]
    listed += [("meanflow-imf (sweep)", p) for p in result["imf_guidance_sweep"]]
    listed += [(f"meanflow-imf (guided in {list(LIMITED_INTERVAL)})", p) for p in result["imf_limited_interval"]]
    rows += [f"| {name} | {p['steps']} | {p['evaluations']} | {p['guidance']:g} | {p['fid']:.2f} | "
             f"{p['class_accuracy']:.3f} | {p['images_per_second']:.1f} |" for name, p in listed]
    rows += ["", "| meanflow against flow at 8 steps | FID ratio | accuracy gap | clearly worse |", "|---|---|---|---|"]
    rows += [f"| {name} | {c['fid_ratio']} | {c['accuracy_gap']} | "
             f"{', '.join(k[len('clearly_worse_'):] for k in c if k.startswith('clearly') and c[k]) or 'no'} |"
             for name, c in result["targets"].items()]
    seed, demo = result["seed_sampler"], result["demo"]
    budget = "8 training steps (--tiny)" if result["tiny"] else f"{result['minutes']:g} training minutes"
    rows += ["", f"Seed sampler (DDPM, {seed['steps']} steps): {seed['images_per_second']:.3g} images/s; meanflow "
             f"1 step / DDPM 1,000: {result['one_step_vs_ddpm1000']:.0f}x. Web demo, 16 images at "
             f"{demo['steps']} step(s): {demo['median_seconds']} s.",
             f"CPU: {result['cpu']}; {budget} a model; {result['samples']} samples a point; steps trained: "
             f"{result['steps_trained']}"]
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
              **measure(runs, dataset, evaluator, samples, args.tiny),
              "seed_sampler": seed_images_per_second(name, work, args.tiny),
              "demo": demo_seconds(runs["meanflow-imf"].run_dir)}
    result["targets"] = targets(result)
    one_step = result["curves"]["meanflow-imf"][0]["images_per_second"]
    result["one_step_vs_ddpm1000"] = round(one_step / result["seed_sampler"]["images_per_second"], 1)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.tiny:  # a check of the script: printed and drawn in --work, not kept in benchmarks/results/
        print(json.dumps(result, indent=2))
        print(table(result))
        figures(result, work / "tiny")
    else:
        figures(result, write_results(result, "meanflow", table(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
