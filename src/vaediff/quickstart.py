"""The whole study in one command: EDA, five models (four on unlabelled data) trained within one time budget, evaluated, compared.

Stages are recorded in OUT/quickstart.json as they finish, so `--resume` continues an interrupted study
from the last finished stage (and an interrupted training from its checkpoint).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from vaediff.checks import data_source_inputs
from vaediff.constants import DATASETS
from vaediff.data import describe_source, load_dataset
from vaediff.eda import run_eda
from vaediff.errors import AlreadyFinished, ConfigError, RunError
from vaediff.evaluate import evaluate_run
from vaediff.evaluator_network import is_cached, load_or_train_evaluator
from vaediff.families import train_run
from vaediff.report import check_language, compare
from vaediff.runs import (
    CONFIG_FILE,
    atomic_write_json,
    prepare_output_dir,
    read_json,
    write_run_config,
    written_kind,
)

STATE_FILE = "quickstart.json"

# Shares of the training budget (53% of --minutes; the rest is EDA, the evaluator, evaluation and the
# report: five models' evaluations and curves took 6.6 of 15.6 minutes when training had 60%). VAEs
# converge in well under a minute on small data; flow matching trains the fast preset's network like
# pixel diffusion and took its share from the others.
TRAIN_FRACTION = 0.53
SHARES = {"vae": 0.06, "cvae": 0.06, "diffusion": 0.28, "latent-diffusion": 0.32, "flow": 0.28}


@dataclass(frozen=True)
class QuickstartPlan:
    dataset: str = "mnist-5k"    # a built-in name, or an image folder / .npz file (made absolute)
    image_size: int | None = None  # resize the images (data.load_dataset)
    labelled: bool = True         # False: unlabelled data, no cvae (class-conditional only)
    minutes: float = 15.0
    eval_samples: int = 1000      # samples per model for the quality metrics
    iw_samples: int = 200         # importance samples for the VAEs' NLL bound
    # bits/dim of diffusion and flow on the first test images (evaluate's defaults: 1,000 images, 8 ODE steps)
    likelihood_images: int = 200
    ode_steps: int = 4
    curve_samples: int = 50       # samples per point of the report's steps and guidance curves
    seed: int = 0
    seeds: int = 1                # runs per model type (seeds seed, seed + 1, ...), sharing the budget
    lang: str = "en"              # report and headlines: "en" or "zh"
    # per model type, extra options for its training run (e.g. {"diffusion": {"model": {...}}}): tiny
    # networks in the tests, other presets for users who want them
    model_options: dict = field(default_factory=dict)
    # the smallest budget per seed that holds the default study: the evaluator, five trainings, evaluations
    # and the report each take a share (tests of the machinery with tiny networks set 0)
    minimum_minutes: float = 3.0

    def check_budget(self) -> None:
        """One line, before anything is trained, when the budget cannot hold the study."""
        needed = self.minimum_minutes * self.seeds
        if self.minutes < needed:
            seeds = f"{self.seeds} seeds" if self.seeds > 1 else "one seed"
            raise ConfigError(f"--minutes {self.minutes:g} cannot hold a study of {len(self.runs())} runs "
                              f"({seeds}): give --minutes {needed:g} or more" +
                              (", or fewer --seeds" if self.seeds > 1 else ""))

    def train_minutes(self, model_type: str) -> float:
        return self.minutes * TRAIN_FRACTION * SHARES[model_type] / self.seeds

    def runs(self) -> list[tuple[str, str, int]]:
        """(run directory name, model type, seed) of every run: one per model type, named after it; with
        several seeds, NAME-seedS for each (the report groups them back by their config)."""
        model_types = [m for m in SHARES if self.labelled or m != "cvae"]
        if self.seeds == 1:
            return [(model_type, model_type, self.seed) for model_type in model_types]
        return [(f"{model_type}-seed{seed}", model_type, seed) for model_type in model_types
                for seed in range(self.seed, self.seed + self.seeds)]


def _stages(plan: QuickstartPlan) -> list[tuple[str, str]]:
    stages = [("eda", "exploratory plots of the data set"), ("evaluator", "evaluator network")]
    for name, model_type, _ in plan.runs():
        stages.append((f"train:{name}", f"train {name} ({plan.train_minutes(model_type):.1f} min)"))
    stages += [(f"evaluate:{name}", f"evaluate {name}") for name, _, _ in plan.runs()]
    stages.append(("compare", "comparison report"))
    return stages


def _run_stage(name: str, plan: QuickstartPlan, out: Path, data_dir: str | None, resume: bool) -> None:
    kind, _, run_name = name.partition(":")
    run_dir = out / run_name
    model_type, seed = next(((m, s) for n, m, s in plan.runs() if n == run_name), (None, plan.seed))
    if kind == "eda":
        eda_dir = prepare_output_dir(out / "eda", overwrite=True, kind="eda")
        write_run_config(eda_dir, "eda", {"dataset": plan.dataset, "data_dir": data_dir, "seed": plan.seed,
                                          "image_size": plan.image_size})
        run_eda(load_dataset(plan.dataset, data_dir, image_size=plan.image_size), eda_dir, seed=plan.seed)
    elif kind == "evaluator":
        load_or_train_evaluator(load_dataset(plan.dataset, data_dir, image_size=plan.image_size))
    elif kind == "train":
        options = dict(plan.model_options.get(model_type, {}))  # each family's defaults otherwise (the fast preset)
        can_resume = resume and (run_dir / "config.json").is_file()
        try:
            train_run(model_type, run_dir, plan.dataset, data_dir, options,
                      {"minutes": plan.train_minutes(model_type), "seed": seed}, resume=can_resume,
                      overwrite=not can_resume, image_size=plan.image_size)
        except AlreadyFinished:
            pass  # stopped after training finished but before the stage was recorded: nothing to redo
    elif kind == "evaluate":
        evaluate_run(run_dir, n_samples=plan.eval_samples, iw_samples=plan.iw_samples, seed=seed,
                     likelihood={"test_images": plan.likelihood_images, "ode_steps": plan.ode_steps},
                     ignore_unused=True)
    elif kind == "compare":
        report_dir = prepare_output_dir(out / "report", overwrite=True, kind="compare")
        names = [name for name, _, _ in plan.runs()]
        write_run_config(report_dir, "compare", {"runs": names, "seed": plan.seed, "lang": plan.lang})
        compare([out / name for name in names], report_dir, lang=plan.lang, seed=plan.seed,
                curve_samples=plan.curve_samples, with_ddpm_1000=False)


def quickstart(out: str | Path = "runs/quickstart", dataset: str = "mnist-5k", minutes: float = 15.0,
               data_dir: str | None = None, overwrite: bool = False, resume: bool = False, seed: int = 0,
               plan: QuickstartPlan | None = None, lang: str = "en", seeds: int = 1, image_size: int | None = None
               ) -> Path:
    """Run (or resume) the study into `out`; returns the report's path. `plan`, when given, replaces
    `dataset`, `minutes`, `seed`, `seeds`, `lang` and `image_size` (and sets sample counts and model options)."""
    plan = plan or QuickstartPlan(dataset=dataset, minutes=minutes, seed=seed, seeds=seeds, lang=lang,
                                  image_size=image_size)
    check_language(plan.lang)
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume continues the study in --out and --overwrite replaces it; give one of them")
    if resume:
        plan, data_dir, done = _resumed_study(out)
        load_dataset(plan.dataset, data_dir, image_size=plan.image_size)
    else:
        plan.check_budget()
        data = load_dataset(plan.dataset, data_dir, image_size=plan.image_size)  # a bad source fails before writing
        plan = replace(plan, dataset=describe_source(plan.dataset), labelled=data.labelled)
        prepare_output_dir(out, overwrite=overwrite, kind="quickstart", inputs=data_source_inputs(plan.dataset))
        write_run_config(out, "quickstart", {**asdict(plan), "data_dir": data_dir},
                         outputs=["eda", "report", *(name for name, _, _ in plan.runs())])
        done = []
    stages = _stages(plan)
    started = time.perf_counter()
    for index, (name, description) in enumerate(stages, start=1):
        if name in done:
            continue
        elapsed = time.perf_counter() - started
        description = describe_stage(name, description, plan)
        print(f"[{index}/{len(stages)}] {description}  (elapsed {_clock(elapsed)}, "
              f"budget {_clock(plan.minutes * 60)}, about {_clock(max(0.0, plan.minutes * 60 - elapsed))} left)",
              flush=True)
        _run_stage(name, plan, out, data_dir, resume=resume)
        done.append(name)
        atomic_write_json(out / STATE_FILE, {"done": done, "elapsed_s": round(time.perf_counter() - started, 1)})
    return out / "report" / "report.md"


def _resumed_study(out: Path) -> tuple[QuickstartPlan, str | None, list[str]]:
    """The plan, data directory and finished stages of the study in `out`; a stage whose output is gone
    (a run directory deleted since) is redone, and so is every stage that used it."""
    if not out.is_dir():
        raise RunError(f"nothing to resume: {out} does not exist; run the command without --resume")
    if written_kind(out) != "quickstart":
        raise RunError(f"nothing to resume in {out}: it holds no quickstart study (no vaediff config.json of one)")
    settings = read_json(out / CONFIG_FILE)["settings"]
    plan = QuickstartPlan(**{f.name: settings[f.name] for f in fields(QuickstartPlan) if f.name in settings})
    done = list(read_json(out / STATE_FILE).get("done", [])) if (out / STATE_FILE).is_file() else []
    lost = [name for name in done if not _stage_output_exists(name, out)]
    for name in lost:
        print(f"{name}: its output in {out} is missing; doing it again", flush=True)
    lost_runs = {name.partition(":")[2] for name in lost if name.startswith("train:")}
    redo = set(lost) | {f"evaluate:{run}" for run in lost_runs} | ({"compare"} if lost else set())
    return plan, settings.get("data_dir"), [name for name in done if name not in redo]


def _stage_output_exists(name: str, out: Path) -> bool:
    kind, _, run_name = name.partition(":")
    expected = {"eda": out / "eda" / CONFIG_FILE, "train": out / run_name / CONFIG_FILE,
                "evaluate": out / run_name / "metrics.json", "compare": out / "report" / "report.md"}
    return kind not in expected or expected[kind].is_file()


def describe_stage(name: str, description: str, plan: QuickstartPlan) -> str:
    """What the progress line says; for the evaluator, what will happen: minutes of training, or a load."""
    if name != "evaluator":
        return description
    if plan.dataset not in DATASETS or plan.image_size is not None:  # cached by content: known once loaded
        return "evaluator network (trained once for these data, then cached)"
    return "evaluator network (cached)" if is_cached(plan.dataset) else "training the evaluator (cached for later runs)"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"
