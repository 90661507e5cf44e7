"""The loss history of a run: rows of train (running mean) and test losses, kept in the training state
and mirrored to RUN/loss.csv and RUN/loss.png."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vaediff.data import ImageSplit
from vaediff.figures import save_loss_curves
from vaediff.objectives import BatchRandom, Objective
from vaediff.runs import atomic_write_text
from vaediff.training.config import TrainConfig, TrainState


@torch.no_grad()
def evaluate_losses(objective: Objective, module: nn.Module, split: ImageSplit, config: TrainConfig,
                    device: torch.device) -> dict[str, float]:
    """Mean loss terms over the first `eval_images` of a split, with fixed randomness (comparable rows)."""
    count = min(len(split), config.eval_images)
    totals: dict[str, float] = {}
    was_training = module.training
    module.eval()
    for batch_index, start in enumerate(range(0, count, 250)):
        images = split.as_float(slice(start, min(count, start + 250))).to(device)
        labels = split.labels[start : min(count, start + 250)].to(device)
        draw = BatchRandom(config.seed + 7919, batch_index, len(images), slice(None), device)
        terms = objective.losses(module, images, labels, draw)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(images)
    module.train(was_training)
    return {name: total / count for name, total in totals.items()}


def write_loss_csv(run_dir: Path, history: list[dict], loss_names: tuple[str, ...]) -> None:
    columns = ["epoch", "step", "images_seen", "elapsed_s"]
    columns += [f"{split}_{name}" for split in ("train", "test") for name in loss_names]
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(_csv_value(row.get(column)) for column in columns))
    atomic_write_text(run_dir / "loss.csv", "\n".join(lines) + "\n")


def _csv_value(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class LossLog:
    """Decides when a row is due, computes it, and rewrites loss.csv (and, at most every `plot_every_s`,
    loss.png) on the main process, so the files always say what the state says."""

    def __init__(self, run_dir: Path, objective: Objective, module: nn.Module, test: ImageSplit, config: TrainConfig,
                 device: torch.device, steps_per_epoch: int, elapsed: Callable[[], float], title: str,
                 plot_every_s: float, is_main: bool, on_row: Callable[[TrainState], None] | None = None,
                 before_row: Callable[[TrainState], None] | None = None):
        self.before_row = before_row  # called before each row (the loop moves its loss sums into the state)
        self.run_dir, self.objective, self.module, self.test, self.config = run_dir, objective, module, test, config
        self.on_row = on_row  # called after each row is recorded (the trackers log it)
        self.device, self.steps_per_epoch, self.elapsed, self.title = device, steps_per_epoch, elapsed, title
        self.plot_every_s, self.is_main = plot_every_s, is_main
        budget_s = config.minutes * 60 if config.minutes is not None else math.inf
        # Without epochs short enough to log each, a row every fifth of the budget (1 to 5 minutes apart):
        # a curve of five points, and the seed network's test loss costs under 3% of its training time.
        self.interval_s = max(60.0, min(300.0, budget_s / 5)) if config.minutes else math.inf
        self.last_row, self.row_cost, self.last_plot = time.perf_counter(), 0.0, -math.inf

    def due(self) -> bool:
        return time.perf_counter() - self.last_row >= self.interval_s

    def cheap(self) -> bool:
        """A row per epoch, unless epochs are so short that evaluating each would cost over 5% of the
        training time (tiny data sets with big models); then rows come less often."""
        return self.row_cost <= 0.05 * (time.perf_counter() - self.last_row)

    def record(self, state: TrainState, write_plot: bool) -> None:
        """Append a row for the current step (at most one a step: a resumed run that ended on an epoch
        boundary reaches it twice) and rewrite the files."""
        began = time.perf_counter()
        if self.before_row is not None:
            self.before_row(state)
        if not state.history or state.history[-1]["step"] != state.step:
            row: dict = {"epoch": round(state.step / max(1, self.steps_per_epoch), 3), "step": state.step,
                         "images_seen": state.step * self.config.batch_size, "elapsed_s": round(self.elapsed(), 2)}
            if state.running_count:
                row.update({f"train_{k}": v / state.running_count for k, v in state.running.items()})
            test = evaluate_losses(self.objective, self.module, self.test, self.config, self.device)
            row.update({f"test_{k}": v for k, v in test.items()})
            state.history.append(row)
            state.running, state.running_count = {}, 0
        self.last_row = time.perf_counter()
        self.row_cost = self.last_row - began
        self.write_files(state, write_plot or self.last_row - self.last_plot > self.plot_every_s)
        if self.on_row is not None:
            self.on_row(state)

    def write_files(self, state: TrainState, write_plot: bool) -> None:
        if not self.is_main:
            return
        if not state.history:
            for name in ("loss.csv", "loss.png"):
                (self.run_dir / name).unlink(missing_ok=True)
            return
        write_loss_csv(self.run_dir, state.history, self.objective.loss_names)
        if write_plot:
            save_loss_curves(state.history, self.run_dir / "loss.png", self.title, self.objective.loss_names)
            self.last_plot = time.perf_counter()
