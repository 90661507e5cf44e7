"""Two processes over gloo (torchrun, as `accelerate launch` does on GPUs): every model type trains, writes
one set of outputs and resumes; the first optimizer step equals the single-process one."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import multiprocess_session

from vaediff.cli import main
from vaediff.families import FAMILIES, load_run
from vaediff.runs import load_safetensors
from vaediff.training import CHECKPOINT_FILE

HELPER = Path(__file__).parent / "helpers" / "multiprocess_session.py"


@pytest.mark.slow
def test_two_processes_train_resume_and_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(HELPER), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    names = [name for name, _, _ in multiprocess_session.recipes()]
    assert set(FAMILIES) <= set(names)  # every model type of the registry, and its variants
    for name in names:
        run_dir = tmp_path / name
        assert not list(run_dir.glob(".*.tmp")), "a half-written file was left behind"
        state = json.loads(_checkpoint_state(run_dir / CHECKPOINT_FILE))
        assert state["step"] == 5 and state["finished"]
        with (run_dir / "loss.csv").open() as handle:
            steps = [int(row["step"]) for row in csv.DictReader(handle)]
        assert steps == sorted(steps) and steps[-1] == 5  # one history, written by one process
        assert (run_dir / "samples.png").is_file()
        load_run(run_dir)  # weights match the config
    # another process count on --resume: the two-process vae run (5 steps) continues here in one process
    common = ["train", "vae", "--batch-size", "16", "--model-config", json.dumps(FAMILIES["vae"].smallest),
              "--checkpoint-every", "2", "--max-steps", "7"]
    assert main([*common, "--out", str(tmp_path / "vae"), "--resume"]) == 0
    assert main([*common, "--out", str(tmp_path / "vae-one-process")]) == 0
    switched = load_safetensors(tmp_path / "vae" / "model.safetensors")
    unbroken = load_safetensors(tmp_path / "vae-one-process" / "model.safetensors")
    with (tmp_path / "vae" / "loss.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps)) and steps[-1] == 7
    for name in unbroken:  # the two-process steps differ from one process's by rounding only (see below)
        assert (switched[name] - unbroken[name]).abs().max() < 1e-3, name
    # the same step in one process (the test's own) must give the same weights
    assert main(["train", "vae", "--out", str(tmp_path / "single"), "--max-steps", "1", "--batch-size", "32"]) == 0
    two = load_safetensors(tmp_path / "first-step" / "model.safetensors")
    one = load_safetensors(tmp_path / "single" / "model.safetensors")
    # Adam's first step moves each weight by about lr * g / (|g| + eps): where a gradient is near eps, a
    # rounding-level difference in g (two partial sums instead of one) moves it by a visible fraction of lr.
    # So: every weight within a tenth of one step (lr = 1e-3), and the typical one within rounding.
    for name in one:
        difference = (two[name] - one[name]).abs()
        assert difference.max() < 1e-4, name
        assert difference.mean() < 1e-7, name
    # --minutes: one plan (the first process's), agreed stops, epoch rows and time-based checkpoints
    with (tmp_path / "minutes" / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    state = json.loads(_checkpoint_state(tmp_path / "minutes" / CHECKPOINT_FILE))
    assert state["finished"] and int(rows[-1]["step"]) == state["step"] >= 20
    # meanflow (warm-up 100 steps: the first moves each weight by about 0.01 / 100 = 1e-4); were the gradients
    # not averaged, the first process's step would follow half the batch and differ by ~1e-4 where signs differ
    assert main([*multiprocess_session.MEANFLOW_FIRST_STEP, "--out", str(tmp_path / "single-meanflow")]) == 0
    two, one = (_checkpoint_model(tmp_path / name / CHECKPOINT_FILE) for name in ("first-step-meanflow", "single-meanflow"))
    for name in one:
        difference = (two[name] - one[name]).abs()
        assert difference.max() < 1e-5, name
        assert difference.mean() < 1e-8, name


def _checkpoint_model(path: Path) -> dict:
    """The trained module's weights in a checkpoint (not the EMA average the run directory exports)."""
    return {name[len("model."):]: tensor for name, tensor in load_safetensors(path).items() if name.startswith("model.")}


def _checkpoint_state(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()["state"]
