"""Hugging Face `datasets` as a source: a save_to_disk folder, a parquet or arrow file and hf:NAME, built
here with a ClassLabel; the columns found by type or named; their own split kept; bad input one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from helpers.own_data import shape_arrays

from vaediff.data import load_dataset
from vaediff.errors import DataError

datasets = pytest.importorskip("datasets")  # a dependency of vaediff: present wherever it is installed

NAMES = ["disc", "square", "bar"]


def _table(images: np.ndarray, labels: np.ndarray, extra: dict | None = None):
    from PIL import Image

    features = {"picture": datasets.Image(), "kind": datasets.ClassLabel(names=NAMES)}
    columns = {"picture": [Image.fromarray(a) for a in images], "kind": labels.tolist()}
    for name, (feature, values) in (extra or {}).items():
        features[name], columns[name] = feature, values
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same 28x28 grayscale shapes (3 classes of 15) as a DatasetDict folder (12 train + 3 test a
    class), one parquet file and one arrow file (a single split each)."""
    root = tmp_path_factory.mktemp("hf")
    images, labels = shape_arrays(classes=3, per_class=15, size=28, colour=False)
    is_test = np.arange(len(labels)) % 15 >= 12
    table = _table(images, labels)
    datasets.DatasetDict(train=table.select(np.flatnonzero(~is_test)),
                         test=table.select(np.flatnonzero(is_test))).save_to_disk(root / "saved")
    table.to_parquet(root / "shapes.parquet")
    table.save_to_disk(root / "single")
    return {"saved": root / "saved", "parquet": root / "shapes.parquet", "images": images, "labels": labels,
            "is_test": is_test, "arrow": next((root / "single").glob("*.arrow")), "root": root}


def test_a_saved_dataset_dict_keeps_its_split_and_classlabel_names(sources):
    data = load_dataset(str(sources["saved"]))
    assert data.class_names == tuple(NAMES) and data.labelled
    assert (len(data.train), len(data.test)) == (36, 9) and data.train.images.dtype == torch.uint8
    assert tuple(data.train.images.shape) == (36, 1, 28, 28)
    expected = torch.from_numpy(sources["images"][~sources["is_test"]])[:, None]
    assert torch.equal(data.train.images, expected)  # the pixels, in the source's order
    assert data.train.labels.tolist() == sources["labels"][~sources["is_test"]].tolist()


def test_parquet_and_arrow_files_are_split_80_20_like_every_single_pool(sources, tmp_path):
    parquet, arrow = load_dataset(str(sources["parquet"])), load_dataset(str(sources["arrow"]))
    np.savez(tmp_path / "same.npz", images=sources["images"], labels=sources["labels"])
    npz = load_dataset(str(tmp_path / "same.npz"))
    for data in (parquet, arrow):
        assert data.class_names == tuple(NAMES) and data.test.class_counts(3) == [3, 3, 3]
        assert torch.equal(data.train.images, npz.train.images) and torch.equal(data.test.labels, npz.test.labels)
    assert parquet.key != npz.key  # a cache name of its own (the source's name and a hash of its pixels)


def test_columns_are_named_where_types_do_not_say(sources, tmp_path):
    images, labels = sources["images"], sources["labels"]
    from PIL import Image

    flipped = [Image.fromarray(a[:, ::-1].copy()) for a in images]
    strings = [NAMES[i].upper() for i in labels]
    table = _table(images, labels, {"mirror": (datasets.Image(), flipped), "word": (datasets.Value("string"), strings)})
    table.to_parquet(tmp_path / "two.parquet")
    with pytest.raises(DataError, match="several image columns .*picture, mirror.*--image-column"):
        load_dataset(str(tmp_path / "two.parquet"))
    data = load_dataset(str(tmp_path / "two.parquet"), image_column="mirror", label_column="word")
    assert data.class_names == ("BAR", "DISC", "SQUARE")  # a column of strings: its values, sorted
    first_bar = int(np.flatnonzero(labels == NAMES.index("bar"))[0])  # class 0 now: the split's first image
    assert torch.equal(data.train.images[0, 0], torch.from_numpy(images[first_bar][:, ::-1].copy()))
    assert data.train.labels[0] == 0 and not load_dataset(str(tmp_path / "two.parquet"), image_column="mirror",
                                                          label_column="kind").class_names == data.class_names


