"""Classification Accuracy Score (Ravuri & Vinyals 2019): train a classifier on generated labelled samples
only, and measure it on the real test split.

Class accuracy asks whether each sample looks like its class; CAS asks whether the samples of a class
cover it well enough to learn it from, so it rewards diversity too. The classifier is the evaluator's
network and recipe (evaluator_network.train_evaluator: same architecture, augmentation, schedule, passes
per image), seeded. `cas_real` trains the same recipe on as many real training images, balanced by class:
the ceiling at that N, cached per data set, N and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vaediff import devices
from vaediff.data import Dataset, ImageSplit
from vaediff.evaluator_network import RECIPE_VERSION, default_cache_dir, train_evaluator
from vaediff.intervals import RESAMPLES, percentile_interval, resample_counts
from vaediff.runs import atomic_write_json


def classification_accuracy_score(samples: torch.Tensor, labels: torch.Tensor, dataset: Dataset, seed: int = 0,
                                  progress: bool = False) -> dict:
    """{"cas", "ci95"}: the test accuracy of a classifier trained on (samples, labels) alone; the interval
    is a bootstrap over the real test images (a bootstrap over the samples would retrain RESAMPLES times)."""
    generated = Dataset(f"{dataset.name} samples", ImageSplit(samples, labels), dataset.test,
                        dataset.class_names, "generated")
    device = devices.compute_device()  # the classifier trains and predicts there; its batches are drawn on the CPU
    net, _ = train_evaluator(generated, seed=seed, progress=progress, device=device)
    with torch.inference_mode():
        predicted = torch.cat([net.logits(dataset.test.as_float(slice(s, s + 1000)).to(device)).argmax(dim=1).cpu()
                               for s in range(0, len(dataset.test), 1000)])
    correct = (predicted == dataset.test.labels).float()
    values = resample_counts(len(correct), RESAMPLES, seed + 7) @ correct / len(correct)
    return {"cas": float(correct.mean()), "ci95": percentile_interval(values)}


def balanced_subset(split: ImageSplit, count: int, seed: int, num_classes: int = 10) -> ImageSplit:
    """`count` images, classes 0, 1, ..., K-1, 0, ... in turn (as samples are drawn), each class's chosen at
    random; fewer when a class runs out."""
    generator = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(split.labels == c).flatten() for c in range(num_classes)]
    per_class = [index[torch.randperm(len(index), generator=generator)] for index in per_class]
    chosen = [per_class[k % num_classes][k // num_classes] for k in range(count)
              if k // num_classes < len(per_class[k % num_classes])]
    index = torch.stack(chosen) if chosen else torch.zeros(0, dtype=torch.long)
    return ImageSplit(split.images[index], split.labels[index])


def real_data_score(dataset: Dataset, count: int, seed: int = 0, cache_dir: str | Path | None = None,
                    progress: bool = False) -> dict:
    """CAS's ceiling: the same recipe trained on `count` real training images (cached)."""
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "cas_real" / (
        f"{dataset.key}-{count}-seed{seed}-v{RECIPE_VERSION}.json")
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            return {"cas": float(cached["cas"]), "ci95": [float(v) for v in cached["ci95"]]}
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is measured again
    subset = balanced_subset(dataset.train, count, seed, dataset.num_classes)
    result = classification_accuracy_score(subset.images, subset.labels, dataset, seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**result, "dataset": dataset.name, "images": len(subset), "seed": seed})
    return result
