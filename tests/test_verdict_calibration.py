"""The report's statistics on synthetic studies whose truth is known: a recipe's number is its mean, plus a
seed effect (the draw of weights), plus the sampling error of its evaluation. Over many simulated studies
the interval over seeds covers the true difference between two recipes at about its nominal rate, while a
single seed's bootstrap interval (sampling error only) falls short when the seed spread dominates."""

from pathlib import Path

import numpy as np
import pytest

from vaediff.report import RunSummary, difference_interval, findings, interval, verdict

Z = 1.959964


def run(name: str, value: float, sampling_sd: float) -> RunSummary:
    """A single evaluated run as the report reads it: its FID and the bootstrap interval around it."""
    metrics = {"fid": value, "ci95": {"fid": [value - Z * sampling_sd, value + Z * sampling_sd]}}
    return RunSummary(name, Path(name), "diffusion", metrics)


def group(name: str, values: list[float], sampling_sd: float) -> RunSummary:
    members = [run(f"{name}-seed{i}", v, sampling_sd) for i, v in enumerate(values)]
    return RunSummary(name, Path(name), "diffusion", {}, members=members)


def simulate(seeds: int, seed_sd: float, sampling_sd: float, studies: int = 600, difference: float = 0.5):
    """Coverage of the true difference by the interval over `seeds` seeds per recipe, and by one seed each."""
    rng = np.random.default_rng(0)
    covered_groups = covered_single = 0
    for _ in range(studies):
        means = {"a": 2.0, "b": 2.0 + difference}
        values = {k: m + rng.normal(0, seed_sd, seeds) + rng.normal(0, sampling_sd, seeds) for k, m in means.items()}
        low, high = difference_interval(group("a", list(values["a"]), sampling_sd),
                                        group("b", list(values["b"]), sampling_sd), "fid")
        covered_groups += low <= -difference <= high
        low, high = difference_interval(run("a", values["a"][0], sampling_sd), run("b", values["b"][0], sampling_sd), "fid")
        covered_single += low <= -difference <= high
    return covered_groups / studies, covered_single / studies


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_interval_over_seeds_covers_at_its_nominal_rate_when_seeds_dominate(seeds):
    groups, single = simulate(seeds, seed_sd=1.0, sampling_sd=0.15)
    assert 0.91 <= groups <= 0.99, groups
    assert single < 0.45, single  # one seed's bootstrap interval knows nothing of the seed spread


def test_interval_over_seeds_keeps_the_sampling_error_when_seeds_agree_by_chance():
    """No seed effect at all: the seeds' spread is sampling noise, and two seeds can agree closely by
    chance; the variance floor keeps the interval from shrinking below each seed's own error."""
    groups, single = simulate(2, seed_sd=0.0, sampling_sd=0.3)
    assert groups >= 0.93, groups
    assert 0.91 <= single <= 0.99, single  # with no seed effect the one-level interval is right
    # two seeds that happen to agree exactly: their interval is not a point
    low, high = interval(group("a", [2.0, 2.0], 0.3), "fid")
    assert high - 2.0 >= 12.7 * 0.3 / 2 ** 0.5 * 0.99  # Student's t with 1 degree of freedom, sd 0.3 per seed
    assert low == 0.0  # and no FID below 0


def test_a_single_seed_study_says_its_verdicts_concern_the_trained_networks():
    from vaediff.report import TEXT

    a, b = run("flow", 1.2, 0.1), run("diffusion", 3.4, 0.1)
    assert verdict(a, b, "fid")[0]  # clear at 5% for these two networks
    for lang in ("en", "zh"):
        assert "--seeds 3" in TEXT[lang]["scope_single"] and TEXT[lang]["scope_seeds"]
    assert any("flow" in line for line in findings([a, b], "en"))


def test_an_interval_over_seeds_stays_within_the_metric_range():
    members = [RunSummary(f"a-seed{i}", Path("a"), "diffusion",
                          {"class_accuracy": v, "ci95": {"class_accuracy": [v - 0.01, min(1.0, v + 0.01)]}})
               for i, v in enumerate([0.99, 0.95])]
    low, high = interval(RunSummary("a", Path("a"), "diffusion", {}, members=members), "class_accuracy")
    assert high == 1.0 and 0 <= low < 0.95  # Student's t with one degree of freedom reaches past 1 otherwise


def test_a_headline_over_seed_groups_asks_for_seeds_not_samples():
    from vaediff.report import headlines

    a, b = group("flow", [1.20, 1.22], 0.13), group("diffusion", [1.16, 1.40], 0.13)
    for summary in (a, b):
        summary.model_type = summary.name
    line = headlines([a, b], "en")[0]
    assert "not clearly lower than diffusion" in line and "with these seeds" in line, line
    assert "这些种子" in headlines([a, b], "zh")[0]
