"""What every data source produces: splits of uint8 images, a data set with its shape, and batching.

Images stay in memory as uint8 (N, C, S, S) and become float32 in [0, 1] per batch (`ImageSplit.as_float`),
so 50,000 RGB 64x64 images cost 600 MB rather than 2.4 GB as float. Batches are cut from those tensors by
index: no per-image PIL transform runs on the hot path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaediff.constants import IMAGE_SIZES
from vaediff.errors import DataError

SIZES = IMAGE_SIZES    # square image sizes the models are built for
CHANNELS = (1, 3)      # grayscale or RGB
DEFAULT_DATA_DIR = Path(os.environ.get("VAEDIFF_DATA_DIR", Path.home() / ".cache" / "vaediff" / "data"))
UNLABELLED = ("all",)  # the one class of an unlabelled set
TEST_EVERY = 5         # the fixed split: within each class, every fifth image is a test image (80/20)


@dataclass(frozen=True)
class DataShape:
    """What the models must be built for: recorded in every run's config.json."""

    channels: int
    image_size: int
    num_classes: int      # classes the models condition on: 1 for an unlabelled set
    labelled: bool = True

    def describe(self) -> str:
        classes = f"{self.num_classes} classes" if self.labelled else "unlabelled"
        return f"{self.channels}x{self.image_size}x{self.image_size}, {classes}"

    def to_dict(self) -> dict:
        return {"channels": self.channels, "image_size": self.image_size, "num_classes": self.num_classes,
                "labelled": self.labelled}


MNIST_SHAPE = DataShape(1, 28, 10)  # the built-in sets' shape, and that of runs written before shapes were recorded


@dataclass(frozen=True)
class ImageSplit:
    """One split: images (N, C, S, S), uint8 in 0..255 as loaded (or float in [0, 1], e.g. generated
    samples), and labels (N,) int64. `as_float` gives float32 in [0, 1] either way."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if self.images.ndim != 4 or shape[1] not in CHANNELS or shape[2] != shape[3]:
            raise DataError(f"images must have shape (N, 1 or 3, S, S), got {shape}")
        if self.labels.shape != (shape[0],):
            raise DataError(f"{shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def as_float(self, index=slice(None)) -> torch.Tensor:
        """Images `index` (a slice, or a tensor of indices) as float32 in [0, 1]."""
        chosen = self.images[index]
        return chosen.float().div_(255.0) if chosen.dtype == torch.uint8 else chosen.float()

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * self.labels.element_size()

    def to(self, device: torch.device) -> ImageSplit:
        """The split with its tensors on `device` (still uint8: a quarter of float32's memory)."""
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    """A data set: train and test splits, class names, where it was read from, and whether it has labels
    (an unlabelled set has one class, "all", that conditional models must not use)."""

    name: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    source: str
    labelled: bool = True
    cache_key: str | None = None  # names this data in caches (evaluator, CAS); the name by default

    def __post_init__(self) -> None:
        if not len(self.train):
            raise DataError(f"{self.source}: no training images")
        if not len(self.test):
            raise DataError(f"{self.source}: the test split is empty; evaluation needs test images")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(f"{self.source}: train images {tuple(self.train.images.shape[1:])} and test images "
                            f"{tuple(self.test.images.shape[1:])} differ in shape")
        for split in (self.train, self.test):
            if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= len(self.class_names)):
                raise DataError(f"{self.source}: labels out of range 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> DataShape:
        return DataShape(self.train.images.shape[1], self.train.images.shape[2], self.num_classes, self.labelled)

    @property
    def key(self) -> str:
        return self.cache_key or self.name


def to_uint8_images(array: np.ndarray, source: str) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) uint8 tensor (a copy, contiguous)."""
    if array.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8, found {array.dtype}")
    if array.ndim == 3:
        array = array[:, :, :, None]
    if array.ndim != 4 or array.shape[3] not in CHANNELS:
        raise DataError(f"{source}: images must have shape (N, H, W) or (N, H, W, 1 or 3), found {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def check_size(images: torch.Tensor, source: str) -> None:
    """Square sizes the models are built for, or one line saying what to do."""
    height, width = images.shape[2], images.shape[3]
    if height != width or height not in SIZES:
        raise DataError(f"{source}: images are {height}x{width}; vaediff builds models for square "
                        f"{', '.join(map(str, SIZES))}-pixel images: pass --image-size S to resize (centre crop "
                        f"to a square, then bilinear with antialiasing)")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): centre-cropped to a square, then resized bilinearly
    with antialiasing (the rule Pillow's resize follows), in chunks to bound memory."""
    height, width = images.shape[2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = images[:, :, top : top + side, left : left + side]
    if side == size:
        return square.contiguous()
    chunks = [torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
              for chunk in square.split(1000)]
    return torch.cat(chunks) if chunks else square.new_zeros((0, images.shape[1], size, size))


def stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, class-stratified 80/20 split: within each class, in the order the source lists the
    images, every fifth goes to the test split. No random generator: the same on every machine."""
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        is_test = np.arange(len(members)) % TEST_EVERY == TEST_EVERY - 1
        train.append(members[~is_test])
        test.append(members[is_test])
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(train) if train else empty), (np.concatenate(test) if test else empty)


def split_dataset(name: str, images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...],
                  source: str, labelled: bool, cache_key: str | None = None) -> Dataset:
    """A Dataset from one pool of images, split by `stratified_split`."""
    train_index, test_index = stratified_split(labels.numpy())
    if len(test_index) == 0:
        raise DataError(f"{source}: too few images ({len(images)}) for a test split: every class needs at least "
                        f"{TEST_EVERY} images")
    train_index, test_index = torch.from_numpy(train_index), torch.from_numpy(test_index)
    return Dataset(name, ImageSplit(images[train_index], labels[train_index]),
                   ImageSplit(images[test_index], labels[test_index]), class_names, source, labelled, cache_key)


def content_key(name: str, *tensors: torch.Tensor) -> str:
    """A cache name for data read from a user's files: its name and a hash of its pixels and labels, so an
    edited folder gets a new evaluator rather than a stale one."""
    import hashlib

    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return f"{safe}-{digest.hexdigest()[:12]}"


# ---------------------------------------------------------------------------------------------------------
# Batching


class TensorImages(torch.utils.data.Dataset):
    """A map-style data set over in-memory tensors that returns whole float batches at once.

    `__getitems__` lets torch's DataLoader fetch a batch with one tensor index instead of N item
    lookups and a collate, which is what makes batching from memory nearly free.
    """

    def __init__(self, split: ImageSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.as_float(slice(index, index + 1))[0], self.split.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.split.as_float(index), self.split.labels[index]


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
    """A DataLoader that cuts float batches from the in-memory split (no worker processes needed)."""
    sampler = EpochBatchSampler(len(split), batch_size, seed, shuffle, drop_last)
    return torch.utils.data.DataLoader(TensorImages(split), batch_sampler=sampler, collate_fn=keep_batch)
