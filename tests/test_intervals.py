
"""Bootstrap intervals: they cover known true values at about their level, and they are reproducible."""

from __future__ import annotations

import pytest
import torch

from vaediff import metrics as m
from vaediff.intervals import (
    centred_on,
    fid_values,
    percentile_interval,
    quality_intervals,
    resample_counts,
)


def test_resample_counts_draw_n_of_n_with_replacement():
    counts = resample_counts(50, 200, seed=3)
    assert counts.shape == (200, 50) and torch.all(counts.sum(dim=1) == 50)
    assert counts.max() > 1 and (counts == 0).any()  # with replacement: repeats and misses
    assert torch.equal(counts, resample_counts(50, 200, seed=3))
    assert not torch.equal(counts, resample_counts(50, 200, seed=4))


def test_fid_interval_covers_the_true_distance_about_95_percent_of_the_time():
    """Real N(0, I) (a large fixed reference) against samples of N(mu, I), |mu|^2 = 1: the true FID is 1."""
    generator = torch.Generator().manual_seed(0)
    dims, samples, repeats = 4, 400, 60
    real = torch.randn(40000, dims, generator=generator)
    shift = torch.zeros(dims)
    shift[0] = 1.0
    covered = 0
    for repeat in range(repeats):
        fake = torch.randn(samples, dims, generator=generator) + shift
        counts = torch.cat([resample_counts(samples, 200, seed=repeat), torch.ones(1, samples)])
        values = fid_values(real, fake, counts)  # the last row: every sample once, the estimate
        low, high = centred_on(values[:-1], float(values[-1]))
        covered += low <= 1.0 <= high
        assert low < float(values[-1]) < high
    assert 0.85 <= covered / repeats <= 1.0, covered


def test_accuracy_interval_covers_the_true_rate_about_95_percent_of_the_time():
    generator = torch.Generator().manual_seed(1)
    samples, repeats, rate = 300, 200, 0.8
    covered = 0
    for repeat in range(repeats):
        correct = (torch.rand(samples, generator=generator) < rate).float()
        values = resample_counts(samples, 200, seed=repeat) @ correct / samples
        low, high = percentile_interval(values)
        covered += low <= rate <= high
    assert 0.9 <= covered / repeats <= 0.99, covered


def test_every_metric_gets_an_interval_around_its_estimate():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(600, 16, generator=generator)
    fake = torch.randn(300, 16, generator=generator) * 1.1 + 0.2
    logits = torch.randn(300, 10, generator=generator) * 3
    probabilities, labels = torch.softmax(logits, dim=1), torch.arange(300) % 10
    intervals = quality_intervals(real, real[:300], fake, probabilities, labels, seed=0)
    assert set(intervals) == {"fid", "kid", "precision", "recall", "density", "coverage", "is", "class_accuracy"}
    matched = real[:300]
    estimates = {"fid": m.frechet_distance(real, fake), "kid": m.kernel_distance(matched, fake)[0],
                 "precision": m.precision_recall(matched, fake)[0], "recall": m.precision_recall(matched, fake)[1],
                 "density": m.density_coverage(matched, fake)[0], "coverage": m.density_coverage(matched, fake)[1],
                 "is": m.inception_score(probabilities)[0],
                 "class_accuracy": float((probabilities.argmax(1) == labels).float().mean())}
    for name, (low, high) in intervals.items():
        width = high - low
        assert width > 0, name  # computed from resamples, never a constant
        assert low - 0.25 * width <= estimates[name] <= high + 0.25 * width, (name, low, high, estimates[name])
    assert quality_intervals(real, real[:300], fake, probabilities, labels, seed=0) == intervals  # seeded


def _summary(name: str, fid: float, low: float, high: float, members=()):
    from vaediff.report import RunSummary

    return RunSummary(name, None, "diffusion", {"fid": fid, "ci95": {"fid": [low, high]}, "num_samples": 1000},
                      members=list(members))


def test_a_verdict_needs_a_difference_larger_than_the_noise():
    from vaediff.report import verdict

    assert verdict(_summary("a", 1.0, 0.9, 1.1), _summary("b", 1.0, 0.9, 1.1), "fid")[:2] == (False, 0.0)
    clear, z, _ = verdict(_summary("a", 1.0, 0.95, 1.05), _summary("b", 2.0, 1.95, 2.05), "fid")
    assert clear and z < -10
    clear, _, needed = verdict(_summary("a", 1.0, 0.8, 1.2), _summary("b", 1.1, 0.9, 1.3), "fid")
    assert not clear and needed.endswith("samples") and int(needed.split()[0].replace(",", "")) > 1000


def test_seed_groups_are_tested_over_their_seeds():
    from vaediff.report import interval, verdict

    # seeds measured precisely (own intervals +-0.02): the spread over seeds decides
    tight = [_summary(f"a-seed{i}", v, v - 0.02, v + 0.02) for i, v in enumerate((1.00, 1.02, 0.98))]
    other = [_summary(f"b-seed{i}", v, v - 0.02, v + 0.02) for i, v in enumerate((1.50, 1.49, 1.52))]
    first, second = _summary("a", 1.0, 0, 0, tight), _summary("b", 1.5, 0, 0, other)
    assert first.value("fid") == 1.0 and first.seeds == 3
    low, high = interval(first, "fid")  # Student's t over the seeds
    assert 0.9 < low < 1.0 < high < 1.1
    clear, t, _ = verdict(first, second, "fid")
    assert clear and t < -10
    # the same seeds measured on few samples (own intervals +-0.5): seeds that agree by chance do not hide
    # each one's sampling error, which now bounds the group's from below (both sources in one interval)
    noisy = [_summary(f"n-seed{i}", v, v - 0.5, v + 0.5) for i, v in enumerate((1.00, 1.02, 0.98))]
    low, high = interval(_summary("n", 1.0, 0, 0, noisy), "fid")
    sampling_se = 0.5 / 1.959964 / 3**0.5
    assert (high - low) / 2 == pytest.approx(4.302653 * sampling_se, rel=1e-3)  # t(2) x the sampling floor
    noisy_other = [_summary(f"m-seed{i}", v, v - 0.5, v + 0.5) for i, v in enumerate((1.50, 1.49, 1.52))]
    assert not verdict(_summary("n", 1.0, 0, 0, noisy), _summary("m", 1.5, 0, 0, noisy_other), "fid")[0]
    spread = [_summary(f"c-seed{i}", v, v - 0.5, v + 0.5) for i, v in enumerate((0.6, 1.9, 1.2))]
    clear, _, needed = verdict(_summary("c", 1.23, 0, 0, spread), second, "fid")
    assert not clear and needed.endswith("seeds")
