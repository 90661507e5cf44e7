"""Two processes over gloo (torchrun, as `accelerate launch` does on GPUs): every model type trains, writes
one set of outputs and resumes; the first optimizer step equals the single-process one."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vaediff.cli import main
from vaediff.families import load_run
from vaediff.runs import load_safetensors
from vaediff.train import CHECKPOINT_FILE

HELPER = Path(__file__).parent / "helpers" / "multiprocess_session.py"


def test_two_processes_train_resume_and_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "0", str(HELPER), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for model_type in ("vae", "cvae", "diffusion", "latent-diffusion"):
        run_dir = tmp_path / model_type
        assert not list(run_dir.glob(".*.tmp")), "a half-written file was left behind"
        state = json.loads(_checkpoint_state(run_dir / CHECKPOINT_FILE))
        assert state["step"] == 5 and state["finished"]
        with (run_dir / "loss.csv").open() as handle:
            steps = [int(row["step"]) for row in csv.DictReader(handle)]
        assert steps == sorted(steps) and steps[-1] == 5  # one history, written by one process
        assert (run_dir / "samples.png").is_file()
        load_run(run_dir)  # weights match the config
    # the same step in one process (the test's own) must give the same weights
    assert main(["train", "vae", "--out", str(tmp_path / "single"), "--max-steps", "1", "--batch-size", "32"]) == 0
    two = load_safetensors(tmp_path / "first-step" / "model.safetensors")
    one = load_safetensors(tmp_path / "single" / "model.safetensors")
    assert all(torch.allclose(two[k], one[k], atol=1e-5) for k in one)


def _checkpoint_state(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()["state"]
