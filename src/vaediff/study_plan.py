"""How a study spends its minutes on the host it runs on: measured speeds in, a plan out.

`quickstart --minutes M` (work "budget") first measures this host (`probe_host`: a few timed optimizer
steps and timed samples per model, the likelihood on a few test images, a few steps of the evaluator
network), then `plan_study` sizes everything that is not training (evaluations, curves, the report) from
those speeds and gives training what is left, shared between the models as their families' `share` says. A slow host and a
fast one get the same shares of time and different step counts.

`quickstart --work fixed` fixes the work instead (each family's `fixed_steps` optimizer steps, fixed sample
counts), so the same seed gives the same numbers on any host, and the time is what varies.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vaediff.costs import (
    ModelSpeed,
    curve_seconds,
    evaluation_seconds,
    evaluator_image_seconds,
    measure_run,
)
from vaediff.data import Dataset
from vaediff.errors import ConfigError
from vaediff.evaluator_network import default_image_passes
from vaediff.families import FAMILIES, quickstart_types, study_share, train_run
from vaediff.families.base import LikelihoodSettings
from vaediff.runs import read_history, read_json
from vaediff.training.precision import cpu_name


def shares() -> dict[str, float]:
    """Each quickstart model type's share of the training time (Family.share): VAEs converge in well under
    a minute on small data; flow matching trains the fast preset's network like pixel diffusion; latent
    diffusion trains two stages."""
    return {model_type: study_share(model_type) for model_type in quickstart_types()}


def fixed_steps() -> dict[str, int]:
    """--work fixed: each quickstart model type's optimizer steps (Family.fixed_steps: what the 15-minute
    budget bought on the 2-core CPU of README's first table; latent diffusion trains each stage this many)."""
    return {model_type: FAMILIES[model_type].fixed_steps for model_type in quickstart_types()}

# --work fixed trains every model with this many seeds unless --seeds says otherwise, so that its verdicts
# concern the recipes (the spread between training seeds is in their intervals), not one draw of weights;
# a budgeted study trains one seed by default, so that training gets the whole budget (its report says so).
FIXED_SEEDS = 2

# The report's steps curve in a study: each family's first four points (Family.curve_steps), with more
# samples each rather than five with fewer (diffusion's 100-step point cost as much as the other four
# together and told nothing the 50-step one did not).
STUDY_CURVE_POINTS = 4


def study_curve_steps(model_types) -> dict[str, tuple[int, ...]]:
    """Each model type's points on a study's steps curve."""
    return {m: tuple(FAMILIES[m].curve_steps[:STUDY_CURVE_POINTS]) for m in dict.fromkeys(model_types)}

# (evaluation samples, samples per curve point, test images for bits/dim) a budget may choose, best first.
# The last is the least that still tells the families apart (FID intervals about +-0.3 at 1,000 samples
# around values near 1-2, about twice as wide at 300: VAEs from diffusion, not flow from diffusion).
SAMPLE_LADDER = ((1000, 100, 200), (1000, 50, 200), (700, 50, 100), (500, 40, 100), (300, 30, 50))
MIN_TRAIN_FRACTION = 0.4  # below this, the models would be too undertrained to compare
PROBE_STEPS = 12          # timed optimizer steps per model
REPORT_GRID = 100         # samples per model in the report's grid
FIXED_OVERHEAD_S = 20.0   # EDA, the report's figures, loading: seconds a study spends outside the measured parts
TRAINING_FIGURE_SAMPLES = 20  # besides its 10 x 10 grid, the denoising figure a training run draws
SAFETY = 1.1              # estimates are inflated this much before training gets the rest


@dataclass(frozen=True)
class HostSpeed:
    models: dict[str, ModelSpeed]
    evaluator_image_s: float    # one image through a training step of the evaluator network (CAS, evaluator)
    probe_s: float = 0.0        # what measuring took
    cpu: str = ""


