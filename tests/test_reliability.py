"""Nothing lost under faults, one clear line for bad input, no code run from files."""

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, write_idx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaediff.cli import main
from vaediff.data import read_idx
from vaediff.errors import DataError, RunError
from vaediff.families import load_run, train_run
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives.vae import VAEObjective
from vaediff.runs import load_safetensors, read_json
from vaediff.training import CHECKPOINT_FILE, TrainConfig, train

SRC = Path(__file__).resolve().parents[1] / "src" / "vaediff"
SMALL_VAE = ["--model-config", '{"hidden": 64, "latent": 8}', "--batch-size", "32"]


def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vaediff", "train", "vae", "--out", str(run_dir), "--max-steps", "1500",
            "--checkpoint-every", "25", *SMALL_VAE, *extra]


def _every_file_loads(run_dir: Path) -> None:
    """What a killed run left behind is complete: each file parses (a partial one would not)."""
    read_json(run_dir / "config.json")
    if (run_dir / CHECKPOINT_FILE).exists():
        load_safetensors(run_dir / CHECKPOINT_FILE)
    if (run_dir / "model.safetensors").exists():
        load_safetensors(run_dir / "model.safetensors")
    if (run_dir / "loss.csv").exists():
        lines = (run_dir / "loss.csv").read_text().splitlines()
        assert all(line.count(",") == lines[0].count(",") for line in lines)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(tmp_path):
    run_dir, rng, kills = tmp_path / "killed", random.Random(7), 0
    # the killed runs use as many threads as this process's straight run: float sums differ between
    # thread counts, and the comparison is about resuming, not about threading
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    for _attempt in range(30):  # a process that exits at once must fail the test, not loop forever
        resuming = (run_dir / CHECKPOINT_FILE).exists()
        command = _train_command(run_dir, "--resume" if resuming else "--overwrite")
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if kills < 5:
            checkpoint = run_dir / CHECKPOINT_FILE
            before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
            deadline = time.time() + 120
            while process.poll() is None and time.time() < deadline:  # wait for training to be under way
                if checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.4))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
            _every_file_loads(run_dir)
            continue
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
        break
    else:
        pytest.fail(f"training never got under way ({kills} kills)")
    assert kills >= 5
    assert main(["train", "vae", "--out", str(tmp_path / "straight"), "--max-steps", "1500",
                 "--checkpoint-every", "25", *SMALL_VAE]) == 0
    killed = load_safetensors(run_dir / "model.safetensors")
    straight = load_safetensors(tmp_path / "straight" / "model.safetensors")
    assert all(torch.equal(killed[k], straight[k]) for k in straight)  # bit for bit
    assert not list(run_dir.glob(".*.tmp"))


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(_train_command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run_dir / CHECKPOINT_FILE).exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    message = err.decode().strip().splitlines()[-1]
    assert process.returncode == 143 and "SIGTERM" in message and "--resume" in message
    state = load_safetensors(run_dir / CHECKPOINT_FILE)
    assert state  # a complete checkpoint to resume from


def test_non_finite_loss_stops_with_exit_3_and_keeps_the_checkpoint(tmp_path, cli):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "vae", "--out", run_dir, "--max-steps", "400", "--lr", "1e7",
                       "--checkpoint-every", "1", *SMALL_VAE)
    assert_one_line_error(code, err, "not finite at step", "resume.safetensors", expected_code=3)
    step = int(re.search(r"at step (\d+)", err).group(1))
    assert step > 1
    assert load_safetensors(run_dir / CHECKPOINT_FILE)  # the last good one, intact


def test_full_disk_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    import vaediff.runs as runs

    config = VAEConfig(hidden=32, latent=4)
    train_config = TrainConfig(max_steps=30, batch_size=32, checkpoint_every=10, eval_images=64)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        # the disk fills up when the second checkpoint is written (the first one exists by then)
        handle = real_fdopen(fd, *args, **kwargs)
        writing = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        full = writing.startswith(f".{CHECKPOINT_FILE}.") and (tmp_path / CHECKPOINT_FILE).exists()
        return FullDisk(handle) if full else handle

    monkeypatch.setattr(runs.os, "fdopen", fdopen)
    with pytest.raises(RunError, match="no space left on device; the previous version of the file is intact"):
        train(VAEObjective(config), lambda: VAE(config), tiny, train_config, tmp_path, progress=False)
    monkeypatch.undo()
    assert load_safetensors(tmp_path / CHECKPOINT_FILE) and not list(tmp_path.glob(".*.tmp"))
    train(VAEObjective(config), lambda: VAE(config), tiny, train_config, tmp_path, resume=True, progress=False)


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    return train_run("cvae", root / "cvae", options={"model": {"hidden": 32, "latent": 4}},
                     train_options={"max_steps": 5}, progress=False).run_dir


