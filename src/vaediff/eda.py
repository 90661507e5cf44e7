"""Exploratory data analysis: class balance, sample images, class means, pixel statistics."""

from __future__ import annotations

from pathlib import Path

import torch

from vaediff.data import NUM_CLASSES, Dataset
from vaediff.figures import plot_class_distribution, plot_labelled_images, plot_pixel_histogram, save_grid
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


def run_eda(dataset: Dataset, out_dir: str | Path, seed: int = 0) -> dict:
    """Write dist.png, samples.png, class_means.png, pixels.png and summary.json into out_dir."""
    out_dir, name, train = Path(out_dir), dataset.name, dataset.train
    counts = {split: getattr(dataset, split).class_counts() for split in ("train", "test")}
    plot_class_distribution(counts, dataset.class_names, out_dir / "dist.png", f"{name}: images per class")
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:60]
    plot_labelled_images(train.images[index], [dataset.class_names[train.labels[i]] for i in index.tolist()],
                         out_dir / "samples.png", f"{name}: random training images with their labels")
    means = torch.stack([train.images[train.labels == c].mean(0) for c in range(NUM_CLASSES)])
    save_grid(means, out_dir / "class_means.png", f"{name}: mean training image per class", columns=NUM_CLASSES,
              column_labels=dataset.class_names)
    plot_pixel_histogram(train.images.flatten().numpy(), out_dir / "pixels.png",
                         f"{name}: pixel intensities of the training split")
    summary = summarize(dataset)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
