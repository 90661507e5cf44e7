"""What a report says of its numbers: the table, the findings (who wins each metric, by how much, and
whether the test calls it clear), the headlines and every pair on FID."""

from __future__ import annotations

from vaediff.report.statistics import (
    RunSummary,
    comparable_groups,
    interval,
    likelihood_axis,
    ranking,
    seed_spread,
    statistic_name,
    verdict,
)
from vaediff.report.text import TEXT

TABLE_METRICS = (
    ("fid", -1, "{:.3g}"), ("kid", -1, "{:.3g}"), ("inception_fid", -1, "{:.3g}"), ("inception_kid", -1, "{:.3g}"),
    ("precision", 1, "{:.3f}"), ("recall", 1, "{:.3f}"),
    ("density", 1, "{:.3f}"), ("coverage", 1, "{:.3f}"), ("is", 1, "{:.2f}"), ("class_accuracy", 1, "{:.3f}"), ("cas", 1, "{:.3f}"),
    ("memorisation", -1, "{:.3f}"), ("bits_per_dim", -1, "{:.3f}"), ("samples_per_second", 1, "{:.3g}"),
    ("train_minutes", -1, "{:.1f}"),
    # what each model got (direction 0: a fact of the study, not ranked)
    ("train_steps", 0, "{:,.0f}"), ("num_samples", 0, "{:,.0f}"),
)

def _ratio_text(best: float, second: float, direction: int, words: dict) -> str:
    if best == second:
        return words["same"]
    if best > 0 and second > 0:
        factor = second / best if direction < 0 else best / second
        return words["better_by"].format(factor=factor)
    return f"Δ {abs(best - second):.3g}"

def _with_interval(summary: RunSummary, key: str, fmt: str) -> str:
    value, bounds = summary.value(key), interval(summary, key)
    text = fmt.format(value)
    return f"{text} [{fmt.format(bounds[0])}, {fmt.format(bounds[1])}]" if bounds else text


def findings(summaries: list[RunSummary], lang: str) -> list[str]:
    """One sentence per metric: who wins, by how much, and whether the difference is clear at 5%."""
    words = TEXT[lang]
    lines = []
    for key, direction, fmt, name, ranked in _rankings(summaries, words):
        if len(ranked) == 1:
            lines.append(words["only"].format(metric=name, winner=ranked[0][0].name, best=fmt.format(ranked[0][1])))
        if len(ranked) < 2:
            continue
        (winner, best), (runner, second) = ranked[0], ranked[1]
        texts = {"metric": name, "winner": winner.name, "runner": runner.name,
                 "best": _with_interval(winner, key, fmt), "second": _with_interval(runner, key, fmt),
                 "ratio": _ratio_text(best, second, direction, words)}
        tested = verdict(winner, runner, key, lang)
        if tested is None:  # speed, time, memorisation: measured once, no interval
            lines.append(words["wins"].format(**texts))
        else:
            clear, z, needed = tested
            lines.append(words["clear" if clear else "unclear"].format(**texts, z=z, test=statistic_name(winner, runner),
                                                                        needed=needed))
    return lines


