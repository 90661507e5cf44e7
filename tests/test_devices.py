"""One function chooses the device (devices.py, issue 39): every stage asks it (training, sampling, the
evaluator, Inception), `--device` sets it for a command, and a device this machine lacks is one line."""

from __future__ import annotations

import json
import traceback

import pytest
import torch
from conftest import assert_one_line_error

from vaediff import devices

SMALL_VAE = ["--model-config", '{"hidden": 32, "latent": 4}', "--batch-size", "32"]


def test_the_default_is_the_cpu_here_and_a_missing_device_is_refused(monkeypatch):
    monkeypatch.delenv(devices.ENVIRONMENT, raising=False)
    if not torch.cuda.is_available():
        assert devices.compute_device() == torch.device("cpu")
        with pytest.raises(devices.ConfigError, match="0 CUDA GPUs"):
            devices.compute_device("cuda")
    assert devices.compute_device("cpu") == torch.device("cpu")
    for name in ("banana", "xla"):
        with pytest.raises(devices.ConfigError, match="--device"):
            devices.compute_device(name)
    monkeypatch.setenv(devices.ENVIRONMENT, "cpu")
    assert devices.compute_device() == torch.device("cpu")
    with devices.use_device("cpu") as device:
        assert device.type == "cpu" and devices._chosen[0] == "cpu"
    assert devices._chosen[0] is None  # the block's choice ends with it


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path, cli):
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "2", "--device", "cuda", *SMALL_VAE)
    assert_one_line_error(code, err, "--device cuda", "CUDA")
    assert not (tmp_path / "run").exists()


def test_every_stage_asks_the_one_function(evaluator_cache, tmp_path, cli, monkeypatch):
    asked = []
    original = devices.compute_device

    def recording(requested=None):
        caller = traceback.extract_stack()[-2]
        if not caller.filename.endswith("devices.py"):  # use_device checks --device first: not a stage
            asked.append(f"{caller.filename.rsplit('/vaediff/', 1)[-1]}:{caller.name}")
        return original(requested)

    monkeypatch.setattr(devices, "compute_device", recording)
    run = tmp_path / "run"
    code, _, err = cli("train", "cvae", "--out", run, "--max-steps", "3", "--device", "cpu", *SMALL_VAE)
    assert code == 0, err
    assert "training/precision.py:training_device" in asked  # Accelerate's device and the precision check
    asked.clear()
    code, _, err = cli("sample", run, "--out", tmp_path / "grid.png", "--n", "4", "--device", "cpu")
    assert code == 0, err
    assert asked == ["families/__init__.py:load_run"]
    asked.clear()
    code, _, err = cli("evaluate", run, "--n-samples", "20", "--iw-samples", "2", "--device", "cpu")
    assert code == 0, err
    assert {"families/__init__.py:load_run", "evaluator_network.py:load_or_train_evaluator",
            "cas.py:classification_accuracy_score"} <= set(asked)  # CAS's classifier trains there too
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["training_precision"]["chosen"] == "fp32"


def test_training_images_move_to_a_gpu_only_when_they_fit():
    """On the CPU the split stays as it is; on a GPU whose free memory is too small for it (a quarter at
    most), too. The move itself needs a GPU: not tested here."""
    from vaediff.data import load_dataset
    from vaediff.training.loop import training_images

    split = load_dataset("mnist-5k").train
    assert split.images.dtype == torch.uint8 and split.nbytes == split.images.numel() + 8 * len(split)
    assert training_images(split, torch.device("cpu")) is split
    assert training_images(split, torch.device("cuda"), free_bytes=3 * split.nbytes) is split