@pytest.fixture(scope="module")
def broken_runs(tmp_path_factory, valid_run):
    import shutil

    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    half = root / "half"
    half.mkdir()
    (half / "config.json").write_text((valid_run / "config.json").read_text())  # config, no weights yet
    assert main(["eda", "--out", str(root / "eda")]) == 0  # an output directory of another kind
    truncated = root / "truncated"
    shutil.copytree(valid_run, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    mismatched = root / "mismatched"
    shutil.copytree(valid_run, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["model"]["hidden"] = 48
    (mismatched / "config.json").write_text(json.dumps(config))
    unknown_key = root / "unknown_key"
    shutil.copytree(valid_run, unknown_key)
    config = json.loads((unknown_key / "config.json").read_text())
    config["model"]["depth"] = 3
    (unknown_key / "config.json").write_text(json.dumps(config))
    wrong_type = root / "wrong_type"
    shutil.copytree(valid_run, wrong_type)
    config = json.loads((wrong_type / "config.json").read_text())
    config["model"]["latent"] = "four"
    (wrong_type / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize("args, fragment", [
    (["eda", "--dataset", "svhn", "--out", "{tmp}/o"], "svhn"),
    (["eda", "--dataset", "mnist", "--data-dir", "{tmp}/nowhere", "--out", "{tmp}/o"], "no such directory"),
    (["train", "vae", "--epochs", "0", "--out", "{tmp}/o"], "--epochs"),
    (["train", "vae", "--epochs", "-2", "--out", "{tmp}/o"], "--epochs"),
    (["train", "vae", "--minutes", "0", "--out", "{tmp}/o"], "--minutes"),
    (["train", "vae", "--minutes", "nan", "--out", "{tmp}/o"], "--minutes"),
    (["train", "vae", "--batch-size", "0", "--out", "{tmp}/o"], "--batch-size"),
    (["train", "vae", "--batch-size", "5000", "--max-steps", "1", "--out", "{tmp}/o"], "--batch-size 5000"),
    (["train", "vae", "--out", "{tmp}/o", "--resume"], "does not exist; run the command without --resume"),
    (["train", "vae", "--out", "{tmp}/" + "n" * 300, "--max-steps", "5"], "300 bytes long"),
    (["train", "vae", "--out", "{valid}/config.json/o", "--max-steps", "5"], "lies inside the training run"),
    (["sample", "{valid}", "--out", "{tmp}/missing/dir/g.png"], "does not exist; create it first"),
    (["sample", "{valid}", "--out", "{tmp}"], "is a directory"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--n", "99999999999"], "between 1 and 10,000"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--steps", "5000"], "--steps"),
    (["evaluate", "{valid}", "--n-samples", "99999999999"], "--n-samples"),
    (["evaluate", "{valid}", "--iw-samples", "99999999999"], "--iw-samples"),
    (["serve", "{valid}", "--max-images", "99999999999"], "--max-images"),
    (["eda", "--dataset", "mnist", "--data-dir", "{valid}/config.json", "--out", "{tmp}/o"], "not a directory"),
    (["train", "gan", "--out", "{tmp}/o"], "gan"),
    (["train", "vae", "--out", "{tmp}/o", "--model-config", "{{"], "not valid JSON"),
    (["train", "vae", "--out", "{tmp}/o", "--model-config", '{{"depth": 3}}'], "depth"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--label", "10"], "0..9"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--label", "-1"], "0 or more"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--n", "0"], "--n"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--steps", "0"], "--steps"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--guidance", "nan"], "--guidance"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--guidance", "-1"], "--guidance"),
    (["sample", "{valid}", "--out", "{tmp}/g.png", "--steps", "10"], "diffusion runs"),
    (["sample", "{tmp}/missing", "--out", "{tmp}/g.png"], "no such directory"),
    (["sample", "{broken}/empty", "--out", "{tmp}/g.png"], "empty directory"),
    (["sample", "{broken}/half", "--out", "{tmp}/g.png"], "weights file not found"),
    (["sample", "{broken}/eda", "--out", "{tmp}/g.png"], "not a training run"),
    (["sample", "{broken}/truncated", "--out", "{tmp}/g.png"], "truncated"),
    (["sample", "{broken}/mismatched", "--out", "{tmp}/g.png"], "does not match its config"),
    (["sample", "{broken}/unknown_key", "--out", "{tmp}/g.png"], "'depth'"),
    (["sample", "{broken}/wrong_type", "--out", "{tmp}/g.png"], "'latent'"),
    (["evaluate", "{broken}/half"], "weights file not found"),
    (["evaluate", "{valid}", "--n-samples", "-5"], "--n-samples"),
    (["evaluate", "{valid}", "--n-samples", "3"], "between 20 and"),
    (["train", "diffusion", "--out", "{valid}", "--resume"], "is a cvae run"),
    (["compare", "{broken}/empty", "--out", "{tmp}/r"], "empty directory"),
    (["serve", "{broken}/eda"], "not a training run"),
])
def test_bad_input_gives_one_line_and_exit_2(cli, tmp_path, valid_run, broken_runs, evaluator_cache, args, fragment):
    filled = [a.format(tmp=tmp_path, valid=valid_run, broken=broken_runs) for a in args]
    code, _, err = cli(*filled)
    assert_one_line_error(code, err, fragment)