def pairwise_table(summaries: list[RunSummary], lang: str, key: str = "fid",
                   fmt: str = "{:.3g}") -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of every pair's verdict on `key` (lower is better), best pairs first; None with fewer
    than three runs that have it (the findings already name the only pair)."""
    words = TEXT[lang]
    ranked = ranking(summaries, key, -1)
    if len(ranked) < 3:
        return None
    rows = []
    for i, (better, _) in enumerate(ranked):
        for worse, _ in ranked[i + 1:]:
            tested = verdict(better, worse, key, lang)
            if tested is None:
                continue
            clear, statistic, needed = tested
            rows.append([f"{better.name} {_with_interval(better, key, fmt)}", f"{worse.name} {_with_interval(worse, key, fmt)}",
                         f"{statistic_name(better, worse)} = {statistic:.1f}",
                         words["pair_clear"] if clear else words["pair_unclear"].format(needed=needed)])
    return (words["pair_header"], rows) if rows else None


def _rankings(summaries: list[RunSummary], words: dict):
    """(key, direction, format, name, ranking) per metric of the table; bits/dim once per axis."""
    for key, direction, fmt in TABLE_METRICS:
        if not direction:  # what each model got, not a ranking
            continue
        for axis, group in comparable_groups(summaries, key):
            name = words["metric_names"][key] + (f" ({words['axis_names'][axis]})" if axis else "")
            yield key, direction, fmt, name, ranking(group, key, direction)


FID_KEYS = {"evaluator": "fid", "inception": "inception_fid"}  # the FID a report ranks, per feature space


def headlines(summaries: list[RunSummary], lang: str = "en", features: str = "evaluator") -> list[str]:
    """The three lines that matter: best quality (FID in the `features` space), best likelihood (of the runs
    that have one), fastest sampling; each winner is called clearly better only when the test says so."""
    words = TEXT[lang]
    out = []
    key = FID_KEYS[features]
    ranked = ranking(summaries, key, -1)
    if ranked:
        out.append(words["headline_quality"].format(winner=ranked[0][0].name, metric=words["metric_names"][key],
                                                    value=_with_interval(ranked[0][0], key, "{:.3g}"),
                                                    verdict=_runner_up(ranked, key, "{:.3g}", words, lang)))
    without = [s.name for s in summaries if s.value("bits_per_dim") is None]
    without_text = words["without"].format(names=", ".join(without)) if without else words["all_have"]
    groups = [(axis, ranking(group, "bits_per_dim", -1)) for axis, group in comparable_groups(summaries, "bits_per_dim")]
    groups = [(axis, ranked) for axis, ranked in groups if len(ranked) > 1 or len(groups) == 1]
    for axis, ranked in groups:
        out.append(words["headline_likelihood"].format(
            axis=words["axis_names"][axis], winner=ranked[0][0].name,
            value=_with_interval(ranked[0][0], "bits_per_dim", "{:.3f}"),
            verdict=_runner_up(ranked, "bits_per_dim", "{:.3f}", words, lang), without=without_text))
    if not groups:
        out.append(words["headline_likelihood_none"].format(without=without_text))
    speed = ranking(summaries, "samples_per_second", 1)
    if speed:
        out.append(words["headline_speed"].format(winner=speed[0][0].name, value=speed[0][1]))
    return out


def _runner_up(ranked: list[tuple[RunSummary, float]], key: str, fmt: str, words: dict, lang: str) -> str:
    """", clearly lower than B (...)" or ", not clearly lower ..." for a ranking's first two, by the test."""
    if len(ranked) < 2:
        return ""
    tested = verdict(ranked[0][0], ranked[1][0], key, lang)
    if tested is None:
        return ""
    grouped = bool(ranked[0][0].members or ranked[1][0].members)  # over seeds, more samples would not tell
    unclear = "verdict_unclear_seeds" if grouped else "verdict_unclear"
    return words["verdict_clear" if tested[0] else unclear].format(
        runner=ranked[1][0].name, value=_with_interval(ranked[1][0], key, fmt))


def metrics_table(summaries: list[RunSummary], lang: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (Markdown cell text, best value in bold) of the metrics table."""
    words = TEXT[lang]
    present = [(k, d, f) for k, d, f in TABLE_METRICS if any(s.value(k) is not None for s in summaries)]
    header = [words["run"], words["model"]] + [
        f"{words['metric_names'][k]}{' ↓' if d < 0 else ' ↑' if d > 0 else ''}" for k, d, _ in present]
    rows = []
    for summary in summaries:
        row = [summary.name, summary.model_type + (f" ×{summary.seeds}" if summary.members else "")]
        for key, direction, fmt in present:
            value = summary.value(key)
            same_axis = [s for s in summaries if key != "bits_per_dim" or likelihood_axis(s) == likelihood_axis(summary)]
            best = ranking(same_axis, key, direction)[0][1] if value is not None and direction else None
            text = "–" if value is None else fmt.format(value)
            if key == "bits_per_dim" and value is not None and likelihood_axis(summary) != "8-bit":
                text += f" ({words['axis_names'].get(likelihood_axis(summary), '?')})"
            sd = seed_spread(summary, key) if summary.members else None
            text += "" if sd is None else f" ± {fmt.format(sd)}"
            row.append(f"**{text}**" if value is not None and value == best and len(summaries) > 1 else text)
        rows.append(row)
    return header, rows


# ---------------------------------------------------------------------------------------------------------
# Figures


# ---------------------------------------------------------------------------------------------------------
# Curves (they cost minutes on a CPU: cached in the user's cache, keyed by the run's weights, never in the
# run itself, which a report only reads)
