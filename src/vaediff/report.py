"""Comparison reports: tables and figures across runs, written as Markdown and self-contained HTML.

Everything the text says is computed from the runs' metrics.json files and curves: which model wins on
which metric and by how much is never written by hand.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from vaediff.cas import classification_accuracy_score
from vaediff.checks import MIN_EVAL_SAMPLES, check_sample_count
from vaediff.console import progress_bar
from vaediff.costs import ModelSpeed, curve_seconds, evaluator_image_seconds, largest_within, minutes_text
from vaediff.errors import ConfigError, RunError
from vaediff.evaluate import quality_metrics
from vaediff.evaluator_network import default_cache_dir, load_or_train_evaluator
from vaediff.families import load_run, run_dataset
from vaediff.figures import plot_curves, plot_losses, plot_sample_grids
from vaediff.generation import timed_draw, write_sample_grid
from vaediff.runs import atomic_write_json, atomic_write_text, read_history, read_json, read_run_config
from vaediff.training import CHECKPOINT_FILE

# metric key, direction (+1 higher is better, -1 lower is better), format
TABLE_METRICS = (
    ("fid", -1, "{:.3g}"), ("kid", -1, "{:.3g}"), ("precision", 1, "{:.3f}"), ("recall", 1, "{:.3f}"),
    ("density", 1, "{:.3f}"), ("coverage", 1, "{:.3f}"), ("is", 1, "{:.2f}"), ("class_accuracy", 1, "{:.3f}"), ("cas", 1, "{:.3f}"),
    ("memorisation", -1, "{:.3f}"), ("bits_per_dim", -1, "{:.3f}"), ("samples_per_second", 1, "{:.3g}"),
    ("train_minutes", -1, "{:.1f}"),
    # what each model got (direction 0: a fact of the study, not ranked)
    ("train_steps", 0, "{:,.0f}"), ("num_samples", 0, "{:,.0f}"),
)
STEPS_CURVE = (5, 10, 20, 50, 100)
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

TEXT = {
    "en": {
        "title": "vaediff comparison on {dataset}",
        "intro": "{n} runs, each evaluated with the same evaluator (test accuracy {acc:.3f}) on {samples} samples. "
                 "Real held-out images score FID {fid_real:.3g}: the floor every model is measured against.",
        "table": "Metrics", "best": "best value in bold; ↓ lower is better, ↑ higher is better",
        "samples": "Samples at the same seed", "losses": "Training curves",
        "steps": "Quality against sampling steps", "guidance": "Guidance-scale sweep",
        "findings": "What the numbers say", "confusion": "Class confusion",
        "pairs": "Every pair on FID",
        "pairs_note": "Each pair of runs tested as in the findings above: which model has the lower FID, and "
                      "whether the difference is clear at 5%.",
        "pair_header": ["lower FID", "higher FID", "test", "verdict"],
        "pair_clear": "clear at 5%", "pair_unclear": "no clear difference; about {needed} per model would tell",
        "wins": "**{metric}**: {winner} is best with {best}, {runner} follows with {second} ({ratio}).",
        "clear": "**{metric}**: {winner} is better than {runner}: {best} against {second} ({ratio}; clear at 5%, "
                 "{test} = {z:.1f}).",
        "unclear": "**{metric}**: {winner} {best}, {runner} {second}: no clear difference at this sample size "
                   "({test} = {z:.1f}); about {needed} per model would tell.",
        "samples_unit": "{n:,} samples", "seeds_unit": "{n:,} seeds",
        "test_note": "A difference is called clear when a two-sided z-test on the bootstrap standard errors "
                     "(200 resamples of each model's samples, the real reference fixed; for bits/dim the standard "
                     "error over test images, and only models on the same axis, 8-bit or binarized, are compared) rejects equality at 5%; where a model was trained with several seeds, "
                     "Welch's t-test over its seeds' values, and its number is their mean. Brackets are 95% "
                     "intervals (over seeds for those); in the table, ± is the standard deviation over seeds. "
                     "An interval over seeds holds both sources of variation: the spread between training seeds "
                     "and each seed's own sampling error (a seed's variance is never taken below its bootstrap "
                     "variance, which two or three seeds can undershoot by chance).",
        "scope_single": "Each model here was trained once: these verdicts concern these trained networks, not "
                        "their recipes. Another training seed gives other weights, and the spread between seeds "
                        "(often wider than the intervals above) is in no interval. `vaediff quickstart --seeds 3`, "
                        "or `vaediff train ... --seed 1` and `vaediff compare` with every seed's run, measures it.",
        "scope_seeds": "Models trained with several seeds are compared as recipes: their intervals and tests include "
                       "the spread between seeds.",
        "only": "**{metric}**: only {winner} has this number ({best}).",
        "better_by": "{factor:.2f}x better", "same": "a tie",
        "curve_note": "{n} samples per point, 95% intervals shaded. The steps curve shows KID, which is unbiased at "
                      "any sample count (FID at few samples is biased upward), drawn clipped at 0 (an unbiased "
                      "estimate of a distance near 0 can fall below it); where intervals overlap, the curve "
                      "cannot rank those points. The seed's sampler, DDPM with 1000 "
                      "steps and no guidance, is its rightmost point when it was measured. The guidance sweep "
                      "shows class accuracy (is each sample recognisable?) beside CAS (can a classifier learn the "
                      "classes from the samples alone?): pick the guidance scale by the trade between them.",
        "no_seed_point": "{names}: no point for the seed's sampler (DDPM over every training timestep), which "
                         "is diffusion's stochastic process; flow matching draws by integrating an ODE instead.",
        "metric_names": {"fid": "FID", "kid": "KID", "precision": "precision", "recall": "recall",
                         "density": "density", "coverage": "coverage", "is": "Inception-score analogue",
                         "class_accuracy": "class accuracy", "cas": "CAS (classifier trained on samples)",
                         "memorisation": "memorisation share",
                         "nll_nats": "NLL (nats)", "bits_per_dim": "bits/dim", "samples_per_second": "samples per second",
                         "train_minutes": "training minutes", "train_steps": "optimizer steps",
                         "num_samples": "samples"},
        "run": "run", "model": "model", "headline_quality": "Quality: {winner} has the lowest FID ({value}){verdict}.",
        "headline_likelihood": "Likelihood on {axis} images: {winner} has the fewest bits/dim ({value}){verdict}; "
                               "{without}.",
        "headline_likelihood_none": "Likelihood: {without}.",
        "axis_names": {"8-bit": "8-bit", "binarized": "binarized"},
        "verdict_clear": ", clearly lower than {runner} ({value})", "verdict_unclear": ", not clearly lower than {runner} "
        "({value}) at this sample size", "without": "no bits/dim for {names} (metrics.json no_bits_per_dim says why)",
        "all_have": "every run has one",
        "headline_speed": "Speed: {winner} draws the most samples per second ({value:.3g}).",
        "figure_note": "",
        "three_way": "The families: VAEs sample in one decoder pass but blur; diffusion learns to remove noise "
                     "step by step, sharp but many network passes per image (latent diffusion runs the same "
                     "process on a latent a quarter of the image's side, so each pass is cheaper, and its "
                     "quality is bounded by its autoencoder, reconstruction FID {recon}); flow matching learns "
                     "the velocity of a straight path from noise to data, so a few Euler steps follow it.",
    },
    "zh": {
        "title": "vaediff 模型比较（数据集 {dataset}）",
        "intro": "共 {n} 个运行，均用同一个评估网络（测试准确率 {acc:.3f}）在 {samples} 个样本上评估。"
                 "真实的留出图像 FID 为 {fid_real:.3g}，这是所有模型比较的下限。",
        "table": "指标", "best": "最佳值加粗；↓ 越低越好，↑ 越高越好",
        "samples": "同一随机种子下的样本", "losses": "训练曲线",
        "steps": "质量与采样步数", "guidance": "引导强度扫描",
        "findings": "数据说明了什么", "confusion": "类别混淆",
        "pairs": "每两个运行之间的 FID 比较",
        "pairs_note": "每一对运行按上文同样的检验比较：哪个模型的 FID 更低，以及差异在 5% 水平上是否显著。",
        "pair_header": ["FID 较低", "FID 较高", "检验", "结论"],
        "pair_clear": "在 5% 水平上显著", "pair_unclear": "差异不显著；每个模型约需 {needed}才能区分",
        "wins": "**{metric}**：{winner} 最好（{best}），其次是 {runner}（{second}，{ratio}）。",
        "clear": "**{metric}**：{winner} 优于 {runner}：{best} 对 {second}（{ratio}；在 5% 水平上显著，{test} = {z:.1f}）。",
        "unclear": "**{metric}**：{winner} {best}，{runner} {second}：在当前样本量下差异不显著（{test} = {z:.1f}）；"
                   "每个模型约需 {needed}才能区分。",
        "samples_unit": "{n:,} 个样本", "seeds_unit": "{n:,} 个随机种子",
        "test_note": "差异“显著”指：基于自助法标准误（每个模型的样本重抽样 200 次，真实参考集固定；每维比特数用测试图像上的"
                     "标准误，且只比较同一数据轴（8 位或二值化）上的模型）的双侧 z 检验在 5% 水平上拒绝相等；若模型用多个随机种子训练，则对各种子的数值做 Welch t 检验，"
                     "其数值为各种子的均值。方括号内为 95% 区间（多种子时为种子间区间）；表中 ± 为种子间的标准差。"
                     "种子间区间同时包含两种变异来源：不同训练种子之间的差异，以及每个种子自身评估的抽样误差"
                     "（每个种子的方差不低于其自助法方差；只有两三个种子时，种子间的离散可能偶然偏小）。",
        "scope_single": "这里每个模型只训练了一次：这些结论针对的是这些已训练的网络，而不是它们的训练方法。"
                        "换一个训练种子会得到不同的权重，而种子之间的差异（常常比上面的区间更宽）不在任何区间里。"
                        "`vaediff quickstart --seeds 3`，或 `vaediff train ... --seed 1` 再用 `vaediff compare` 比较每个种子的运行，可以测出它。",
        "scope_seeds": "用多个种子训练的模型按训练方法比较：其区间和检验包含种子之间的差异。",
        "only": "**{metric}**：只有 {winner} 有此指标（{best}）。",
        "better_by": "好 {factor:.2f} 倍", "same": "持平",
        "curve_note": "每个点 {n} 个样本，阴影为 95% 区间。步数曲线用 KID（任何样本量下都无偏；样本少时 FID 偏高），"
                      "画图时截断于 0（接近 0 的距离的无偏估计可能为负）；区间重叠处，曲线无法给这些点排序。"
                      "若测量过，最右的点是原项目的采样器（1000 步 DDPM，无引导）。引导扫描并列类别准确率（每个样本是否可辨认）"
                      "和 CAS（仅用样本能否学会这些类别）：按两者的权衡选择引导强度。",
        "no_seed_point": "{names} 没有原项目采样器（DDPM，走完全部训练时间步）的点：那是扩散模型的随机过程；"
                         "流匹配通过积分常微分方程来采样。",
        "metric_names": {"fid": "FID", "kid": "KID", "precision": "精确率", "recall": "召回率",
                         "density": "密度", "coverage": "覆盖率", "is": "类 Inception 分数",
                         "class_accuracy": "类别准确率", "cas": "CAS（用样本训练的分类器的准确率）",
                         "memorisation": "记忆比例",
                         "nll_nats": "负对数似然（nats）", "bits_per_dim": "每维比特数", "samples_per_second": "每秒样本数",
                         "train_minutes": "训练分钟数", "train_steps": "优化步数", "num_samples": "样本数"},
        "run": "运行", "model": "模型", "headline_quality": "质量：{winner} 的 FID 最低（{value}）{verdict}。",
        "headline_likelihood": "似然（{axis}图像）：{winner} 的每维比特数最低（{value}）{verdict}；{without}。",
        "headline_likelihood_none": "似然：{without}。",
        "axis_names": {"8-bit": "8 位", "binarized": "二值化"},
        "verdict_clear": "，显著低于 {runner}（{value}）", "verdict_unclear": "，在当前样本量下与 {runner}（{value}）"
        "差异不显著", "without": "{names} 没有每维比特数（原因见 metrics.json 的 no_bits_per_dim）", "all_have": "所有运行都有似然",
        "headline_speed": "速度：{winner} 每秒生成的样本最多（{value:.3g}）。",
        "figure_note": "说明：图中的标题、坐标轴和图例为英文（matplotlib 自带的字体没有中文字形），各图的中文说明见其标题。",
        "three_way": "各类模型：VAE 一次解码即可采样但图像模糊；扩散模型逐步去除噪声，清晰但每张图需要多次网络计算"
                     "（潜空间扩散在边长为图像四分之一的潜变量上运行同样的过程，每次计算更便宜，其质量受自编码器限制，"
                     "重建 FID {recon}）；流匹配学习从噪声到数据的直线路径上的速度，几步欧拉积分即可沿路径生成。",
    },
}


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


def _ratio_text(best: float, second: float, direction: int, words: dict) -> str:
    if best == second:
        return words["same"]
    if best > 0 and second > 0:
        factor = second / best if direction < 0 else best / second
        return words["better_by"].format(factor=factor)
    return f"Δ {abs(best - second):.3g}"


def interval(summary: RunSummary, key: str) -> list[float] | None:
    """The 95% interval of a number: over seeds for a group (Student's t), else the run's bootstrap
    (metrics.json "ci95": over samples, or for bits/dim over test images)."""
    if summary.members:
        spread = standard_error(summary, key)
        if spread is None:
            return None
        half = stats.t.ppf(0.975, len(summary.members) - 1) * spread[0]
        return [summary.value(key) - half, summary.value(key) + half]
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


def headlines(summaries: list[RunSummary], lang: str = "en") -> list[str]:
    """The three lines that matter: best quality, best likelihood (of the runs that have one), fastest
    sampling; each winner is called clearly better only when the test says so."""
    words = TEXT[lang]
    out = []
    ranked = ranking(summaries, "fid", -1)
    if ranked:
        out.append(words["headline_quality"].format(winner=ranked[0][0].name, value=_with_interval(ranked[0][0], "fid", "{:.3g}"),
                                                    verdict=_runner_up(ranked, "fid", "{:.3g}", words, lang)))
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
    return words["verdict_clear" if tested[0] else "verdict_unclear"].format(
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


def quality_point(run, evaluator, dataset, count: int, seed: int, options: dict, cas: bool = False) -> dict:
    """FID, KID, precision, recall, class accuracy (and with `cas` the CAS), their 95% intervals and the
    speed of `count` samples drawn with sampler `options`: one point of a curve (and the benchmarks')."""
    images, labels, seconds = timed_draw(run, count, seed, options)
    metrics = quality_metrics(evaluator, images, labels, dataset, seed)
    point = {**options, "fid": metrics["fid"], "kid": metrics["kid"]["mean"], "precision": metrics["precision"],
             "recall": metrics["recall"], "class_accuracy": metrics.get("class_accuracy"),
             "samples_per_second": count / seconds, "num_samples": count, "ci95": metrics["ci95"]}
    if cas:
        score = classification_accuracy_score(images, labels, dataset, seed)
        point["cas"], point["ci95"]["cas"] = score["cas"], score["ci95"]
    return point


def run_curves(run, evaluator, dataset, count: int, seed: int, with_ddpm_1000: bool, progress: bool,
               curve_steps: tuple[int, ...] = STEPS_CURVE) -> dict:
    """Steps curve (default sampler and guidance) and guidance sweep (default sampler and steps)."""
    cache_path = curves_cache_path(run)
    cache = read_json(cache_path) if cache_path.is_file() else {}
    defaults = run.sampler_settings()
    plan = [("steps", {**defaults, "steps": s}) for s in curve_steps]
    if with_ddpm_1000 and run.seed_sampler() is not None:
        plan.append(("steps", run.seed_sampler()))
    if run.supports_guidance:
        plan += [("guidance", {**defaults, "guidance": g}) for g in GUIDANCE_SWEEP]
    result: dict[str, list[dict]] = {"steps": [], "guidance": []}
    for kind, options in progress_bar(plan, desc=f"curves for {run.run_dir.name}", unit="point", enabled=progress):
        key = (f"{options['sampler']}:{options['steps']}:{options['guidance']}:{list(options['guidance_interval'])}:"
               f"{count}:{seed}:v2{':cas' if kind == 'guidance' else ''}")  # v2: points with intervals
        if key not in cache:
            cache[key] = quality_point(run, evaluator, dataset, count, seed, options, cas=kind == "guidance")
            _save_cache(cache_path, cache)
        result[kind].append(cache[key])
    return result


def _curves_section(runs: dict, dataset, out_dir: Path, words: dict, curve_samples: int, seed: int,
                    with_ddpm_1000: bool, progress: bool, curve_steps: tuple[int, ...]) -> list[tuple[str, object]]:
    """The steps curve and the guidance sweep of the runs that have a sampler: curves.json, the figures, and
    the report's blocks for them."""
    evaluator = load_or_train_evaluator(dataset, progress=progress)
    curve_data = {name: run_curves(run, evaluator, dataset, curve_samples, seed, with_ddpm_1000, progress,
                                   curve_steps) for name, run in runs.items()}
    atomic_write_json(out_dir / "curves.json", curve_data)
    steps = {name: list(c["steps"]) for name, c in curve_data.items()}
    # figure text stays English in every language: matplotlib's bundled fonts have no CJK glyphs
    plot_curves(steps, "steps", out_dir / "steps.png", TEXT["en"]["steps"], "sampling steps", log_x=True)
    blocks: list[tuple[str, object]] = [("h2", words["steps"]), ("p", words["curve_note"].format(n=curve_samples)),
                                        ("image", ("steps.png", words["steps"]))]
    without = [name for name, run in runs.items() if run.seed_sampler() is None]
    if with_ddpm_1000 and without:
        blocks.append(("p", words["no_seed_point"].format(names=", ".join(without))))
    sweeps = {name: c["guidance"] for name, c in curve_data.items() if c["guidance"]}
    if sweeps:
        plot_curves(sweeps, "guidance", out_dir / "guidance.png", TEXT["en"]["guidance"], "guidance scale w",
                    panels=(("class_accuracy", "class accuracy ↑ (recognisable)"),
                            ("cas", "CAS ↑ (diverse enough to learn from)")))
        blocks += [("h2", words["guidance"]), ("image", ("guidance.png", words["guidance"]))]
    return blocks


def _announce_curves(runs: list, metrics: list[dict], dataset, curve_samples: int, curve_steps: tuple[int, ...],
                     with_ddpm_1000: bool, minutes: float | None, progress: bool) -> int:
    """The curves' cost from each run's measured sampling speed (metrics.json), said up front; with `minutes`,
    the samples per point that fit (0: none fit, the curves are left out)."""
    image_s = evaluator_image_seconds(dataset)
    speeds, steps = [], []
    for run, run_metrics in zip(runs, metrics, strict=True):
        sampler = run_metrics.get("sampler") or run.sampler_settings()
        rate = run_metrics.get("samples_per_second") or 1.0
        speeds.append(ModelSpeed(sample_s=1.0 / rate, sampler_steps=sampler["steps"], guided=run.supports_guidance,
                                 conditional=run.conditional, likelihood_s=0.0))
        seed_point = run.seed_sampler() if with_ddpm_1000 else None
        steps.append(curve_steps + ((seed_point["steps"],) if seed_point else ()))

    def cost(samples: int) -> float:
        return sum(curve_seconds(speed, samples, s, image_s) for speed, s in zip(speeds, steps, strict=True))

    if minutes is not None:
        fitting = largest_within(cost, minutes * 60, curve_samples, MIN_EVAL_SAMPLES)
        if progress or fitting < curve_samples:
            print(f"curves: --minutes {minutes:g} holds " + (f"{fitting} samples per point" if fitting else
                  f"none (the least, {MIN_EVAL_SAMPLES} samples per point, take about "
                  f"{minutes_text(cost(MIN_EVAL_SAMPLES))}); the report leaves them out"), flush=True)
        curve_samples = fitting
    if progress and curve_samples:
        print(f"curves: {len(runs)} runs x {len(curve_steps) + len(GUIDANCE_SWEEP)} points x {curve_samples} samples: "
              f"about {minutes_text(cost(curve_samples))} on this host (cached points cost nothing)", flush=True)
    return curve_samples


def curves_cache_path(run) -> Path:
    """Where a run's curve points are kept: the user's cache, under a hash of what draws the samples (its
    model config and weight files), so a run trained further, or a copy elsewhere, gets its own entry."""
    digest = hashlib.sha1(json.dumps(run.config.get("model"), sort_keys=True).encode())
    for path in sorted(run.run_dir.rglob("*.safetensors")):
        if path.name != CHECKPOINT_FILE:  # the optimizer's state does not draw
            digest.update(path.relative_to(run.run_dir).as_posix().encode() + path.read_bytes())
    return default_cache_dir() / "curves" / f"{digest.hexdigest()[:20]}.json"


def _save_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache)
    except (OSError, RunError):  # a cache that cannot be written costs time, not the report
        pass


# ---------------------------------------------------------------------------------------------------------
# The report


def _image_markdown(name: str, alt: str) -> str:
    return f"![{alt}]({name})"


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render(blocks: list[tuple[str, object]], out_dir: Path, title: str) -> None:
    """Write report.md and report.html (figures embedded as data URIs) from the same blocks."""
    md, body = [f"# {title}", ""], []
    for kind, content in blocks:
        if kind == "h2":
            md += [f"## {content}", ""]
            body.append(f"<h2>{html.escape(str(content))}</h2>")
        elif kind == "p":
            md += [str(content), ""]
            body.append(f"<p>{_html_inline(str(content))}</p>")
        elif kind == "list":
            md += [f"- {line}" for line in content] + [""]  # type: ignore[union-attr]
            body.append("<ul>" + "".join(f"<li>{_html_inline(line)}</li>" for line in content) + "</ul>")  # type: ignore[union-attr]
        elif kind == "table":
            header, rows = content  # type: ignore[misc]
            md += [_markdown_table(header, rows), ""]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>"
                                  for row in rows) + "</table>")
        elif kind == "image":
            name, alt = content  # type: ignore[misc]
            md += [_image_markdown(name, alt), ""]
            body.append(f'<img alt="{html.escape(alt)}" src="{_embed(out_dir / name)}">')
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
    atomic_write_text(out_dir / "report.html", page)


