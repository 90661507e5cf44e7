"""Array files: `--dataset path/to/set.npz` (or `set.npy`), read with numpy's `allow_pickle=False` (nothing is
unpickled). The content decides, not the name: a zip archive is read as .npz, a single array as .npy.

.npz keys: `images` (N, H, W) or (N, H, W, C) uint8 (C = 1 or 3); optional `labels` (N,) integers 0..K-1;
optional `class_names` (K,) strings, one a class the labels use; optional test split `x_test` (and `y_test`),
also spelt `test_images` (`test_labels`). Without a test split the fixed 80/20 split of data.core applies.
An .npy file holds the images alone, as `images` above: an unlabelled set.
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
NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins (numpy.lib.format)


def _load(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive by key, or an .npy file's one array as "images"."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"images": loaded}
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: holds a pickled object array, which vaediff does not load (allow_pickle=False); "
                            f"save images as uint8 and class names as a string array") from None
        raise DataError(f"{path}: not a readable array file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable array file ({exc})") from None


def _read(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    """(arrays by key, whether the file was one .npy array); one line for a file that is neither format."""
    try:
        with path.open("rb") as file:
            single = file.read(len(NPY_MAGIC)) == NPY_MAGIC
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not single and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz (zip) archive or .npy file; save images (and labels) with "
                        f"numpy.savez")
    return _load(path), single


def _images(array: np.ndarray, path: Path, key: str, single: bool) -> torch.Tensor:
    """One split's images as uint8 (N, C, H, W); one line when there are none."""
    images = to_uint8_images(array, str(path) if single else f"{path} '{key}'")
    if len(images):
        return images
    if key == "images":
        raise DataError(f"{path}: no images ('{key}' has shape {array.shape})")
    raise DataError(f"{path}: the test split is empty ('{key}' has shape {array.shape}); give test images, or drop "
                    f"'{key}' for the fixed 80/20 split")


def _labels(array: np.ndarray | None, count: int, path: Path, key: str) -> torch.Tensor | None:
    if array is None:
        return None
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must be {count} integers, found {array.dtype} {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


def _class_names(arrays: dict, labels: list[torch.Tensor], path: Path) -> tuple[str, ...]:
    """The names of the classes `labels` use: `class_names` (one a class, 1-D) or the numbers 0..K-1."""
    names = arrays.get("class_names")
    if names is not None and names.ndim != 1:
        raise DataError(f"{path}: 'class_names' must be a 1-D array of names, one a class, found shape "
                        f"{names.shape}")
    top = max(int(t.max()) for t in labels if len(t))
    low = min(int(t.min()) for t in labels if len(t))
    if names is not None and len(set(names.tolist())) != len(names):
        raise DataError(f"{path}: 'class_names' names a class twice ({', '.join(map(str, names.tolist()))}); "
                        f"give each class its own name")
    count = len(names) if names is not None else top + 1
    if low < 0 or top >= count:
        raise DataError(f"{path}: labels out of range 0..{count - 1} (found {low}..{top})")
    if count > top + 1:
        raise DataError(f"{path}: 'class_names' has {count} names but the labels use {top + 1} classes "
                        f"(0..{top}); give one name a class")
    if count < 2:
        raise DataError(f"{path}: labels name one class; a labelled set needs at least 2 (drop 'labels' for an "
                        f"unlabelled set)")
    if names is None:
        return tuple(str(c) for c in range(count))
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def load_arrays(path: Path, image_size: int | None = None) -> Dataset:
    """A Dataset from an .npz or .npy file (module docstring for its keys)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    arrays, single = _read(path)
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found {', '.join(arrays) or 'nothing'})")
    images = _images(arrays["images"], path, "images", single)
    labels = _labels(arrays.get("labels"), len(images), path, "labels")
    test_keys = next(((x, y) for x, y in TEST_KEYS if x in arrays), None)
    test_images = _images(arrays[test_keys[0]], path, test_keys[0], single) if test_keys else None
    test_labels = _labels(arrays.get(test_keys[1]), len(test_images), path, test_keys[1]) if test_keys else None
    if test_keys and (labels is None) != (test_labels is None):
        raise DataError(f"{path}: give labels for both splits or for neither ('labels' and '{test_keys[1]}')")
    if image_size is not None:
        images = resize_images(images, image_size)
        test_images = resize_images(test_images, image_size) if test_images is not None else None
    check_size(images, str(path))
    labelled = labels is not None
    if not labelled and "class_names" in arrays:
        raise DataError(f"{path}: 'class_names' but no 'labels'; give labels too, or drop class_names for an "
                        f"unlabelled set")
    names = _class_names(arrays, [labels] + ([test_labels] if test_labels is not None else []), path) if labelled \
        else UNLABELLED
    labels = labels if labelled else torch.zeros(len(images), dtype=torch.int64)
    key = content_key(path.stem, images, labels)
    if test_images is None:
        return split_dataset(path.stem, images, labels, names, f"array file {path.resolve()}", labelled, key)
    test_labels = test_labels if labelled else torch.zeros(len(test_images), dtype=torch.int64)
    return Dataset(path.stem, ImageSplit(images, labels), ImageSplit(test_images, test_labels), names,
                   f"array file {path.resolve()}", labelled, key)