@dataclass(frozen=True)
class StudyPlan:
    """What each stage gets: training minutes (and the steps expected at the measured speed), sample counts,
    the curves' points, and the seconds each part is estimated to take."""

    work: str
    train_minutes: dict[str, float]
    expected_steps: dict[str, int]
    eval_samples: int
    curve_samples: int
    curve_steps: dict[str, tuple[int, ...]]  # model type -> its points on the steps curve
    estimated_s: dict[str, float]
    likelihood_images: int = 200

    def as_json(self) -> dict:
        return {**asdict(self), "curve_steps": {m: list(steps) for m, steps in self.curve_steps.items()}}


# ---------------------------------------------------------------------------------------------------------
# Estimates


def _reserved_seconds(host: HostSpeed, runs: list[tuple[str, str]], rung: tuple[int, int, int],
                      curve_steps: dict[str, tuple[int, ...]], evaluator_s: float) -> dict[str, float]:
    eval_samples, curve_samples, likelihood_images = rung
    estimates = {"evaluator": evaluator_s, "other": FIXED_OVERHEAD_S}
    for name, model_type in runs:
        speed = host.models[model_type]
        estimates[f"evaluate:{name}"] = evaluation_seconds(speed, eval_samples, host.evaluator_image_s,
                                                           likelihood_images)
        estimates[f"curves:{name}"] = curve_seconds(speed, curve_samples, curve_steps[model_type],
                                                    host.evaluator_image_s)
        # the report's grid, and training's own (its sample grid and denoising figure), building and saving
        estimates[f"grids:{name}"] = (2 * REPORT_GRID + TRAINING_FIGURE_SAMPLES) * speed.sample_s + speed.run_overhead_s
    if any(host.models[m].conditional for _, m in runs):  # CAS's real-data ceiling, trained once, then cached
        estimates["cas_real"] = default_image_passes(eval_samples) * host.evaluator_image_s
    return estimates


