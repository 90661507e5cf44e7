"""FID in Inception-v3 features (inception.py): the plumbing end to end with a weights file of the right
architecture made here (random weights: the numbers mean nothing, the path is what is tested), the missing
or wrong file refused in one line, and every FID labelled with its feature space, never ranked across."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from helpers.own_data import shape_arrays, write_cifar_files

from vaediff.inception import WEIGHTS_FILE, WEIGHTS_URL, distances, fid_resamples, load_inception
from vaediff.intervals import fid_values, resample_counts


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, saved as its published file is (a state dict).
    Batch-norm variances of 0.1 keep the random features from vanishing through 90 layers."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    with mock.patch.object(fidelity, "load_state_dict_from_url", return_value=None), \
            mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        torch.manual_seed(0)
        net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    state = net.state_dict()
    for name, tensor in state.items():
        if name.endswith("running_var"):
            tensor.fill_(0.1)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """28x28 grey shapes, 3 classes of 12: an .npz the commands take (stratified split: 30 train, 6 test)."""
    images, labels = shape_arrays(classes=3, per_class=12, size=28, colour=False)
    path = tmp_path_factory.mktemp("shapes") / "shapes.npz"
    np.savez(path, images=images, labels=labels)
    return path


def test_the_few_samples_fid_equals_the_full_covariance_one():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 64, generator=generator, dtype=torch.float64)
    fake = 1.1 * torch.randn(40, 64, generator=generator, dtype=torch.float64) + 0.05
    counts = resample_counts(40, 6, seed=1)
    assert torch.allclose(fid_resamples(real, fake, counts), fid_values(real, fake, counts), rtol=1e-6)
    # and the estimate lies inside its interval
    scores = distances(real, fake, seed=0)
    assert scores["ci95"]["fid"][0] <= scores["fid"] <= scores["ci95"]["fid"][1]


def test_features_of_grey_and_colour_images_and_distances_that_tell_sets_apart(weights):
    from vaediff.inception import inception_features

    network = load_inception(weights)
    assert not network.published and len(network.sha256) == 64
    grey = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    features = inception_features(network, grey)
    assert features.shape == (6, 2048) and features.dtype == torch.float64 and torch.isfinite(features).all()
    # grey is repeated to RGB, as the reference reads a grey PNG
    assert torch.allclose(features, inception_features(network, grey.expand(-1, 3, -1, -1)))
    same = distances(features, inception_features(network, torch.rand(6, 1, 28, 28)), 0, intervals=False)["fid"]
    darker = distances(features, inception_features(network, 0.2 * torch.rand(6, 1, 28, 28)), 0, intervals=False)["fid"]
    assert darker > same > 0


@pytest.mark.parametrize("case", ["missing", "not torch", "wrong network", "no weights"])
def test_a_missing_or_wrong_weights_file_is_one_line_and_nothing_is_written(case, shapes, tmp_path, cli):
    (tmp_path / "garbage.pth").write_bytes(b"not a weights file")
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    flags, fragments = {
        "missing": (["--inception-weights", tmp_path / WEIGHTS_FILE], ["no such file", WEIGHTS_FILE, WEIGHTS_URL]),
        "not torch": (["--inception-weights", tmp_path / "garbage.pth"], ["not a PyTorch weights file", WEIGHTS_URL]),
        "wrong network": (["--inception-weights", tmp_path / "linear.pth"], ["2 tensors", "566", WEIGHTS_FILE]),
        "no weights": ([], [WEIGHTS_FILE, WEIGHTS_URL, "--inception-weights PATH"]),
    }[case]
    code, _, err = cli("real-fid", "--dataset", shapes, "--features", "inception", *flags)
    assert_one_line_error(code, err, *fragments)
    code, _, err = cli("evaluate", tmp_path / "no-run", "--features", "inception", *flags)
    assert_one_line_error(code, err)  # the weights are checked before the run is even read
    code, _, err = cli("quickstart", "--dataset", shapes, "--out", tmp_path / "study", "--features", "inception", *flags)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "study").exists()


def test_evaluate_and_compare_label_each_fid_with_its_feature_space(weights, shapes, tmp_path, cli):
    runs = []
    for model_type in ("cvae", "vae"):  # two recipes (two seeds of one would be one group of seeds)
        run = tmp_path / model_type
        code, _, err = cli("train", model_type, "--dataset", shapes, "--out", run, "--max-steps", "3",
                           "--batch-size", "8")
        assert code == 0, err
        runs.append(run)
    code, out, err = cli("evaluate", runs[0], "--n-samples", "20", "--iw-samples", "2", "--features", "inception",
                         "--inception-weights", weights)
    assert code == 0, err
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["inception_fid"] > 0 and metrics["inception_fid_real"] >= 0
    low, high = metrics["ci95"]["inception_fid"]
    assert low <= metrics["inception_fid"] <= high
    assert set(metrics["inception_kid"]) == {"mean", "std"} and len(metrics["ci95"]["inception_kid"]) == 2
    assert metrics["inception"]["published_weights"] is False and metrics["inception"]["reference_images"] == 30
    assert metrics["feature_spaces"]["fid"].startswith("vaediff evaluator")
    assert metrics["feature_spaces"]["inception_fid"].startswith("Inception-v3")
    assert "inception_fid" in out and "not the published file" in out

    # compare ranks FID in one space: the Inception one only when every run was measured in it
    code, _, err = cli("evaluate", runs[1], "--n-samples", "20", "--iw-samples", "2")
    assert code == 0, err
    assert "inception_fid" not in json.loads((runs[1] / "metrics.json").read_text())
    code, _, err = cli("compare", *runs, "--out", tmp_path / "report", "--no-curves", "--features", "inception")
    assert_one_line_error(code, err, str(runs[1]), "--features inception")
    assert not (tmp_path / "report").exists()
    code, out, err = cli("compare", *runs, "--out", tmp_path / "report", "--no-curves")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "lowest evaluator FID" in out and "Inception-v3 FID" in report and "never ranked" in report
    code, out, err = cli("evaluate", runs[1], "--n-samples", "20", "--iw-samples", "2", "--features", "inception",
                         "--inception-weights", weights)
    assert code == 0, err
    code, out, err = cli("compare", *runs, "--out", tmp_path / "inception", "--no-curves", "--features", "inception")
    assert code == 0, err
    assert "lowest Inception-v3 FID" in out and "lowest evaluator FID" not in out


def test_real_fid_of_cifar10_train_against_test_in_both_spaces(weights, tmp_path, cli):
    data = write_cifar_files(tmp_path / "cifar", train_per_file=4, test=10)
    code, out, err = cli("real-fid", "--dataset", "cifar10", "--data-dir", data, "--features", "inception",
                         "--inception-weights", weights, "--json", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    result = json.loads(out)
    assert (result["train_images"], result["test_images"]) == (20, 10) and result["fid"] > 0
    assert result["ci95"]["fid"][0] <= result["fid"] <= result["ci95"]["fid"][1]
    assert len(list((tmp_path / "cache" / "inception").glob("*.safetensors"))) == 2
    code, again, err = cli("real-fid", "--dataset", "cifar10", "--data-dir", data, "--features", "inception",
                           "--inception-weights", weights, "--json", "--cache-dir", tmp_path / "cache")
    assert code == 0 and json.loads(again)["fid"] == result["fid"]  # from the cached features
    code, _, err = cli("real-fid", "--dataset", "cifar10", "--data-dir", data, "--inception-weights", weights)
    assert_one_line_error(code, err, "--features inception")
