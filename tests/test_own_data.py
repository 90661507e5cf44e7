"""The user's own images: image folders, .npz arrays and CIFAR-10 binary files, in colour and other sizes;
bad input is one line and nothing written; every model follows the data's shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.own_data import shape_arrays, write_cifar_files, write_shape_folder

from vaediff.data import load_dataset
from vaediff.data.core import stratified_split
from vaediff.errors import DataError

TINY_DIFFUSION = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8,
                  "sampling_steps": 3}
TINY_LATENT = {"autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
               "denoiser": {"block_out_channels": [16], "norm_num_groups": 4, "attention_head_dim": 8,
                            "sampling_steps": 3}}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A labelled folder of 32x32 RGB shapes: 4 classes of 25 images."""
    return write_shape_folder(tmp_path_factory.mktemp("data") / "shapes")


def test_labelled_folder_loads_as_uint8_with_a_fixed_stratified_split(shapes):
    data = load_dataset(str(shapes))
    assert data.shape.to_dict() == {"channels": 3, "image_size": 32, "num_classes": 4, "labelled": True}
    assert data.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert data.train.images.dtype == torch.uint8 and tuple(data.train.images.shape) == (80, 3, 32, 32)
    assert data.test.class_counts(4) == [5] * 4 and data.train.class_counts(4) == [20] * 4
    from PIL import Image

    first = np.asarray(Image.open(shapes / "class_0" / "00_000.png"))
    assert torch.equal(data.train.images[0], torch.from_numpy(first.copy()).permute(2, 0, 1))  # channel order kept
    again = load_dataset(str(shapes))
    assert torch.equal(again.test.images, data.test.images) and again.key == data.key


def test_train_and_test_folders_and_an_unlabelled_folder(tmp_path):
    write_shape_folder(tmp_path / "split" / "train", per_class=8)
    write_shape_folder(tmp_path / "split" / "test", per_class=3)
    data = load_dataset(str(tmp_path / "split"))
    assert (len(data.train), len(data.test)) == (32, 12)
    flat = load_dataset(str(write_shape_folder(tmp_path / "flat", classes=2, per_class=10, labelled=False)))
    assert not flat.labelled and flat.class_names == ("all",) and (len(flat.train), len(flat.test)) == (16, 4)
    assert flat.shape.num_classes == 1


def test_npz_colour_and_grayscale_with_and_without_a_test_split(tmp_path):
    images, labels = shape_arrays()
    np.savez(tmp_path / "colour.npz", images=images, labels=labels, class_names=np.array(list("abcd")))
    data = load_dataset(str(tmp_path / "colour.npz"))
    assert data.shape.channels == 3 and data.class_names == ("a", "b", "c", "d") and len(data.test) == 20
    gray, gray_labels = shape_arrays(classes=3, size=28, colour=False)
    np.savez(tmp_path / "gray.npz", images=gray[:60], labels=gray_labels[:60], x_test=gray[60:],
             y_test=gray_labels[60:])
    data = load_dataset(str(tmp_path / "gray.npz"))
    assert tuple(data.train.images.shape) == (60, 1, 28, 28) and len(data.test) == 15 and data.num_classes == 3


def test_cifar10_binary_files(tmp_path):
    root = write_cifar_files(tmp_path / "cifar")
    data = load_dataset("cifar10", root, download=False)
    assert tuple(data.train.images.shape) == (200, 3, 32, 32) and len(data.test) == 60
    assert data.class_names[0] == "airplane" and int(data.train.labels[0]) == 1000 % 10
    from helpers.own_data import shape_image

    expected = torch.from_numpy(shape_image(0, 0, 32, True).copy()).permute(2, 0, 1)
    assert torch.equal(data.test.images[0], expected)  # 1,024 red, then green, then blue bytes, row-major