def check_language(lang: str) -> None:
    if lang not in TEXT:
        raise ConfigError(f"--lang must be one of {', '.join(TEXT)}, got {lang!r}")


def compare(run_dirs: list[str | Path], out_dir: str | Path, lang: str = "en", seed: int = 0,
            curve_samples: int = 200, curves: bool = True, with_ddpm_1000: bool = True,
            progress: bool = True, curve_steps: tuple[int, ...] = STEPS_CURVE, minutes: float | None = None,
            announce: bool | None = None) -> Path:
    """Write DIR/report.md, DIR/report.html and their figures for the given evaluated runs. With `progress`
    (or `announce`) it first says what the curves will cost on this host (from the sampling speed each
    evaluation measured); `minutes` draws as many samples per curve point as fit (at most `curve_samples`), or leaves the curves
    out, and says so."""
    check_language(lang)
    check_sample_count(curve_samples, "--curve-samples")
    out_dir = Path(out_dir)
    summaries = summarize_runs([Path(r) for r in run_dirs])
    words = TEXT[lang]
    first = summaries[0].metrics
    blocks: list[tuple[str, object]] = [
        ("p", words["intro"].format(n=len(summaries), acc=first.get("evaluator_accuracy", float("nan")),
                                    samples=first.get("num_samples", "?"), fid_real=first.get("fid_real", float("nan")))),
        ("list", headlines(summaries, lang)),
        *([("p", words["figure_note"])] if words["figure_note"] else []),
        ("h2", words["table"]), ("p", words["best"]), ("table", metrics_table(summaries, lang)),
    ]
    runs = {s.name: load_run(s.run_dir) for s in summaries}
    dataset = run_dataset(runs[summaries[0].name].config, str(summaries[0].run_dir))
    grids = []
    for summary in summaries:
        path = out_dir / f"samples_{summary.name}.png"
        images = write_sample_grid(runs[summary.name], path, seed=seed, count=100, class_names=dataset.class_names)
        grids.append((f"{summary.name} ({summary.model_type})", images[:100]))
    plot_sample_grids(grids, out_dir / "samples.png", seed)
    blocks += [("h2", words["samples"]), ("image", ("samples.png", words["samples"]))]
    plot_losses([(f"{s.name} ({s.model_type})", s.history) for s in summaries], out_dir / "losses.png")
    if (out_dir / "losses.png").is_file():
        blocks += [("h2", words["losses"]), ("image", ("losses.png", words["losses"]))]
    diffusion = [s for s in summaries if runs[s.name].has_sampler]
    announce = progress if announce is None else announce
    if curves and diffusion and (announce or minutes is not None):
        curve_samples = _announce_curves([runs[s.name] for s in diffusion], [s.metrics for s in diffusion], dataset,
                                         curve_samples, tuple(curve_steps), with_ddpm_1000, minutes, announce)
        curves = curve_samples > 0
    if curves and diffusion:
        blocks += _curves_section({s.name: runs[s.name] for s in diffusion}, dataset, out_dir, words, curve_samples,
                                  seed, with_ddpm_1000, progress, tuple(curve_steps))
    scope = words["scope_seeds" if any(s.members for s in summaries) else "scope_single"]
    blocks += [("h2", words["findings"]), ("p", words["test_note"]), ("p", scope), ("list", findings(summaries, lang))]
    pairs = pairwise_table(summaries, lang)
    if pairs:
        blocks += [("h2", words["pairs"]), ("p", words["pairs_note"]), ("table", pairs)]
    recon = [s.metrics.get("autoencoder_fid") for s in summaries if s.metrics.get("autoencoder_fid") is not None]
    if len({s.model_type for s in summaries}) > 1:
        blocks.append(("p", words["three_way"].format(recon=f"{recon[0]:.3g}" if recon else "–")))
    render(blocks, out_dir, words["title"].format(dataset=dataset.name))
    return out_dir / "report.md"
