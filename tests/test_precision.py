"""The chip's precision (training/precision.py, issue 39): `auto`'s decision for given capabilities and
timings (faked: a model where bf16 pays, one where it costs, a chip without bf16), its cache, the record in
config.json; a bf16 step that resumes bit for bit; no host sync in the training step between rows."""

from __future__ import annotations

import json
import traceback

import pytest
import torch
from conftest import assert_one_line_error

import vaediff.training.loop as loop
import vaediff.training.precision as precision
from vaediff.families.vae import save_weights
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives.vae import VAEObjective
from vaediff.runs import load_safetensors
from vaediff.training import TrainConfig, train

CONFIG = VAEConfig(hidden=32, latent=4)
CPU = torch.device("cpu")


@pytest.mark.parametrize("capability, fp32_s, bf16_s, chosen", [
    ("the CPU has AMX", 1.0, 0.7, "bf16"),      # a model where bf16 pays (1.43x)
    ("the CPU has AMX", 1.0, 1.25, "fp32"),     # one where it costs (the seed UNet on Zen 4: 0.80x)
    ("the CPU has AMX", 1.0, 0.95, "fp32"),     # 1.05x: within timing noise, not clearly faster
    (None, None, None, "fp32"),                 # a chip without bf16: fp32, nothing probed
])
def test_auto_takes_bf16_only_where_it_is_clearly_faster(capability, fp32_s, bf16_s, chosen):
    choice = precision.decide(capability, fp32_s, bf16_s)
    assert choice.chosen == chosen and choice.asked == "auto"
    assert (choice.ratio is None) == (capability is None)
    assert ("not probed" in choice.why) == (capability is None)


def test_the_probe_times_both_precisions_once_and_the_cache_answers_after(tmp_path, monkeypatch):
    calls = []

    def fake_time(step, device, name, steps=3, warmup=1):
        calls.append(name)
        return {"fp32": 2.0, "bf16": 1.0}[name]

    monkeypatch.setattr(precision, "time_steps", fake_time)
    monkeypatch.setattr(precision, "bf16_capability", lambda device: "the CPU has AMX")
    first = precision.choose_precision("auto", CPU, "model A", lambda: None, tmp_path)
    assert first.chosen == "bf16" and first.ratio == 2.0 and sorted(calls) == ["bf16", "bf16", "fp32", "fp32"]
    again = precision.choose_precision("auto", CPU, "model A", lambda: None, tmp_path)
    assert again.chosen == "bf16" and len(calls) == 4 and "cached" in again.why  # no second probe
    precision.choose_precision("auto", CPU, "model B", lambda: None, tmp_path)
    assert len(calls) == 8  # another model is probed
    monkeypatch.setattr(precision, "bf16_capability", lambda device: None)
    assert precision.choose_precision("auto", CPU, "model C", lambda: None, tmp_path).chosen == "fp32"
    assert len(calls) == 8  # no bf16 on the chip: no probe


