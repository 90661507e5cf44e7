import math

import pytest
import torch

from vaediff import metrics as m
from vaediff.evaluate import quality_metrics
from vaediff.evaluator_network import load_or_train_evaluator, train_evaluator


@pytest.fixture(scope="module")
def evaluator(mnist5k, evaluator_cache):
    return load_or_train_evaluator(mnist5k, evaluator_cache, progress=False)


def _held_out(mnist5k, count=500):
    index = torch.randperm(len(mnist5k.test), generator=torch.Generator().manual_seed(0))[:count]
    return mnist5k.test.as_float(index), mnist5k.test.labels[index]


def test_evaluator_learns_well_above_chance_in_seconds(tiny):
    net, accuracy = train_evaluator(tiny, image_passes=3000, progress=False)
    assert accuracy > 0.5  # chance is 0.1
    assert net(tiny.test.as_float(slice(0, 3))).shape == (3, 128)


def test_noise_makes_fid_and_kid_grow_and_precision_fall(evaluator, mnist5k):
    images, labels = _held_out(mnist5k)
    generator = torch.Generator().manual_seed(1)
    results = []
    for sigma in (0.0, 0.1, 0.25, 0.5):
        noisy = (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        results.append(quality_metrics(evaluator, noisy, labels, mnist5k))
    fids = [r["fid"] for r in results]
    kids = [r["kid"]["mean"] for r in results]
    precisions = [r["precision"] for r in results]
    assert fids == sorted(fids) and kids == sorted(kids), (fids, kids)
    assert precisions[-1] < precisions[0] - 0.2
    assert fids[0] < 0.05 * fids[-1]  # real-vs-real sits near the floor
    assert results[0]["class_accuracy"] > 0.9


def test_dropping_classes_lowers_recall_and_coverage(evaluator, mnist5k):
    images, labels = _held_out(mnist5k, 1000)
    full = quality_metrics(evaluator, images, labels, mnist5k)
    keep = labels < 5
    half = quality_metrics(evaluator, images[keep], labels[keep], mnist5k)
    assert half["recall"] < full["recall"] - 0.2 and half["coverage"] < full["coverage"] - 0.2


def test_copying_the_training_set_scores_high_memorisation(mnist5k):
    copies = mnist5k.train.as_float(slice(0, 300))
    fresh, _ = _held_out(mnist5k, 300)  # a random share of the very images that set the threshold
    assert m.memorisation(copies, mnist5k.train.images, mnist5k.test.images)["share_closer_than_test_p05"] == 1.0
    share = m.memorisation(fresh, mnist5k.train.images, mnist5k.test.images)["share_closer_than_test_p05"]
    assert share < 0.12  # about 0.05 by construction


def test_precision_recall_density_coverage_on_hand_made_sets():
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    inside = torch.tensor([[0.5, 0.5], [0.1, 0.0]])
    far = torch.tensor([[10.0, 10.0], [11.0, 10.0]])
    assert m.precision_recall(real, inside, k=1)[0] == 1.0
    assert m.precision_recall(real, far, k=1) == (0.0, 0.0)
    density, coverage = m.density_coverage(real, far, k=1)
    assert density == 0.0 and coverage == 0.0
    density, coverage = m.density_coverage(real, real.clone(), k=1)
    assert coverage == 1.0 and density > 0.9


def test_frechet_distance_of_shifted_gaussians():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(5000, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(5000, 4, generator=generator, dtype=torch.float64) + torch.tensor([2.0, 0, 0, 0], dtype=torch.float64)
    assert m.frechet_distance(a, b) == pytest.approx(4.0, abs=0.3)  # |mu_a - mu_b|^2 = 4, equal covariances


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(50, 1)
    assert m.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert 9 < m.inception_score(confident)[0] < 10  # random splits are not exactly balanced
    assert m.inception_score(torch.full((500, 10), 0.1))[0] == pytest.approx(1.0, rel=1e-6)
    assert math.isfinite(m.inception_score(torch.softmax(torch.randn(100, 10), 1))[1])
