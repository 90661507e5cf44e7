"""Comparison reports: tables and figures across runs, written as Markdown and self-contained HTML.

Everything the text says is computed from the runs' metrics.json files and curves: which model wins on
which metric and by how much is never written by hand. The parts, each one job: `statistics` (runs read
back, seed groups, intervals and tests), `findings` (the table, findings, headlines), `curves` (steps and
guidance curves, cached outside the runs), `text` (the words, en and zh), `render` (Markdown and HTML);
`compare` here puts them together.
"""

from __future__ import annotations

from pathlib import Path

from vaediff.checks import check_sample_count
from vaediff.errors import RunError
from vaediff.families import FAMILIES, check_command, load_run, run_dataset
from vaediff.figures import plot_losses, plot_sample_grids
from vaediff.generation import write_sample_grid
from vaediff.report.curves import announce_curves, curves_section, quality_point
from vaediff.report.findings import FID_KEYS, findings, headlines, metrics_table, pairwise_table
from vaediff.report.render import render
from vaediff.report.statistics import (
    RunSummary,
    difference_interval,
    difference_test,
    group_by_seed,
    interval,
    standard_error,
    summarize_runs,
    verdict,
)
from vaediff.report.text import TEXT, check_language

# what callers (the CLI, the quickstart, benchmarks, tests) use, from the parts that hold it
__all__ = ["TEXT", "RunSummary", "check_feature_space", "check_language", "compare", "difference_interval", "difference_test", "findings",
           "group_by_seed", "headlines", "interval", "pairwise_table", "quality_point", "standard_error",
           "summarize_runs", "verdict"]


def families_paragraph(summaries: list[RunSummary], lang: str) -> str:
    """What each family in the report is, one sentence each (Family.summary), in the runs' order."""
    recon = [s.metrics.get("autoencoder_fid") for s in summaries if s.metrics.get("autoencoder_fid") is not None]
    sentences = dict.fromkeys(FAMILIES[s.model_type].summary.get(lang, "") for s in summaries if s.model_type in FAMILIES)
    filled = [sentence.replace("{recon}", f"{recon[0]:.3g}" if recon else "–") for sentence in sentences if sentence]
    return TEXT[lang]["families"] + " " + " ".join(filled)


def check_feature_space(summaries: list[RunSummary], features: str) -> None:
    """One line when the report is asked to rank FIDs in a space some run was not measured in."""
    if features not in FID_KEYS:
        raise RunError(f"--features {features!r}: choose {' or '.join(FID_KEYS)}")
    lacking = [str(member.run_dir) for s in summaries for member in (s.members or [s])
               if member.value(FID_KEYS[features]) is None]
    if lacking:
        raise RunError(f"{lacking[0]} has no {features} FID in its metrics.json; run `vaediff evaluate {lacking[0]} "
                       f"--features {features} --inception-weights PATH` first")


def _inception_note(summaries: list[RunSummary], words: dict) -> list[tuple[str, object]]:
    """The paragraph that says where the Inception-v3 numbers come from, when any run has them."""
    measured = [s.members[0] if s.members else s for s in summaries]
    measured = [s.metrics for s in measured if s.metrics.get("inception_fid") is not None]
    if not measured:
        return []
    inception = measured[0]["inception"]
    note = words["inception_note"].format(weights=inception["weights"],
                                          fid_real=measured[0].get("inception_fid_real", float("nan")))
    if not inception.get("published_weights", True):
        note += " " + words["inception_unpublished"].format(sha=inception.get("weights_sha256", "")[:8])
    return [("p", note)]


def compare(run_dirs: list[str | Path], out_dir: str | Path, lang: str = "en", seed: int = 0,
            curve_samples: int = 200, curves: bool = True, with_ddpm_1000: bool = True,
            progress: bool = True, curve_steps: tuple[int, ...] | dict | None = None, minutes: float | None = None,
            announce: bool | None = None, features: str = "evaluator") -> Path:
    """Write DIR/report.md, DIR/report.html and their figures for the given evaluated runs. With `progress`
    (or `announce`) it first says what the curves will cost on this host (from the sampling speed each
    evaluation measured); `minutes` draws as many samples per curve point as fit (at most `curve_samples`), or leaves the curves
    out, and says so. `features="inception"` ranks the headline and the pairs by the Inception-v3 FID that
    `evaluate --features inception` measured (every run must have it); the curves stay in the evaluator's."""
    check_language(lang)
    check_sample_count(curve_samples, "--curve-samples")
    out_dir = Path(out_dir)
    summaries = summarize_runs([Path(r) for r in run_dirs])
    check_feature_space(summaries, features)
    words = TEXT[lang]
    first = summaries[0].metrics
    blocks: list[tuple[str, object]] = [
        ("p", words["intro"].format(n=len(summaries), acc=first.get("evaluator_accuracy", float("nan")),
                                    samples=first.get("num_samples", "?"), fid_real=first.get("fid_real", float("nan")))),
        *_inception_note(summaries, words),
        ("list", headlines(summaries, lang, features)),
        *([("p", words["figure_note"])] if words["figure_note"] else []),
        ("h2", words["table"]), ("p", words["best"]), ("table", metrics_table(summaries, lang)),
    ]
    runs = {s.name: load_run(s.run_dir) for s in summaries}
    for run in runs.values():
        check_command(run.model_type, "compare")
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
        curve_samples = announce_curves([runs[s.name] for s in diffusion], [s.metrics for s in diffusion], dataset,
                                         curve_samples, curve_steps, with_ddpm_1000, minutes, announce)
        curves = curve_samples > 0
    if curves and diffusion:
        blocks += curves_section({s.name: runs[s.name] for s in diffusion}, dataset, out_dir, words, curve_samples,
                                  seed, with_ddpm_1000, progress, curve_steps)
    scope = words["scope_seeds" if any(s.members for s in summaries) else "scope_single"]
    blocks += [("h2", words["findings"]), ("p", words["test_note"]), ("p", scope), ("list", findings(summaries, lang))]
    pairs = pairwise_table(summaries, lang, FID_KEYS[features])
    if pairs:
        blocks += [("h2", words["pairs"].format(metric=words["metric_names"][FID_KEYS[features]])),
                   ("p", words["pairs_note"]), ("table", pairs)]
    if len({s.model_type for s in summaries}) > 1:
        blocks.append(("p", families_paragraph(summaries, lang)))
    render(blocks, out_dir, words["title"].format(dataset=dataset.name))
    return out_dir / "report.md"
