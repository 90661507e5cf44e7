"""Hugging Face `datasets` as a source: `--dataset DIR` (saved with `save_to_disk`), `--dataset FILE.parquet`
or `FILE.arrow`, and `--dataset hf:NAME[:CONFIG]` (`datasets.load_dataset`, from its cache when offline).

* Columns: the image column is the one of feature type `Image` (or a uint8 `Array2D`/`Array3D`), the label
  column the one of type `ClassLabel`, whose names become the class names; `--image-column` and
  `--label-column` name them where there are several or none of that type (a named label column of integers
  or strings becomes classes in sorted order). No label column: an unlabelled set.
* Splits: a `DatasetDict` with "train" and "test" keeps them; a single split is split 80/20 by data.core's
  fixed rule.
* Pixels: each image is decoded with Pillow by the image folder's rules (data/folder.py: 16-bit scaled to 8,
  transparency composited on white, each conversion counted in one note), a thousand rows at a time into one
  uint8 tensor allocated once, so a large set is never held twice in memory.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vaediff.console import notice, progress_bar
from vaediff.data.core import UNLABELLED, Dataset, ImageSplit, check_size, content_key, split_dataset
from vaediff.data.folder import NOTES, decode_image
from vaediff.errors import DataError

PREFIX = "hf:"           # --dataset hf:NAME[:CONFIG]
FILE_SUFFIXES = (".parquet", ".arrow")
SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")  # what save_to_disk writes
CHUNK = 1000             # rows decoded at a time
OFFLINE_HINT = ("offline, `datasets` reads its cache only (HF_DATASETS_OFFLINE=1): on a machine with internet, "
                "run `python -c \"import datasets; datasets.load_dataset('{name}')\"` and copy "
                "~/.cache/huggingface to this one, or save it with save_to_disk and give that folder")


def is_hf_source(name: str) -> bool:
    """Whether `--dataset name` is for this module: hf:..., a .parquet/.arrow file, a save_to_disk folder."""
    if name.startswith(PREFIX):
        return True
    path = Path(name)
    if path.suffix.lower() in FILE_SUFFIXES:
        return True
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def load_hf(name: str, image_size: int | None = None, image_column: str | None = None,
            label_column: str | None = None) -> Dataset:
    """A Dataset from a `datasets` source (module docstring)."""
    splits, source, title = _open_source(name)
    first = next(iter(splits.values()))
    image_column = _image_column(first, image_column, source)
    label_column = _label_column(first, label_column, source)
    for split_name, split in splits.items():
        for column in filter(None, (image_column, label_column)):
            if column not in split.column_names:
                raise DataError(f"{source}: split {split_name!r} has no column {column!r}")
    tally: Counter = Counter()
    names = _class_names(splits, label_column, source)
    decoded = {key: (_images(split, image_column, image_size, source, tally), _labels(split, label_column, names))
               for key, split in splits.items()}
    _note(source, tally)
    labelled = label_column is not None
    names = names if labelled else UNLABELLED
    if len(decoded) == 1:
        images, labels = next(iter(decoded.values()))
        return split_dataset(title, images, labels, names, source, labelled, content_key(title, images, labels))
    (train_images, train_labels), (test_images, test_labels) = decoded["train"], decoded["test"]
    key = content_key(title, train_images, train_labels, test_images, test_labels)
    return Dataset(title, ImageSplit(train_images, train_labels), ImageSplit(test_images, test_labels), names,
                   source, labelled, key)


# ---------------------------------------------------------------------------------------------------------
# Opening


def _open_source(name: str):
    """({split name: datasets.Dataset} with either one split or "train" and "test", a description of the
    source for messages, a short title)."""
    import datasets

    datasets.disable_progress_bars()  # its bars for a local load are noise; ours report the decoding
    if name.startswith(PREFIX):
        loaded, source, title = _load_hub(name[len(PREFIX):]), f"Hugging Face data set {name}", name[len(PREFIX):]
    else:
        path = Path(name)
        source, title = f"`datasets` data set {path.resolve()}", path.stem if path.is_file() else path.name
        loaded = _load_file(path) if path.suffix.lower() in FILE_SUFFIXES else _load_saved(path)
    if isinstance(loaded, datasets.Dataset):
        return {"all": loaded}, source, title
    return _chosen_splits(dict(loaded), source), source, title.replace("/", "-").replace(":", "-")


def _load_hub(spec: str):
    import datasets

    repo, _, config = spec.partition(":")
    if not repo:
        raise DataError("--dataset hf:NAME[:CONFIG]: give the data set's name, e.g. hf:fashion_mnist")
    try:
        return datasets.load_dataset(repo, config or None)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, no cache: every one is the same advice
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"hf:{spec}: `datasets` could not load it ({reason[:200]}); "
                        f"{OFFLINE_HINT.format(name=repo)}") from None


def _load_file(path: Path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":  # read as it is: no copy into the `datasets` cache
            return datasets.Dataset(InMemoryTable(pq.read_table(path, memory_map=True)))
        return datasets.Dataset.from_file(str(path))  # memory-mapped, as save_to_disk wrote it
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {path.suffix[1:]} file ({str(exc).splitlines()[0][:200]})") from None


def _load_saved(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a data set saved by `datasets` ({str(exc).splitlines()[0][:200]})") from None


def _chosen_splits(splits: dict, source: str) -> dict:
    """The source's own train/test split when it has one; else its one split (split 80/20 later)."""
    if "train" in splits and "test" in splits:
        others = sorted(set(splits) - {"train", "test"})
        if others:
            notice(f"{source}: using its train and test splits; {', '.join(others)} left out")
        return {"train": splits["train"], "test": splits["test"]}
    if len(splits) == 1:
        return splits
    if "train" in splits:
        notice(f"{source}: no test split; the train split is split 80/20 and {', '.join(sorted(set(splits) - {'train'}))} "
               f"left out")
        return {"train": splits["train"]}
    raise DataError(f"{source}: splits {', '.join(sorted(splits))}; vaediff needs 'train' (and 'test'), or a "
                    f"single split")


