"""Exploratory data analysis: class balance, sample images, class means, pixel statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaediff.data import NUM_CLASSES, Dataset
from vaediff.figures import plt, save_figure, save_grid
from vaediff.runs import atomic_write_json


def summarize(dataset: Dataset) -> dict:
    """Counts per class and split, pixel mean and standard deviation, image size."""
    pixels = torch.cat([dataset.train.images.flatten(), dataset.test.images.flatten()])
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "image_size": list(dataset.train.images.shape[1:]),
        "num_images": len(dataset.train) + len(dataset.test),
        "splits": {
            split: {
                "num_images": len(getattr(dataset, split)),
                "per_class": dict(zip(dataset.class_names, getattr(dataset, split).class_counts(), strict=True)),
            }
            for split in ("train", "test")
        },
        "pixel_mean": float(pixels.double().mean()),
        "pixel_std": float(pixels.double().std()),
        "fraction_zero_pixels": float((pixels == 0).double().mean()),
    }


def plot_class_distribution(dataset: Dataset, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 3.8))
    positions = np.arange(NUM_CLASSES)
    for offset, split in ((-0.2, "train"), (0.2, "test")):
        counts = getattr(dataset, split).class_counts()
        bars = axis.bar(positions + offset, counts, width=0.4, label=f"{split} ({sum(counts):,})")
        axis.bar_label(bars, fontsize=7, padding=1)
    axis.set_xticks(positions, dataset.class_names, rotation=30 if dataset.name == "fashion-mnist" else 0)
    axis.set_xlabel("class")
    axis.set_ylabel("number of images")
    axis.set_title(f"{dataset.name}: images per class")
    axis.legend(loc="lower right", framealpha=0.9)
    axis.margins(y=0.12)
    save_figure(figure, path, dpi=100)


def plot_random_samples(dataset: Dataset, path: Path, seed: int, per_row: int = 10, rows: int = 6) -> None:
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(dataset.train), generator=generator)[: per_row * rows]
    figure, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.95, rows * 1.1))
    for axis, i in zip(axes.flat, index.tolist(), strict=True):
        axis.imshow(dataset.train.images[i, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        axis.set_title(dataset.class_names[dataset.train.labels[i]], fontsize=7)
        axis.axis("off")
    figure.suptitle(f"{dataset.name}: random training images with their labels")
    save_figure(figure, path, dpi=100)


def plot_class_means(dataset: Dataset, path: Path) -> None:
    means = torch.stack([dataset.train.images[dataset.train.labels == c].mean(0) for c in range(NUM_CLASSES)])
    save_grid(means, path, f"{dataset.name}: mean training image per class", columns=NUM_CLASSES,
              column_labels=dataset.class_names)


def plot_pixel_histogram(dataset: Dataset, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.6))
    values = dataset.train.images.flatten().numpy()
    axis.hist(values, bins=51, range=(0, 1), log=True, color="tab:blue")
    axis.set_xlabel("pixel intensity (0 = background, 1 = ink)")
    axis.set_ylabel("number of pixels (log scale)")
    axis.set_title(f"{dataset.name}: pixel intensities of the training split")
    save_figure(figure, path, dpi=100)


def run_eda(dataset: Dataset, out_dir: str | Path, seed: int = 0) -> dict:
    """Write dist.png, samples.png, class_means.png, pixels.png and summary.json into out_dir."""
    out_dir = Path(out_dir)
    plot_class_distribution(dataset, out_dir / "dist.png")
    plot_random_samples(dataset, out_dir / "samples.png", seed)
    plot_class_means(dataset, out_dir / "class_means.png")
    plot_pixel_histogram(dataset, out_dir / "pixels.png")
    summary = summarize(dataset)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