def test_a_source_without_labels_is_unlabelled_and_colour_needs_one_mode(tmp_path):
    from PIL import Image

    images, _ = shape_arrays(classes=2, per_class=10, size=32, colour=True)
    datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images]},
                               features=datasets.Features({"image": datasets.Image()})).to_parquet(tmp_path / "u.parquet")
    data = load_dataset(str(tmp_path / "u.parquet"))
    assert not data.labelled and data.class_names == ("all",) and tuple(data.train.images.shape) == (16, 3, 32, 32)
    mixed = [Image.fromarray(a) for a in images[:10]] + [Image.fromarray(a).convert("L") for a in images[10:]]
    datasets.Dataset.from_dict({"image": mixed}, features=datasets.Features({"image": datasets.Image()})
                               ).to_parquet(tmp_path / "mixed.parquet")
    with pytest.raises(DataError, match="mixed sizes or modes.*--image-size"):
        load_dataset(str(tmp_path / "mixed.parquet"))
    resized = load_dataset(str(tmp_path / "mixed.parquet"), image_size=28)
    assert tuple(resized.train.images.shape) == (16, 3, 28, 28)


def test_hf_names_load_through_datasets_and_offline_without_a_cache_is_one_line(sources, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # not the user's cache
    folder = tmp_path / "repo" / "data"  # a data set repository's layout, as load_dataset reads it
    folder.mkdir(parents=True)
    table = datasets.Dataset.from_parquet(str(sources["parquet"]), cache_dir=str(tmp_path / "cache"))
    table.select(range(0, 45, 3)).to_parquet(folder / "test-00000-of-00001.parquet")
    table.to_parquet(folder / "train-00000-of-00001.parquet")
    data = load_dataset(f"hf:{tmp_path / 'repo'}")
    assert (len(data.train), len(data.test)) == (45, 15) and data.class_names == tuple(NAMES)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "vaediff", "eda", "--dataset", "hf:nobody/no-such-set",
                           "--out", str(tmp_path / "eda")], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(done.returncode, done.stderr, "hf:nobody/no-such-set", "HF_DATASETS_OFFLINE")
    assert not (tmp_path / "eda").exists()


@pytest.mark.parametrize("case", ["image column", "label column", "no images", "columns on a folder", "no file"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, sources, tmp_path, cli):
    datasets.Dataset.from_dict({"x": [1, 2, 3], "y": ["a", "b", "c"]}).save_to_disk(tmp_path / "numbers")
    source, extra, fragments = {
        "image column": (sources["saved"], ["--image-column", "pic"], ["no column 'pic'", "picture (Image)"]),
        "label column": (sources["saved"], ["--label-column", "picture"], ["'picture'", "labels must be"]),
        "no images": (tmp_path / "numbers", [], ["no image column", "x (Value)", "--image-column"]),
        "columns on a folder": ("mnist-5k", ["--label-column", "kind"], ["--label-column", "not one"]),
        "no file": (tmp_path / "missing.parquet", [], ["missing.parquet: no such file"]),
    }[case]
    out = tmp_path / "run"
    code, _, err = cli("train", "vae", "--dataset", source, "--out", out, "--max-steps", "2", *extra)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_train_sample_evaluate_and_resume_on_a_saved_dataset_and_parquet(sources, tmp_path, cli):
    from vaediff.evaluate import evaluate_run
    from vaediff.families import load_run

    for name in ("saved", "parquet"):
        run_dir = tmp_path / name
        code, _, err = cli("train", "cvae", "--dataset", sources[name], "--out", run_dir, "--max-steps", "3",
                           "--label-column", "kind", "--batch-size", "16")
        assert code == 0, err
        settings = json.loads((run_dir / "config.json").read_text())["settings"]
        assert settings["dataset"] == str(sources[name].resolve()) and settings["label_column"] == "kind"
        assert settings["class_names"] == NAMES
        code, _, err = cli("train", "cvae", "--out", run_dir, "--resume", "--max-steps", "5")
        assert code == 0, err
        code, _, err = cli("train", "cvae", "--out", run_dir, "--resume", "--max-steps", "6", "--label-column", "x")
        assert_one_line_error(code, err, "--label-column kind")
        code, _, err = cli("sample", run_dir, "--out", tmp_path / f"{name}.png", "--n", "6", "--label", "2")
        assert code == 0, err
        assert load_run(run_dir).generate(2, torch.tensor([0, 1]), torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    metrics = evaluate_run(tmp_path / "saved", n_samples=20, iw_samples=2, progress=False, ignore_unused=True)
    assert "fid" in metrics and len(metrics["predicted_class_share"]) == 3