# ---------------------------------------------------------------------------------------------------------
# Columns


def _describe_columns(split) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in split.features.items())


def _is_image_feature(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image) or (
        isinstance(feature, datasets.Array2D | datasets.Array3D) and feature.dtype == "uint8")


def _image_column(split, given: str | None, source: str) -> str:
    if given is not None:
        if given not in split.features:
            raise DataError(f"{source}: no column {given!r} for --image-column (columns: {_describe_columns(split)})")
        if not _is_image_feature(split.features[given]):
            raise DataError(f"{source}: column {given!r} holds {type(split.features[given]).__name__}, not images "
                            f"(an Image feature or a uint8 Array2D/Array3D)")
        return given
    found = [name for name, feature in split.features.items() if _is_image_feature(feature)]
    if not found:
        raise DataError(f"{source}: no image column (columns: {_describe_columns(split)}); vaediff needs one of "
                        f"feature type Image, or name one with --image-column")
    if len(found) > 1:
        raise DataError(f"{source}: several image columns ({', '.join(found)}); choose one with --image-column")
    return found[0]


def _label_column(split, given: str | None, source: str) -> str | None:
    import datasets

    if given is not None:
        if given not in split.features:
            raise DataError(f"{source}: no column {given!r} for --label-column (columns: {_describe_columns(split)})")
        feature = split.features[given]
        if not isinstance(feature, datasets.ClassLabel | datasets.Value) or \
                (isinstance(feature, datasets.Value) and not (feature.dtype.startswith(("int", "uint"))
                                                              or feature.dtype in ("string", "large_string"))):
            raise DataError(f"{source}: column {given!r} holds {feature!r}; labels must be a ClassLabel, integers "
                            f"or strings")
        return given
    found = [name for name, feature in split.features.items() if isinstance(feature, datasets.ClassLabel)]
    if len(found) > 1:
        raise DataError(f"{source}: several ClassLabel columns ({', '.join(found)}); choose one with --label-column")
    return found[0] if found else None


def _class_names(splits: dict, column: str | None, source: str) -> tuple[str, ...]:
    """ClassLabel's names; for a column of integers or strings, its values across all splits, sorted."""
    import datasets

    if column is None:
        return UNLABELLED
    feature = next(iter(splits.values())).features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
    else:
        values = sorted({value for split in splits.values() for value in split.unique(column)},
                        key=lambda v: (v is None, v))
        names = tuple(str(v) for v in values)
    for split_name, split in splits.items():
        missing = sum(1 for value in split[column] if value is None or value == -1)
        if missing:
            raise DataError(f"{source}: {missing} rows of split {split_name!r} have no label in {column!r}; drop "
                            f"them, or leave out --label-column for an unlabelled set")
    if len(names) < 2:
        raise DataError(f"{source}: column {column!r} names {len(names)} class; a labelled set needs at least 2")
    return names


