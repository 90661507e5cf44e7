"""What an evaluation or a report costs on this host, measured rather than guessed from the CPU: a few timed
samples of the run itself, its likelihood on a few test images, a few training steps of the evaluator
network (what CAS trains). `evaluate` and `compare` say up front what they will compute and about how long
it takes, and size their work to `--minutes`; the quickstart's planner (study_plan) builds on the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vaediff.checks import MIN_EVAL_SAMPLES
from vaediff.data import Dataset, ImageSplit
from vaediff.errors import ConfigError
from vaediff.evaluator_network import EvaluatorNet, default_image_passes
from vaediff.families.base import LikelihoodSettings
from vaediff.generation import timed_draw

GUIDANCE_POINTS = 6    # report.GUIDANCE_SWEEP's length: each point draws samples and trains a CAS classifier
TIMED_SAMPLES = 8      # samples timed per run (after two untimed ones: first calls allocate)
TIMED_TEST_IMAGES = 4  # test images the likelihood is timed on, then scaled to the images it will use


@dataclass(frozen=True)
class ModelSpeed:
    sample_s: float             # one sample with the sampler settings it was timed with
    sampler_steps: int | None   # those settings' steps; None: no sampler to sweep (VAEs)
    guided: bool                # has a guidance sweep in the report
    conditional: bool           # CAS trains a classifier on its samples
    likelihood_s: float         # bits/dim on `likelihood_images` test images (VAEs: the bound on all of them)
    likelihood_images: int = 200
    step_s: float = 0.0         # one optimizer step, where training was timed (the quickstart's probe)
    run_overhead_s: float = 0.0  # what a training run costs besides its steps (building, data, saving)


def evaluation_seconds(speed: ModelSpeed, samples: int, evaluator_image_s: float, likelihood_images: int,
                       inception_image_s: float = 0.0) -> float:
    """Drawing the samples, their CAS classifier (conditional runs; evaluator_network.default_image_passes)
    and the real reference's features, and the likelihood (bits/dim scales with its test images); with
    Inception FID, the samples' and as many test images' Inception features."""
    cas = default_image_passes(samples) * evaluator_image_s if speed.conditional else 0.0
    likelihood = speed.likelihood_s * (likelihood_images / speed.likelihood_images if speed.sampler_steps else 1.0)
    return samples * speed.sample_s + cas + samples * evaluator_image_s + likelihood + 2 * samples * inception_image_s


def curve_seconds(speed: ModelSpeed, samples: int, curve_steps: tuple[int, ...], evaluator_image_s: float) -> float:
    """The steps curve (samples at each step count) and the guidance sweep (samples and a CAS classifier at
    each scale); nothing for a model without a sampler."""
    if speed.sampler_steps is None:
        return 0.0
    per_step = speed.sample_s / speed.sampler_steps
    seconds = sum(samples * steps * per_step for steps in curve_steps)
    if speed.guided:
        seconds += GUIDANCE_POINTS * (samples * speed.sample_s + default_image_passes(samples) * evaluator_image_s)
    return seconds


def evaluator_image_seconds(dataset: Dataset, batch_size: int = 128, steps: int = 6) -> float:
    """One image through a training step of the evaluator network (what CAS and the evaluator train):
    `steps` timed AdamW steps on a batch of the data, after two untimed ones."""
    net = EvaluatorNet(dataset.shape.channels, max(dataset.num_classes, 2))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    images = dataset.train.as_float(slice(0, batch_size))
    targets = torch.zeros(len(images), dtype=torch.long)
    for step in range(steps + 2):
        if step == 2:
            started = time.perf_counter()
        loss = F.cross_entropy(net.logits(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / (steps * len(images))


def measure_run(run, dataset: Dataset, likelihood: LikelihoodSettings, seed: int,
                sampler_options: dict | None = None) -> ModelSpeed:
    """Time `run`'s samples (with `sampler_options`, else its defaults) and its likelihood, scaled to the
    images `likelihood` will use: timed on two counts of test images, so that what a call costs whatever its
    size (setting up a schedule, a progress bar) is not multiplied by the images."""
    settings = run.sampler_settings(**(sampler_options or {})) if run.has_sampler else {}
    timed_draw(run, 2, seed, settings)
    _, _, seconds = timed_draw(run, TIMED_SAMPLES, seed, settings)

    def likelihood_seconds(count: int) -> float:
        few = ImageSplit(dataset.test.images[:count], dataset.test.labels[:count])
        started = time.perf_counter()
        run.likelihood(few, replace(likelihood, test_images=count), seed, False)
        return time.perf_counter() - started

    # bits/dim runs on the first `test_images` test images; a VAE's bound on the whole test split
    used = min(likelihood.test_images, len(dataset.test)) if run.has_sampler else len(dataset.test)
    small, large = min(TIMED_TEST_IMAGES, len(dataset.test)), min(3 * TIMED_TEST_IMAGES, len(dataset.test))
    first, second = likelihood_seconds(small), likelihood_seconds(large)
    per_image = max(second - first, 0.0) / (large - small) if large > small else second / large
    likelihood_s = max(first - small * per_image, 0.0) + per_image * used
    return ModelSpeed(sample_s=seconds / TIMED_SAMPLES, sampler_steps=settings.get("steps") if run.has_sampler else None,
                      guided=run.supports_guidance, conditional=run.conditional, likelihood_s=likelihood_s,
                      likelihood_images=used)


def samples_within(minutes: float, spent_s: float, speed: ModelSpeed, evaluator_image_s: float, largest: int,
                   least: int, what: str, inception_image_s: float = 0.0) -> int:
    """The most samples (at most `largest`) whose evaluation fits in `minutes` of which `spent_s` seconds are
    spent (measuring); a ConfigError naming the budget that holds `least` when not even those fit."""
    def cost(samples: int) -> float:
        return evaluation_seconds(speed, samples, evaluator_image_s, speed.likelihood_images, inception_image_s)

    fitting = largest_within(cost, minutes * 60 - spent_s, largest, least)
    if not fitting:
        raise ConfigError(f"--minutes {minutes:g} cannot hold {what} on this host: {least} samples and the "
                          f"likelihood take about {cost(least) / 60:.2f} min; give --minutes "
                          f"{max(0.1, round((cost(least) * 1.1 + spent_s) / 60 + 0.05, 1)):g} or more, or fewer --likelihood-images")
    return fitting


def largest_within(cost, seconds: float, largest: int, least: int) -> int:
    """The largest count in [least, largest] whose `cost` (growing with the count) fits in `seconds`, by
    bisection; 0 when not even `least` fits."""
    if cost(least) > seconds:
        return 0
    low, high = least, largest
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= seconds else (low, middle - 1)
    return low


def curve_samples_that_fit(seconds_left: float, speeds: list[ModelSpeed], planned: int,
                           curve_steps: list[tuple[int, ...]] | tuple[int, ...], evaluator_image_s: float,
                           safety: float = 1.0, least: int = MIN_EVAL_SAMPLES) -> int:
    """The most samples per curve point (at most `planned`) whose curves, their estimate times `safety`, fit
    in `seconds_left`; 0 when not even `least` fit. `curve_steps`: each speed's points (one tuple: all the same)."""
    per_model = [curve_steps] * len(speeds) if curve_steps and isinstance(curve_steps[0], int) else curve_steps
    return largest_within(lambda samples: safety * sum(curve_seconds(s, samples, steps, evaluator_image_s)
                                                       for s, steps in zip(speeds, per_model, strict=True)),
                          seconds_left, planned, least)


def minutes_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
