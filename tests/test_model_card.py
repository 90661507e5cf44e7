"""Every run carries a model card (RUN/README.md) that huggingface_hub's own parser reads: written when
training ends, written again by `evaluate` with the metrics and their 95% intervals."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard

from vaediff.families import FAMILIES

TINY = ["--max-steps", "3", "--batch-size", "16", "--dataset", "mnist-5k"]


def test_a_trained_run_has_a_card_and_evaluate_adds_its_metrics(cli, tmp_path, evaluator_cache):
    run = tmp_path / "diffusion"
    code, _, err = cli("train", "diffusion", "--out", run, "--model-config", json.dumps(FAMILIES["diffusion"].smallest),
                       *TINY)
    assert code == 0, err
    card = ModelCard.load(run / "README.md")
    assert card.data.library_name == "vaediff" and "diffusion" in card.data.tags and card.data.datasets == ["mnist-5k"]
    assert not card.data.eval_results  # no metrics before evaluate
    assert "vaediff sample RUN --out grid.png" in card.text and "`unet/`" in card.text
    assert "DiffusionPipeline.from_pretrained(\"RUN\", trust_remote_code=True)" in card.text
    assert json.loads((run / "config.json").read_text())["command"] in card.text  # the command that trained it

    code, _, err = cli("evaluate", run, "--n-samples", "20", "--likelihood-images", "4", "--bound-timesteps", "2")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    card = ModelCard.load(run / "README.md")
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert abs(results["fid"] - metrics["fid"]) < 1e-5
    stored = card.data.to_dict()["vaediff"]["metrics"]["fid"]
    assert stored["ci95"] == metrics["ci95"]["fid"] and stored["better"] == "lower"
    assert "| fid |" in card.text


def test_a_read_only_run_gets_its_card_beside_metrics_elsewhere(cli, tmp_path, evaluator_cache):
    run = tmp_path / "vae"
    code, _, err = cli("train", "vae", "--out", run, "--model-config", json.dumps(FAMILIES["vae"].smallest), *TINY)
    assert code == 0, err
    before = (run / "README.md").read_bytes()
    for path in [run, *run.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        code, _, err = cli("evaluate", run, "--n-samples", "20", "--iw-samples", "2", "--out", tmp_path / "elsewhere")
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert code == 0, err
    assert (run / "README.md").read_bytes() == before
    card = ModelCard.load(tmp_path / "elsewhere" / "README.md")
    assert {result.metric_type for result in card.data.eval_results} >= {"fid", "precision", "recall"}


def test_push_offline_is_one_line_and_sends_nothing(cli, tmp_path, monkeypatch):
    run = tmp_path / "vae"
    code, _, err = cli("train", "vae", "--out", run, "--model-config", json.dumps(FAMILIES["vae"].smallest), *TINY)
    assert code == 0, err
    before = sorted(p.name for p in run.rglob("*"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, out, err = cli("push", run, "someone/vae-mnist")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot be reached" in err and "copy the directory" in err and not out
    assert sorted(p.name for p in run.rglob("*")) == before  # the run is an input: nothing written into it
    code, _, err = cli("push", run, "not a repo id")
    assert code == 2 and "NAMESPACE/NAME" in err
    code, _, err = cli("push", tmp_path / "missing", "someone/x")
    assert code == 2 and len(err.strip().splitlines()) == 1
