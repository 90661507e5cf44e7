"""Figures shared by every command: image grids, labelled rows, loss curves. PNG, titled, labelled."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # files only, never a window (headless, CI); notebooks keep inline plots
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from vaediff.runs import atomic_savefig  # noqa: E402


def save_figure(figure, path: str | Path, dpi: int = 100, **kwargs) -> None:
    """Lay out, write atomically and close: how every figure of vaediff ends."""
    if "bbox_inches" not in kwargs:
        figure.tight_layout()
    atomic_savefig(figure, path, dpi=dpi, **kwargs)
    plt.close(figure)


def tile(images: torch.Tensor, columns: int, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] (C = 1 or 3) into one array with a light gutter (torchvision's
    make_grid): (rows*(H+pad)+pad, columns*(W+pad)+pad) for grayscale, with a last axis of 3 for colour."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    pixels = images.detach().float().clamp(0, 1).cpu()
    nrow = columns
    if len(pixels) < max(columns, 2):  # make_grid narrows a short single row and drops a lone image's gutter
        nrow = max(columns, 2)
        pixels = torch.cat([pixels, torch.full((nrow - len(pixels), *pixels.shape[1:]), 0.15)])
    grid = make_grid(pixels, nrow=nrow, padding=padding, pad_value=0.15)[:, :, : columns * (pixels.shape[3] + padding) + padding]
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def show_images(axis, canvas: np.ndarray) -> None:
    """Grayscale as ink on paper (1 = black, the digits' convention), colour as it is."""
    if canvas.ndim == 2:
        axis.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        axis.imshow(canvas, interpolation="nearest")


def save_grid(images: torch.Tensor, path: str | Path, title: str, columns: int | None = None,
              row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None) -> None:
    """Save images as one grid PNG; optional names for rows (e.g. classes) and columns."""
    count = images.shape[0]
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    canvas = tile(images, columns)
    rows = -(-count // columns)
    scale = 0.5 * max(1.0, images.shape[-1] / 40)  # inches per cell: legible 28-pixel digits, larger for 64
    figure, axis = plt.subplots(figsize=(max(3.0, columns * scale + (1.4 if row_labels else 0.3)),
                                         max(2.0, rows * scale + 0.8)))
    show_images(axis, canvas)
    axis.set_title(title, fontsize=10)
    cell_h, cell_w = images.shape[2] + 2, images.shape[3] + 2
    axis.set_xticks([] if not column_labels else [2 + cell_w * (i + 0.5) - 1 for i in range(len(column_labels))])
    axis.set_yticks([] if not row_labels else [2 + cell_h * (i + 0.5) - 1 for i in range(len(row_labels))])
    if column_labels:
        axis.set_xticklabels(column_labels, fontsize=7)
    if row_labels:
        axis.set_yticklabels(row_labels, fontsize=8)
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    save_figure(figure, path, dpi=120, bbox_inches="tight", pad_inches=0.08)


def save_loss_curves(rows: Sequence[dict], path: str | Path, title: str, columns: Sequence[str]) -> None:
    """Plot train and test losses (one panel per loss column) against training steps."""
    if not rows:
        return
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for axis, column in zip(axes[0], columns, strict=True):
        for split, style in (("train", "-o"), ("test", "--s")):
            # a row may lack a term (no training step since the previous row): draw the rows that have it
            points = [(row["step"], float(row[f"{split}_{column}"])) for row in rows
                      if row.get(f"{split}_{column}") not in (None, "")]
            if points:
                axis.plot(*zip(*points, strict=True), style, markersize=3, label=split)
        axis.set_xlabel("training step")
        axis.set_ylabel(column.replace("_", " "))
        axis.set_title(column.replace("_", " "))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    save_figure(figure, path, dpi=100)


def plot_confusion(confusion: list[list[int]], class_names: tuple[str, ...], path: Path, title: str) -> None:
    """Row-normalised confusion matrix: for samples drawn as class i (row), the evaluator's class j."""
    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(6.6, 5.8))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            if shares[i, j] >= 0.005:
                axis.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                          color="white" if shares[i, j] > 0.6 else "black")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(class_names)), class_names, fontsize=8)
    axis.set_xlabel("class the evaluator sees")
    axis.set_ylabel("class the sample was drawn for")
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of row")
    save_figure(figure, path, dpi=100)


# ---------------------------------------------------------------------------------------------------------
# Data sets (eda), latent spaces, and reports


def plot_class_distribution(counts: dict[str, list[int]], class_names: tuple[str, ...], path: Path,
                            title: str) -> None:
    """Bars of images per class, one colour per split ({"train": [...], "test": [...]})."""
    figure, axis = plt.subplots(figsize=(8, 3.8))
    positions = np.arange(len(class_names))
    for offset, (split, split_counts) in zip((-0.2, 0.2), counts.items(), strict=True):
        bars = axis.bar(positions + offset, split_counts, width=0.4, label=f"{split} ({sum(split_counts):,})")
        axis.bar_label(bars, fontsize=7, padding=1)
    long_names = max(len(name) for name in class_names) > 3
    axis.set_xticks(positions, class_names, rotation=30 if long_names else 0)
    axis.set_xlabel("class")
    axis.set_ylabel("number of images")
    axis.set_title(title)
    axis.legend(loc="lower right", framealpha=0.9)
    axis.margins(y=0.12)
    save_figure(figure, path, dpi=100)