def sample_ladder(largest: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """SAMPLE_LADDER's rungs within `largest` (evaluation samples, curve samples, likelihood images), led by
    `largest` itself."""
    rungs = [rung for rung in SAMPLE_LADDER if all(a <= b for a, b in zip(rung, largest, strict=True))]
    return rungs if rungs and rungs[0] == tuple(largest) else [tuple(largest), *rungs]


def plan_study(minutes: float, host: HostSpeed, runs: list[tuple[str, str]], evaluator_train_images: int | None,
               elapsed_s: float = 0.0, largest: tuple[int, int, int] = SAMPLE_LADDER[0]) -> StudyPlan:
    """Size a study of `runs` ((name, model type), seeds included) to end within `minutes`, `elapsed_s`
    of which are already spent (the probe). `evaluator_train_images`: the evaluator must be trained on this
    many images first (None: it is cached). Sample counts step down `sample_ladder(largest)` until
    training keeps MIN_TRAIN_FRACTION of the budget; a ConfigError, with the smallest budget that holds,
    when even the last rung does not."""
    total = minutes * 60
    evaluator_s = (default_image_passes(evaluator_train_images) * host.evaluator_image_s
                   if evaluator_train_images else 0.0)
    for rung in sample_ladder(largest):
        estimates = _reserved_seconds(host, runs, rung, study_curve_steps(m for _, m in runs), evaluator_s)
        train_s = total - elapsed_s - SAFETY * sum(estimates.values())
        if train_s >= MIN_TRAIN_FRACTION * total:
            break
    else:
        needed = (elapsed_s + SAFETY * sum(estimates.values())) / (1 - MIN_TRAIN_FRACTION) / 60
        raise ConfigError(f"--minutes {minutes:g} cannot hold this study on this host: evaluating and reporting "
                          f"{len(runs)} models on {rung[0]} samples each would take about "
                          f"{SAFETY * sum(estimates.values()) / 60:.1f} min and leave too little to train; "
                          f"give --minutes {math.ceil(needed)} or more (or --work fixed, which takes what it takes)")
    share_total = sum(study_share(m) for _, m in runs)
    train_minutes = {name: train_s * study_share(m) / share_total / 60 for name, m in runs}
    expected = {name: int(train_minutes[name] * 60 / host.models[m].step_s) for name, m in runs}
    estimates["training"] = train_s
    return StudyPlan("budget", train_minutes, expected, rung[0], rung[1], study_curve_steps(m for _, m in runs),
                     {k: round(v, 1) for k, v in estimates.items()}, rung[2])


def fixed_plan(runs: list[tuple[str, str]], samples: tuple[int, int, int] = SAMPLE_LADDER[0],
               steps: dict[str, int] | None = None) -> StudyPlan:
    """--work fixed: each family's fixed_steps (or `steps`) per model type and the sample counts `samples`
    (evaluation, curve points, likelihood images) on any host; no estimate of time."""
    steps = {**{m: FAMILIES[m].fixed_steps for _, m in runs}, **(steps or {})}
    return StudyPlan("fixed", {}, {name: steps[m] for name, m in runs}, samples[0], samples[1],
                     study_curve_steps(m for _, m in runs), {}, samples[2])


# ---------------------------------------------------------------------------------------------------------
# Measuring the host


def _seconds_per_step(run_dir: Path) -> float:
    """A probe run's seconds per optimizer step (its loss.csv's last row), averaged over both stages for
    latent runs; warm-up included, so on the safe side."""
    lasts = [history[-1] for history in (read_history(run_dir), read_history(run_dir / "autoencoder")) if history]
    return sum(row["elapsed_s"] / max(1.0, row["step"]) for row in lasts) / len(lasts)


def probe_model(model_type: str, directory: Path, dataset_source: str, data_dir: str | None, options: dict,
                data_options: dict, dataset: Dataset, likelihood: LikelihoodSettings, seed: int,
                precision: str = "fp32") -> ModelSpeed:
    """Train `PROBE_STEPS` steps into `directory` in `precision` (auto: its own probe first, cached for the
    study's run), then time samples and the likelihood (costs.measure_run)."""
    started = time.perf_counter()
    run = train_run(model_type, directory, dataset_source, data_dir, options,
                    {"max_steps": PROBE_STEPS, "seed": seed, "checkpoint_minutes": 60.0, "precision": precision},
                    overwrite=True,
                    progress=False, figures=False, report_to="none", **data_options)
    step_s = _seconds_per_step(directory)
    overhead_s = max(0.0, time.perf_counter() - started - PROBE_STEPS * step_s)
    return replace(measure_run(run, dataset, likelihood, seed), step_s=step_s, run_overhead_s=overhead_s)


def probe_host(model_types: list[str], dataset: Dataset, dataset_source: str, data_dir: str | None,
               model_options: dict, data_options: dict, likelihood: LikelihoodSettings, seed: int,
               progress: bool = True, precision: str = "fp32") -> HostSpeed:
    """Measure each model type's speed on this host, in a scratch directory removed afterwards.
    `data_options`: load_dataset's image_size, image_column and label_column."""
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="vaediff-probe-"))
    models = {}
    try:
        for model_type in model_types:
            if progress:
                print(f"  measuring {model_type} on this host", flush=True)
            models[model_type] = probe_model(model_type, scratch / model_type, dataset_source, data_dir,
                                             dict(model_options.get(model_type, {})), data_options, dataset,
                                             likelihood, seed, precision)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return HostSpeed(models, evaluator_image_seconds(dataset), time.perf_counter() - started, cpu_name())


def host_from_json(data: dict) -> HostSpeed:
    return HostSpeed({k: ModelSpeed(**v) for k, v in data["models"].items()}, data["evaluator_image_s"],
                     data.get("probe_s", 0.0), data.get("cpu", ""))


def measured_speed(run_dir: Path, planned: ModelSpeed) -> ModelSpeed:
    """The planned speed with the sampling rate the run's evaluation measured (metrics.json)."""
    metrics = read_json(run_dir / "metrics.json")
    rate = metrics.get("samples_per_second")
    return replace(planned, sample_s=1.0 / rate) if rate else planned

