"""Every command on every model, on two kinds of data: a matrix built from the family registry.

Each model type of `families.FAMILIES` (and each recipe its family names in `variants`, e.g. the diffusion
presets) is trained at its family's `smallest` size on mnist-5k and on a 12-class 32 px colour folder, then
taken through what a user does with a run: train again with --resume and a larger limit, sample with each
of its samplers and the last class, evaluate, compare (the report's curves included), draw from the web
demo, and load with stock diffusers where the family saves diffusers folders. A family added to the
registry is picked up here without editing this file. The cells run in this process (the CLI's `main`),
the work fixed in steps and samples, never in minutes.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import diffusers
import pytest
import torch
from conftest import assert_one_line_error
from helpers.own_data import write_shape_folder
from PIL import Image

from vaediff.data import load_dataset
from vaediff.families import FAMILIES, load_run

pytestmark = pytest.mark.slow  # minutes in all: `uv run pytest -m "not slow"` leaves the matrix out

COLOUR_CLASSES = 12
DATA = ("mnist-5k", "colour12")
COMMANDS = ("train", "resume", "sample", "evaluate", "compare", "serve", "diffusers")
SMALL_LIKELIHOOD = {"iw_samples": ["--iw-samples", "2"], "binarize": [], "test_images": ["--likelihood-images", "20"],
                    "bound_timesteps": ["--bound-timesteps", "2"], "ode_steps": ["--ode-steps", "1"]}


def recipes() -> list[tuple[str, dict]]:
    """(model type, options) for every model type and every combination of its family's variants."""
    cells = []
    for model_type, family in FAMILIES.items():
        names = sorted(family.variants)
        for values in itertools.product(*(family.variants[n] for n in names)):
            cells.append((model_type, dict(zip(names, values, strict=True))))
    return cells


def cell_id(model_type: str, options: dict) -> str:
    return model_type + "".join(f"[{value}]" for value in options.values())


CELLS = [(model_type, options, data) for model_type, options in recipes() for data in DATA]
# each run's commands stay on one pytest-xdist worker, which trains the run once
MATRIX = [pytest.param(model_type, options, data, command, id=f"{cell_id(model_type, options)}-{data}-{command}",
                       marks=pytest.mark.xdist_group(f"matrix-{cell_id(model_type, options)}-{data}"))
          for model_type, options, data in CELLS for command in COMMANDS]


@pytest.fixture(scope="module")
def colour12(tmp_path_factory, evaluator_cache):
    """A 12-class folder of 32x32 colour shapes, with a quickly trained evaluator in the test cache."""
    from vaediff.evaluator_network import RECIPE_VERSION, feature_scale, train_evaluator
    from vaediff.runs import atomic_save_safetensors, atomic_write_json

    folder = write_shape_folder(tmp_path_factory.mktemp("data") / "colour12", classes=COLOUR_CLASSES,
                                per_class=10, size=32)
    dataset = load_dataset(str(folder))
    net, accuracy = train_evaluator(dataset, image_passes=1500, progress=False)
    directory = evaluator_cache / "evaluators" / f"{dataset.key}-v{RECIPE_VERSION}"
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(net.state_dict(), directory / "model.safetensors")
    atomic_write_json(directory / "evaluator.json", {"test_accuracy": accuracy, "channels": 3,
                                                     "num_classes": COLOUR_CLASSES,
                                                     "feature_scale": feature_scale(net, dataset.train)})
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, colour12, evaluator_cache):
    """Runs trained on demand, once per (model type, options, data): {key: run directory}."""
    root, runs = tmp_path_factory.mktemp("matrix"), {}

    def get(cli, model_type: str, options: dict, data: str) -> Path:
        key = (model_type, json.dumps(options, sort_keys=True), data)
        if key not in runs:
            run_dir = root / f"{cell_id(model_type, options)}-{data}"
            args = ["train", model_type, "--dataset", colour12 if data == "colour12" else data, "--out", run_dir,
                    "--max-steps", "2", "--batch-size", "8", "--checkpoint-every", "1",
                    "--model-config", json.dumps(FAMILIES[model_type].smallest)]
            for name, value in options.items():
                args += [f"--{name.replace('_', '-')}", value]
            code, _, err = cli(*args)
            assert code == 0, err
            runs[key] = run_dir
        return runs[key]

    return get


