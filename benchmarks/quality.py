"""The suite's quality sections: train for a budget, evaluate with vaediff's evaluator. Time to quality
(the fast and seed presets at each budget) and the VAE's likelihood; `train` and `quality` also serve
benchmarks.sampling, benchmarks.latent and benchmarks.flow."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.harness import log, steps_trained
from vaediff.data import Dataset

REUSE_RUNS = False  # --keep-runs: a finished run already in the folder is measured again, not retrained


def train(model_type: str, out: Path, dataset_name: str, minutes: float, options: dict):
    from vaediff.families import load_run, train_run

    if REUSE_RUNS and (out / "loss.csv").is_file() and (out / "config.json").is_file():
        log(f"reusing {out} (--keep-runs)")
        return load_run(out)

    # No sample grids after training: quality and speed are measured separately, on more samples.
    return train_run(model_type, out, dataset_name, options=options, train_options={"minutes": minutes},
                     overwrite=True, progress=False, figures=False)


def quality(run, evaluator, dataset, count: int, options: dict) -> dict:
    """The report's curve point (report.quality_point), rounded for the table, seed 0."""
    from vaediff.report import quality_point

    point = quality_point(run, evaluator, dataset, count, 0, options)
    return {"class_accuracy": round(point["class_accuracy"], 4), "fid": round(point["fid"], 3),
            "kid": round(point["kid"], 4), "precision": round(point["precision"], 3),
            "recall": round(point["recall"], 3), "images_per_second": round(point["samples_per_second"], 2),
            "num_samples": count, **options,
            "ci95": {key: [round(bound, 4) for bound in point["ci95"][key]]
                     for key in ("fid", "class_accuracy") if point["ci95"].get(key)}}


def _comparison_settings(run) -> dict:
    """Both presets sample with DPM-Solver++ 10 steps, the fast preset with its guidance, the seed without
    (it has no null class; its own DDPM-1000 would take an hour per quality measurement). The sampler
    section measures the default sampler (20 steps) on the fast model beside it."""
    guidance = run.model_config.guidance if run.model_config.has_null_class else 1.0
    return run.sampler_settings("dpm", 10, guidance)


def time_to_quality(dataset: Dataset, budgets: list[float], samples: int, work: Path) -> tuple[dict, dict]:
    """fast and seed presets trained for each budget; class accuracy and FID of `samples` samples each."""
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    table, runs = [], {}
    for minutes in budgets:
        for preset in ("fast", "seed"):
            log(f"training diffusion {preset} for {minutes} min")
            run = train("diffusion", work / f"{preset}-{minutes:g}", dataset.name, minutes, {"preset": preset})
            row = {"preset": preset, "minutes": minutes, "steps_trained": steps_trained(run.run_dir),
                   **quality(run, evaluator, dataset, samples, _comparison_settings(run))}
            table.append(row)
            runs[(preset, minutes)] = (run, row)
            log(f"  {preset} {minutes} min: accuracy {row['class_accuracy']:.3f}, FID {row['fid']:.2f}")
    final = max(budgets)
    (fast_run, fast), (seed_run, seed) = runs[("fast", final)], runs[("seed", final)]
    passing = [r["minutes"] for r in table if r["preset"] == "fast" and r["class_accuracy"] >= 0.90]
    summary = {"time_to_quality": table, "budget_minutes": final, "fast_class_accuracy": fast["class_accuracy"],
               "seed_class_accuracy": seed["class_accuracy"], "fast_fid": fast["fid"], "seed_fid": seed["fid"],
               "fast_vs_seed_fid_ratio": round(fast["fid"] / seed["fid"], 4),
               "fast_minutes_to_0.90": min(passing) if passing else None, "evaluator_accuracy": evaluator.accuracy}
    return summary, {"fast": fast_run, "seed": seed_run, "fast_quality_row": fast, "evaluator": evaluator}


def vae_section(dataset: Dataset, budgets: list[float], work: Path, iw_samples: int, test_images: int) -> dict:
    """The VAE trained for each budget: NLL (importance-weighted bound) on the first test images, then the
    speed of drawing 10,000 samples from the last one."""
    from vaediff.families.base import LikelihoodSettings

    nll = {}
    for minutes in budgets:
        run = train("vae", work / f"vae-{minutes:g}", dataset.name, minutes, {})
        test = type(dataset.test)(dataset.test.images[:test_images], dataset.test.labels[:test_images])
        settings = LikelihoodSettings(iw_samples=iw_samples)
        nll[f"{minutes:g}"] = round(run.likelihood(test, settings, 0, progress=False)["nll_nats"], 2)
        log(f"vae {minutes} min: NLL {nll[f'{minutes:g}']} nats")
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    run.generate(10000, None, generator)
    return {"vae_nll_nats": nll, "vae_iw_samples": iw_samples, "vae_nll_test_images": len(test),
            "vae_sample_images_per_second": round(10000 / (time.perf_counter() - start), 0)}
