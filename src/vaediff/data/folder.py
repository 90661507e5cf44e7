"""Image folders: `--dataset path/to/dir`.

Layouts (PNG, JPEG or BMP files, read with Pillow):
* `dir/CLASS/...`: labelled, one sub-folder a class (names sorted), split 80/20 by data.core's fixed rule; a
  class holds the images in its folder and in that folder's sub-folders at any depth (`CLASS/more/*.png`
  belongs to CLASS; the folder's own images first, then each sub-folder's, names sorted);
* `dir/train/CLASS/...` and `dir/test/CLASS/...`: the source's own split (both are needed);
* `dir/*.png` (or `dir/train/*.png` and `dir/test/*.png`): an unlabelled set; there, a sub-folder is a class.

Pixels become 8-bit grayscale or RGB as Pillow's modes say:
* 16-bit grayscale (I;16, or I holding 0..65535) is scaled to 8 bits (v / 257, rounded); wider integers by
  their mode's range (0..2^31 - 1); floats (F) from [0, 1] when they stay in it, else clipped to 0..255;
* transparency (RGBA, LA, PA, or a palette or colour marked transparent) is composited on white, so black
  glyphs on a transparent ground stay black glyphs on white. An alpha that is opaque everywhere is dropped.

Nothing is lost or converted silently: files that are not PNG/JPEG/BMP, hidden files and folders (names
starting with "."), folders beside train/ and test/, and the images converted as above are counted in one
note on stderr per load.

Images keep their size and mode when all share one (grayscale or RGB, 28, 32 or 64 pixels square); with
`--image-size S` mixed sizes are centre-cropped and resized to S (Pillow's ImageOps.fit, bilinear) and
mixed modes become RGB.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vaediff.console import notice
from vaediff.data.core import UNLABELLED, Dataset, ImageSplit, check_size, content_key, split_dataset
from vaediff.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")    # more than 8 bits a pixel: scaled to 'L'
GRAY_MODES = ("1", "L", "LA", "La", *DEEP_MODES)               # everything else (RGB, P, CMYK, ...) -> RGB
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
BACKGROUND = 255  # white: what a transparent pixel becomes
NOTES = {  # what the load note says of each count (singular, plural)
    "other": ("file that is not PNG/JPEG/BMP ignored", "files that are not PNG/JPEG/BMP ignored"),
    "hidden": ("hidden file or folder ignored", "hidden files or folders ignored"),
    "beside": ("folder beside train/ and test/ ignored", "folders beside train/ and test/ ignored"),
    "deep": ("image of more than 8 bits a pixel scaled to 8 bits",
             "images of more than 8 bits a pixel scaled to 8 bits"),
    "alpha": ("image with transparency composited on white", "images with transparency composited on white"),
}


# ---------------------------------------------------------------------------------------------------------
# Decoding


def _eight_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """Pixels of a deep mode (I;16, I, F) -> uint8 by the range the mode (or, for F, the data) implies."""
    values = np.nan_to_num(values.astype(np.float64))
    if mode == "F":
        top = 1.0 if values.min() >= 0 and values.max() <= 1 else 255.0
    else:
        top = 65535.0 if mode.startswith("I;16") or values.max() <= 65535 else 2.0**31 - 1
    return np.rint(np.clip(values, 0, top) * (255.0 / top)).astype(np.uint8)


def _flattened(image):
    """(`image` as an 'L' or 'RGB' Pillow image, the conversion that took: None, "deep" or "alpha")."""
    from PIL import Image

    gray = image.mode in GRAY_MODES
    if image.mode in DEEP_MODES:
        return Image.fromarray(_eight_bits(np.asarray(image), image.mode)), "deep"
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        image = image.convert("LA" if gray else "RGBA")
        pixels = np.asarray(image, dtype=np.uint32)
        colour, alpha = pixels[..., :-1], pixels[..., -1:]
        if alpha.min() < 255:
            flat = ((colour * alpha + BACKGROUND * (255 - alpha) + 127) // 255).astype(np.uint8)
            return Image.fromarray(flat[..., 0] if gray else flat), "alpha"
    return image.convert("L" if gray else "RGB"), None


def _too_large(where: str, exc: Exception) -> str:
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return (f"{where}: image too large ({size}; Pillow refuses more than {Image.MAX_IMAGE_PIXELS:,} as a possible "
            f"decompression bomb); shrink it first")


def decode_image(file, where: str, size: int | None) -> tuple[np.ndarray, str, str | None]:
    """Decode one image (a path or a binary file object; `where` names it in errors): (pixels as uint8 array
    (H, W) or (H, W, 3), its mode 'L' or 'RGB', the conversion made: None, "deep" or "alpha")."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning is several lines: refuse such a file instead
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                image.load()
                image, conversion = _flattened(image)
        if size is not None and image.size != (size, size):
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8), image.mode, conversion
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(_too_large(where, exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                        ) from None


def read_images(paths: list[Path], size: int | None, tally: Counter | None = None) -> torch.Tensor:
    """Decode `paths` into one uint8 (N, C, S, S) tensor; mixed sizes or modes are an error unless `size`.
    Conversions made (module docstring) are counted in `tally`.

    One thread: small PNGs decode faster than threads can hand them over (10,000 32x32 PNGs: 6,700 images/s
    here on one thread, 4,900 on two, 4,200 with a task per file; Pillow alone decodes 10,500)."""
    decoded = [decode_image(path, str(path), size) for path in paths]
    if tally is not None:
        tally.update(conversion for _, _, conversion in decoded if conversion)
    modes = {mode for _, mode, _ in decoded}
    if len(modes) > 1:
        if size is None:
            first = {mode: next(p for p, (_, m, _) in zip(paths, decoded, strict=True) if m == mode) for mode in modes}
            raise DataError(f"mixed grayscale and colour images ({first['L']} is grayscale, {first['RGB']} colour); "
                            f"pass --image-size S to read them all as RGB")
        decoded = [(np.stack([a] * 3, axis=-1) if m == "L" else a, "RGB", c) for a, m, c in decoded]
    shapes = {array.shape for array, _, _ in decoded}
    if len(shapes) > 1:
        sizes = sorted({f"{s[1]}x{s[0]}" for s in shapes})
        raise DataError(f"images of different sizes ({', '.join(sizes)}): pass --image-size S to resize them all")
    stacked = np.stack([array for array, _, _ in decoded])
    images = torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2).copy())
    return images.contiguous()


