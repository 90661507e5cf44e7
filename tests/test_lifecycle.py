"""`--resume` from every state a run directory can be in, as one table of (state, action, outcome).

A state is made the way a user makes it: the real command, stopped at a chosen step by an exception that
stands for SIGKILL (nothing is saved, no handler runs), or run to its end. The action is the command
again with --resume and the limits of the row. Every row then checks the same invariants: loss.csv has
each step at most once and in order, loss.png draws it, no half-written file is left, and where the total
limit equals a reference run's, the final weights equal that unbroken run's bit for bit.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import visible_lines

from vaediff.cli import main
from vaediff.families.latent import AUTOENCODER_DIR, AUTOENCODER_WEIGHTS, STAGE_ONE_DONE
from vaediff.objectives.vae import AutoencoderObjective
from vaediff.runs import load_safetensors
from vaediff.training import CHECKPOINT_FILE, loop

TINY_UNET = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8,
             "sampling_steps": 2}
MODELS = {
    # 4,000 training images / batch 100 = 40 steps an epoch; constant learning rate (the seed's recipe)
    "vae": ["--model-config", '{"hidden": 32, "latent": 4}', "--batch-size", "100"],
    "diffusion": ["--model-config", json.dumps(TINY_UNET), "--batch-size", "16"],
    "latent-diffusion": ["--model-config", json.dumps({
        "autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
        "denoiser": {**TINY_UNET, "block_out_channels": [16]}}), "--batch-size", "16"],
    "flow": ["--model-config", json.dumps({"denoiser": TINY_UNET, "sampling_steps": 2}), "--batch-size", "16"],
    "latent-flow": ["--model-config", json.dumps({
        "autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
        "flow": {"sampling_steps": 2, "denoiser": {**TINY_UNET, "block_out_channels": [16]}}}), "--batch-size", "16"],
}


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in vaediff catches it and nothing is saved."""


def kill_at(monkeypatch, step: int, stage: str = "") -> None:
    """Stop the next training session of `stage` ("1/2": a latent run's autoencoder, "2/2": its second
    stage, "": any) right after optimizer step `step` is applied, before anything of it is written."""
    original = loop.forward_backward

    def stopped(parts, objective, config, state, *args):
        result = original(parts, objective, config, state, *args)
        in_stage = not stage or (stage == "1/2") == isinstance(objective, AutoencoderObjective)
        if in_stage and parts.accelerator.sync_gradients and state.step + 1 >= step:
            raise Killed
        return result

    monkeypatch.setattr(loop, "forward_backward", stopped)


def kill_before_first_step(monkeypatch) -> None:
    def stopped(session, *args):
        raise Killed

    monkeypatch.setattr(loop, "forward_backward", stopped)


def train(run_dir: Path, model: str, *limits: str, resume: bool = False, every: int = 1000) -> int:
    return main(["train", model, "--out", str(run_dir), *MODELS[model], *limits, "--checkpoint-every", str(every),
                 *(["--resume"] if resume else [])])


def loss_steps(run_dir: Path) -> list[int]:
    with (run_dir / "loss.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    names = {"vae": ["model.safetensors"], "diffusion": ["unet/diffusion_pytorch_model.safetensors"],
             "flow": ["unet/diffusion_pytorch_model.safetensors"],
             "latent-flow": ["unet/diffusion_pytorch_model.safetensors", f"{AUTOENCODER_DIR}/{AUTOENCODER_WEIGHTS}"],
             "latent-diffusion": ["unet/diffusion_pytorch_model.safetensors", f"{AUTOENCODER_DIR}/{AUTOENCODER_WEIGHTS}"]}
    model = json.loads((run_dir / "config.json").read_text())["model_type"]
    return {f"{name}:{key}": value for name in names[model] for key, value in load_safetensors(run_dir / name).items()}


def add_stale_row(run_dir: Path, stage: str = "") -> None:
    """A row as a killed session leaves it: written after the last checkpoint, backed by none."""
    path = run_dir / stage / "loss.csv"
    if path.is_file():
        lines = path.read_text().splitlines()
        columns = lines[0].split(",")
        row = {"epoch": "0", "step": "1", "images_seen": "0", "elapsed_s": "0"}
        lines.append(",".join(row.get(c, "12345") for c in columns))
        path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Row:
    model: str
    state: str          # how the run directory was left
    first: tuple        # limits of the first command
    action: tuple       # limits given with --resume (empty: the stored ones)
    outcome: str        # "trains" (then equals `reference` when given) or "nothing to do"
    reference: tuple = ()
    kill_step: int = 0
    every: int = 1000
    stage: str = ""


