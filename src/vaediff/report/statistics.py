"""The statistics behind a report's verdicts: runs read back and grouped by seed, each number's 95% interval,
and the test between two runs or two groups of seeds (both sources of variation: the spread between training
seeds and each seed's sampling error; Bouthillier et al. 2021)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from vaediff.errors import RunError
from vaediff.intervals import within_range
from vaediff.report.text import TEXT
from vaediff.runs import read_history, read_json, read_run_config


@dataclass
class RunSummary:
    """One evaluated run, or a group of runs that differ only in their seed (`members`)."""

    name: str
    run_dir: Path
    model_type: str
    metrics: dict
    history: list[dict] = field(default_factory=list)
    stage_one_history: list[dict] = field(default_factory=list)  # latent diffusion's autoencoder, if trained here
    config: dict = field(default_factory=dict)
    members: list[RunSummary] = field(default_factory=list)  # the seeds of a group; empty for a single run

    @property
    def seeds(self) -> int:
        return len(self.members) or 1

    def value(self, key: str) -> float | None:
        """The run's number; for a group, the mean over its seeds."""
        if self.members:
            values = [member.value(key) for member in self.members]
            return None if any(v is None for v in values) else sum(values) / len(values)
        if key in ("train_minutes", "train_steps"):  # both stages of latent diffusion (a reused autoencoder: 0)
            column, scale = ("elapsed_s", 60) if key == "train_minutes" else ("step", 1)
            values = [h[-1][column] for h in (self.history, self.stage_one_history) if h and column in h[-1]]
            return sum(values) / scale if values else None
        value = self.metrics.get(key)
        if isinstance(value, dict):
            value = value.get("mean")
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def summarize_runs(run_dirs: list[Path], group_seeds: bool = True) -> list[RunSummary]:
    """The runs' metrics and histories; runs that differ only in their seed become one group."""
    summaries, seen = [], {}
    for run_dir in run_dirs:
        same = seen.setdefault(run_dir.resolve(), run_dir)
        if same is not run_dir:  # one run named twice would count as two seeds that agree exactly
            raise RunError(f"{run_dir} is given twice (also as {same}); name each run once")
        config = read_run_config(run_dir)
        if not (run_dir / "metrics.json").is_file():
            raise RunError(f"{run_dir} has no metrics.json; run `vaediff evaluate {run_dir}` first")
        name = run_dir.name if run_dir.name not in {s.name for s in summaries} else str(run_dir)
        summaries.append(RunSummary(name, run_dir, config["model_type"], read_json(run_dir / "metrics.json"),
                                    read_history(run_dir), read_history(run_dir / "autoencoder"), config))
    datasets = {s.metrics.get("dataset") for s in summaries}
    if len(datasets) > 1:
        raise RunError(f"runs on different data sets cannot be compared: {', '.join(sorted(map(str, datasets)))}")
    return group_by_seed(summaries) if group_seeds else summaries


def _without_seed(summary: RunSummary) -> str:
    """What makes runs the same experiment: everything in config.json but the seed and the command line."""
    config = summary.config
    train = {k: v for k, v in config.get("train", {}).items() if k != "seed"}
    return json.dumps([config.get("model_type"), config.get("settings"), config.get("model"), train],
                      sort_keys=True, default=str)


def group_by_seed(summaries: list[RunSummary]) -> list[RunSummary]:
    """Runs that differ only in their seed, as one summary per group (first-seen order)."""
    groups: dict[str, list[RunSummary]] = {}
    for summary in summaries:
        groups.setdefault(_without_seed(summary), []).append(summary)
    result = []
    for members in groups.values():
        if len(members) == 1:
            result.append(members[0])
            continue
        first = members[0]
        stems = {re.sub(r"-seed\d+$", "", member.name) for member in members}
        name = stems.pop() if len(stems) == 1 else f"{first.name}+{len(members) - 1}"
        result.append(RunSummary(name, first.run_dir, first.model_type, first.metrics, first.history,
                                 first.stage_one_history, first.config, members))
    return result


# ---------------------------------------------------------------------------------------------------------
# Numbers -> words


def ranking(summaries: list[RunSummary], key: str, direction: int) -> list[tuple[RunSummary, float]]:
    scored = [(s, s.value(key)) for s in summaries if s.value(key) is not None]
    return sorted(scored, key=lambda item: -direction * item[1])


def likelihood_axis(summary: RunSummary) -> str | None:
    """The data a run's bits/dim are on ("8-bit" or "binarized"): numbers on different axes never rank."""
    return (summary.members[0] if summary.members else summary).metrics.get("likelihood_axis")


def comparable_groups(summaries: list[RunSummary], key: str) -> list[tuple[str | None, list[RunSummary]]]:
    """The sets of runs whose `key` may be ranked together: all of them, or for bits/dim one set per axis."""
    if key != "bits_per_dim":
        return [(None, summaries)]
    axes = list(dict.fromkeys(likelihood_axis(s) for s in summaries if s.value(key) is not None))
    return [(axis, [s for s in summaries if likelihood_axis(s) == axis]) for axis in axes]

