"""The report's words in English and Chinese, side by side: every sentence a report writes, keyed by what it
says, its two languages together so that a change to one is seen beside the other (the numbers are filled
in by findings.py). `check_language` refuses a language it has no words for."""

from __future__ import annotations

from vaediff.errors import ConfigError

LANGUAGES = ("en", "zh")

PHRASES = {
    "title": {
        "en": "vaediff comparison on {dataset}",
        "zh": "vaediff 模型比较（数据集 {dataset}）",
    },
    "intro": {
        "en": "{n} runs, each evaluated with the same evaluator (test accuracy {acc:.3f}) on {samples} "
              "samples. Real held-out images score FID {fid_real:.3g} in the evaluator's features: the floor "
              "every model is measured against.",
        "zh": "共 {n} 个运行，均用同一个评估网络（测试准确率 {acc:.3f}）在 {samples} "
              "个样本上评估。真实的留出图像在评估网络特征中的 FID 为 {fid_real:.3g}，这是所有模型比较的下限。",
    },
    "table": {
        "en": "Metrics",
        "zh": "指标",
    },
    "best": {
        "en": "best value in bold; ↓ lower is better, ↑ higher is better",
        "zh": "最佳值加粗；↓ 越低越好，↑ 越高越好",
    },
    "samples": {
        "en": "Samples at the same seed",
        "zh": "同一随机种子下的样本",
    },
    "losses": {
        "en": "Training curves",
        "zh": "训练曲线",
    },
    "steps": {
        "en": "Quality against sampling steps",
        "zh": "质量与采样步数",
    },
    "guidance": {
        "en": "Guidance-scale sweep",
        "zh": "引导强度扫描",
    },
    "findings": {
        "en": "What the numbers say",
        "zh": "数据说明了什么",
    },
    "confusion": {
        "en": "Class confusion",
        "zh": "类别混淆",
    },
    "pairs": {
        "en": "Every pair on {metric}",
        "zh": "每两个运行之间的{metric}比较",
    },
    "inception_unpublished": {
        "en": "These weights are not the published file ({sha}...), so the Inception numbers are not comparable "
              "with papers'.",
        "zh": "这些权重不是公开发布的文件（{sha}...），因此 Inception 数值不能与论文比较。",
    },
    "inception_note": {
        "en": "FID and KID are also measured in Inception-v3's features ({weights}), the space papers report: "
              "real held-out images score {fid_real:.3g} there. Numbers from the two feature spaces are never "
              "ranked against each other.",
        "zh": "FID 和 KID 也在 Inception-v3 特征（{weights}）中测量，即论文报告所用的特征空间：真实的留出图像在其中"
              "为 {fid_real:.3g}。两个特征空间的数值从不相互排名。",
    },
    "pairs_note": {
        "en": "Each pair of runs tested as in the findings above: which model has the lower FID, and whether "
              "the difference is clear at 5%.",
        "zh": "每一对运行按上文同样的检验比较：哪个模型的 FID 更低，以及差异在 5% 水平上是否显著。",
    },
    "pair_header": {
        "en": ["lower FID", "higher FID", "test", "verdict"],
        "zh": ["FID 较低", "FID 较高", "检验", "结论"],
    },
    "pair_clear": {
        "en": "clear at 5%",
        "zh": "在 5% 水平上显著",
    },
    "pair_unclear": {
        "en": "no clear difference; about {needed} per model would tell",
        "zh": "差异不显著；每个模型约需 {needed}才能区分",
    },
    "wins": {
        "en": "**{metric}**: {winner} is best with {best}, {runner} follows with {second} ({ratio}).",
        "zh": "**{metric}**：{winner} 最好（{best}），其次是 {runner}（{second}，{ratio}）。",
    },
    "clear": {
        "en": "**{metric}**: {winner} is better than {runner}: {best} against {second} ({ratio}; clear at 5%, "
              "{test} = {z:.1f}).",
        "zh": "**{metric}**：{winner} 优于 {runner}：{best} 对 {second}（{ratio}；在 5% 水平上显著，{test} = "
              "{z:.1f}）。",
    },
    "unclear": {
        "en": "**{metric}**: {winner} {best}, {runner} {second}: no clear difference at this sample size "
              "({test} = {z:.1f}); about {needed} per model would tell.",
        "zh": "**{metric}**：{winner} {best}，{runner} {second}：在当前样本量下差异不显著（{test} = "
              "{z:.1f}）；每个模型约需 {needed}才能区分。",
    },
    "samples_unit": {
        "en": "{n:,} samples",
        "zh": "{n:,} 个样本",
    },
    "seeds_unit": {
        "en": "{n:,} seeds",
        "zh": "{n:,} 个随机种子",
    },
    "test_note": {
        "en": "A difference is called clear when a two-sided z-test on the bootstrap standard errors (200 "
              "resamples of each model's samples, the real reference fixed; for bits/dim the standard error "
              "over test images, and only models on the same axis, 8-bit or binarized, are compared) rejects "
              "equality at 5%; where a model was trained with several seeds, Welch's t-test over its seeds' "
              "values, and its number is their mean. Brackets are 95% intervals (over seeds for those); in "
              "the table, ± is the standard deviation over seeds. An interval over seeds holds both sources "
              "of variation: the spread between training seeds and each seed's own sampling error (a seed's "
              "variance is never taken below its bootstrap variance, which two or three seeds can undershoot "
              "by chance).",
        "zh": "差异“显著”指：基于自助法标准误（每个模型的样本重抽样 200 "
              "次，真实参考集固定；每维比特数用测试图像上的标准误，且只比较同一数据轴（8 "
              "位或二值化）上的模型）的双侧 z 检验在 5% 水平上拒绝相等；若模型用多个随机种子训练，则对各种子的"
              "数值做 Welch t 检验，其数值为各种子的均值。方括号内为 95% 区间（多种子时为种子间区间）；表中 ± "
              "为种子间的标准差。种子间区间同时包含两种变异来源：不同训练种子之间的差异，以及每个种子自身评估"
              "的抽样误差（每个种子的方差不低于其自助法方差；只有两三个种子时，种子间的离散可能偶然偏小）。",
    },
    "scope_single": {
        "en": "Each model here was trained once: these verdicts concern these trained networks, not their "
              "recipes. Another training seed gives other weights, and the spread between seeds (often wider "
              "than the intervals above) is in no interval. `vaediff quickstart --seeds 3`, or `vaediff train "
              "... --seed 1` and `vaediff compare` with every seed's run, measures it.",
        "zh": "这里每个模型只训练了一次：这些结论针对的是这些已训练的网络，而不是它们的训练方法。换一个训练种"
              "子会得到不同的权重，而种子之间的差异（常常比上面的区间更宽）不在任何区间里。`vaediff "
              "quickstart --seeds 3`，或 `vaediff train ... --seed 1` 再用 `vaediff compare` "
              "比较每个种子的运行，可以测出它。",
    },
    "scope_seeds": {
        "en": "Models trained with several seeds are compared as recipes: their intervals and tests include "
              "the spread between seeds.",
        "zh": "用多个种子训练的模型按训练方法比较：其区间和检验包含种子之间的差异。",
    },
    "only": {
        "en": "**{metric}**: only {winner} has this number ({best}).",
        "zh": "**{metric}**：只有 {winner} 有此指标（{best}）。",
    },
    "better_by": {
        "en": "{factor:.2f}x better",
        "zh": "好 {factor:.2f} 倍",
    },
    "same": {
        "en": "a tie",
        "zh": "持平",
    },
    "curve_note": {
        "en": "{n} samples per point, 95% intervals shaded. The steps curve shows KID, which is unbiased at "
              "any sample count (FID at few samples is biased upward), drawn clipped at 0 (an unbiased "
              "estimate of a distance near 0 can fall below it); where intervals overlap, the curve cannot "
              "rank those points. The seed's sampler, DDPM with 1000 steps and no guidance, is its rightmost "
              "point when it was measured. The guidance sweep shows class accuracy (is each sample "
              "recognisable?) beside CAS (can a classifier learn the classes from the samples alone?): pick "
              "the guidance scale by the trade between them.",
        "zh": "每个点 {n} 个样本，阴影为 95% 区间。步数曲线用 KID（任何样本量下都无偏；样本少时 FID "
              "偏高），画图时截断于 0（接近 0 的距离的无偏估计可能为负）；区间重叠处，曲线无法给这些点排序。若"
              "测量过，最右的点是原项目的采样器（1000 步 DDPM，无引导）。引导扫描并列类别准确率（每个样本是否"
              "可辨认）和 CAS（仅用样本能否学会这些类别）：按两者的权衡选择引导强度。",
    },
    "no_seed_point": {
        "en": "{names}: no point for the seed's sampler (DDPM over every training timestep): that is "
              "diffusion's stochastic process, and these runs draw another way.",
        "zh": "{names} 没有原项目采样器（DDPM，走完全部训练时间步）的点：那是扩散模型的随机过程，这些运行用别"
              "的方式采样。",
    },
    "metric_names": {
        "en": {"fid": "evaluator FID", "kid": "evaluator KID", "inception_fid": "Inception-v3 FID",
               "inception_kid": "Inception-v3 KID", "precision": "precision", "recall": "recall", "density": "density",
               "coverage": "coverage", "is": "Inception-score analogue", "class_accuracy": "class accuracy",
               "cas": "CAS (classifier trained on samples)", "memorisation": "memorisation share",
               "nll_nats": "NLL (nats)", "bits_per_dim": "bits/dim",
               "samples_per_second": "samples per second", "train_minutes": "training minutes",
               "train_steps": "optimizer steps", "num_samples": "samples"},
        "zh": {"fid": "评估网络 FID", "kid": "评估网络 KID", "inception_fid": "Inception-v3 FID",
               "inception_kid": "Inception-v3 KID", "precision": "精确率", "recall": "召回率", "density": "密度",
               "coverage": "覆盖率", "is": "类 Inception 分数", "class_accuracy": "类别准确率",
               "cas": "CAS（用样本训练的分类器的准确率）", "memorisation": "记忆比例", "nll_nats": "负对数似然（nats）",
               "bits_per_dim": "每维比特数", "samples_per_second": "每秒样本数", "train_minutes": "训练分钟数",
               "train_steps": "优化步数", "num_samples": "样本数"},
    },
    "run": {
        "en": "run",
        "zh": "运行",
    },
    "model": {
        "en": "model",
        "zh": "模型",
    },
    "headline_quality": {
        "en": "Quality: {winner} has the lowest {metric} ({value}){verdict}.",
        "zh": "质量：{winner} 的{metric}最低（{value}）{verdict}。",
    },
    "headline_likelihood": {
        "en": "Likelihood on {axis} images: {winner} has the fewest bits/dim ({value}){verdict}; {without}.",
        "zh": "似然（{axis}图像）：{winner} 的每维比特数最低（{value}）{verdict}；{without}。",
    },
    "headline_likelihood_none": {
        "en": "Likelihood: {without}.",
        "zh": "似然：{without}。",
    },
    "axis_names": {
        "en": {"8-bit": "8-bit", "binarized": "binarized"},
        "zh": {"8-bit": "8 位", "binarized": "二值化"},
    },
    "verdict_clear": {
        "en": ", clearly lower than {runner} ({value})",
        "zh": "，显著低于 {runner}（{value}）",
    },
    "verdict_unclear": {
        "en": ", not clearly lower than {runner} ({value}) at this sample size",
        "zh": "，在当前样本量下与 {runner}（{value}）差异不显著",
    },
    "verdict_unclear_seeds": {
        "en": ", not clearly lower than {runner} ({value}) with these seeds",
        "zh": "，在这些种子下与 {runner}（{value}）差异不显著",
    },
    "without": {
        "en": "no bits/dim for {names} (metrics.json no_bits_per_dim says why)",
        "zh": "{names} 没有每维比特数（原因见 metrics.json 的 no_bits_per_dim）",
    },
    "all_have": {
        "en": "every run has one",
        "zh": "所有运行都有似然",
    },
    "headline_speed": {
        "en": "Speed: {winner} draws the most samples per second ({value:.3g}).",
        "zh": "速度：{winner} 每秒生成的样本最多（{value:.3g}）。",
    },
    "figure_note": {
        "en": "",
        "zh": "说明：图中的标题、坐标轴和图例为英文（matplotlib "
              "自带的字体没有中文字形），各图的中文说明见其标题。",
    },
    "families": {
        "en": "The families:",
        "zh": "各类模型：",
    },
}

# {language: {key: text}}: what the report's code reads
TEXT = {lang: {key: phrase[lang] for key, phrase in PHRASES.items()} for lang in LANGUAGES}


def check_language(lang: str) -> None:
    if lang not in TEXT:
        raise ConfigError(f"--lang must be one of {', '.join(TEXT)}, got {lang!r}")