def _labels(split, column: str | None, names: tuple[str, ...]) -> torch.Tensor:
    import datasets

    if column is None:
        return torch.zeros(len(split), dtype=torch.int64)
    values = split[column]
    if isinstance(split.features[column], datasets.ClassLabel):
        return torch.tensor(values, dtype=torch.int64)
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[str(v)] for v in values], dtype=torch.int64)


# ---------------------------------------------------------------------------------------------------------
# Pixels


def _images(split, column: str, image_size: int | None, source: str, tally: Counter) -> torch.Tensor:
    """All images of `column`, decoded CHUNK rows at a time into one uint8 (N, C, S, S) tensor."""
    import datasets

    is_image = isinstance(split.features[column], datasets.Image)
    rows = split.select_columns([column])
    if is_image:  # bytes, decoded by our rules rather than `datasets`'
        rows = rows.cast_column(column, datasets.Image(decode=False))
    else:
        rows = rows.with_format("numpy")
    images: torch.Tensor | None = None
    starts = range(0, len(rows), CHUNK)
    for start in progress_bar(starts, enabled=len(starts) > 10, desc="decoding images", unit="k rows", leave=False):
        batch = rows[start : start + CHUNK][column]
        chunk = _decode_chunk(batch, image_size, source, start, tally) if is_image else _array_chunk(batch, source)
        if images is None:
            images = torch.empty((len(rows), *chunk.shape[1:]), dtype=torch.uint8)
        elif chunk.shape[1:] != images.shape[1:]:
            if image_size is None or chunk.shape[2:] != images.shape[2:]:
                raise DataError(f"{source}: rows from {start} on hold {tuple(chunk.shape[1:])} images, earlier rows "
                                f"{tuple(images.shape[1:])}; pass --image-size S to read them all as RGB of one size")
            images, chunk = _as_rgb(images, start), _as_rgb(chunk, len(chunk))  # with --image-size, mixed modes -> RGB
        images[start : start + len(chunk)] = chunk
    if images is None:
        raise DataError(f"{source}: no rows")
    check_size(images, source)
    return images


def _as_rgb(images: torch.Tensor, filled: int) -> torch.Tensor:
    """Grayscale (N, 1, S, S) -> RGB (N, 3, S, S), copying the first `filled` images; RGB as it is."""
    if images.shape[1] == 3:
        return images
    rgb = torch.empty((len(images), 3, *images.shape[2:]), dtype=torch.uint8)
    rgb[:filled] = images[:filled]
    return rgb


def _decode_chunk(batch: list, image_size: int | None, source: str, start: int, tally: Counter) -> torch.Tensor:
    decoded = []
    for offset, cell in enumerate(batch):
        if cell is None or (cell.get("bytes") is None and cell.get("path") is None):
            raise DataError(f"{source}: row {start + offset} has no image")
        where = f"{source}, row {start + offset}"
        data = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else cell["path"]
        decoded.append(decode_image(data, where, image_size))
    tally.update(conversion for _, _, conversion in decoded if conversion)
    modes, sizes = {mode for _, mode, _ in decoded}, {array.shape[:2] for array, _, _ in decoded}
    if len(modes) > 1 or len(sizes) > 1:
        if image_size is None:
            raise DataError(f"{source}: images of mixed sizes or modes (rows {start}..{start + len(batch) - 1}); "
                            f"pass --image-size S to read them all as RGB of one size")
        decoded = [(np.stack([a] * 3, axis=-1) if m == "L" else a, "RGB", c) for a, m, c in decoded]
    stacked = np.stack([array for array, _, _ in decoded])
    return torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2).copy())


def _array_chunk(batch, source: str) -> torch.Tensor:
    from vaediff.data.core import to_uint8_images

    return to_uint8_images(np.asarray(batch), source)


def _note(source: str, tally: Counter) -> None:
    parts = [f"{count} {NOTES[kind][count != 1]}" for kind, count in tally.items()]
    if parts:
        notice(f"{source}: {'; '.join(parts)}")
