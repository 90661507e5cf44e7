import json
import math
import shutil

import pytest
import torch

from vaediff.evaluate import evaluate_run
from vaediff.families import train_run
from vaediff.report import compare, summarize_runs

TINY_DIFFUSION = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8}
REQUIRED = ("fid", "fid_real", "kid", "precision", "recall", "density", "coverage", "is", "samples_per_second",
            "memorisation", "evaluator_accuracy")


@pytest.fixture(scope="module")
def evaluated_runs(tmp_path_factory, evaluator_cache):
    root = tmp_path_factory.mktemp("runs")
    vae = train_run("cvae", root / "cvae", train_options={"max_steps": 120}, progress=False).run_dir
    diffusion = train_run("diffusion", root / "diffusion", options={"model": TINY_DIFFUSION},
                          train_options={"max_steps": 8, "batch_size": 32, "eval_images": 64}, progress=False).run_dir
    for run in (vae, diffusion):
        evaluate_run(run, n_samples=100, iw_samples=10, sampler_options={"steps": 4} if run == diffusion else None,
                     likelihood={"test_images": 60, "bound_timesteps": 8},
                     progress=False, ignore_unused=True)
    return [vae, diffusion]


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_metrics_json_has_every_key_with_finite_values(evaluated_runs):
    vae, diffusion = (json.loads((run / "metrics.json").read_text()) for run in evaluated_runs)
    for metrics in (vae, diffusion):
        for key in REQUIRED:
            value = metrics[key]
            assert math.isfinite(value["mean"] if key == "kid" else value), key
        assert set(metrics["kid"]) == {"mean", "std"}
        assert metrics["fid_real"] < metrics["fid"]
        assert metrics["device"] and metrics["threads"] >= 1
    assert vae["nll_nats"] <= vae["elbo_nats"] and "nll_nats" not in diffusion
    # bits/dim: the diffusion model's bound on 8-bit images; the Bernoulli cvae has none and says why
    assert diffusion["likelihood_axis"] == "8-bit" and 0 < diffusion["bits_per_dim"] < 16
    assert vae["likelihood_axis"] is None and "bits_per_dim" not in vae and vae["no_bits_per_dim"]
    assert diffusion["sampler"] == {"sampler": "dpm", "steps": 4, "guidance": 2.0, "guidance_interval": [0.0, 1.0]}
    assert (evaluated_runs[1] / "confusion.png").is_file()
    confusion = torch.tensor(diffusion["confusion"], dtype=torch.float64)  # rows: drawn class, columns: seen
    assert confusion.sum() == 100 and diffusion["class_accuracy"] == pytest.approx(float(confusion.trace() / 100))


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_same_seed_same_metrics(evaluated_runs):
    first = json.loads((evaluated_runs[0] / "metrics.json").read_text())
    again = evaluate_run(evaluated_runs[0], n_samples=100, iw_samples=10, progress=False, write=False)
    for key in ("fid", "kid", "precision", "recall", "class_accuracy", "nll_nats", "elbo_nats", "memorisation"):
        assert again[key] == first[key], key


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_report_states_the_numbers_of_the_runs(evaluated_runs, tmp_path):
    report = compare(evaluated_runs, tmp_path, curve_samples=20, with_ddpm_1000=False, progress=False)
    text = report.read_text()
    summaries = summarize_runs(evaluated_runs)
    for summary in summaries:
        assert f"{summary.value('fid'):.3g}" in text and summary.name in text
    # the verdicts, computed here from metrics.json, not by the functions that wrote the report
    fid = {run.name: json.loads((run / "metrics.json").read_text())["fid"] for run in evaluated_runs}
    best = min(fid, key=fid.get)
    assert f"Quality: {best} has the lowest evaluator FID ({fid[best]:.3g} [" in text
    # likelihood ranks only the runs on one axis, and names those without bits/dim
    assert f"Likelihood on 8-bit images: {evaluated_runs[1].name} has the fewest bits/dim" in text
    assert f"no bits/dim for {evaluated_runs[0].name}" in text
    assert "z-test on the bootstrap standard errors" in text
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    for name in ("samples.png", "losses.png", "steps.png", "guidance.png"):
        assert (tmp_path / name).is_file(), name
    steps = json.loads((tmp_path / "curves.json").read_text())["diffusion"]["steps"]
    assert [p["steps"] for p in steps] == [5, 10, 20, 50, 100]


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_metrics_json_has_an_interval_around_each_quality_number(evaluated_runs):
    for run in evaluated_runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["ci95_method"]["resamples"] >= 200
        for key, (low, high) in metrics["ci95"].items():
            value = metrics[key]["mean"] if key == "kid" else metrics[key]
            assert low <= high and low - (high - low) <= value <= high + (high - low), key
            assert low < high or value == low, key  # a zero width only where every resample agrees (recall 0)


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_identical_models_give_no_clear_difference(evaluated_runs, tmp_path):
    """The same run evaluated twice with other seeds: its verdicts must all be 'no clear difference'."""
    from vaediff.report import findings, verdict

    twin = tmp_path / "twin"
    shutil.copytree(evaluated_runs[1], twin)
    evaluate_run(twin, n_samples=100, sampler_options={"steps": 4}, seed=7, progress=False,
                 likelihood={"test_images": 60, "bound_timesteps": 8})
    summaries = summarize_runs([evaluated_runs[1], twin], group_seeds=False)  # same config: would be one group
    for key in ("fid", "kid", "precision", "class_accuracy", "bits_per_dim"):
        clear, _, needed = verdict(summaries[0], summaries[1], key)
        assert not clear, key
    text = " ".join(findings(summaries, "en"))
    assert "no clear difference at this sample size" in text and "is better than" not in text.split("**evaluator FID**")[1][:80]


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_every_pair_gets_a_verdict_on_fid(evaluated_runs, tmp_path):
    """With three runs the report tests all three pairs, lower FID first; a run and its twin (the same
    weights, other sampling seeds) are never called clearly different."""
    from vaediff.report import pairwise_table

    twin = tmp_path / "twin"
    shutil.copytree(evaluated_runs[1], twin)
    config = json.loads((twin / "config.json").read_text())
    config["train"]["note"] = "twin"  # not the same experiment as its original, so compare keeps it apart
    (twin / "config.json").write_text(json.dumps(config))
    evaluate_run(twin, n_samples=100, sampler_options={"steps": 4}, seed=3, progress=False,
                 likelihood={"test_images": 20, "bound_timesteps": 4})
    summaries = summarize_runs([*evaluated_runs, twin])
    assert pairwise_table(summaries[:2], "en") is None  # one pair: the findings already say it
    header, rows = pairwise_table(summaries, "en")
    assert header[:2] == ["lower FID", "higher FID"] and len(rows) == 3
    assert pairwise_table(summaries, "zh")[0][:2] == ["FID 较低", "FID 较高"]
    fid = {s.name: s.value("fid") for s in summaries}
    for row in rows:
        better, worse = (cell.split(" ")[0] for cell in row[:2])
        assert fid[better] <= fid[worse]
    twin_row = next(row for row in rows if {row[0].split(" ")[0], row[1].split(" ")[0]} == {"diffusion", "twin"})
    assert twin_row[3].startswith("no clear difference"), twin_row
    (tmp_path / "report").mkdir()
    report = compare([*evaluated_runs, twin], tmp_path / "report", curves=False, progress=False).read_text()
    assert "## Every pair on evaluator FID" in report and twin_row[3] in report


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_report_in_chinese(evaluated_runs, tmp_path):
    compare(evaluated_runs, tmp_path, lang="zh", curves=False, progress=False)
    text = (tmp_path / "report.md").read_text()
    assert "模型比较" in text and "数据说明了什么" in text
    assert "z 检验" in text and "没有每维比特数" in text  # the test it used, and which runs have no bits/dim
    assert "似然（8 位图像）" in text


