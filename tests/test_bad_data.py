"""Issue 30, nothing lost and nothing silently wrong: odd but valid input gives the right pixels (and one note
saying what was converted or skipped); input that cannot be used is one line and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, visible_lines
from helpers.own_data import gray_picture, shape_arrays, write_cifar_files, write_pictures, write_shape_folder

from vaediff import metrics
from vaediff.data import load_dataset
from vaediff.errors import DataError


def _note(capsys) -> list[str]:
    return [line for line in visible_lines(capsys.readouterr().err) if "note:" in line]


# ---------------------------------------------------------------------------------------------------------
# Deep pixels: 16-bit (and 32-bit, float) grayscale scaled to 8 bits, not clipped to white


def test_a_16_bit_png_loads_as_its_8_bit_twin(tmp_path, capsys):
    from PIL import Image

    eight = write_pictures(tmp_path / "eight", lambda c, i: Image.fromarray(gray_picture(c, i)))
    sixteen = write_pictures(tmp_path / "sixteen",
                             lambda c, i: Image.fromarray(gray_picture(c, i).astype(np.uint16) * 257))
    assert Image.open(sixteen / "class_0" / "000.png").mode.startswith("I")
    reference, deep = load_dataset(str(eight)), load_dataset(str(sixteen))
    assert torch.equal(deep.train.images, reference.train.images)
    assert torch.equal(deep.test.images, reference.test.images)
    assert _note(capsys) == [f"vaediff: note: image folder {sixteen}: 10 images of more than 8 bits a pixel scaled "
                             f"to 8 bits"]


@pytest.mark.parametrize(("dtype", "scale"), [(np.int32, 257), (np.int32, 2**23), (np.float32, 1 / 255),
                                               (np.float32, 1.0)])
def test_deep_modes_are_scaled_by_their_range(dtype, scale):
    from PIL import Image

    from vaediff.data.folder import _flattened

    picture = gray_picture(1, 3)
    image = Image.fromarray((picture.astype(np.float64) * scale).astype(dtype))
    assert image.mode in ("I", "F")
    flat, conversion = _flattened(image)
    assert flat.mode == "L" and conversion == "deep"
    assert np.abs(np.asarray(flat).astype(int) - picture).max() <= 1


# ---------------------------------------------------------------------------------------------------------
# Transparency composited on white


def _glyph_alpha(label: int, index: int) -> np.ndarray:
    """Alpha of a glyph: opaque (and anti-aliased at a few pixels) where the shape is, transparent elsewhere."""
    from helpers.own_data import shape_image

    alpha = np.where(shape_image(label, index, 28, colour=False) > 0, 255, 0).astype(np.uint8)
    alpha[0, :4] = (40, 90, 160, 220)  # partly transparent pixels
    return alpha


def _transparent(mode: str):
    """make(label, index) for write_pictures: black glyphs on a transparent ground, in `mode`."""
    from PIL import Image

    def make(label: int, index: int):
        alpha = _glyph_alpha(label, index)
        if mode == "RGBA":
            return Image.fromarray(np.dstack([np.zeros((28, 28, 3), np.uint8), alpha]))
        if mode == "LA":
            return Image.fromarray(np.dstack([np.zeros((28, 28), np.uint8), alpha]))
        image = Image.frombytes("P", (28, 28), np.where(alpha == 255, 1, 0).astype(np.uint8).tobytes())
        image.putpalette([255, 0, 0, 0, 0, 0])  # the transparent index is red: white must win
        image.info["transparency"] = 0
        return image

    return make


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_glyphs_are_composited_on_white(mode, tmp_path, capsys):
    folder = write_pictures(tmp_path / mode, _transparent(mode))
    data = load_dataset(str(folder))
    alpha = _glyph_alpha(0, 0)
    if mode == "P":
        alpha = np.where(alpha == 255, 255, 0)  # a palette is all or nothing
    expected = torch.from_numpy((255 - alpha).astype(np.uint8))
    assert data.shape.channels == (1 if mode == "LA" else 3)
    assert all(torch.equal(channel, expected) for channel in data.train.images[0])
    assert float(data.train.as_float().mean()) > 0.5  # mostly white paper, not all black
    assert _note(capsys) == [f"vaediff: note: image folder {folder}: 10 images with transparency composited on white"]


def test_an_opaque_alpha_channel_is_dropped_without_a_note(tmp_path, capsys):
    from helpers.own_data import shape_image
    from PIL import Image

    folder = write_pictures(tmp_path / "opaque", lambda c, i: Image.fromarray(shape_image(c, i)).convert("RGBA"))
    data = load_dataset(str(folder))
    assert torch.equal(data.train.images[0], torch.from_numpy(shape_image(0, 0).copy()).permute(2, 0, 1))
    assert _note(capsys) == []


# ---------------------------------------------------------------------------------------------------------
# Sub-folders inside a class, and one note for what was skipped


def test_images_in_sub_folders_of_a_class_belong_to_it(tmp_path, capsys):
    from helpers.own_data import shape_image
    from PIL import Image

    folder = write_shape_folder(tmp_path / "nested", classes=2, per_class=5)
    for depth, sub in enumerate(("more", "more/deeper")):
        (folder / "class_1" / sub).mkdir(parents=True)
        for index in range(5):
            Image.fromarray(shape_image(1, 100 + 10 * depth + index)).save(folder / "class_1" / sub / f"{index}.png")
    data = load_dataset(str(folder))
    assert data.train.class_counts(2) + data.test.class_counts(2) == [4, 12, 1, 3]
    assert _note(capsys) == []


def test_skipped_files_and_conversions_are_counted_in_one_note(tmp_path, capsys):
    from PIL import Image

    folder = write_shape_folder(tmp_path / "mixed", classes=2, per_class=5, size=28, colour=False)
    (folder / "README.txt").write_text("shapes\n")
    (folder / "class_0" / "labels.csv").write_text("a,b\n")
    (folder / "class_1" / ".DS_Store").write_bytes(b"\0")
    (folder / "class_1" / ".thumbnails").mkdir()
    Image.fromarray(np.dstack([np.zeros((28, 28), np.uint8), _glyph_alpha(1, 9)])).save(folder / "class_1" / "a.png")
    Image.fromarray(gray_picture(1, 9).astype(np.uint16) * 257).save(folder / "class_1" / "b.png")
    data = load_dataset(str(folder))
    assert (len(data.train), len(data.test)) == (10, 2)  # 5 + 7 images, every fifth of a class a test image
    assert _note(capsys) == [f"vaediff: note: image folder {folder}: 2 files that are not PNG/JPEG/BMP ignored; "
                             f"2 hidden files or folders ignored; 1 image of more than 8 bits a pixel scaled to 8 bits; "
                             f"1 image with transparency composited on white"]


def test_a_folder_beside_train_and_test_is_counted(tmp_path, capsys):
    write_shape_folder(tmp_path / "split" / "train", classes=2, per_class=5)
    write_shape_folder(tmp_path / "split" / "test", classes=2, per_class=2)
    write_shape_folder(tmp_path / "split" / "val", classes=2, per_class=2)
    data = load_dataset(str(tmp_path / "split"))
    assert (len(data.train), len(data.test)) == (10, 4)
    assert _note(capsys) == [f"vaediff: note: image folder {tmp_path / 'split'}: 1 folder beside train/ and test/ "
                             f"ignored"]


# ---------------------------------------------------------------------------------------------------------
# Other sources read right: .npy images, CIFAR names in Latin-1


@pytest.mark.parametrize("colour", [False, True])
def test_an_npy_file_of_uint8_images_is_an_unlabelled_set(colour, tmp_path):
    images, _ = shape_arrays(classes=2, per_class=10, size=28, colour=colour)
    np.save(tmp_path / "images.npy", images)
    data = load_dataset(str(tmp_path / "images.npy"))
    assert not data.labelled and (len(data.train), len(data.test)) == (16, 4)
    assert tuple(data.train.images.shape[1:]) == ((3 if colour else 1), 28, 28)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8-sig"])
def test_cifar_class_names_that_are_not_plain_utf_8(encoding, tmp_path):
    root = write_cifar_files(tmp_path / "cifar", train_per_file=2, test=2)
    names = ["avión", "automóvil", "pájaro", "gato", "ciervo", "perro", "rana", "caballo", "barco", "camión"]
    (root / "batches.meta.txt").write_bytes("\n".join(names).encode(encoding) + b"\n")
    assert load_dataset("cifar10", root, download=False).class_names == tuple(names)


def test_npz_class_names_as_bytes_are_decoded(tmp_path):
    images, labels = shape_arrays(classes=2, per_class=5)
    np.savez(tmp_path / "bytes.npz", images=images, labels=labels, class_names=np.array([b"disc", b"square"]))
    assert load_dataset(str(tmp_path / "bytes.npz")).class_names == ("disc", "square")


# ---------------------------------------------------------------------------------------------------------
# Input that cannot be used: one line, exit code 2


def _npz(tmp_path, **arrays):
    images, labels = shape_arrays(classes=2, per_class=10, size=28, colour=False)
    arrays = {"images": images, "labels": labels, **arrays}
    np.savez(tmp_path / "set.npz", **{key: value for key, value in arrays.items() if value is not None})
    return tmp_path / "set.npz"


def _split_folder(tmp_path, train: bool = True, test: bool = True, test_classes: int = 2, test_images: int = 2):
    root = tmp_path / "split"
    if train:
        write_shape_folder(root / "train", classes=2, per_class=5)
    if test:
        (root / "test").mkdir(parents=True)
        for label in range(test_classes):
            (root / "test" / f"class_{label}").mkdir()
        if test_images:
            write_shape_folder(root / "test", classes=2, per_class=test_images)
    return root


BAD = {  # case -> (write it: tmp_path -> the --dataset argument, fragments of the one line)
    "class_names 2-D": (lambda p: _npz(p, class_names=np.array([["a", "b"], ["c", "d"]])),
                        ["'class_names' must be a 1-D array", "(2, 2)"]),
    "class_names 0-d": (lambda p: _npz(p, class_names=np.array("ab")), ["'class_names' must be a 1-D array", "()"]),
    "class_names too many": (lambda p: _npz(p, class_names=np.array(list("abc"))),
                             ["'class_names' has 3 names but the labels use 2 classes"]),
    "class_names too few": (lambda p: _npz(p, class_names=np.array(["a"])), ["labels out of range 0..0"]),
    "class_names without labels": (lambda p: _npz(p, labels=None, class_names=np.array(list("ab"))),
                                   ["'class_names' but no 'labels'"]),
    "npz empty test split": (lambda p: _npz(p, x_test=np.zeros((0, 28, 28), np.uint8),
                                            y_test=np.zeros(0, np.int64)), ["test split is empty", "'x_test'"]),
    "npz no images": (lambda p: _npz(p, images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64)),
                      ["no images", "(0, 28, 28)"]),
    "folder empty test": (lambda p: _split_folder(p, test_classes=0, test_images=0), ["test split is empty"]),
    "folder empty test classes": (lambda p: _split_folder(p, test_images=0), ["test split is empty"]),
    "train without test": (lambda p: _split_folder(p, test=False),
                           ["has train/ but no test/ (give both, or put class folders directly in"]),
    "test without train": (lambda p: _split_folder(p, train=False), ["has test/ but no train/"]),
    "images beside train and test": (lambda p: _beside(_split_folder(p)), ["holds images beside train/ and test/"]),
    "text named npz": (lambda p: _text(p / "x.npz"), ["x.npz: not an .npz (zip) archive"]),
    "text named npy": (lambda p: _text(p / "x.npy"), ["x.npy: not an .npz (zip) archive or .npy file"]),
    "npy of floats": (lambda p: _save(p / "x.npy", np.zeros((10, 28, 28), np.float32)), ["must be uint8"]),
    "npy of one image": (lambda p: _save(p / "x.npy", np.zeros((28, 28), np.uint8)), ["(N, H, W)", "(28, 28)"]),
}


def _beside(root):
    (root / "stray.png").write_bytes((root / "train" / "class_0" / "00_000.png").read_bytes())
    return root


def _text(path):
    path.write_text("not an archive\n")
    return path


def _save(path, array):
    np.save(path, array)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_unusable_input_is_one_line(case, tmp_path, cli):
    write, fragments = BAD[case]
    source = write(tmp_path)
    code, _, err = cli("eda", "--dataset", source, "--out", tmp_path / "out")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", [40, 64])  # past Pillow's limit (a warning), past twice it (an error)
def test_an_image_too_large_to_decode_is_one_line(side, tmp_path, cli, monkeypatch):
    from PIL import Image

    folder = write_shape_folder(tmp_path / "big", classes=2, per_class=5, size=28, colour=False)
    Image.new("L", (side, side)).save(folder / "class_0" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 28x28 images pass, 1,600 pixels warn, 4,096 fail
    code, _, err = cli("eda", "--dataset", folder, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "huge.png: image too large", f"{side * side:,} pixels", "more than 1,000")


@pytest.mark.parametrize("k", [3, 5])
def test_neighbour_metrics_refuse_too_few_points(k):
    points = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    if k == 3:
        assert metrics.precision_recall(points, points, k=k)[0] == 1.0  # 4 points: k = 3 neighbours each
        with pytest.raises(DataError, match="at least 4 images on each side, got 3"):
            metrics.precision_recall(points, points[:3], k=k)
    else:
        with pytest.raises(DataError, match="need at least 6 images on each side, got 4"):
            metrics.density_coverage(points, points, k=k)
