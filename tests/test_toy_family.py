"""A family is one file and one line in the registry: a toy family defined here, registered, and driven
through train, resume, sample, evaluate, compare and the quickstart's plan, with no other module knowing of
it. Its options become `vaediff train` flags, its samplers the `--sampler` choices, its share and fixed
steps a part of the quickstart, its sentence a line of the report; its after-step hook keeps a target
network (extra state) that a resumed run continues bit for bit."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vaediff.data import DataShape
from vaediff.families import FAMILIES, load_run
from vaediff.families.base import Family, Option, Run, TrainingPlan, TrainingRequest
from vaediff.runs import config_from_dict


@dataclass(frozen=True)
class ToyConfig:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    target_decay: float = 0.5  # the target network's moving average


class PixelGaussian(nn.Module):
    """Each pixel an independent Gaussian: a mean image and a log standard deviation."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        shape = (config.channels, config.image_size, config.image_size)
        self.mean, self.log_std = nn.Parameter(torch.full(shape, 0.5)), nn.Parameter(torch.zeros(shape))


class ToyObjective:
    loss_names = ("loss",)

    def losses(self, module, images, labels, draw):
        std = module.log_std.exp()
        nll = ((images - module.mean) / std) ** 2 / 2 + module.log_std  # Gaussian NLL up to a constant
        return {"loss": nll.flatten(1).sum(1).mean()}


def export(module: nn.Module, run_dir: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(run_dir / "toy.safetensors"))


def plan(request: TrainingRequest) -> TrainingPlan:
    """The hook keeps a target network: a copy of the model at the start, then a moving average of it,
    updated after every optimizer step."""
    config = request.model_config

    def target_of(model: nn.Module) -> nn.Module:
        return copy.deepcopy(model).requires_grad_(False)

    def after_step(model: nn.Module, target: nn.Module, step: int) -> None:
        for mine, theirs in zip(target.parameters(), model.parameters(), strict=True):
            mine.mul_(config.target_decay).add_(theirs.detach(), alpha=1 - config.target_decay)
        save_file({k: v.contiguous() for k, v in target.state_dict().items()},
                  str(request.run_dir / "target.safetensors"))

    return TrainingPlan(ToyObjective(), lambda: PixelGaussian(config), export, request.train_config, "toy",
                        after_step=after_step, extra_state=target_of)


class ToyRun(Run):
    model_type, conditional, has_sampler = "toy", False, True
    samplers = ("plain", "sharp")

    def __init__(self, run_dir: Path, config: dict):
        self.run_dir, self.config = run_dir, config
        self.model_config = config_from_dict(ToyConfig, config["model"], "toy")
        self.num_classes = self.model_config.num_classes
        self.model = PixelGaussian(self.model_config)
        self.model.load_state_dict(load_file(str(run_dir / "toy.safetensors")))

    def sampler_settings(self, sampler=None, steps=None, guidance=None, guidance_interval=None) -> dict:
        return {"sampler": sampler or "plain", "steps": steps or 1, "guidance": 1.0, "guidance_interval": (0.0, 1.0)}

    @torch.no_grad()
    def generate(self, count, labels, generator, sampler="plain", steps=1, **unused):
        scale = 0.5 if sampler == "sharp" else 1.0
        noise = torch.randn((count, *self.model.mean.shape), generator=generator)
        return (self.model.mean + scale * self.model.log_std.exp() * noise).clamp(0, 1)


def build_config(model_type: str, options: dict, shape: DataShape) -> ToyConfig:
    return ToyConfig(shape.channels, shape.image_size, shape.num_classes, options["target_decay"])


TOY = Family(config_class=ToyConfig, build_config=build_config, recipe=lambda config: {"batch_size": 16, "lr": 0.05},
             plan=plan, load=ToyRun, figures=lambda run, data, seed, options: None,
             options=(Option("target_decay", 0.5, "the target network's moving average", type=float),),
             samplers=ToyRun.samplers, share=0.1, fixed_steps=7, curve_steps=(1, 2),
             summary={"en": "The toy family draws every pixel from its own Gaussian.", "zh": "玩具模型的每个像素各自服从高斯分布。"})


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", TOY)  # the one line a new family adds to the registry


def last_test_loss(run_dir: Path) -> float:
    """The last test loss the run logged (loss.csv)."""
    from vaediff.runs import read_history

    return float(read_history(run_dir)[-1]["test_loss"])


