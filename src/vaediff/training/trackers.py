"""Experiment trackers through Accelerate, as diffusers' training scripts use them (`log_with`,
`init_trackers`, `log`): TensorBoard by default into RUN/logs/, or W&B, MLflow, Trackio, Aim.

Each row of loss.csv is logged with the same values at the same step, with the learning rate, the
throughput since the last row and the moving average's decay; a sample grid (fixed seed, every class) every
few minutes and at the end; the run's configuration as hyper-parameters. Only the main process logs
(Accelerate's trackers run there). A tracker whose package is missing is one line naming the package.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

import numpy as np

from vaediff.errors import ConfigError

# --report-to names -> the package each needs (Accelerate's LoggerType values)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio", "aim": "aim"}
REPORT_TO = (*TRACKERS, "all", "none")
PREVIEW_EVERY_S = 180.0  # a sample grid every three minutes of training, and at the end


def check_report_to(report_to: str) -> str | None:
    """Accelerate's `log_with` for `--report-to` (None: no tracker); one line when a package is missing."""
    if report_to not in REPORT_TO:
        raise ConfigError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "none":
        return None
    if report_to != "all" and importlib.util.find_spec(TRACKERS[report_to]) is None:
        raise ConfigError(f"--report-to {report_to} needs the package {TRACKERS[report_to]}, which is not "
                          f"installed: `uv add {TRACKERS[report_to]}` (or `--report-to none`)")
    return report_to


def flat_hyperparameters(config: dict, prefix: str = "") -> dict:
    """{"train/lr": 0.001, "model/block_out_channels": "[16, 32, 64]", ...}: what every tracker takes."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hyperparameters(value, f"{name}/"))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[name] = value if value is not None else "None"
        else:
            flat[name] = str(value)
    return flat


class Tracking:
    """What the loop logs and when: rows as loss.csv has them, and preview grids every few minutes."""

    def __init__(self, accelerator, hyperparameters: dict, preview: Callable[[], np.ndarray] | None,
                 elapsed: Callable[[], float]):
        self.accelerator, self.preview, self.elapsed = accelerator, preview, elapsed
        self.enabled = bool(accelerator.log_with)
        if self.enabled:
            accelerator.init_trackers("vaediff", config=flat_hyperparameters(hyperparameters))
        self.last_step, self.last_time, self.last_preview = None, time.perf_counter(), elapsed()

    def log_row(self, state, optimizer, ema, batch_size: int) -> None:
        """The newest loss.csv row (once), with the learning rate, images per second and the EMA decay."""
        if not self.enabled or not state.history or state.history[-1]["step"] == self.last_step:
            return
        row, now = state.history[-1], time.perf_counter()
        values = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        values["lr"] = optimizer.param_groups[0]["lr"]
        if self.last_step is not None and now > self.last_time:
            values["images_per_second"] = (row["step"] - self.last_step) * batch_size / (now - self.last_time)
        if ema is not None and getattr(ema, "cur_decay_value", None) is not None:
            values["ema_decay"] = float(ema.cur_decay_value)
        self.accelerator.log(values, step=row["step"])
        self.last_step, self.last_time = row["step"], now

    def preview_due(self) -> bool:
        return self.enabled and self.preview is not None and self.elapsed() - self.last_preview >= PREVIEW_EVERY_S

    def log_preview(self, step: int) -> None:
        """A sample grid from the weights just exported (call right after a checkpoint)."""
        if not self.enabled or self.preview is None or not self.accelerator.is_main_process:
            return
        grid = self.preview()  # (H, W, 3) uint8
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": grid[None]}, step=step, dataformats="NHWC")
            else:
                tracker.log_images({"samples": [grid]}, step=step)
        self.last_preview = self.elapsed()

    def end(self) -> None:
        """Close the trackers (not Accelerate's end_training, which also ends the process group that a
        later stage or the caller's barrier still needs)."""
        if self.enabled:
            for tracker in self.accelerator.trackers:
                tracker.finish()
