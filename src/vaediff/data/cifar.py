"""CIFAR-10 (`--dataset cifar10`): 50,000/10,000 RGB 32x32 images in ten classes, from its binary
distribution (cifar-10-binary.tar.gz: data_batch_1..5.bin, test_batch.bin, batches.meta.txt). Each record is
1 label byte and 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, row-major); nothing is unpickled.

Found in --data-dir (flat, or in its cifar-10-batches-bin/), or downloaded there when online.
"""

from __future__ import annotations

import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vaediff.checks import existing_directory, output_directory
from vaediff.data.core import DEFAULT_DATA_DIR, Dataset, ImageSplit
from vaediff.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One binary batch file -> (N, 3, 32, 32) uint8 images and (N,) int64 labels, checked."""
    try:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                        f"(1 label byte + 3,072 pixel bytes); the file is truncated or not CIFAR-10 binary")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{path}: label byte {int(labels.max())} out of range 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def class_names(directory: Path) -> tuple[str, ...]:
    """The ten names batches.meta.txt lists, one a line (UTF-8, with or without a byte-order mark, else
    Latin-1, which decodes any byte); the usual names when the file is absent or does not list ten."""
    meta = directory / "batches.meta.txt"
    if not meta.is_file():
        return CLASS_NAMES
    try:
        raw = meta.read_bytes()
    except OSError as exc:
        raise DataError(f"{meta}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    listed = tuple(line.strip() for line in text.splitlines() if line.strip())
    return listed if len(listed) == len(CLASS_NAMES) else CLASS_NAMES


def find_files(root: Path) -> Path | None:
    """The folder that holds all six batch files, or None; one line for a half-copied set."""
    for directory in (root, root / FOLDER):
        present = [name for name in (*TRAIN_FILES, TEST_FILE) if (directory / name).is_file()]
        if len(present) == len(TRAIN_FILES) + 1:
            return directory
        if present:
            missing = sorted(set(TRAIN_FILES + (TEST_FILE,)) - set(present))
            raise DataError(f"{directory}: incomplete CIFAR-10 binary set, missing {', '.join(missing)}")
    return None


def download(root: Path) -> None:
    output_directory(root, "--data-dir").mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-binary.tar.gz"
    try:
        with urllib.request.urlopen(URL, timeout=60) as response, archive.open("wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # "data": no absolute paths, links or devices
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"cifar10: files not found in {root} and the download failed ({exc}); put the binary "
                        f"files (cifar-10-binary.tar.gz, extracted) in --data-dir DIR") from None
    finally:
        archive.unlink(missing_ok=True)


def load_cifar10(data_dir: Path | None, download_missing: bool = True) -> Dataset:
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if data_dir is not None:
        existing_directory(root, "--data-dir")
    directory = find_files(root)
    if directory is None:
        if not download_missing:
            raise DataError(f"cifar10: binary files not found in {root}; pass --data-dir DIR")
        download(root)
        directory = find_files(root)
        if directory is None:
            raise DataError(f"cifar10: the download finished but the binary files are not in {root}")
    train = [read_batch(directory / name) for name in TRAIN_FILES]
    test_images, test_labels = read_batch(directory / TEST_FILE)
    return Dataset("cifar10", ImageSplit(torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train])),
                   ImageSplit(test_images, test_labels), class_names(directory), str(directory))