TABLE = [
    Row("vae", "created, no step done", ("--epochs", "2"), (), "trains", ("--epochs", "2")),
    Row("vae", "killed before the first checkpoint", ("--epochs", "60"), ("--epochs", "2"), "trains",
        ("--epochs", "2"), kill_step=50),
    Row("vae", "killed between checkpoints", ("--epochs", "2"), (), "trains", ("--epochs", "2"),
        kill_step=45, every=30),
    Row("vae", "killed while writing a checkpoint", ("--epochs", "2"), (), "trains", ("--epochs", "2"),
        kill_step=45, every=30),
    Row("vae", "finished", ("--epochs", "2"), (), "nothing to do"),
    Row("vae", "finished", ("--epochs", "2"), ("--epochs", "3"), "trains", ("--epochs", "3")),
    Row("vae", "finished", ("--epochs", "2"), ("--max-steps", "100"), "trains", ("--max-steps", "100")),
    Row("vae", "finished", ("--max-steps", "30"), ("--minutes", "0.05"), "trains"),
    Row("vae", "finished", ("--epochs", "2"), ("--epochs", "1"), "nothing to do"),
    Row("diffusion", "created, no step done", ("--max-steps", "6"), (), "trains", ("--max-steps", "6")),
    Row("diffusion", "killed before the first checkpoint", ("--max-steps", "6"), (), "trains",
        ("--max-steps", "6"), kill_step=3),
    Row("diffusion", "killed between checkpoints", ("--max-steps", "6"), (), "trains", ("--max-steps", "6"),
        kill_step=5, every=2),
    Row("diffusion", "killed while writing a checkpoint", ("--max-steps", "6"), (), "trains",
        ("--max-steps", "6"), kill_step=5, every=2),
    Row("diffusion", "finished", ("--max-steps", "6"), (), "nothing to do"),
    Row("diffusion", "finished", ("--max-steps", "4"), ("--max-steps", "6"), "trains"),
    Row("diffusion", "finished", ("--max-steps", "6"), ("--max-steps", "3"), "nothing to do"),
    Row("latent-diffusion", "killed in stage one between checkpoints", ("--max-steps", "4"), (), "trains",
        ("--max-steps", "4"), kill_step=3, every=2, stage="1/2"),
    Row("latent-diffusion", "stage one finished, stage two not begun", ("--max-steps", "4"), (), "trains",
        ("--max-steps", "4"), kill_step=1, stage="2/2"),
    Row("latent-diffusion", "stage one finished but not marked done", ("--max-steps", "4"), (), "trains",
        ("--max-steps", "4"), kill_step=1, stage="2/2"),
    Row("latent-diffusion", "finished", ("--max-steps", "4"), (), "nothing to do"),
    Row("latent-diffusion", "finished", ("--max-steps", "4"), ("--max-steps", "5"), "trains"),
    Row("flow", "killed between checkpoints", ("--max-steps", "6"), (), "trains", ("--max-steps", "6"),
        kill_step=5, every=2),
    Row("flow", "finished", ("--max-steps", "4"), ("--max-steps", "6"), "trains", ("--max-steps", "6")),
    Row("latent-flow", "killed in stage two between checkpoints", ("--max-steps", "4"), (), "trains",
        ("--max-steps", "4"), kill_step=3, every=2, stage="2/2"),
]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Unbroken runs, one per (model, limits), trained on first use."""
    root, made = tmp_path_factory.mktemp("unbroken"), {}

    def get(model: str, limits: tuple) -> Path:
        key = (model, limits)
        if key not in made:
            run_dir = root / f"{model}-{len(made)}"
            assert train(run_dir, model, *limits) == 0
            made[key] = run_dir
        return made[key]

    return get


def make_state(row: Row, run_dir: Path, monkeypatch) -> None:
    if row.state == "created, no step done":
        kill_before_first_step(monkeypatch)
    elif row.state != "finished":
        kill_at(monkeypatch, row.kill_step, row.stage)
    if row.state == "finished":
        assert train(run_dir, row.model, *row.first, every=row.every) == 0
    else:
        with pytest.raises(Killed):
            train(run_dir, row.model, *row.first, every=row.every)
    monkeypatch.undo()
    stage_dir = run_dir / AUTOENCODER_DIR if "stage one between" in row.state else run_dir
    if row.state.startswith("killed"):
        add_stale_row(stage_dir)
    if row.state == "killed before the first checkpoint":
        assert not (run_dir / CHECKPOINT_FILE).exists()
        assert (run_dir / "loss.csv").is_file() or row.model != "vae"  # the vae's first epoch (40 steps) has a row
    if row.state == "killed while writing a checkpoint":  # the kill hit the write: half a file, never renamed
        (stage_dir / f".{CHECKPOINT_FILE}.x1y2z3.tmp").write_bytes(b"\x00" * 100)
    if row.state == "stage one finished but not marked done":
        (run_dir / AUTOENCODER_DIR / STAGE_ONE_DONE).unlink()


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.model}: {r.state} -> {' '.join(r.action) or 'same'}" for r in TABLE])
def test_resume_from_every_state(row, tmp_path, monkeypatch, capsys, references):
    run_dir = tmp_path / "run"
    make_state(row, run_dir, monkeypatch)
    before = snapshot(run_dir)
    capsys.readouterr()
    code = train(run_dir, row.model, *row.action, resume=True, every=row.every)
    err = capsys.readouterr().err
    assert code == 0, err
    if row.outcome == "nothing to do":
        assert "nothing to do" in visible_lines(err)[-1]
        assert snapshot(run_dir) == before  # not even config.json was touched
        return
    for directory in (run_dir, run_dir / AUTOENCODER_DIR):
        if (directory / "loss.csv").is_file():
            steps = loss_steps(directory)
            assert steps == sorted(set(steps)), steps  # each step at most once, in order
            assert "12345" not in (directory / "loss.csv").read_text()  # rows no checkpoint backed are gone
            assert (directory / "loss.png").is_file()
        assert not list(directory.glob(".*.tmp"))
    if row.state in ("killed before the first checkpoint", "created, no step done"):
        assert any("starting from step 0" in line for line in visible_lines(err))
    final = json.loads((run_dir / "config.json").read_text())["train"]
    if row.action:  # the limits given with --resume replace the stored ones
        given = dict(zip(row.action[::2], row.action[1::2], strict=True))
        assert all(str(final[k.lstrip("-").replace("-", "_")]) == v for k, v in given.items())
    if row.reference:
        expected = weights(references(row.model, row.reference))
        actual = weights(run_dir)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(actual[k], expected[k]) for k in expected)  # bit for bit
    if row.model == "vae" and row.reference and row.reference[0] == "--epochs":
        epochs = int(row.reference[1])
        assert loss_steps(run_dir)[-1] == 40 * epochs
