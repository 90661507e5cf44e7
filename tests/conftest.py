"""Shared fixtures: small IDX files, tiny data sets, and a way to call the real CLI in-process."""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.system_packages import require_system_package  # noqa: F401 - re-exported for tests

from vaediff.cli import main
from vaediff.data import Dataset, ImageSplit, load_dataset

# two pytest-xdist workers share the two cores: one thread each (two in a serial run)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an uint8 array as an IDX file (gzip if the name ends in .gz)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_idx_dataset(directory: Path, train: int = 60, test: int = 20, gz: bool = False, seed: int = 0) -> Path:
    """Four small, valid IDX files (random pixels, balanced labels) in `directory`."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(count) % 10).astype(np.uint8))
    return directory


@pytest.fixture(scope="session")
def mnist5k() -> Dataset:
    return load_dataset("mnist-5k")


@pytest.fixture(scope="session")
def tiny(mnist5k) -> Dataset:
    """640 training and 200 test digits of mnist-5k, balanced: for training tests that must take seconds."""
    def pick(split: ImageSplit, per_class: int) -> ImageSplit:
        index = torch.cat([torch.nonzero(split.labels == c).flatten()[:per_class] for c in range(10)])
        index = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(0))]
        return ImageSplit(split.images[index].contiguous(), split.labels[index].contiguous())

    return Dataset("mnist-5k", pick(mnist5k.train, 64), pick(mnist5k.test, 20), mnist5k.class_names, "tiny")


@pytest.fixture
def cli(capsys):
    """Run `vaediff ARGS...` in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse exits on usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


PROGRESS_LINE = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # tqdm's "42%|####  | 42/100 [00:01<00:02"


def visible_lines(err: str) -> list[str]:
    """stderr as a terminal shows it (each line's text after its last carriage return), without the
    progress bars: what is left is what the program said."""
    lines = (line.rsplit("\r", 1)[-1] for line in err.split("\n"))
    return [line for line in lines if line.strip() and not PROGRESS_LINE.search(line)]


def assert_one_line_error(code: int, err: str, *fragments: str, expected_code: int = 2) -> None:
    lines = visible_lines(err)
    assert code == expected_code, f"exit code {code}, stderr: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.fixture(scope="session")
def evaluator_cache(tmp_path_factory, mnist5k):
    """A quickly trained evaluator for mnist-5k in a private cache (set as VAEDIFF_CACHE_DIR), so that
    `vaediff evaluate` in tests takes seconds instead of training the full evaluator (2-3 minutes)."""

    from vaediff.evaluator_network import RECIPE_VERSION, feature_scale, train_evaluator
    from vaediff.runs import atomic_save_safetensors, atomic_write_json

    cache = tmp_path_factory.mktemp("cache")
    net, accuracy = train_evaluator(mnist5k, image_passes=6000, progress=False)
    directory = cache / "evaluators" / f"mnist-5k-v{RECIPE_VERSION}"
    directory.mkdir(parents=True)
    atomic_save_safetensors(net.state_dict(), directory / "model.safetensors")
    atomic_write_json(directory / "evaluator.json", {"test_accuracy": accuracy,
                                                     "feature_scale": feature_scale(net, mnist5k.train)})
    previous = os.environ.get("VAEDIFF_CACHE_DIR")
    os.environ["VAEDIFF_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("VAEDIFF_CACHE_DIR", None)
    else:
        os.environ["VAEDIFF_CACHE_DIR"] = previous
