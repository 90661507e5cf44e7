"""The whole study in one call, with tiny networks: every stage's output, the refusal to overwrite, and a
resume that redoes only the stages that had not finished."""

import dataclasses
import json

import pytest

from vaediff.quickstart import STATE_FILE, QuickstartPlan, describe_stage, quickstart

TINY_UNET = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8, "sampling_steps": 3}
# --work fixed: a few optimizer steps each, the same on any host (the budget's planner has its own tests)
STEPS = {"vae": 30, "cvae": 30, "diffusion": 6, "latent-diffusion": 4, "flow": 6, "meanflow": 4}
PLAN = QuickstartPlan(work="fixed", fixed_steps=STEPS, minimum_minutes=0, eval_samples=30, iw_samples=4, curve_samples=20, likelihood_images=20,
                      ode_steps=2, with_models=("meanflow",), model_options={
    "vae": {"model": {"hidden": 32, "latent": 4}},
    "cvae": {"model": {"hidden": 32, "latent": 4}},
    "diffusion": {"model": TINY_UNET},
    "latent-diffusion": {"model": {"autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
                                   "denoiser": {**TINY_UNET, "block_out_channels": [16]}}},
    "flow": {"model": {"denoiser": TINY_UNET, "sampling_steps": 3}},
})
MODELS = ("vae", "cvae", "diffusion", "latent-diffusion", "flow", "meanflow")  # meanflow: --with, from flow's run


@pytest.mark.slow
def test_quickstart_writes_everything_refuses_overwrite_and_resumes(tmp_path, cli, evaluator_cache):
    out = tmp_path / "qs"
    report = quickstart(out, plan=PLAN)
    assert report.is_file() and report.with_suffix(".html").is_file()
    assert len(list((out / "eda").glob("*.png"))) >= 2
    for model in MODELS:
        metrics = json.loads((out / model / "metrics.json").read_text())
        assert metrics["model_type"] == model
    text = report.read_text()
    assert all(model in text for model in MODELS)
    state = json.loads((out / STATE_FILE).read_text())
    assert state["done"][-1] == "compare" and len(state["done"]) == 2 + 2 * len(MODELS) + 1
    assert state["plan"]["work"] == "fixed" and state["plan"]["expected_steps"] == STEPS
    assert set(state["stage_seconds"]) == set(state["done"])
    meanflow = json.loads((out / "meanflow" / "config.json").read_text())
    assert meanflow["settings"]["init"] == str(out / "flow")  # started from the study's own flow run
    for model in MODELS:  # the fixed work, whatever the host's speed
        history = (out / model / "loss.csv").read_text().splitlines()
        assert int(float(history[-1].split(",")[1])) == STEPS[model]

    # the same fixed study again (without the added meanflow run, to save time): the same numbers (only the
    # timings differ)
    again = tmp_path / "again"
    quickstart(again, plan=dataclasses.replace(PLAN, with_models=()))
    for model in MODELS[:-1]:
        first, second = (json.loads((d / model / "metrics.json").read_text()) for d in (out, again))
        for key in set(first) - {"samples_per_second", "run"}:
            assert first[key] == second[key], (model, key)

    code, _, err = cli("quickstart", "--out", out)  # a second run into the same directory is refused
    assert code == 2 and "--overwrite" in err

    # interrupted after evaluating the pixel diffusion model: resume redoes only what follows
    trained = (out / "vae" / "model.safetensors").stat().st_mtime_ns
    cut = state["done"].index("evaluate:diffusion") + 1
    (out / STATE_FILE).write_text(json.dumps({"done": state["done"][:cut]}))
    (out / "latent-diffusion" / "metrics.json").unlink()
    code, printed, err = cli("quickstart", "--out", out, "--resume")
    assert code == 0, err
    assert (out / "latent-diffusion" / "metrics.json").is_file()
    assert (out / "vae" / "model.safetensors").stat().st_mtime_ns == trained  # not trained again
    assert "report:" in printed and "Quality:" in printed and "Speed:" in printed and "Likelihood on 8-bit images:" in printed

    # the same study in Chinese: only the report is redone, and the closing lines are Chinese too
    config = json.loads((out / "config.json").read_text())
    config["settings"]["lang"] = "zh"
    (out / "config.json").write_text(json.dumps(config))
    (out / STATE_FILE).write_text(json.dumps({"done": state["done"][:-1]}))
    code, printed, err = cli("quickstart", "--out", out, "--resume")
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# vaediff 模型比较") and "图中的标题" in text
    assert "质量：" in printed and "速度：" in printed


def test_the_progress_line_says_whether_the_evaluator_is_trained_or_loaded(tmp_path, monkeypatch, evaluator_cache):
    plan = QuickstartPlan()
    assert describe_stage("evaluator", "evaluator network", plan) == "evaluator network (cached)"
    monkeypatch.setenv("VAEDIFF_CACHE_DIR", str(tmp_path / "empty"))  # a fresh machine
    assert describe_stage("evaluator", "evaluator network", plan) == "training the evaluator (cached for later runs)"