def plot_labelled_images(images: torch.Tensor, titles: Sequence[str], path: Path, title: str, per_row: int = 10) -> None:
    """Images with a small title each (e.g. random training images with their labels)."""
    rows = -(-len(images) // per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.95, rows * 1.1), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, name in zip(axes.flat, images, titles, strict=False):
        show_images(axis, tile(image[None], 1, padding=0))
        axis.set_title(name, fontsize=7)
    figure.suptitle(title)
    save_figure(figure, path, dpi=100)


def plot_pixel_histogram(values: np.ndarray, path: Path, title: str) -> None:
    """Histogram of pixel intensities in [0, 1]: `values` (pixels,) for grayscale, or (3, pixels) for colour
    (one histogram per channel)."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    if values.ndim == 1:
        axis.hist(values, bins=51, range=(0, 1), log=True, color="tab:blue")
        axis.set_xlabel("pixel intensity (0 = background, 1 = ink)")
    else:
        for channel, colour in zip(values, ("red", "green", "blue"), strict=True):
            axis.hist(channel, bins=51, range=(0, 1), log=True, color=colour, histtype="step", label=colour)
        axis.set_xlabel("channel intensity")
        axis.legend()
    axis.set_ylabel("number of pixels (log scale)")
    axis.set_title(title)
    save_figure(figure, path, dpi=100)


def save_latent_scatter(coords: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], path: Path,
                        title: str) -> None:
    """2-D points coloured by class (a VAE's latent means after PCA or t-SNE)."""
    figure, axis = plt.subplots(figsize=(6.4, 5.4))
    colours = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        mask = labels == c
        axis.scatter(coords[mask, 0], coords[mask, 1], s=5, alpha=0.6, color=colours(c % 10), label=name)
    axis.set_xlabel("component 1")
    axis.set_ylabel("component 2")
    axis.set_title(title)
    axis.legend(markerscale=3, fontsize=7, loc="best", ncols=2)
    save_figure(figure, path, dpi=100)


def plot_sample_grids(grids: list[tuple[str, torch.Tensor]], path: Path, seed: int) -> None:
    """One 10x10 grid per run, side by side (rows are classes for conditional runs)."""
    figure, axes = plt.subplots(1, len(grids), figsize=(3.6 * len(grids), 3.9), squeeze=False)
    for axis, (name, images) in zip(axes[0], grids, strict=True):
        show_images(axis, tile(images, 10))
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"samples, seed {seed}")
    save_figure(figure, path, dpi=110)


def plot_losses(histories: list[tuple[str, list[dict]]], path: Path) -> None:
    """Each run's train and test loss against training minutes, one panel per (title, history) pair."""
    with_history = [(title, history) for title, history in histories if history]
    if not with_history:
        return
    figure, axes = plt.subplots(1, len(with_history), figsize=(3.8 * len(with_history), 3.2), sharex=True,
                                squeeze=False)
    for axis, (title, history) in zip(axes[0], with_history, strict=True):
        minutes = [row["elapsed_s"] / 60 for row in history]
        for split, style in (("train", "-"), ("test", "--")):
            values = [row.get(f"{split}_loss") for row in history]
            if any(v is not None for v in values):
                axis.plot(minutes, values, style, label=split)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("training minutes")
        axis.set_ylabel("loss (nats/image for VAEs, weighted MSE for diffusion)", fontsize=7)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path, dpi=100)


def plot_curves(curves: dict[str, list[dict]], x_key: str, path: Path, title: str, x_label: str,
                panels: Sequence[tuple[str, str]] = (("kid", "KID ↓"), ("class_accuracy", "class accuracy ↑")),
                log_x: bool = False) -> None:
    """One panel per (metric, label) against `x_key` (steps or guidance), one line per run, its 95%
    interval (the point's "ci95") shaded where the point has one."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.75 * len(panels), 3.6), squeeze=False)
    for axis, (metric, label) in zip(axes[0], panels, strict=True):
        for name, points in curves.items():
            shown = [p for p in points if p.get(metric) is not None]
            xs = [p[x_key] for p in shown]
            # KID is unbiased, so near 0 its estimate (and interval) can fall below 0: drawn clipped at 0
            floor = 0.0 if metric == "kid" else -math.inf
            (line,) = axis.plot(xs, [max(floor, p[metric]) for p in shown], "-o", markersize=3, label=name)
            bounds = [p.get("ci95", {}).get(metric) for p in shown]
            if shown and all(bounds):
                axis.fill_between(xs, [max(floor, b[0]) for b in bounds], [max(floor, b[1]) for b in bounds],
                                  color=line.get_color(), alpha=0.2, linewidth=0)
        axis.set_xlabel(x_label)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if log_x:  # steps and evaluations double from point to point: plain numbers at powers of 2
            axis.set_xscale("log", base=2)
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(title + " (shaded: 95% intervals)")
    save_figure(figure, path, dpi=100)
