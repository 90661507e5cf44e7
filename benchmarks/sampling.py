"""The suite's sampler section: speed of each sampler on the fast and seed presets, quality on the fast
one (run by benchmarks.run on the models its quality section trained)."""

from __future__ import annotations

import time

import torch

from benchmarks.harness import log
from benchmarks.quality import quality
from vaediff.data import Dataset

SAMPLER_PLAN = [("ddpm", 1000), ("ddim", 100), ("ddim", 50), ("dpm", 20), ("dpm", 10)]
SPEED_BATCH = 20  # the same small batch for every sampler and preset, as the issue times the seed's DDPM


def _images_per_second(run, options: dict, count: int, timed_steps: int) -> float:
    """Images per second of `options`, timing `timed_steps` of its steps: every step of DDPM costs one
    network evaluation (two with guidance), so 50 timed steps of 1000 scale exactly by 1/20."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 10
    start = time.perf_counter()
    run.generate(count, labels, generator, **{**options, "steps": timed_steps})
    return count / (time.perf_counter() - start) * timed_steps / options["steps"]


def sampling(runs: dict, dataset: Dataset, samples: int, quick: bool) -> dict:
    """Speed of each sampler on both presets (a batch of 20), quality on the fast preset; the default
    sampler against the seed's DDPM-1000 on the seed network, and against DDIM-100 on the same model."""
    evaluator, measured = runs["evaluator"], runs["fast_quality_row"]
    table = []
    for preset in ("fast", "seed"):
        run = runs[preset]
        guidance = run.model_config.guidance if run.model_config.has_null_class else 1.0
        for sampler, steps in SAMPLER_PLAN:
            if quick and preset == "seed" and (sampler, steps) not in (("ddpm", 1000), ("dpm", 20)):
                continue
            options = {"sampler": sampler, "steps": steps, "guidance": guidance}
            timed = 50 if quick and steps == 1000 else steps
            row = {"preset": preset, **options, "timed_steps": timed,
                   "images_per_second": round(_images_per_second(run, options, SPEED_BATCH, timed), 3)}
            default = (sampler, steps) == (runs["fast"].model_config.sampler, runs["fast"].model_config.sampling_steps)
            if preset == "fast" and steps < 1000 and (not quick or steps == 100 or default):
                reuse = all(measured.get(k) == v for k, v in options.items()) and measured["num_samples"] == samples
                point = measured if reuse else quality(run, evaluator, dataset, samples, options)
                row.update({k: point[k] for k in ("class_accuracy", "fid", "kid", "precision", "recall", "num_samples")})
            table.append(row)
            log(f"sampling {preset} {sampler}-{steps}: {row['images_per_second']:.3f} images/s"
                + (f", FID {row['fid']:.2f}, accuracy {row['class_accuracy']:.3f}" if "fid" in row else ""))
    pick = {(r["preset"], r["sampler"], r["steps"]): r for r in table}
    settings = runs["fast"].sampler_settings()
    default = pick[("fast", settings["sampler"], settings["steps"])]
    seed_ddpm = pick[("seed", "ddpm", 1000)]
    return {"sampling": table, "sampler_speedup": round(default["images_per_second"] / seed_ddpm["images_per_second"], 1),
            "sampler_fid_ratio": round(default["fid"] / pick[("fast", "ddim", 100)]["fid"], 4),
            "default_sampler": settings, "sampler_speed_batch": SPEED_BATCH}