def test_image_size_resizes_mixed_sizes_and_other_sizes_need_it(tmp_path):
    from PIL import Image

    folder = write_shape_folder(tmp_path / "mixed", classes=2, per_class=6, size=40)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(folder / "class_0" / "big.png")
    with pytest.raises(DataError, match="different sizes"):
        load_dataset(str(folder))
    data = load_dataset(str(folder), image_size=32)
    assert tuple(data.train.images.shape[1:]) == (3, 32, 32)
    only_40 = write_shape_folder(tmp_path / "forty", classes=2, per_class=6, size=40)
    with pytest.raises(DataError, match="--image-size"):
        load_dataset(str(only_40))
    assert load_dataset("mnist-5k", image_size=32).shape.image_size == 32


@pytest.mark.parametrize("case", ["empty", "no_images_in_class", "corrupt", "mixed_modes", "pickled", "labels",
                                  "cifar_length"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, cli):
    from conftest import assert_one_line_error

    source, extra, fragment = _bad_source(case, tmp_path)
    out = tmp_path / "out"
    code, _, err = cli("train", "vae", "--dataset", source, "--out", out, "--max-steps", "2", *extra)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def _bad_source(case: str, tmp_path):
    from PIL import Image

    if case == "empty":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", [], "no images"
    if case == "no_images_in_class":
        folder = write_shape_folder(tmp_path / "d", classes=2, per_class=5)
        (folder / "class_9").mkdir()
        return folder, [], "class_9: class folder without images"
    if case == "corrupt":
        folder = write_shape_folder(tmp_path / "d", classes=2, per_class=5)
        good = (folder / "class_1" / "01_000.png").read_bytes()
        (folder / "class_1" / "01_000.png").write_bytes(good[: len(good) // 2])
        return folder, [], "01_000.png"
    if case == "mixed_modes":
        folder = write_shape_folder(tmp_path / "d", classes=2, per_class=5)
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "class_0" / "gray.png")
        return folder, [], "--image-size"
    if case == "pickled":
        np.savez(tmp_path / "bad.npz", images=np.array([object()] * 3, dtype=object))
        return tmp_path / "bad.npz", [], "pickled"
    if case == "labels":
        images, labels = shape_arrays(classes=2, per_class=10)
        np.savez(tmp_path / "bad.npz", images=images, labels=labels, class_names=np.array(["only"]))
        return tmp_path / "bad.npz", [], "out of range"
    root = write_cifar_files(tmp_path / "cifar")
    (root / "data_batch_3.bin").write_bytes((root / "data_batch_3.bin").read_bytes()[:-10])
    return "cifar10", ["--data-dir", root], "data_batch_3.bin"


def test_fashion_mnist_as_a_png_folder_gives_the_idx_tensors(tmp_path):
    from conftest import require_system_package
    from PIL import Image

    from vaediff.data import DEBIAN_FASHION_DIR

    require_system_package("dataset-fashion-mnist", DEBIAN_FASHION_DIR.is_dir())
    idx = load_dataset("fashion-mnist", download=False)
    count = 500
    images, labels = idx.test.images[:count], idx.test.labels[:count]
    for k in range(count):  # class folders named so that they sort in label order, files in index order
        folder = tmp_path / "fashion" / f"{int(labels[k]):02d}_{idx.class_names[int(labels[k])].replace('/', '-')}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[k, 0].numpy()).save(folder / f"{k:05d}.png")
    folder_data = load_dataset(str(tmp_path / "fashion"))
    # the folder lists class 0's files first (in index order), then class 1's ...; then the fixed 80/20 split
    order = torch.sort(labels, stable=True).indices
    train_index, test_index = stratified_split(labels[order].numpy())
    assert torch.equal(folder_data.train.images, images[order][train_index])
    assert torch.equal(folder_data.test.images, images[order][test_index])
    assert torch.equal(folder_data.test.labels, labels[order][test_index])


@pytest.fixture(scope="module")
def colour_runs(shapes, tmp_path_factory):
    """Every model trained a few steps on 32x32 RGB shapes (evaluator and CAS in a private cache)."""
    import os

    from vaediff.families import train_run

    root = tmp_path_factory.mktemp("runs")
    previous = os.environ.get("VAEDIFF_CACHE_DIR")
    os.environ["VAEDIFF_CACHE_DIR"] = str(root / "cache")
    options = {"vae": {}, "cvae": {}, "diffusion": {"model": TINY_DIFFUSION},
               "latent-diffusion": {"model": TINY_LATENT}}
    runs = {name: train_run(name, root / name, str(shapes), options=opts, train_options={"max_steps": 4,
                                                                                           "batch_size": 16},
                            progress=False).run_dir for name, opts in options.items()}
    yield runs
    if previous is None:
        os.environ.pop("VAEDIFF_CACHE_DIR", None)
    else:
        os.environ["VAEDIFF_CACHE_DIR"] = previous


def test_every_model_trains_samples_evaluates_and_is_reported_on_colour_data(colour_runs, shapes, cli, tmp_path):
    from PIL import Image

    from vaediff.evaluate import evaluate_run
    from vaediff.families import load_run
    from vaediff.report import compare

    for name, run_dir in colour_runs.items():
        config = json.loads((run_dir / "config.json").read_text())
        assert config["settings"]["data_shape"] == {"channels": 3, "image_size": 32, "num_classes": 4,
                                                    "labelled": True}, name
        run = load_run(run_dir)
        images = run.generate(4, torch.arange(4) if run.conditional else None, torch.Generator().manual_seed(0))
        assert images.shape == (4, 3, 32, 32), name
        code, _, err = cli("sample", run_dir, "--out", tmp_path / f"{name}.png", "--n", "8")
        assert code == 0, err
        assert Image.open(tmp_path / f"{name}.png").mode in ("RGB", "RGBA")
        metrics = evaluate_run(run_dir, n_samples=20, iw_samples=2, progress=False, ignore_unused=True)
        assert "fid" in metrics and ("class_accuracy" in metrics) == run.conditional, name
        assert ("cas" in metrics) == run.conditional and len(metrics["predicted_class_share"]) == 4
    (tmp_path / "report").mkdir()
    report = compare(list(colour_runs.values()), tmp_path / "report", curves=False, progress=False)
    text = report.read_text()
    assert all(f"| {name}" in text for name in colour_runs)


def test_a_run_refuses_data_of_another_shape(colour_runs, shapes, tmp_path, cli):
    import shutil

    from conftest import assert_one_line_error

    copy = tmp_path / "vae"
    shutil.copytree(colour_runs["vae"], copy)
    config = json.loads((copy / "config.json").read_text())
    config["settings"]["dataset"] = "mnist-5k"  # as if the source now gave other images
    (copy / "config.json").write_text(json.dumps(config))
    code, _, err = cli("evaluate", copy, "--n-samples", "20")
    assert_one_line_error(code, err, "3x32x32", "1x28x28")
    code, _, err = cli("train", "vae", "--out", copy, "--resume", "--max-steps", "8")
    assert_one_line_error(code, err, "3x32x32")


def test_unlabelled_data_trains_unconditional_models_and_refuses_conditional_ones(tmp_path, cli):
    from conftest import assert_one_line_error

    from vaediff.evaluate import evaluate_run

    folder = write_shape_folder(tmp_path / "flat", classes=3, per_class=10, labelled=False)
    code, _, err = cli("train", "cvae", "--dataset", folder, "--out", tmp_path / "cvae", "--max-steps", "2")
    assert_one_line_error(code, err, "unlabelled")
    assert not (tmp_path / "cvae").exists()
    code, _, err = cli("train", "diffusion", "--dataset", folder, "--out", tmp_path / "diffusion", "--max-steps",
                       "2", "--batch-size", "8", "--model-config", json.dumps(TINY_DIFFUSION))
    assert code == 0, err
    code, _, err = cli("sample", tmp_path / "diffusion", "--out", tmp_path / "g.png", "--guidance", "3")
    assert_one_line_error(code, err, "unlabelled")
    import os

    os.environ["VAEDIFF_CACHE_DIR"], previous = str(tmp_path / "cache"), os.environ.get("VAEDIFF_CACHE_DIR")
    try:
        metrics = evaluate_run(tmp_path / "diffusion", n_samples=20, progress=False)
    finally:
        os.environ.pop("VAEDIFF_CACHE_DIR") if previous is None else os.environ.update(VAEDIFF_CACHE_DIR=previous)
    assert "fid" in metrics and "class_accuracy" not in metrics and "cas" not in metrics and "is" not in metrics