def test_a_huge_count_is_refused_before_any_work(cli, tmp_path, valid_run, monkeypatch):
    """Refused at the boundary: nothing is loaded or drawn (a timing bar would depend on the host)."""
    def no_work(*args, **kwargs):
        raise AssertionError("a refused count must not reach loading or sampling")

    monkeypatch.setattr("vaediff.families.load_run", no_work)
    monkeypatch.setattr("vaediff.generation.write_sample_grid", no_work)
    code, _, err = cli("sample", valid_run, "--out", tmp_path / "s.png", "--n", "99999999999")
    assert_one_line_error(code, err, "--n")


def test_os_errors_the_checks_did_not_foresee_are_one_line_naming_the_path(cli, tmp_path, monkeypatch):
    import vaediff.cli

    def failing(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(vaediff.cli, "cmd_eda", failing)
    code, _, err = cli("eda", "--out", tmp_path / "o")
    assert_one_line_error(code, err, str(tmp_path / "locked"), "permission denied")


# ---------------------------------------------------------------------------------------------------------
# Fuzzing: the IDX reader and the CLI never fail with anything but their one-line errors


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), gz=st.booleans())
def test_fuzz_idx_reader_raises_only_data_errors(tmp_path, data, gz):
    import gzip

    path = tmp_path / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz and data[:1] != b"\x00" else data)
    try:
        array = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(array, np.ndarray)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 3200), flip=st.integers(0, 3200), value=st.integers(0, 255))
def test_fuzz_mutated_idx_files(tmp_path, cut, flip, value):
    path = write_idx(tmp_path / "m-idx3-ubyte", np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28) % 251)
    data = bytearray(path.read_bytes())
    if flip < len(data):
        data[flip] = value
    path.write_bytes(bytes(data[: len(data) - cut % len(data)] if cut else data))
    try:
        read_idx(path)
    except DataError:
        pass


TOKENS = ["0", "-1", "3", "9", "10", "nan", "inf", "-inf", "1e9", "abc", "", "2.5", "64"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["sample", "evaluate", "train", "eda", "compare"]),
       run=st.sampled_from(["valid", "missing", "empty", "half", "eda", "truncated", "mismatched"]),
       flags=st.lists(st.tuples(st.sampled_from(["--n", "--label", "--steps", "--guidance", "--seed", "--epochs",
                                                 "--minutes", "--batch-size", "--lr", "--n-samples",
                                                 "--iw-samples", "--sampler", "--dataset", "--bogus"]),
                                st.sampled_from(TOKENS)), max_size=4))
def test_fuzz_cli_answers_with_exit_0_or_one_line(cli, tmp_path, valid_run, broken_runs, evaluator_cache, command, run,
                                                  flags):
    run_dir = {"valid": valid_run, "missing": tmp_path / "missing"}.get(run, broken_runs / run)
    args = {"sample": ["sample", run_dir, "--out", tmp_path / "f.png"],
            "evaluate": ["evaluate", run_dir, "--n-samples", "20", "--iw-samples", "2"],
            "train": ["train", "vae", "--out", broken_runs / "eda", "--max-steps", "1"],  # refused: not empty
            "eda": ["eda", "--out", broken_runs / "eda"],  # refused: not empty
            "compare": ["compare", run_dir, "--out", broken_runs / "eda"]}[command]
    for flag, token in flags:
        args += [flag, token]
    code, _, err = cli(*args)
    if code != 0:
        assert_one_line_error(code, err)


# ---------------------------------------------------------------------------------------------------------
# No code from files


def test_no_pickle_eval_exec_or_unsafe_torch_load_in_src():
    offenders = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if (re.search(r"\bpickle\.loads?\(", code) or re.search(r"(?<![.\w])(eval|exec)\(", code)
                    or (re.search(r"\btorch\.load\(", code) and "weights_only=True" not in code)):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_unknown_and_mistyped_config_keys_are_refused_by_name(broken_runs):
    from vaediff.errors import ConfigError

    with pytest.raises(ConfigError, match="'depth'"):
        load_run(broken_runs / "unknown_key")
    with pytest.raises(ConfigError, match="'latent'"):
        load_run(broken_runs / "wrong_type")