def test_a_toy_family_trains_resumes_samples_evaluates_and_is_compared(toy, cli, tmp_path, evaluator_cache):
    common = ["--dataset", "mnist-5k", "--batch-size", "16", "--checkpoint-every", "2"]
    code, out, _ = cli("train", "--help")
    assert code == 0 and "toy" in out and "--target-decay" in out  # its option is a flag, with its help
    code, _, err = cli("train", "toy", "--out", tmp_path / "whole", "--max-steps", "8", "--target-decay", "0.7", *common)
    assert code == 0, err
    code, _, err = cli("train", "toy", "--out", tmp_path / "one", "--max-steps", "1", "--target-decay", "0.7", *common)
    assert code == 0, err
    assert last_test_loss(tmp_path / "whole") < last_test_loss(tmp_path / "one") - 10  # the loss falls
    settings = json.loads((tmp_path / "whole" / "config.json").read_text())["settings"]
    assert settings["target_decay"] == 0.7 and json.loads((tmp_path / "whole" / "config.json").read_text())["model"]["target_decay"] == 0.7

    # stopped at step 4, then resumed to 8: the model and the hook's target network as if never stopped
    code, _, err = cli("train", "toy", "--out", tmp_path / "parts", "--max-steps", "4", "--target-decay", "0.7", *common)
    assert code == 0, err
    code, _, err = cli("train", "toy", "--out", tmp_path / "parts", "--resume", "--max-steps", "8")
    assert code == 0, err
    for name in ("toy.safetensors", "target.safetensors"):
        whole, parts = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "parts" / name))
        assert all(torch.equal(whole[k], parts[k]) for k in whole), name
    target = load_file(str(tmp_path / "whole" / "target.safetensors"))
    assert not torch.equal(target["mean"], torch.full_like(target["mean"], 0.5))  # the hook ran

    code, _, err = cli("sample", tmp_path / "whole", "--out", tmp_path / "grid.png", "--sampler", "sharp", "--n", "4")
    assert code == 0 and (tmp_path / "grid.png").is_file(), err
    code, _, err = cli("sample", tmp_path / "whole", "--out", tmp_path / "bad.png", "--sampler", "nope")
    assert code == 2 and "plain" in err and not (tmp_path / "bad.png").exists()  # choices from the registry

    code, _, err = cli("evaluate", tmp_path / "whole", "--n-samples", "20")
    assert code == 0, err
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["fid"] > 0 and metrics["num_samples"] == 20

    code, _, err = cli("train", "vae", "--out", tmp_path / "vae", "--max-steps", "3", "--model-config",
                       json.dumps(FAMILIES["vae"].smallest), *common)
    assert code == 0, err
    assert cli("evaluate", tmp_path / "vae", "--n-samples", "20", "--iw-samples", "2")[0] == 0
    code, _, err = cli("compare", tmp_path / "whole", tmp_path / "vae", "--out", tmp_path / "report",
                       "--curve-samples", "20")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "The toy family draws every pixel" in report and "VAEs sample in one decoder pass" in report
    curves = json.loads((tmp_path / "report" / "curves.json").read_text())
    assert [point["steps"] for point in curves["whole"]["steps"]] == [1, 2]  # its own curve points
    assert load_run(tmp_path / "whole").model_type == "toy"


def test_a_command_a_family_does_not_take_is_one_line(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(FAMILIES, "toy", replace(TOY, commands=("train", "sample")))
    code, _, err = cli("train", "toy", "--out", tmp_path / "run", "--max-steps", "1", "--batch-size", "16")
    assert code == 0, err
    code, _, err = cli("evaluate", tmp_path / "run", "--n-samples", "20")
    assert code == 2 and "toy runs do not support evaluate" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()
    from vaediff.families import quickstart_types

    assert "toy" not in quickstart_types()  # nor is it in a quickstart, share or not


def test_the_quickstart_plans_a_registered_family(toy):
    from vaediff.costs import ModelSpeed
    from vaediff.quickstart import QuickstartPlan
    from vaediff.study_plan import HostSpeed, fixed_plan, plan_study

    plan = QuickstartPlan(work="fixed")
    assert ("toy", "toy", 0) in plan.runs()
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    assert fixed_plan(runs).expected_steps["toy"] == 7
    speed = ModelSpeed(step_s=0.05, sample_s=0.01, sampler_steps=1, guided=False, conditional=False,
                       likelihood_s=0.0)
    host = HostSpeed({model_type: speed for _, model_type in runs}, evaluator_image_s=1e-4)
    budget = plan_study(15, host, runs, None)
    minutes = budget.train_minutes
    assert minutes["toy"] / minutes["flow"] == pytest.approx(TOY.share / FAMILIES["flow"].share)


def test_a_family_that_cannot_work_is_refused_when_it_is_defined():
    with pytest.raises(ValueError, match="does not use already"):
        Option("seed", 0)  # `vaediff train --seed` exists
    with pytest.raises(ValueError, match="switch"):
        Option("fast", True, switch=True)  # a switch is off unless given
    assert Option("steps_k", 8).type is int  # `--steps-k 8` is 8, not "8"
    with pytest.raises(ValueError, match="fixed_steps"):
        replace(TOY, fixed_steps=0)
    with pytest.raises(ValueError, match="en, zh"):
        replace(TOY, summary={"en": "English only"})
    with pytest.raises(ValueError, match="unknown commands"):
        replace(TOY, commands=("train", "fly"))


def test_installed_packages_register_families_through_an_entry_point(monkeypatch):
    import vaediff.families as families
    from vaediff.errors import ConfigError

    class Entry:
        name, value = "toy", "toy_package:TOY"

        def load(self):
            return TOY

    monkeypatch.setattr(families, "entry_points", lambda group: [Entry()] if group == "vaediff.families" else [])
    monkeypatch.setitem(FAMILIES, "toy", None)  # restored afterwards
    families.load_plugins()
    assert FAMILIES["toy"] is TOY
    with pytest.raises(ConfigError, match="lower-case word"):
        families.register("Toy/x", TOY)
    with pytest.raises(ConfigError, match="Family"):
        families.register("toy2", object())

    class Broken(Entry):
        def load(self):
            raise ImportError("no module named toy_package")

    monkeypatch.setattr(families, "entry_points", lambda group: [Broken()])
    with pytest.raises(ConfigError, match="does not load: ImportError"):
        families.load_plugins()
