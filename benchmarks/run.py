"""vaediff's benchmark suite: speed and quality on this machine, the seed's configuration measured in the
same run as the baseline, ratios rather than bare seconds.

    uv run python -m benchmarks.run --quick     # < 10 minutes on a 2-core CPU: what closing notes quote
    uv run python -m benchmarks.run             # the full suite (about an hour on a 2-core CPU)

Writes benchmarks/results/<date>-<host>.json and .md and prints the table. The sections live in
benchmarks.speed (peak, data, throughput), benchmarks.quality (quality, vae), benchmarks.sampling,
benchmarks.memory, benchmarks.latent and benchmarks.flow.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import quality
from benchmarks.flow import flow
from benchmarks.harness import commit, cpu_description, log, write_results
from benchmarks.latent import latent, latent_rows
from benchmarks.memory import memory
from benchmarks.sampling import sampling
from benchmarks.speed import data_speed, matmul_peak, training_throughput
from vaediff.data import load_dataset

SECTIONS = ("peak", "data", "throughput", "quality", "sampling", "vae", "memory", "latent", "flow")
QUICK_SECTIONS = ("peak", "data", "throughput", "quality", "sampling", "vae", "memory")


def markdown(results: dict) -> str:
    rows = [("matmul peak (GFLOP/s)", results.get("matmul_peak_gflops")),
            ("data loader speedup vs the seed's torchvision loader", results.get("data_loader_speedup")),
            ("training: % of matmul peak", results.get("train_percent_of_peak")),
            ("training: images/s", results.get("train_images_per_second")),
            ("budget (minutes)", results.get("budget_minutes")),
            ("fast preset class accuracy", results.get("fast_class_accuracy")),
            ("seed preset class accuracy", results.get("seed_class_accuracy")),
            ("fast / seed Fréchet distance", results.get("fast_vs_seed_fid_ratio")),
            ("minutes for fast to reach 0.90 accuracy", results.get("fast_minutes_to_0.90")),
            ("default sampler speedup vs seed's DDPM-1000", results.get("sampler_speedup")),
            ("default sampler FID / DDIM-100 FID", results.get("sampler_fid_ratio")),
            ("VAE NLL (nats) by training minutes", results.get("vae_nll_nats")),
            ("latent diffusion class accuracy", results.get("latent_class_accuracy")),
            ("latent / fast Fréchet distance", results.get("latent_vs_fast_fid_ratio")),
            ("latent diffusion images/s (with guidance)", results.get("latent_images_per_second")),
            *latent_rows(results.get("latent")),
            ("flow, 8 Euler steps: class accuracy", results.get("flow8_class_accuracy")),
            ("fast preset, its default 20 steps: class accuracy", results.get("fast20_class_accuracy")),
            ("flow 8 steps / fast 20 steps Fréchet distance", results.get("flow8_vs_fast20_fid_ratio")),
            ("flow 8 steps / fast 20 steps images/s", results.get("flow8_vs_fast20_images_per_second")),
            ("peak RSS (MB)", results.get("peak_rss_mb")),
            ("70,000 images in memory (MB)", results.get("dataset_in_memory_mb"))]
    lines = [f"# vaediff benchmark, {results['date']} on {results['host']} ({results['device']}, "
             f"{results['threads']} threads, torch {results['torch']}, commit {results['commit']})", "",
             f"CPU: {results.get('cpu', '?')}", "",
             f"`{results['command']}` on {results['dataset']}", "", "| measure | value |", "|---|---|"]
    for label, value in rows:
        if value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"| {label} | {value} |")
    for key, title in (("time_to_quality", "Time to quality"), ("sampling", "Samplers")):
        if results.get(key):
            columns = list(dict.fromkeys(k for row in results[key] for k in row))
            lines += ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in results[key]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3-minute trainings, fewer samples: about 10 minutes")
    parser.add_argument("--dataset", default="fashion-mnist", help="data set (default: fashion-mnist)")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--samples", type=int, default=None, help="samples per quality measurement")
    parser.add_argument("--minutes", type=float, nargs="+", default=None,
                        help="training budgets of the quality section (default: 3 with --quick, else 2 5 10)")
    parser.add_argument("--keep-runs", type=Path, default=None, metavar="DIR",
                        help="train into DIR and keep the runs there, reusing finished ones found there "
                        "(default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    sections = args.sections.split(",") if args.sections else list(QUICK_SECTIONS if args.quick else SECTIONS)
    samples = args.samples or (200 if args.quick else 1000)
    budgets = args.minutes or ([3.0] if args.quick else [2.0, 5.0, 10.0])
    dataset = load_dataset(args.dataset)
    results: dict = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(),
                     "device": platform.processor() or platform.machine(), "cpu": cpu_description(), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "commit": commit(), "dataset": dataset.name, "quick": args.quick,
                     "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])}
    started = time.perf_counter()
    quality.REUSE_RUNS = args.keep_runs is not None
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="vaediff-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    trained: dict = {}
    try:
        if "peak" in sections or "throughput" in sections:
            results.update(matmul_peak())
        if "data" in sections:
            results.update(data_speed(dataset, 30 if args.quick else 300))
        if "throughput" in sections:
            results.update(training_throughput(dataset, results["matmul_peak_gflops"], 2 if args.quick else 10))
        if "quality" in sections or "sampling" in sections:
            summary, trained = quality.time_to_quality(dataset, budgets, samples, work)
            results.update(summary)
        if "sampling" in sections:
            # --quick compares the samplers' FID on 100 samples (DDIM-100 is the slow part of the suite)
            results.update(sampling(trained, dataset, 100 if args.quick else samples, args.quick))
        if "vae" in sections:
            results.update(quality.vae_section(dataset, [0.5] if args.quick else [1.0, 5.0], work,
                                               100 if args.quick else 1000, 1000 if args.quick else len(dataset.test)))
        if "memory" in sections:
            results.update(memory(args.dataset))
        if "latent" in sections:
            fast = trained.get("fast") if trained and max(budgets) == 10.0 else None  # reuse a 10-minute run
            results.update(latent(dataset, 10.0, samples, work, fast))
        if "flow" in sections:
            fast = trained.get("fast") if trained and max(budgets) == 10.0 else None  # reuse a 10-minute run
            results.update(flow(dataset, max(budgets), samples, work, fast))
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    stem = write_results(results, "quick" if args.quick else "", markdown(results),
                         shown={k: v for k, v in results.items() if not isinstance(v, list)})
    log(f"wrote {stem}.json and {stem}.md in {results['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
