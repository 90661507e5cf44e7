"""Experiment trackers through Accelerate: a short run writes TensorBoard event files whose scalars equal
loss.csv's at the same steps and whose images include the sample grid; a tracker whose package is missing
is one line and writes nothing."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
from conftest import write_idx_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vaediff.families import FAMILIES


def test_tensorboard_logs_what_loss_csv_says_and_a_sample_grid(cli, tmp_path):
    data = write_idx_dataset(tmp_path / "idx", train=64, test=20)  # 4 steps an epoch at batch 16: a row each
    run = tmp_path / "run"
    code, _, err = cli("train", "diffusion", "--dataset", "mnist", "--data-dir", data, "--out", run,
                       "--max-steps", "12", "--batch-size", "16", "--model-config",
                       json.dumps(FAMILIES["diffusion"].smallest))
    assert code == 0, err
    with (run / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 2
    events = EventAccumulator(str(next((run / "logs").rglob("events.out.tfevents.*")).parent),
                              size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("train_loss")}
    for row in rows:
        assert logged[int(row["step"])] == pytest.approx(float(row["train_loss"]), rel=1e-5)
    tested = {event.step: event.value for event in events.Scalars("test_loss")}
    assert tested[int(rows[-1]["step"])] == pytest.approx(float(rows[-1]["test_loss"]), rel=1e-5)
    assert {"lr", "images_per_second", "ema_decay"} <= set(events.Tags()["scalars"])
    grids = events.Images("samples")
    assert grids and grids[-1].step == 12 and grids[-1].width > grids[-1].height  # one row of ten classes


def test_a_tracker_without_its_package_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "2", "--report-to", "wandb")
    assert code == 2 and "needs the package wandb" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_report_to_none_writes_no_logs(cli, tmp_path):
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "2", "--report-to", "none",
                       "--model-config", json.dumps(FAMILIES["vae"].smallest))
    assert code == 0, err
    assert not (tmp_path / "run" / "logs").exists() and (tmp_path / "run" / "model.safetensors").is_file()
