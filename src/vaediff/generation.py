"""Drawing images from any trained run (anything with `generate`): a batch, timed, and sample grids.

Written against the `ImageModel` protocol only, so the families draw their training figures with it and
evaluation draws its samples with it, without either knowing the other.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vaediff.checks import MAX_GRID_IMAGES, check_count, output_file
from vaediff.console import progress_bar
from vaediff.errors import ConfigError
from vaediff.figures import save_grid, tile
from vaediff.training.precision import PrecisionChoice, choose_precision

GRID_ROWS = 10  # class rows in a grid: a set with more classes shows its first ten


class ImageModel(Protocol):
    """What drawing needs of a run (families.base.Run is one)."""

    model_type: str
    conditional: bool
    num_classes: int  # classes of its data (1 for an unlabelled set)

    def generate(self, count: int, labels: torch.Tensor | None, generator: torch.Generator,
                 **options: Any) -> torch.Tensor:
        """`count` images (count, C, S, S) in [0, 1], of the given labels when conditional."""
        ...


def check_label(run: ImageModel, label: int | None) -> None:
    if label is None:
        return
    if not run.conditional:
        raise ConfigError(f"a {run.model_type} run is unconditional; --label needs a class-conditional run")
    if not 0 <= label < run.num_classes:
        raise ConfigError(f"--label {label} is not a class of this run: its {run.num_classes} classes are "
                          f"0..{run.num_classes - 1}")


PROBE_IMAGES, PROBE_STEPS = 16, 2  # auto's probe: 16 images at 2 sampling steps (the cost is per step)


def choose_sampling_precision(run, asked: str = "fp32", cache_dir: Path | None = None) -> PrecisionChoice:
    """Set the precision `draw` samples `run` in and return the choice. `auto` applies training's rule
    (training/precision.py) to sampling: where the device computes bf16 at all, drawing a few images is timed
    in fp32 and in bf16 autocast, and bf16 is kept only when clearly faster; the decision is cached per host
    and model, apart from training's (the two may differ: a forward pass is not a training step)."""
    def step() -> None:  # only called when auto probes
        labels = torch.arange(PROBE_IMAGES) % run.num_classes if run.conditional else None
        options = run.sampler_settings(steps=PROBE_STEPS) if getattr(run, "has_sampler", False) else {}
        with torch.inference_mode():
            run.generate(PROBE_IMAGES, labels, torch.Generator().manual_seed(0), **options)

    key = f"sampling|{run.model_type}|{json.dumps(run.config.get('model'), sort_keys=True, default=str)}"
    choice = choose_precision(asked, run.device, key, step, cache_dir)
    run.sampling_precision = choice
    return choice


def sampling_autocast(run):
    """The autocast context `draw` runs `run.generate` in: bf16 or fp16 where choose_sampling_precision chose it."""
    chosen = getattr(getattr(run, "sampling_precision", None), "chosen", "fp32")
    device = getattr(run, "device", torch.device("cpu"))
    dtype = torch.float16 if chosen == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=chosen in ("bf16", "fp16"))


def draw(run: ImageModel, count: int, label: int | None = None, seed: int = 0, batch_size: int = 100,
         progress: bool = False, **options: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`count` images; for a conditional run, all of class `label`, or classes 0, 1, ..., K-1, 0, ... when None.

    Returns (images, labels or None). One seeded generator for all batches: the same seed gives the same
    images. Batches of 100: on a 2-core CPU the fast UNet does 770 evaluations/s at batch 100 and 410 at
    500 (benchmarks/levers.py), the larger activations falling out of cache.
    """
    if count <= 0:
        raise ConfigError(f"number of images must be positive, got {count}")
    check_label(run, label)
    labels = None
    if run.conditional:
        labels = torch.full((count,), label) if label is not None else torch.arange(count) % run.num_classes
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in progress_bar(range(0, count, batch_size), desc=f"sampling {count} images", unit="batch",
                              enabled=progress):
        size = min(batch_size, count - start)
        chunk_labels = labels[start : start + size] if labels is not None else None
        with sampling_autocast(run):
            chunks.append(run.generate(size, chunk_labels, generator, **options).float())
    return torch.cat(chunks), labels


def timed_draw(run: ImageModel, count: int, seed: int, options: dict, progress: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """`draw` of every class in turn, and the seconds it took (the samples-per-second figure)."""
    started = time.perf_counter()
    images, labels = draw(run, count, seed=seed, progress=progress, **options)
    return images, labels, time.perf_counter() - started


def write_sample_grid(run: ImageModel, path: str | Path, seed: int = 0, count: int | None = None,
                      label: int | None = None, class_names: tuple[str, ...] | None = None,
                      **options: Any) -> torch.Tensor:
    """Save a PNG grid. Conditional runs without a label: 10 x 10, one row per class (the first ten classes
    of a set with more), names on the rows."""
    names = class_names or tuple(str(c) for c in range(run.num_classes))
    if count is not None:
        check_count(count, "number of images", MAX_GRID_IMAGES)
    output_file(path)
    if run.conditional and label is None:
        rows = min(run.num_classes, GRID_ROWS)
        per_class = max(1, (count or 100) // rows)
        labels_in_rows = torch.arange(rows).repeat_interleave(per_class)
        generator = torch.Generator().manual_seed(seed)
        with sampling_autocast(run):
            images = torch.cat([run.generate(len(chunk), chunk, generator, **options).float()
                                for chunk in labels_in_rows.split(100)])
        save_grid(images, path, f"{run.model_type}: {per_class} samples per class (seed {seed})",
                  columns=per_class, row_labels=list(names[:rows]))
        return images
    images, _ = draw(run, count or 64, label, seed, **options)
    what = f"class {names[label]}" if label is not None else "samples"
    save_grid(images, path, f"{run.model_type}: {len(images)} {what} (seed {seed})")
    return images


PREVIEW_STEPS = 50  # a preview draws with at most this many sampler steps (the seed's 1000-step DDPM would take minutes)


def preview_grid(run: ImageModel, seed: int = 0) -> np.ndarray:
    """A small grid as (H, W, 3) uint8 for an experiment tracker: one sample of each of the first ten classes
    (ten samples of an unconditional run), with the run's sampler at no more than PREVIEW_STEPS steps."""
    options = run.sampler_settings() if getattr(run, "has_sampler", False) else {}
    if options.get("steps", 0) > PREVIEW_STEPS:
        options = run.sampler_settings(steps=PREVIEW_STEPS)
    rows = min(run.num_classes, GRID_ROWS) if run.conditional else GRID_ROWS
    labels = torch.arange(rows) if run.conditional else None
    with torch.no_grad():
        images = run.generate(rows, labels, torch.Generator().manual_seed(seed), **options)
    canvas = tile(images, columns=rows)
    canvas = np.repeat(canvas[..., None], 3, axis=2) if canvas.ndim == 2 else canvas
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
