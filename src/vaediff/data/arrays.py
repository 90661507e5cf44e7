"""Array files: `--dataset path/to/set.npz`, read with numpy's `allow_pickle=False` (nothing is unpickled).

Keys: `images` (N, H, W) or (N, H, W, C) uint8 (C = 1 or 3); optional `labels` (N,) integers 0..K-1;
optional `class_names` (K,) strings; optional test split `x_test` (and `y_test`), also spelt `test_images`
(`test_labels`). Without a test split the fixed 80/20 split of data.core applies.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from vaediff.data.core import (
    UNLABELLED,
    Dataset,
    ImageSplit,
    check_size,
    content_key,
    resize_images,
    split_dataset,
    to_uint8_images,
)
from vaediff.errors import DataError

TEST_KEYS = (("x_test", "y_test"), ("test_images", "test_labels"))


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: holds a pickled object array, which vaediff does not load (allow_pickle=False); "
                            f"save images as uint8 and class names as a string array") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _labels(array: np.ndarray | None, count: int, path: Path, key: str) -> torch.Tensor | None:
    if array is None:
        return None
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must be {count} integers, found {array.dtype} {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


def _class_names(arrays: dict, labels: list[torch.Tensor], path: Path) -> tuple[str, ...]:
    top = max(int(t.max()) for t in labels if len(t)) if any(len(t) for t in labels) else 0
    low = min(int(t.min()) for t in labels if len(t)) if any(len(t) for t in labels) else 0
    names = arrays.get("class_names")
    count = len(names) if names is not None else top + 1
    if low < 0 or top >= count:
        raise DataError(f"{path}: labels out of range 0..{count - 1} (found {low}..{top})")
    if count < 2:
        raise DataError(f"{path}: labels name one class; a labelled set needs at least 2 (drop 'labels' for an "
                        f"unlabelled set)")
    return tuple(str(n) for n in names) if names is not None else tuple(str(c) for c in range(count))


def load_npz(path: Path, image_size: int | None = None) -> Dataset:
    """A Dataset from an .npz file (module docstring for its keys)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    arrays = _read(path)
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found {', '.join(arrays) or 'nothing'})")
    images = to_uint8_images(arrays["images"], f"{path} 'images'")
    labels = _labels(arrays.get("labels"), len(images), path, "labels")
    test_keys = next(((x, y) for x, y in TEST_KEYS if x in arrays), None)
    test_images = to_uint8_images(arrays[test_keys[0]], f"{path} '{test_keys[0]}'") if test_keys else None
    test_labels = _labels(arrays.get(test_keys[1]), len(test_images), path, test_keys[1]) if test_keys else None
    if test_keys and (labels is None) != (test_labels is None):
        raise DataError(f"{path}: give labels for both splits or for neither ('labels' and '{test_keys[1]}')")
    if image_size is not None:
        images = resize_images(images, image_size)
        test_images = resize_images(test_images, image_size) if test_images is not None else None
    check_size(images, str(path))
    labelled = labels is not None
    names = _class_names(arrays, [labels] + ([test_labels] if test_labels is not None else []), path) if labelled \
        else UNLABELLED
    labels = labels if labelled else torch.zeros(len(images), dtype=torch.int64)
    key = content_key(path.stem, images, labels)
    if test_images is None:
        return split_dataset(path.stem, images, labels, names, f"array file {path.resolve()}", labelled, key)
    test_labels = test_labels if labelled else torch.zeros(len(test_images), dtype=torch.int64)
    return Dataset(path.stem, ImageSplit(images, labels), ImageSplit(test_images, test_labels), names,
                   f"array file {path.resolve()}", labelled, key)
