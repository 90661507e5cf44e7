"""Issue 22's targets: bits per dimension of every family on one axis (8-bit test images), what the estimate
costs, and how precise it is.

    uv run python -m benchmarks.likelihood                          # Fashion-MNIST, 10 min a model (~1 h)
    uv run python -m benchmarks.likelihood --runs DIR               # reuse runs trained into DIR (by name)
    uv run python -m benchmarks.likelihood --dataset mnist --data-dir ~/data   # full MNIST (online once)

Families: `vae` with the discretized-logistic decoder (importance-weighted bound), `diffusion` (fast preset:
the variational bound of Ho et al. 2020), `flow` (the probability-flow ODE with Hutchinson's estimator),
`latent-diffusion` (none: its autoencoder's decoder is not a density on 8-bit pixels; printed as such,
untrained).
DIR/<name> is reused when it holds a finished run of that type (e.g. `python -m benchmarks.run --keep-runs DIR`
names them flow-10 and fast-flow-10), else trained there for --minutes.

For each: bits/dim on --test-images test images, its 95% interval over images (`ci95`) and the Monte-Carlo
interval of the estimate alone (`estimate_ci95`, the target: half-width <= 0.01), and the CPU-seconds
(process time, all threads) the estimate took (target: <= 2 CPU-minutes for the fast preset). A sweep over
the diffusion bound's timesteps and the ODE's steps shows what precision and bias each setting buys.
Writes benchmarks/results/<date>-<host>-likelihood.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
import time
from pathlib import Path

from benchmarks.harness import RESULTS, commit, cpu_description, log, steps_trained, write_results

MODELS = {  # name in DIR -> (model type, family options)
    "vae-logistic": ("vae", {"decoder": "discretized-logistic"}),
    "fast-flow-10": ("diffusion", {"preset": "fast"}),
    "flow-10": ("flow", {}),
}
BOUND_TIMESTEPS = (16, 32, 64)
ODE_STEPS = (2, 4, 8)


def _run(name: str, model_type: str, options: dict, runs: Path, dataset: str, data_dir, minutes: float):
    from vaediff.families import load_run, train_run

    run_dir = runs / name
    if (run_dir / "config.json").is_file():
        try:
            run = load_run(run_dir)
            if run.model_type == model_type:
                log(f"{name}: reusing {run_dir}")
                return run
        except Exception as exc:  # noqa: BLE001  an unfinished run is trained again
            log(f"{name}: {exc}; training again")
    log(f"{name}: training {model_type} for {minutes} min")
    return train_run(model_type, run_dir, dataset, data_dir, options=options, train_options={"minutes": minutes},
                     overwrite=True, progress=False, figures=False)


def _measure(run, split, settings) -> dict:
    started_cpu, started = time.process_time(), time.perf_counter()
    result = run.likelihood(split, settings, 0, progress=False)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    if result is None or result.get("bits_per_dim") is None:
        return {"bits_per_dim": None, "why": (result or {}).get("no_bits_per_dim", "no likelihood")}
    half = lambda bounds: round((bounds[1] - bounds[0]) / 2, 4)  # noqa: E731
    return {"bits_per_dim": round(result["bits_per_dim"], 4), "ci95_half_width": half(result["ci95"]),
            "estimate_ci95_half_width": half(result["estimate_ci95"]), "test_images": result["test_images"],
            "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1), "axis": result["likelihood_axis"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each model it trains")
    parser.add_argument("--runs", type=Path, default=RESULTS.parent / "runs-likelihood",
                        help="where runs are reused from or trained into (default: benchmarks/runs-likelihood)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--no-sweep", action="store_true", help="only the default settings")
    args = parser.parse_args(argv)
    import torch

    from vaediff.data import load_dataset
    from vaediff.families.base import LikelihoodSettings

    started = time.perf_counter()
    dataset = load_dataset(args.dataset, args.data_dir, download=args.data_dir is not None)
    split = type(dataset.test)(dataset.test.images[: args.test_images], dataset.test.labels[: args.test_images])
    args.runs.mkdir(parents=True, exist_ok=True)
    table, sweep = [], []
    for name, (model_type, options) in MODELS.items():
        run = _run(name, model_type, options, args.runs, args.dataset, args.data_dir, args.minutes)
        settings = LikelihoodSettings(test_images=args.test_images)
        row = {"model": name, "model_type": model_type, **_measure(run, split, settings)}
        row["steps_trained"] = steps_trained(run.run_dir)
        log(f"  {row}")
        table.append(row)
        if args.no_sweep:
            continue
        if model_type == "diffusion":
            for count in BOUND_TIMESTEPS:
                point = _measure(run, split, LikelihoodSettings(test_images=args.test_images, bound_timesteps=count))
                sweep.append({"model": name, "bound_timesteps": count, **point})
                log(f"  {sweep[-1]}")
        if model_type == "flow":
            for count in ODE_STEPS:
                point = _measure(run, split, LikelihoodSettings(test_images=args.test_images, ode_steps=count))
                sweep.append({"model": name, "ode_steps": count, **point})
                log(f"  {sweep[-1]}")
    from vaediff.families.latent import NO_BITS_PER_DIM

    table.append({"model": "latent-diffusion", "model_type": "latent-diffusion", "bits_per_dim": None,
                  "why": NO_BITS_PER_DIM, "steps_trained": "–"})
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "commit": commit(),
               "cpu": cpu_description(), "threads": torch.get_num_threads(), "dataset": args.dataset,
               "minutes": args.minutes, "test_images": args.test_images, "table": table, "sweep": sweep,
               "command": "python -m benchmarks.likelihood " + " ".join(argv if argv is not None else sys.argv[1:]),
               "wall_minutes": round((time.perf_counter() - started) / 60, 1)}
    write_results(results, "likelihood", markdown(results))
    return 0


def markdown(results: dict) -> str:
    lines = [f"# vaediff likelihood benchmark, {results['date']} ({results['host']}, commit {results['commit']})", "",
             f"CPU: {results['cpu']}, {results['threads']} threads", "",
             f"`{results['command']}`: {results['dataset']}, each model trained {results['minutes']:g} min, "
             f"bits/dim on {results['test_images']:,} test images (8-bit).", "",
             "| model | steps trained | bits/dim | ± over images | ± estimate (MC) | CPU s | note |",
             "|---|---|---|---|---|---|---|"]
    for row in results["table"]:
        if row["bits_per_dim"] is None:
            lines.append(f"| {row['model']} ({row['model_type']}) | {row['steps_trained']} | – | | | | {row['why']} |")
            continue
        lines.append(f"| {row['model']} ({row['model_type']}) | {row['steps_trained']} | {row['bits_per_dim']:.3f} | "
                     f"{row['ci95_half_width']:.3f} | {row['estimate_ci95_half_width']:.4f} | {row['cpu_seconds']} | |")
    if results["sweep"]:
        lines += ["", "| model | setting | bits/dim | ± estimate (MC) | CPU s |", "|---|---|---|---|---|"]
        for row in results["sweep"]:
            setting = (f"{row['bound_timesteps']} timesteps" if "bound_timesteps" in row
                       else f"{row['ode_steps']} RK4 steps")
            lines.append(f"| {row['model']} | {setting} | {row['bits_per_dim']:.4f} | "
                         f"{row['estimate_ci95_half_width']:.4f} | {row['cpu_seconds']} |")
    lines += ["", "For reference on full MNIST (8-bit, dequantized): RealNVP 1.06, Glow 1.05, FFJORD 0.99, "
              "Residual Flows 0.97 bits/dim."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
