import gzip
import struct

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, require_system_package, write_idx, write_idx_dataset

from vaediff import data
from vaediff.data import EpochBatchSampler, load_dataset, mnist_5k_split_indices, read_idx
from vaediff.errors import DataError


def test_read_idx_raw_and_gzip_agree(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array))
    packed = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array))
    assert raw.shape == (2, 28, 28) and np.array_equal(raw, array) and np.array_equal(packed, array)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b"\x00\x01" + b[2:], "not an IDX file"),
        (lambda b: b[:3], "truncated"),
        (lambda b: b[:10], "truncated inside the header"),
        (lambda b: b[:-5], "truncated: header promises"),
        (lambda b: b + b"\x00\x00", "unexpected bytes"),
    ],
)
def test_read_idx_refuses_corruption(tmp_path, corrupt, message):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_broken_gzip(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="broken gzip"):
        read_idx(path)


def test_idx_dataset_flat_gz_and_torchvision_layout(tmp_path):
    flat = write_idx_dataset(tmp_path / "flat", gz=True)
    write_idx_dataset(tmp_path / "nested" / "MNIST" / "raw")
    for root in (flat, tmp_path / "nested"):
        ds = load_dataset("mnist", root, download=False)
        assert ds.train.images.shape == (60, 1, 28, 28) and ds.test.images.shape == (20, 1, 28, 28)
        assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64  # float per batch
        batch = ds.train.as_float(slice(0, 10))
        assert batch.dtype == torch.float32 and 0 <= float(batch.min()) and float(batch.max()) <= 1


def test_count_mismatch_and_label_range(tmp_path):
    root = write_idx_dataset(tmp_path / "d")
    write_idx(root / "train-labels-idx1-ubyte", (np.arange(59) % 10).astype(np.uint8))
    with pytest.raises(DataError, match="60 images but .* 59 labels"):
        load_dataset("mnist", root, download=False)
    write_idx(root / "train-labels-idx1-ubyte", np.full(60, 12, np.uint8))
    with pytest.raises(DataError, match="labels out of range"):
        load_dataset("mnist", root, download=False)


def test_incomplete_directory_names_missing_file(tmp_path):
    root = write_idx_dataset(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root, download=False)


def test_failed_download_names_data_dir_and_mnist_5k(tmp_path, monkeypatch):
    class Offline:
        def __init__(self, *args, **kwargs):
            print("Downloading ... failed")  # torchvision's chatter must not reach the user
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    import torchvision

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    assert "--data-dir" in str(info.value) and "mnist-5k" in str(info.value)


def test_mnist_5k_split(mnist5k):
    assert mnist5k.train.images.shape == (4000, 1, 28, 28) and mnist5k.test.images.shape == (1000, 1, 28, 28)
    assert mnist5k.train.class_counts(10) == [400] * 10 and mnist5k.test.class_counts(10) == [100] * 10
    assert mnist5k.train.images.dtype == torch.uint8 and int(mnist5k.train.images.max()) == 255
    assert float(mnist5k.train.as_float().max()) == 1.0
    again = load_dataset("mnist-5k")
    assert torch.equal(again.train.images, mnist5k.train.images) and torch.equal(again.test.labels, mnist5k.test.labels)


def test_mnist_5k_split_is_disjoint_and_stratified():
    labels = np.repeat(np.arange(10), 500)
    train, test = mnist_5k_split_indices(labels)
    assert len(set(train) & set(test)) == 0 and len(train) == 4000 and len(test) == 1000
    assert np.bincount(labels[test]).tolist() == [100] * 10


def test_fashion_mnist_from_debian_package():
    require_system_package("dataset-fashion-mnist", data.DEBIAN_FASHION_DIR.is_dir())
    ds = load_dataset("fashion-mnist")
    assert len(ds.train) == 60000 and len(ds.test) == 10000
    assert ds.class_names[0] == "T-shirt/top" and ds.train.class_counts(10) == [6000] * 10


def test_batch_sampler_resumes_mid_epoch_and_depends_only_on_seed_and_epoch():
    sampler = EpochBatchSampler(100, 10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.start_at(4)
    assert list(sampler) == full[4:]
    other = EpochBatchSampler(100, 10, seed=3)
    other.set_epoch(2)
    assert list(other) == full
    other.set_epoch(3)
    assert list(other) != full
    assert sorted(i for batch in full for i in batch) == list(range(100))


def test_cli_corrupt_idx_gives_one_line_and_exit_2(tmp_path, cli):
    root = write_idx_dataset(tmp_path / "d", gz=True)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">HBB", 0, 8, 3) + b"\x00" * 7))
    code, _, err = cli("eda", "--dataset", "mnist", "--data-dir", root, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz", "truncated")
    assert not (tmp_path / "out").exists(), "a data error must not leave an output directory behind"


def test_cli_unknown_dataset(cli, tmp_path):
    code, _, err = cli("eda", "--dataset", "cifar", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "cifar")