# ---------------------------------------------------------------------------------------------------------
# Finding the files


def _listing(directory: Path, tally: Counter) -> tuple[list[Path], list[Path]]:
    """(image files, visible sub-folders) directly in `directory`, sorted; what else it holds is counted."""
    images, folders = [], []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            tally["hidden"] += 1
        elif entry.is_dir():
            folders.append(entry)
        elif entry.suffix.lower() in EXTENSIONS and entry.is_file():
            images.append(entry)
        else:
            tally["other"] += 1
    return images, folders


def _class_images(folder: Path, tally: Counter, seen: set | None = None) -> list[Path]:
    """The images of one class: in its folder, then in each sub-folder at any depth (each folder once, so a
    link back up does not loop)."""
    seen = set() if seen is None else seen
    seen.add(folder.resolve())
    images, folders = _listing(folder, tally)
    for sub in folders:
        if sub.resolve() not in seen:
            images += _class_images(sub, tally, seen)
    return images


def _labelled_files(directory: Path, classes: list[Path], tally: Counter, split: str | None
                    ) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(files, labels, class names) of class sub-folders; one line for a class folder without images."""
    found = [_class_images(folder, tally) for folder in classes]
    if split and not any(found):
        raise DataError(f"{directory}: the {split} split is empty (no PNG, JPEG or BMP images in its class folders)")
    empty = next((folder for folder, files in zip(classes, found, strict=True) if not files), None)
    if empty is not None:
        raise DataError(f"{empty}: class folder without images (PNG, JPEG or BMP)")
    labels = [label for label, files in enumerate(found) for _ in files]
    return [path for files in found for path in files], labels, tuple(folder.name for folder in classes)


def _scan(directory: Path, tally: Counter, split: str | None = None
          ) -> tuple[list[Path], list[int], tuple[str, ...], bool]:
    """(files, labels, class names, labelled) of one folder: the whole set, or (`split`) train/ or test/."""
    images, classes = _listing(directory, tally)
    if classes:
        if images:
            raise DataError(f"{directory}: holds both images and sub-folders; put every image in a class folder "
                            f"(labelled) or none (unlabelled)")
        files, labels, names = _labelled_files(directory, classes, tally, split)
        if len(names) < 2:
            raise DataError(f"{directory}: one class folder ({names[0]}); a labelled set needs at least 2 classes, "
                            f"and an unlabelled one keeps its images directly in the folder")
        return files, labels, names, True
    if not images:
        if split:
            raise DataError(f"{directory}: the {split} split is empty (no PNG, JPEG or BMP images)")
        raise DataError(f"{directory}: no images (PNG, JPEG or BMP) in it or in class sub-folders")
    return images, [0] * len(images), UNLABELLED, False


def _split_folders(directory: Path, tally: Counter) -> bool:
    """Whether `directory` holds train/ and test/; one line when it holds only one of them, or images
    beside them. Other folders beside them are counted (a val/ split, say)."""
    train, test = (directory / "train").is_dir(), (directory / "test").is_dir()
    if train != test:
        have, lack = ("train", "test") if train else ("test", "train")
        raise DataError(f"{directory}: has {have}/ but no {lack}/ (give both, or put class folders directly in "
                        f"{directory})")
    if not train:
        return False
    images, folders = _listing(directory, tally)
    if images:
        raise DataError(f"{directory}: holds images beside train/ and test/ ({images[0].name}); move them into "
                        f"one of the splits")
    tally["beside"] += len([f for f in folders if f.name not in ("train", "test")])
    return True


def _note(directory: Path, tally: Counter) -> None:
    """One line on stderr saying what the load skipped or converted (nothing when it was neither)."""
    parts = [f"{tally[key]} {one if tally[key] == 1 else many}" for key, (one, many) in NOTES.items() if tally[key]]
    if parts:
        notice(f"vaediff: note: image folder {directory}: {'; '.join(parts)}")


def load_folder(directory: Path, image_size: int | None = None) -> Dataset:
    """A Dataset from an image folder (module docstring for the layouts and conversions)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder")
    name = directory.resolve().name
    tally: Counter = Counter()
    has_splits = _split_folders(directory, tally)
    if has_splits:
        (train_files, train_labels, names, labelled), (test_files, test_labels, test_names, _) = (
            _scan(directory / "train", tally, "train"), _scan(directory / "test", tally, "test"))
        if test_names != names:
            raise DataError(f"{directory}: train/ has classes {', '.join(names)} but test/ has "
                            f"{', '.join(test_names)}")
        images = read_images(train_files + test_files, image_size, tally)
    else:
        train_files, train_labels, names, labelled = _scan(directory, tally)
        images = read_images(train_files, image_size, tally)
    check_size(images, str(directory))
    labels = torch.tensor(train_labels + (test_labels if has_splits else []), dtype=torch.int64)
    key = content_key(name, images, labels)
    source = f"image folder {directory.resolve()}"
    if not has_splits:
        dataset = split_dataset(name, images, labels, names, source, labelled, key)
    else:
        count = len(train_files)
        dataset = Dataset(name, ImageSplit(images[:count], labels[:count]),
                          ImageSplit(images[count:], labels[count:]), names, source, labelled, key)
    _note(directory, tally)  # after every check: an error stays the one line on stderr
    return dataset
