"""Comparison reports: tables and figures across runs, written as Markdown and self-contained HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaediff.figures import plt
from vaediff.runs import atomic_savefig


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
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=100)
    plt.close(figure)
