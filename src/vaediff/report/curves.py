"""The report's curves: quality against sampling steps and the guidance sweep, each point scored like an
evaluation (with intervals) and cached outside the runs, which are inputs and never written to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vaediff.cas import classification_accuracy_score
from vaediff.checks import MIN_EVAL_SAMPLES
from vaediff.console import progress_bar
from vaediff.costs import ModelSpeed, curve_seconds, evaluator_image_seconds, largest_within, minutes_text
from vaediff.errors import RunError
from vaediff.evaluate import quality_metrics
from vaediff.evaluator_network import default_cache_dir, load_or_train_evaluator
from vaediff.families import FAMILIES
from vaediff.figures import plot_curves
from vaediff.generation import timed_draw
from vaediff.report.text import TEXT
from vaediff.runs import atomic_write_json, read_json
from vaediff.training import CHECKPOINT_FILE

GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

def quality_point(run, evaluator, dataset, count: int, seed: int, options: dict, cas: bool = False) -> dict:
    """FID, KID, precision, recall, class accuracy (and with `cas` the CAS), their 95% intervals and the
    speed of `count` samples drawn with sampler `options`: one point of a curve (and the benchmarks')."""
    images, labels, seconds = timed_draw(run, count, seed, options)
    metrics = quality_metrics(evaluator, images, labels, dataset, seed)
    point = {**options, "fid": metrics["fid"], "kid": metrics["kid"]["mean"], "precision": metrics["precision"],
             "recall": metrics["recall"], "class_accuracy": metrics.get("class_accuracy"),
             "samples_per_second": count / seconds, "num_samples": count, "ci95": metrics["ci95"]}
    if cas:
        score = classification_accuracy_score(images, labels, dataset, seed)
        point["cas"], point["ci95"]["cas"] = score["cas"], score["ci95"]
    return point


def steps_of(run, curve_steps: tuple[int, ...] | dict | None) -> tuple[int, ...]:
    """The steps curve's points for `run`: `curve_steps` where given (one tuple for every run, or a tuple per
    model type), else its family's (Family.curve_steps)."""
    if isinstance(curve_steps, dict):
        curve_steps = curve_steps.get(run.model_type)
    return tuple(curve_steps) if curve_steps is not None else FAMILIES[run.model_type].curve_steps


def run_curves(run, evaluator, dataset, count: int, seed: int, with_ddpm_1000: bool, progress: bool,
               curve_steps: tuple[int, ...] | dict | None = None) -> dict:
    """Steps curve (default sampler and guidance; at `curve_steps`, or the family's points) and guidance
    sweep (default sampler and steps)."""
    cache_path = curves_cache_path(run)
    cache = read_json(cache_path) if cache_path.is_file() else {}
    defaults = run.sampler_settings()
    plan = [("steps", {**defaults, "steps": s}) for s in steps_of(run, curve_steps)]
    if with_ddpm_1000 and run.seed_sampler() is not None:
        plan.append(("steps", run.seed_sampler()))
    if run.supports_guidance:
        plan += [("guidance", {**defaults, "guidance": g}) for g in GUIDANCE_SWEEP]
    result: dict[str, list[dict]] = {"steps": [], "guidance": []}
    for kind, options in progress_bar(plan, desc=f"curves for {run.run_dir.name}", unit="point", enabled=progress):
        key = (f"{options['sampler']}:{options['steps']}:{options['guidance']}:{list(options['guidance_interval'])}:"
               f"{count}:{seed}:v2{':cas' if kind == 'guidance' else ''}")  # v2: points with intervals
        if key not in cache:
            cache[key] = quality_point(run, evaluator, dataset, count, seed, options, cas=kind == "guidance")
            _save_cache(cache_path, cache)
        result[kind].append(cache[key])
    return result


def curves_section(runs: dict, dataset, out_dir: Path, words: dict, curve_samples: int, seed: int,
                    with_ddpm_1000: bool, progress: bool, curve_steps: tuple[int, ...] | dict | None) -> list[tuple[str, object]]:
    """The steps curve and the guidance sweep of the runs that have a sampler: curves.json, the figures, and
    the report's blocks for them."""
    evaluator = load_or_train_evaluator(dataset, progress=progress)
    curve_data = {name: run_curves(run, evaluator, dataset, curve_samples, seed, with_ddpm_1000, progress,
                                   curve_steps) for name, run in runs.items()}
    atomic_write_json(out_dir / "curves.json", curve_data)
    steps = {name: list(c["steps"]) for name, c in curve_data.items()}
    # figure text stays English in every language: matplotlib's bundled fonts have no CJK glyphs
    plot_curves(steps, "steps", out_dir / "steps.png", TEXT["en"]["steps"], "sampling steps", log_x=True)
    blocks: list[tuple[str, object]] = [("h2", words["steps"]), ("p", words["curve_note"].format(n=curve_samples)),
                                        ("image", ("steps.png", words["steps"]))]
    without = [name for name, run in runs.items() if run.seed_sampler() is None]
    if with_ddpm_1000 and without:
        blocks.append(("p", words["no_seed_point"].format(names=", ".join(without))))
    sweeps = {name: c["guidance"] for name, c in curve_data.items() if c["guidance"]}
    if sweeps:
        plot_curves(sweeps, "guidance", out_dir / "guidance.png", TEXT["en"]["guidance"], "guidance scale w",
                    panels=(("class_accuracy", "class accuracy ↑ (recognisable)"),
                            ("cas", "CAS ↑ (diverse enough to learn from)")))
        blocks += [("h2", words["guidance"]), ("image", ("guidance.png", words["guidance"]))]
    return blocks


def announce_curves(runs: list, metrics: list[dict], dataset, curve_samples: int, curve_steps: tuple[int, ...] | dict | None,
                     with_ddpm_1000: bool, minutes: float | None, progress: bool) -> int:
    """The curves' cost from each run's measured sampling speed (metrics.json), said up front; with `minutes`,
    the samples per point that fit (0: none fit, the curves are left out)."""
    image_s = evaluator_image_seconds(dataset)
    speeds, steps = [], []
    for run, run_metrics in zip(runs, metrics, strict=True):
        sampler = run_metrics.get("sampler") or run.sampler_settings()
        rate = run_metrics.get("samples_per_second") or 1.0
        speeds.append(ModelSpeed(sample_s=1.0 / rate, sampler_steps=sampler["steps"], guided=run.supports_guidance,
                                 conditional=run.conditional, likelihood_s=0.0))
        seed_point = run.seed_sampler() if with_ddpm_1000 else None
        steps.append(steps_of(run, curve_steps) + ((seed_point["steps"],) if seed_point else ()))

    def cost(samples: int) -> float:
        return sum(curve_seconds(speed, samples, s, image_s) for speed, s in zip(speeds, steps, strict=True))

    if minutes is not None:
        fitting = largest_within(cost, minutes * 60, curve_samples, MIN_EVAL_SAMPLES)
        if progress or fitting < curve_samples:
            print(f"curves: --minutes {minutes:g} holds " + (f"{fitting} samples per point" if fitting else
                  f"none (the least, {MIN_EVAL_SAMPLES} samples per point, take about "
                  f"{minutes_text(cost(MIN_EVAL_SAMPLES))}); the report leaves them out"), flush=True)
        curve_samples = fitting
    if progress and curve_samples:
        points = sum(len(s) + (len(GUIDANCE_SWEEP) if run.supports_guidance else 0) for run, s in zip(runs, steps, strict=True))
        print(f"curves: {len(runs)} runs, {points} points x {curve_samples} samples: "
              f"about {minutes_text(cost(curve_samples))} on this host (cached points cost nothing)", flush=True)
    return curve_samples


def curves_cache_path(run) -> Path:
    """Where a run's curve points are kept: the user's cache, under a hash of what draws the samples (its
    model config and weight files), so a run trained further, or a copy elsewhere, gets its own entry."""
    digest = hashlib.sha1(json.dumps(run.config.get("model"), sort_keys=True).encode())
    for path in sorted(run.run_dir.rglob("*.safetensors")):
        if path.name != CHECKPOINT_FILE:  # the optimizer's state does not draw
            digest.update(path.relative_to(run.run_dir).as_posix().encode() + path.read_bytes())
    return default_cache_dir() / "curves" / f"{digest.hexdigest()[:20]}.json"


def _save_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache)
    except (OSError, RunError):  # a cache that cannot be written costs time, not the report
        pass