def interval(summary: RunSummary, key: str) -> list[float] | None:
    """The 95% interval of a number: over seeds for a group (Student's t), else the run's bootstrap
    (metrics.json "ci95": over samples, or for bits/dim over test images)."""
    if summary.members:
        spread = standard_error(summary, key)
        if spread is None:
            return None
        half = stats.t.ppf(0.975, len(summary.members) - 1) * spread[0]
        # kept within the values the metric can take (an accuracy interval never passes 1)
        return within_range(key, [summary.value(key) - half, summary.value(key) + half])
    return summary.metrics.get("ci95", {}).get(key)


def seed_spread(summary: RunSummary, key: str) -> float | None:
    """The standard deviation of a number over a group's seeds (n - 1 in the denominator); None for a
    single run or when a seed lacks the number."""
    values = [member.value(key) for member in summary.members]
    if len(values) < 2 or any(v is None for v in values):
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def standard_error(summary: RunSummary, key: str) -> tuple[float, float] | None:
    """(standard error, degrees of freedom) of a number: over seeds for a group (sd / sqrt(n), n - 1),
    else from the run's interval (width / (2 * 1.96), a normal: infinite degrees of freedom)."""
    if summary.members:
        sd = seed_spread(summary, key)
        if sd is None:
            return None
        # Two sources of variation (Bouthillier et al. 2021): a seed's number is the recipe's mean, plus that
        # seed's draw of weights, plus the sampling error of its own evaluation. The spread of the seeds'
        # numbers holds both, but with two or three seeds it can fall below the sampling error alone by
        # chance: the variance of one seed's number is never taken below its own bootstrap variance.
        within = [standard_error(member, key) for member in summary.members]
        sampling = sum(e[0] ** 2 for e in within) / len(within) if all(within) else 0.0
        return math.sqrt(max(sd**2, sampling) / len(summary.members)), len(summary.members) - 1
    bounds = interval(summary, key)
    return ((bounds[1] - bounds[0]) / (2 * 1.959964), math.inf) if bounds else None


def difference_test(first: RunSummary, second: RunSummary, key: str) -> tuple[float, float, float] | None:
    """(first - second, its standard error, the two-sided 5% critical value) for two summaries' numbers:
    Welch-Satterthwaite degrees of freedom over the groups' seeds, a normal for two single runs (whose
    bootstrap standard errors have infinite degrees of freedom); None without intervals."""
    first_error, second_error = standard_error(first, key), standard_error(second, key)
    if first_error is None or second_error is None:
        return None
    variance = first_error[0] ** 2 + second_error[0] ** 2
    finite = [(error, dof) for error, dof in (first_error, second_error) if math.isfinite(dof) and error > 0]
    dof = variance**2 / sum(error**4 / dof for error, dof in finite) if finite and variance else math.inf
    critical = float(stats.t.ppf(0.975, dof)) if math.isfinite(dof) else 1.959964
    return first.value(key) - second.value(key), math.sqrt(variance), critical


def difference_interval(first: RunSummary, second: RunSummary, key: str) -> tuple[float, float] | None:
    """The 95% interval of first - second (difference_test); None without intervals."""
    tested = difference_test(first, second, key)
    if tested is None:
        return None
    difference, error, critical = tested
    return difference - critical * error, difference + critical * error


def verdict(first: RunSummary, second: RunSummary, key: str, lang: str = "en") -> tuple[bool, float, str] | None:
    """(clear at 5%, test statistic, what would tell) for two summaries' numbers; None without intervals.

    Where a side is a group of seeds, Welch's t-test over seeds with both sources of variation in each
    group's standard error (standard_error); for two single runs the z-test on their bootstrap standard
    errors (intervals.difference_test)."""
    tested = difference_test(first, second, key)
    if tested is None:
        return None
    difference, error, critical = tested
    if error == 0:
        return difference != 0, math.inf if difference else 0.0, "?"
    statistic = difference / error
    clear = abs(statistic) > critical
    grouped = bool(first.members or second.members)
    if grouped:
        count = max(first.seeds, second.seeds)
    elif key == "bits_per_dim":
        count = first.metrics.get("likelihood", {}).get("test_images") or 0
    else:
        count = first.metrics.get("num_samples") or 0
    # standard errors shrink as 1/sqrt(n): the statistic reaches the critical value at about n (critical / t)^2
    unit = TEXT[lang]["seeds_unit" if grouped else "samples_unit"]
    needed = unit.format(n=math.ceil(count * (critical / abs(statistic)) ** 2)) if statistic and not clear else "?"
    return clear, statistic, needed


def statistic_name(first: RunSummary, second: RunSummary) -> str:
    """The statistic `verdict` used: Welch's t when either side is a group of seeds, else the bootstrap z."""
    return "t" if first.members or second.members else "z"
