"""Small data sets in the user's formats, written by the tests themselves: image folders of coloured shapes,
.npz files, CIFAR-10-format binary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 30), (160, 60, 200), (30, 200, 200),
           (240, 120, 20), (120, 120, 120), (250, 100, 180), (90, 50, 20)]


def shape_image(label: int, index: int, size: int = 32, colour: bool = True) -> np.ndarray:
    """One image of class `label`: its own colour and form (square, disc, triangle, bar, ...), placed and
    sized a little differently for each `index`, so that a model can learn the classes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(label * 1000 + index)
    image = Image.new("RGB" if colour else "L", (size, size), (0, 0, 0) if colour else 0)
    draw = ImageDraw.Draw(image)
    half = size * rng.uniform(0.22, 0.32)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
    fill = COLOURS[label % len(COLOURS)] if colour else 80 + 17 * (label % 10)
    box = (cx - half, cy - half, cx + half, cy + half)
    form = label % 4
    if form == 0:
        draw.rectangle(box, fill=fill)
    elif form == 1:
        draw.ellipse(box, fill=fill)
    elif form == 2:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    else:
        draw.rectangle((cx - half, cy - half / 3, cx + half, cy + half / 3), fill=fill)
    return np.asarray(image)


def write_shape_folder(root: Path, classes: int = 4, per_class: int = 25, size: int = 32, colour: bool = True,
                       labelled: bool = True) -> Path:
    """root/CLASS/NNN.png (labelled) or root/NNN.png (unlabelled) images of coloured shapes."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for label in range(classes):
        folder = root / f"class_{label}" if labelled else root
        folder.mkdir(exist_ok=True)
        for index in range(per_class):
            Image.fromarray(shape_image(label, index, size, colour)).save(folder / f"{label:02d}_{index:03d}.png")
    return root


def shape_arrays(classes: int = 4, per_class: int = 25, size: int = 32, colour: bool = True):
    images = np.stack([shape_image(c, i, size, colour) for c in range(classes) for i in range(per_class)])
    labels = np.repeat(np.arange(classes), per_class)
    return images, labels


def write_cifar_files(directory: Path, train_per_file: int = 40, test: int = 60) -> Path:
    """CIFAR-10's binary layout (data_batch_1..5.bin, test_batch.bin, batches.meta.txt), few records each:
    1 label byte + 1,024 red, 1,024 green, 1,024 blue bytes per record."""
    directory.mkdir(parents=True, exist_ok=True)

    def records(count: int, offset: int) -> bytes:
        rows = []
        for k in range(count):
            label = (k + offset) % 10
            pixels = shape_image(label, k + offset, 32, True).transpose(2, 0, 1)  # channel-major, as CIFAR stores
            rows.append(bytes([label]) + pixels.astype(np.uint8).tobytes())
        return b"".join(rows)

    for batch in range(1, 6):
        (directory / f"data_batch_{batch}.bin").write_bytes(records(train_per_file, 1000 * batch))
    (directory / "test_batch.bin").write_bytes(records(test, 0))
    (directory / "batches.meta.txt").write_text("\n".join(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n")
    return directory


def gray_picture(label: int, index: int, size: int = 28) -> np.ndarray:
    """A grayscale picture with many levels (a diagonal gradient under the shape of `shape_image`), uint8."""
    ramp = np.add.outer(np.arange(size), np.arange(size)) * (200 // (2 * size)) + (index * 7) % 40
    return np.maximum(ramp, shape_image(label, index, size, colour=False)).astype(np.uint8)


def write_pictures(root: Path, make, classes: int = 2, per_class: int = 5) -> Path:
    """root/class_L/NNN.png for each class L, `make(label, index)` giving a Pillow image (any mode)."""
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            make(label, index).save(folder / f"{index:03d}.png")
    return root