def test_auto_is_recorded_in_config_json_and_a_resume_keeps_it(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("VAEDIFF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "bf16_capability", lambda device: "the CPU has AMX")
    monkeypatch.setattr(precision, "time_steps", lambda step, device, name, steps=3, warmup=1:
                        {"fp32": 1.0, "bf16": 0.5}[name])
    run = tmp_path / "run"
    flags = ["--model-config", '{"hidden": 32, "latent": 4}', "--batch-size", "32"]
    code, _, err = cli("train", "vae", "--out", run, "--max-steps", "4", "--precision", "auto", *flags)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["precision"] == "bf16" and config["train"]["mixed_precision"] == "bf16"
    assert config["settings"]["precision"] == {"asked": "auto", "chosen": "bf16", "ratio": 2.0,
                                               "why": "the CPU has AMX; bf16 steps measured 2.00x faster"}
    monkeypatch.setattr(precision, "time_steps", lambda *a, **k: pytest.fail("a resumed run must not probe"))
    code, _, err = cli("train", "vae", "--out", run, "--max-steps", "6", "--resume", "--precision", "auto")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
    from vaediff.evaluate import training_precision

    assert training_precision(json.loads((run / "config.json").read_text()))["ratio"] == 2.0  # metrics.json's
    assert training_precision({"train": {"mixed_precision": "no"}})["chosen"] == "fp32"  # a run from before


def test_fp16_on_a_cpu_is_one_line_and_writes_nothing(tmp_path, cli):
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "2", "--precision", "fp16")
    assert_one_line_error(code, err, "--precision fp16 needs a GPU")
    assert not (tmp_path / "run").exists()


def test_a_bf16_run_resumed_halfway_gives_the_same_weights_bit_for_bit(tiny, tmp_path):
    def run(directory, steps, resume=False):
        config = TrainConfig(max_steps=steps, batch_size=32, eval_images=64, precision="bf16", checkpoint_every=3,
                             ema_decay=0.99)
        train(VAEObjective(CONFIG), lambda: VAE(CONFIG), tiny, config, directory, resume=resume,
              export=save_weights, progress=False)

    run(tmp_path / "straight", 8)
    run(tmp_path / "halves", 4)
    run(tmp_path / "halves", 8, resume=True)
    straight = load_safetensors(tmp_path / "straight" / "model.safetensors")
    halves = load_safetensors(tmp_path / "halves" / "model.safetensors")
    assert all(value.dtype == torch.float32 for value in straight.values())  # weights stay fp32
    assert all(torch.equal(straight[name], halves[name]) for name in straight)
    fp32 = tmp_path / "fp32"
    train(VAEObjective(CONFIG), lambda: VAE(CONFIG), tiny, TrainConfig(max_steps=8, batch_size=32, eval_images=64),
          fp32, export=save_weights, progress=False)
    assert not all(torch.equal(straight[name], value) for name, value in
                   load_safetensors(fp32 / "model.safetensors").items())  # bf16 did change the arithmetic


def test_the_training_step_never_waits_for_the_device_between_rows(tiny, tmp_path, monkeypatch):
    """Every read of a tensor's value on the host (.item(), bool(), float(), int(), .tolist()) is counted
    while the loop runs its steps; rows and checkpoints (where reading is the point) are kept out. Adam's
    step counter is read by torch.optim itself: it lives on the host even beside GPU weights (not a sync)."""
    reads, inside = [], [False]
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if inside[0] and not any("torch/optim/" in frame.filename for frame in traceback.extract_stack()):
                reads.append(f"{_name}: {traceback.extract_stack()[-2]}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps = {"forward_backward": loop.forward_backward, "finish_optimizer_step": loop.finish_optimizer_step}
    for name, function in steps.items():
        def watched(*args, _function=function, **kwargs):
            inside[0] = True
            try:
                return _function(*args, **kwargs)
            finally:
                inside[0] = False

        monkeypatch.setattr(loop, name, watched)
    config = TrainConfig(max_steps=12, batch_size=32, eval_images=64, checkpoint_every=100, ema_decay=0.99)
    state = train(VAEObjective(CONFIG), lambda: VAE(CONFIG), tiny, config, tmp_path, export=save_weights,
                  progress=False)
    assert state.step == 12 and reads == []
    rows = json.loads(json.dumps(state.history))
    assert rows[-1]["step"] == 12 and rows[-1]["train_loss"] > 0  # the sums reached the row


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    from vaediff.families import FAMILIES, train_run

    return train_run("flow", tmp_path_factory.mktemp("precision") / "flow",
                     options={"model": FAMILIES["flow"].smallest}, train_options={"max_steps": 2, "batch_size": 8},
                     progress=False, figures=False)


def test_sampling_in_bf16_draws_close_to_fp32_and_auto_follows_the_sampling_timings(flow_run, tmp_path, monkeypatch):
    from vaediff.generation import choose_sampling_precision, draw

    monkeypatch.setenv("VAEDIFF_CACHE_DIR", str(tmp_path / "cache"))
    fp32, _ = draw(flow_run, 8, seed=1, steps=2)
    assert choose_sampling_precision(flow_run, "bf16").chosen == "bf16"
    bf16, _ = draw(flow_run, 8, seed=1, steps=2)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # bf16 products: another rounding
    assert (fp32 - bf16).abs().mean() < 0.02
    monkeypatch.setattr(precision, "bf16_capability", lambda device: "the CPU has AMX")
    timed = []

    def fake_time(step, device, name, steps=3, warmup=1):
        step()  # the probe draws images (no training step: the weights stay as they are)
        timed.append(name)
        return {"fp32": 1.0, "bf16": 0.95}[name]

    monkeypatch.setattr(precision, "time_steps", fake_time)
    choice = choose_sampling_precision(flow_run, "auto")
    assert (choice.chosen, timed) == ("fp32", ["fp32", "bf16"] * 2)  # 1.05x: not clearly faster
    assert torch.equal(draw(flow_run, 8, seed=1, steps=2)[0], fp32)
    monkeypatch.setattr(precision, "time_steps", lambda *a, **k: pytest.fail("the cache answers a second time"))
    assert choose_sampling_precision(flow_run, "auto").chosen == "fp32"


def test_evaluate_and_sample_take_precision_and_metrics_json_records_it(flow_run, tmp_path, cli):
    code, _, err = cli("evaluate", flow_run.run_dir, "--n-samples", "40", "--likelihood-images", "4",
                       "--precision", "bf16", "--out", tmp_path / "metrics")
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert metrics["sampling_precision"] == {"asked": "bf16", "chosen": "bf16", "ratio": None, "why": "as asked"}
    assert metrics["training_precision"]["chosen"] == "fp32"
    code, _, err = cli("sample", flow_run.run_dir, "--out", tmp_path / "grid.png", "--precision", "fp16")
    assert_one_line_error(code, err, "--precision fp16 needs a GPU")
    assert not (tmp_path / "grid.png").exists()
    grids = {}
    for name in ("fp32", "bf16"):  # a class grid (one row per class) drawn in each precision
        code, _, err = cli("sample", flow_run.run_dir, "--out", tmp_path / f"{name}.png", "--precision", name,
                           "--n", "20")
        assert code == 0, err
        grids[name] = tmp_path.joinpath(f"{name}.png").read_bytes()
    assert grids["fp32"] != grids["bf16"]


@pytest.mark.slow
def test_compile_trains_and_a_resume_may_turn_it_on(tmp_path, cli):
    """--compile runs the step through torch.compile (inductor); it changes speed, not what is computed, so
    a resume may add it. Compiled kernels round differently: the weights match an eager run's closely."""
    flags = ["--model-config", '{"hidden": 32, "latent": 4}', "--batch-size", "32", "--checkpoint-every", "100"]
    code, _, err = cli("train", "vae", "--out", tmp_path / "eager", "--max-steps", "6", *flags)
    assert code == 0, err
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "3", *flags)
    assert code == 0, err
    code, _, err = cli("train", "vae", "--out", tmp_path / "run", "--max-steps", "6", "--resume", "--compile", *flags)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["compile"] is True
    compiled, eager = (load_safetensors(tmp_path / name / "model.safetensors") for name in ("run", "eager"))
    for name, value in eager.items():
        assert torch.isfinite(compiled[name]).all() and torch.allclose(compiled[name], value, atol=1e-4), name
