"""Classification Accuracy Score: a classifier trained on samples alone, scored on real test images."""

from __future__ import annotations

import pytest
import torch

from vaediff import cas


def test_balanced_subset_takes_classes_in_turn(tiny):
    subset = cas.balanced_subset(tiny.train, 40, seed=0)
    assert subset.labels.tolist() == [k % 10 for k in range(40)]
    again = cas.balanced_subset(tiny.train, 40, seed=0)
    assert torch.equal(subset.images, again.images)
    assert not torch.equal(subset.images, cas.balanced_subset(tiny.train, 40, seed=1).images)


@pytest.mark.slow
def test_samples_missing_half_the_classes_score_a_clearly_lower_cas(mnist5k):
    """'Samples' that are real digits of all ten classes against ones of classes 0-4 only, as many: a
    classifier never shown a 7 cannot name one, though each sample looks exactly like its class."""
    full = cas.balanced_subset(mnist5k.train, 600, seed=0)
    half = mnist5k.train.labels < 5
    dropped_images, dropped_labels = mnist5k.train.images[half][:600], mnist5k.train.labels[half][:600]
    full_score = cas.classification_accuracy_score(full.images, full.labels, mnist5k, seed=0)
    dropped_score = cas.classification_accuracy_score(dropped_images, dropped_labels, mnist5k, seed=0)
    assert full_score["cas"] > 0.8 and dropped_score["cas"] < 0.55
    assert dropped_score["ci95"][1] < full_score["ci95"][0]  # the intervals do not overlap


def test_real_data_score_is_cached(mnist5k, tmp_path, monkeypatch):
    first = cas.real_data_score(mnist5k, 100, seed=0, cache_dir=tmp_path)
    monkeypatch.setattr(cas, "train_evaluator", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert cas.real_data_score(mnist5k, 100, seed=0, cache_dir=tmp_path) == first
    assert 0.3 < first["cas"] <= 1.0 and first["ci95"][0] <= first["cas"] <= first["ci95"][1]