def _steps_in_history(run_dir: Path) -> list[int]:
    with (run_dir / "loss.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("model_type, options, data, command", MATRIX)
def test_matrix(cli, trained, tmp_path, model_type, options, data, command):
    run_dir = trained(cli, model_type, options, data)
    run = load_run(run_dir)
    classes = COLOUR_CLASSES if data == "colour12" else 10
    assert run.model_type == model_type and run.num_classes == classes
    CHECKS[command](cli, run, run_dir, tmp_path, classes)


def check_train(cli, run, run_dir, tmp_path, classes):
    shape = json.loads((run_dir / "config.json").read_text())["settings"]["data_shape"]
    assert shape["num_classes"] == classes and shape["channels"] == (3 if classes == COLOUR_CLASSES else 1)
    assert _steps_in_history(run_dir)[-1] >= 2 and (run_dir / "samples.png").is_file()


def check_resume(cli, run, run_dir, tmp_path, classes):
    done = _steps_in_history(run_dir)[-1]
    code, _, err = cli("train", run.model_type, "--out", run_dir, "--resume", "--max-steps", done + 1)
    assert code == 0, err
    assert _steps_in_history(run_dir)[-1] == done + 1
    load_run(run_dir)  # the weights written at the end match the config


def check_sample(cli, run, run_dir, tmp_path, classes):
    label = ["--label", classes - 1] if run.conditional else []
    for sampler in run.samplers or (None,):
        chosen = ["--sampler", sampler, "--steps", "2"] if sampler else []
        out = tmp_path / f"{sampler}.png"
        code, _, err = cli("sample", run_dir, "--out", out, "--n", "4", *label, *chosen)
        assert code == 0, err
        assert Image.open(out).size[0] > 32
    code, _, err = cli("sample", run_dir, "--out", tmp_path / "x.png", "--label", classes if run.conditional else 0)
    assert_one_line_error(code, err, "--label" if run.conditional else "unconditional")


def evaluate(cli, run, run_dir) -> dict:
    """`vaediff evaluate` at the smallest counts (the run's own likelihood flags); RUN/metrics.json."""
    small = [flag for option in run.likelihood_options for flag in SMALL_LIKELIHOOD[option]]
    steps = ["--steps", "2"] if run.has_sampler else []
    code, _, err = cli("evaluate", run_dir, "--n-samples", "20", *small, *steps)
    assert code == 0, err
    return json.loads((run_dir / "metrics.json").read_text())


def check_evaluate(cli, run, run_dir, tmp_path, classes):
    metrics = evaluate(cli, run, run_dir)
    assert metrics["model_type"] == run.model_type and metrics["fid"] >= 0
    assert ("class_accuracy" in metrics) == run.conditional
    assert len(metrics["predicted_class_share"]) == classes


def check_compare(cli, run, run_dir, tmp_path, classes):
    """compare with its default flags but fewer curve samples: curves (and the seed's DDPM point where the
    family has that sampler) included."""
    if not (run_dir / "metrics.json").is_file():  # evaluated by its own cell, unless run alone
        evaluate(cli, run, run_dir)
    code, _, err = cli("compare", run_dir, "--out", tmp_path / "report", "--curve-samples", "20")
    assert code == 0, err
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "report" / "steps.png").is_file() == run.has_sampler


def check_serve(cli, run, run_dir, tmp_path, classes):
    from vaediff.serve import Demo

    demo = Demo([run_dir])
    sampler = run.samplers[0] if run.samplers else ""
    picture, status = demo.generate(run_dir.name, str(classes - 1), "4", sampler, "2", "1", "0")
    assert picture is not None, status
    assert picture.ndim == 3 and picture.shape[2] == 3


def check_diffusers(cli, run, run_dir, tmp_path, classes):
    """Each folder the family saves for diffusers loads with the class its config names."""
    for folder in run.diffusers_folders:
        config = json.loads((run_dir / folder / next(p.name for p in (run_dir / folder).glob("*config.json"))
                             ).read_text())
        component = getattr(diffusers, config["_class_name"]).from_pretrained(run_dir / folder)
        if isinstance(component, torch.nn.Module):
            assert sum(p.numel() for p in component.parameters()) > 0
        else:
            component.set_timesteps(2)
            assert len(component.timesteps) >= 2


CHECKS = {"train": check_train, "resume": check_resume, "sample": check_sample, "evaluate": check_evaluate,
          "compare": check_compare, "serve": check_serve, "diffusers": check_diffusers}


def fingerprint(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.xdist_group("matrix-flow-mnist-5k")
def test_compare_flow_and_diffusion_with_default_flags(cli, trained, tmp_path):
    """The seed's DDPM point belongs to diffusion; the flow's curve says why it has none (it used to fail
    with compare's default flags). Default flags but --curve-samples: 200 a point took five minutes here."""
    runs = [trained(cli, "flow", {}, "mnist-5k"), trained(cli, "diffusion", {"preset": "fast"}, "mnist-5k")]
    for run_dir in runs:
        evaluate(cli, load_run(run_dir), run_dir)
    code, _, err = cli("compare", *runs, "--out", tmp_path / "report", "--curve-samples", "20")
    assert code == 0, err
    curves = json.loads((tmp_path / "report" / "curves.json").read_text())
    flow, diffusion = (curves[run.name]["steps"] for run in runs)
    every_step = load_run(runs[1]).model_config.num_train_timesteps
    assert diffusion[-1]["steps"] == every_step and diffusion[-1]["sampler"] == "ddpm"
    assert all(p["sampler"] in FAMILIES["flow"].load(runs[0], json.loads((runs[0] / "config.json").read_text())
                                                      ).samplers for p in flow)
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"{runs[0].name}: no point for the seed's sampler" in text


@pytest.mark.xdist_group("matrix-diffusion[fast]-colour12")
def test_a_read_only_run_is_sampled_compared_and_served_unchanged(cli, trained, tmp_path, monkeypatch):
    import os
    import shutil
    import stat

    from vaediff.serve import Demo

    copy = tmp_path / "shared"
    shutil.copytree(trained(cli, "diffusion", {"preset": "fast"}, "colour12"), copy)
    evaluate(cli, load_run(copy), copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = fingerprint(copy)
    assert cli("sample", copy, "--out", tmp_path / "g.png", "--n", "4", "--label", "11")[0] == 0
    code, _, err = cli("compare", copy, "--out", tmp_path / "report", "--curve-samples", "20")
    assert code == 0, err
    picture, status = Demo([copy]).generate("shared", "11", "4", "dpm", "2", "2", "0")
    assert picture is not None, status
    assert fingerprint(copy) == before
    # root may write anyway, so the refusal is asked of a user who may not (os.access says no)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if Path(path) == copy else real_access(
        path, mode, *a, **k))
    code, _, err = cli("evaluate", copy, "--n-samples", "20")
    assert_one_line_error(code, err, f"no permission to write in {copy}", "--out DIR")
    assert fingerprint(copy) == before
