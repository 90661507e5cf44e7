"""Exploratory data analysis: class balance, sample images, class means, pixel statistics (per channel for
colour)."""

from __future__ import annotations

from pathlib import Path

import torch

from vaediff.data import Dataset
from vaediff.figures import plot_class_distribution, plot_labelled_images, plot_pixel_histogram, save_grid
from vaediff.runs import atomic_write_json

MEAN_COLUMNS = 10  # class means shown: the first ten classes of a set with more


def _channel_sums(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per channel: sum, sum of squares and zeros of the pixels in [0, 1] units, and pixels per channel
    (uint8 converted in chunks: never the whole set as float)."""
    channels = dataset.train.images.shape[1]
    total, squares, zeros = (torch.zeros(channels, dtype=torch.float64) for _ in range(3))
    count = 0
    for split in (dataset.train, dataset.test):
        for start in range(0, len(split), 5000):
            chunk = split.as_float(slice(start, start + 5000)).double().transpose(0, 1).flatten(1)  # (C, pixels)
            total, squares = total + chunk.sum(1), squares + chunk.pow(2).sum(1)
            zeros += (chunk == 0).double().sum(1)
            count += chunk.shape[1]
    return total, squares, zeros, count


def _mean_std(total: float, squares: float, count: int) -> tuple[float, float]:
    mean = total / count
    return mean, max(0.0, (squares - count * mean**2) / max(1, count - 1)) ** 0.5


def summarize(dataset: Dataset) -> dict:
    """Counts per class and split, pixel mean and standard deviation (and per channel for colour), image size."""
    total, squares, zeros, count = _channel_sums(dataset)
    mean, std = _mean_std(float(total.sum()), float(squares.sum()), count * len(total))
    summary = {
        "dataset": dataset.name,
        "source": dataset.source,
        "image_size": list(dataset.train.images.shape[1:]),
        "labelled": dataset.labelled,
        "num_images": len(dataset.train) + len(dataset.test),
        "splits": {
            split: {
                "num_images": len(getattr(dataset, split)),
                "per_class": dict(zip(dataset.class_names, getattr(dataset, split).class_counts(dataset.num_classes),
                                      strict=True)),
            }
            for split in ("train", "test")
        },
        "pixel_mean": mean,
        "pixel_std": std,
        "fraction_zero_pixels": float(zeros.sum()) / (count * len(total)),
    }
    if len(total) == 3:
        summary["channels"] = {name: dict(zip(("mean", "std"), _mean_std(float(t), float(q), count), strict=True))
                               for name, t, q in zip(("red", "green", "blue"), total, squares, strict=True)}
    return summary


def run_eda(dataset: Dataset, out_dir: str | Path, seed: int = 0) -> dict:
    """Write dist.png, samples.png, class_means.png, pixels.png and summary.json into out_dir."""
    out_dir, name, train = Path(out_dir), dataset.name, dataset.train
    counts = {split: getattr(dataset, split).class_counts(dataset.num_classes) for split in ("train", "test")}
    plot_class_distribution(counts, dataset.class_names, out_dir / "dist.png", f"{name}: images per class")
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:60]
    titles = [dataset.class_names[train.labels[i]] for i in index.tolist()] if dataset.labelled else [""] * len(index)
    plot_labelled_images(train.as_float(index), titles, out_dir / "samples.png",
                         f"{name}: random training images" + (" with their labels" if dataset.labelled else ""))
    shown = range(min(dataset.num_classes, MEAN_COLUMNS))
    means = torch.stack([train.as_float(torch.nonzero(train.labels == c).flatten()).mean(0) for c in shown])
    save_grid(means, out_dir / "class_means.png", f"{name}: mean training image per class" if dataset.labelled
              else f"{name}: mean training image", columns=len(shown), column_labels=dataset.class_names[: len(shown)])
    sample = train.as_float(slice(0, 5000))  # a histogram's shape needs no more pixels than this
    values = sample.flatten().numpy() if sample.shape[1] == 1 else sample.transpose(0, 1).flatten(1).numpy()
    plot_pixel_histogram(values, out_dir / "pixels.png", f"{name}: pixel intensities of the training split")
    summary = summarize(dataset)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