def test_compare_refuses_unevaluated_runs(tmp_path, cli):
    run = train_run("vae", tmp_path / "vae", train_options={"max_steps": 5}, progress=False).run_dir
    code, _, err = cli("compare", run, "--out", tmp_path / "report")
    assert code == 2 and "vaediff evaluate" in err


@pytest.mark.slow  # trains and evaluates two runs (shared by the module)
def test_runs_that_differ_only_in_seed_are_compared_as_a_group(evaluated_runs, tmp_path):
    cvae = evaluated_runs[0]
    seeds = []
    for seed in (0, 1):
        copy = tmp_path / f"cvae-seed{seed}"
        shutil.copytree(cvae, copy)
        config = json.loads((copy / "config.json").read_text())
        config["train"]["seed"] = seed
        (copy / "config.json").write_text(json.dumps(config))
        evaluate_run(copy, n_samples=100, iw_samples=10, seed=seed, progress=False)
        seeds.append(copy)
    summaries = summarize_runs([evaluated_runs[1], *seeds])
    assert [s.name for s in summaries] == ["diffusion", "cvae"] and summaries[1].seeds == 2
    fids = [json.loads((run / "metrics.json").read_text())["fid"] for run in seeds]
    assert summaries[1].value("fid") == pytest.approx(sum(fids) / 2)
    (tmp_path / "report").mkdir()
    report = compare([evaluated_runs[1], *seeds], tmp_path / "report", curves=False, progress=False)
    text = report.read_text()
    assert "cvae ×2" in text and "Welch's t-test" in text
    spread = abs(fids[0] - fids[1]) / math.sqrt(2)  # the sd of two values
    row = next(line for line in text.splitlines() if line.startswith("| cvae"))
    assert f"± {spread:.3g}" in row, row
