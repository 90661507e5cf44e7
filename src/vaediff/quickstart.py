"""The whole study in one command: EDA, five models (four on unlabelled data) trained within one time budget, evaluated, compared.

Stages are recorded in OUT/quickstart.json as they finish, so `--resume` continues an interrupted study
from the last finished stage (and an interrupted training from its checkpoint).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from vaediff.checks import MIN_EVAL_SAMPLES, data_source_inputs
from vaediff.constants import DATASETS
from vaediff.costs import curve_samples_that_fit
from vaediff.data import describe_source, load_dataset
from vaediff.eda import run_eda
from vaediff.errors import AlreadyFinished, ConfigError, RunError
from vaediff.evaluate import evaluate_run
from vaediff.evaluator_network import is_cached, load_or_train_evaluator
from vaediff.families import FAMILIES, addable_types, quickstart_types, train_run
from vaediff.families.base import LikelihoodSettings
from vaediff.inception import check_features, image_seconds, load_inception
from vaediff.report import check_language, compare
from vaediff.runs import (
    CONFIG_FILE,
    atomic_write_json,
    prepare_output_dir,
    read_json,
    write_run_config,
    written_kind,
)
from vaediff.study_plan import (
    FIXED_OVERHEAD_S,
    FIXED_SEEDS,
    REPORT_GRID,
    SAFETY,
    StudyPlan,
    fixed_plan,
    host_from_json,
    measured_speed,
    plan_study,
    probe_host,
)
from vaediff.training.precision import check_precision, training_device
from vaediff.training.trackers import check_report_to

STATE_FILE = "quickstart.json"

WORKS = ("budget", "fixed")


@dataclass(frozen=True)
class QuickstartPlan:
    dataset: str = "mnist-5k"    # a built-in name, or an image folder / .npz file (made absolute)
    image_size: int | None = None  # resize the images (data.load_dataset)
    image_column: str | None = None  # the columns of a Hugging Face `datasets` source (data/hf.py)
    label_column: str | None = None
    labelled: bool = True         # False: unlabelled data, no cvae (class-conditional only)
    minutes: float = 15.0
    # "budget": measure this host, then size training, samples and curves to end within `minutes`;
    # "fixed": each family's fixed_steps optimizer steps and these sample counts on any host
    work: str = "budget"
    fixed_steps: dict = field(default_factory=dict)  # --work fixed: steps per model type (Family.fixed_steps otherwise)
    eval_samples: int = 1000      # samples per model for the quality metrics (--work budget: at most)
    iw_samples: int = 200         # importance samples for the VAEs' NLL bound
    # bits/dim of diffusion and flow on the first test images (evaluate's defaults: 1,000 images, 8 ODE steps)
    likelihood_images: int = 200  # (--work budget: at most)
    ode_steps: int = 4
    curve_samples: int = 100      # samples per point of the report's curves (--work budget: at most)
    seed: int = 0
    seeds: int = 1                # runs per model type (seeds seed, seed + 1, ...), sharing the budget
    lang: str = "en"              # report and headlines: "en" or "zh"
    report_to: str = "tensorboard"  # every training run's experiment tracker (training/trackers.py)
    # "inception": every run's FID and KID also in Inception-v3 features (inception.py), ranked in the report
    features: str = "evaluator"
    inception_weights: str | None = None  # torch-fidelity's weights file (made absolute)
    # every run's training autocast and its evaluation's samples' (training/precision.py); the host's training
    # steps are timed in it
    precision: str = "fp32"
    # model types outside the default study that it adds (families.addable_types: meanflow, which starts
    # from the study's own flow run), each with its family's added_share of the training time
    with_models: tuple[str, ...] = ()
    # per model type, extra options for its training run (e.g. {"diffusion": {"model": {...}}}): tiny
    # networks in the tests, other presets for users who want them
    model_options: dict = field(default_factory=dict)
    # the smallest budget per seed that holds the default study: the evaluator, five trainings, evaluations
    # and the report each take a share (tests of the machinery with tiny networks set 0)
    minimum_minutes: float = 3.0

    def check_budget(self) -> None:
        """One line, before anything is measured, when the budget cannot hold the study (plan_study then
        checks it against this host's speed)."""
        if self.work not in WORKS:
            raise ConfigError(f"--work must be one of {', '.join(WORKS)}, got {self.work!r}")
        check_report_to(self.report_to)  # a missing tracker package: one line, before minutes of work
        check_features(self.features, self.inception_weights)
        check_precision(self.precision, training_device())  # fp16 on a CPU: one line, nothing written
        unknown = [m for m in self.with_models if m not in addable_types()]
        if unknown:
            raise ConfigError(f"--with {unknown[0]}: the default study has it or it cannot be added; "
                              f"--with takes {', '.join(addable_types())}")
        if self.inception_weights is not None:
            load_inception(self.inception_weights)  # a wrong file: one line before minutes of work
        if self.work == "fixed":
            return
        needed = self.minimum_minutes * self.seeds
        if self.minutes < needed:
            seeds = f"{self.seeds} seeds" if self.seeds > 1 else "one seed"
            raise ConfigError(f"--minutes {self.minutes:g} cannot hold a study of {len(self.runs())} runs "
                              f"({seeds}): give --minutes {needed:g} or more" +
                              (", or fewer --seeds" if self.seeds > 1 else ""))

    def data_options(self) -> dict:
        """load_dataset's (and train_run's) options beside the source."""
        return {"image_size": self.image_size, "image_column": self.image_column, "label_column": self.label_column}

    def likelihood(self) -> LikelihoodSettings:
        return LikelihoodSettings(iw_samples=self.iw_samples, test_images=self.likelihood_images,
                                  ode_steps=self.ode_steps)

    def largest_samples(self) -> tuple[int, int, int]:
        """Evaluation samples, samples per curve point, likelihood test images: --work fixed uses them,
        --work budget at most."""
        return self.eval_samples, self.curve_samples, self.likelihood_images

    def model_types(self) -> list[str]:
        return list(dict.fromkeys(model_type for _, model_type, _ in self.runs()))

    def runs(self) -> list[tuple[str, str, int]]:
        """(run directory name, model type, seed) of every run: one per model type, named after it; with
        several seeds, NAME-seedS for each (the report groups them back by their config)."""
        model_types = quickstart_types(self.labelled) + [m for m in dict.fromkeys(self.with_models)
                                                         if self.labelled or not FAMILIES[m].labels_needed]
        if self.seeds == 1:
            return [(model_type, model_type, self.seed) for model_type in model_types]
        return [(f"{model_type}-seed{seed}", model_type, seed) for model_type in model_types
                for seed in range(self.seed, self.seed + self.seeds)]

    def init_run(self, model_type: str, seed: int) -> str | None:
        """The study's run whose weights a `model_type` run of `seed` starts from (Family.study_init: meanflow
        from the flow run of the same seed), or None."""
        start = FAMILIES[model_type].study_init
        return next((name for name, other, other_seed in self.runs() if other == start and other_seed == seed), None)


def _stages(plan: QuickstartPlan, study: StudyPlan) -> list[tuple[str, str]]:
    stages = [("eda", "exploratory plots of the data set"), ("evaluator", "evaluator network")]
    for name, _, _ in plan.runs():
        work = (f"{study.train_minutes[name]:.1f} min, about {study.expected_steps[name]:,} steps"
                if study.work == "budget" else f"{study.expected_steps[name]:,} steps")
        stages.append((f"train:{name}", f"train {name} ({work})"))
    stages += [(f"evaluate:{name}", f"evaluate {name} ({study.eval_samples} samples)") for name, _, _ in plan.runs()]
    stages.append(("compare", "comparison report"))
    return stages


def _run_stage(name: str, plan: QuickstartPlan, study: StudyPlan, out: Path, data_dir: str | None, resume: bool,
               seconds_left: float, host: dict | None) -> None:
    kind, _, run_name = name.partition(":")
    run_dir = out / run_name
    model_type, seed = next(((m, s) for n, m, s in plan.runs() if n == run_name), (None, plan.seed))
    if kind == "eda":
        eda_dir = prepare_output_dir(out / "eda", overwrite=True, kind="eda")
        write_run_config(eda_dir, "eda", {"dataset": plan.dataset, "data_dir": data_dir, "seed": plan.seed,
                                          **plan.data_options()})
        run_eda(load_dataset(plan.dataset, data_dir, **plan.data_options()), eda_dir, seed=plan.seed)
    elif kind == "evaluator":
        load_or_train_evaluator(load_dataset(plan.dataset, data_dir, **plan.data_options()))
    elif kind == "train":
        options = dict(plan.model_options.get(model_type, {}))  # each family's defaults otherwise (the fast preset)
        start = plan.init_run(model_type, seed)  # meanflow: from the study's flow run of the same seed
        if start:
            options["init"] = str(out / start)
        can_resume = resume and (run_dir / "config.json").is_file()
        limit = ({"minutes": study.train_minutes[run_name]} if study.work == "budget"
                 else {"max_steps": study.expected_steps[run_name]})
        try:
            train_run(model_type, run_dir, plan.dataset, data_dir, options,
                      {**limit, "seed": seed, "precision": plan.precision},
                      resume=can_resume, overwrite=not can_resume, report_to=plan.report_to, **plan.data_options())
        except AlreadyFinished:
            pass  # stopped after training finished but before the stage was recorded: nothing to redo
    elif kind == "evaluate":
        evaluate_run(run_dir, n_samples=study.eval_samples, iw_samples=plan.iw_samples, seed=seed,
                     likelihood={"test_images": study.likelihood_images, "ode_steps": plan.ode_steps},
                     ignore_unused=True, announce=False,  # the plan already said what it costs
                     features=plan.features, inception_weights=plan.inception_weights, precision=plan.precision)
    elif kind == "compare":
        report_dir = prepare_output_dir(out / "report", overwrite=True, kind="compare")
        names = [name for name, _, _ in plan.runs()]
        write_run_config(report_dir, "compare", {"runs": names, "seed": plan.seed, "lang": plan.lang})
        curve_samples = _curve_samples(plan, study, out, seconds_left, host)
        compare([out / name for name in names], report_dir, lang=plan.lang, seed=plan.seed,
                curve_samples=max(curve_samples, MIN_EVAL_SAMPLES), curves=curve_samples > 0, with_ddpm_1000=False,
                curve_steps=study.curve_steps, announce=False, features=plan.features)


def _curve_samples(plan: QuickstartPlan, study: StudyPlan, out: Path, seconds_left: float, host: dict | None) -> int:
    """--work fixed: the planned count. --work budget: as many as the time left holds, at the sampling
    speed each evaluation measured (0: no curves, and a line that says so)."""
    if study.work == "fixed" or host is None:
        return study.curve_samples
    speeds = host_from_json(host)
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    measured = [measured_speed(out / name, speeds.models[model_type]) for name, model_type in runs]
    grids = sum(REPORT_GRID * speed.sample_s for speed in measured) + FIXED_OVERHEAD_S  # grids and figures
    steps = [study.curve_steps[model_type] for _, model_type in runs]
    samples = curve_samples_that_fit(seconds_left - grids, measured, study.curve_samples, steps,
                                     speeds.evaluator_image_s, SAFETY)
    if samples < study.curve_samples:
        print(f"  {max(0.0, seconds_left) / 60:.1f} min left: " +
              (f"{samples} samples per curve point instead of {study.curve_samples}" if samples
               else "no room for the steps and guidance curves; the report leaves them out"), flush=True)
    return samples


def _plan(plan: QuickstartPlan, data, data_dir: str | None, started: float) -> tuple[StudyPlan, dict | None]:
    """--work fixed: the fixed work. --work budget: measure this host, then size the study to the time left
    (a ConfigError, before anything is written, when it cannot hold one)."""
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    if plan.work == "fixed":
        return fixed_plan(runs, plan.largest_samples(), plan.fixed_steps), None
    print("measuring this host: a few training steps and samples of each model", flush=True)
    host = probe_host(plan.model_types(), data, plan.dataset, data_dir, plan.model_options, plan.data_options(),
                      plan.likelihood(), plan.seed, precision=plan.precision)
    evaluator_images = None if _evaluator_cached(plan) else len(data.train)
    reserved = _inception_seconds(plan, data, len(runs))
    study = plan_study(plan.minutes, host, runs, evaluator_images, elapsed_s=time.perf_counter() - started + reserved,
                       largest=plan.largest_samples())
    return study, asdict(host)


def _inception_seconds(plan: QuickstartPlan, data, runs: int) -> float:
    """With --features inception, the Inception-v3 features a budgeted study computes, timed here and set
    aside before the rest is planned: the real reference (up to 10,000 training images; counted even when
    cached) and, per run, the most samples it may draw and as many test images."""
    if plan.features != "inception":
        return 0.0
    per_image = image_seconds(load_inception(plan.inception_weights), data.train.images[:10])
    seconds = per_image * (min(len(data.train), 10000) + 2 * runs * plan.largest_samples()[0])
    print(f"  Inception-v3 features: about {seconds / 60:.1f} min of the budget ({per_image * 1000:.0f} ms an image "
          "here)", flush=True)
    return seconds


def _evaluator_cached(plan: QuickstartPlan) -> bool:
    return plan.dataset in DATASETS and plan.image_size is None and is_cached(plan.dataset)


def quickstart(out: str | Path = "runs/quickstart", dataset: str = "mnist-5k", minutes: float = 15.0,
               data_dir: str | None = None, overwrite: bool = False, resume: bool = False, seed: int = 0,
               plan: QuickstartPlan | None = None, lang: str = "en", seeds: int | None = None, image_size: int | None = None,
               work: str = "budget", report_to: str = "tensorboard", image_column: str | None = None,
               label_column: str | None = None, features: str = "evaluator", inception_weights: str | None = None,
               precision: str = "fp32", with_models: tuple[str, ...] = ()) -> Path:
    """Run (or resume) the study into `out`; returns the report's path. `plan`, when given, replaces
    `dataset`, `minutes`, `seed`, `seeds`, `lang`, `image_size`, the columns and `work` (and sets sample counts and model
    options). `seeds`: runs per model type (default: study_plan.FIXED_SEEDS with fixed work, one with a
    budget)."""
    if seeds is None:
        seeds = FIXED_SEEDS if work == "fixed" else 1
    plan = plan or QuickstartPlan(dataset=dataset, minutes=minutes, seed=seed, seeds=seeds, lang=lang,
                                  image_size=image_size, work=work, report_to=report_to,
                                  image_column=image_column, label_column=label_column, features=features,
                                  inception_weights=str(Path(inception_weights).absolute()) if inception_weights else None,
                                  precision=precision, with_models=tuple(with_models))
    check_language(plan.lang)
    out = Path(out)
    started = time.perf_counter()
    if resume and overwrite:
        raise ConfigError("--resume continues the study in --out and --overwrite replaces it; give one of them")
    if resume:
        plan, data_dir, done, restart = _resumed_study(out)
        load_dataset(plan.dataset, data_dir, **plan.data_options())
        state = read_json(out / STATE_FILE) if (out / STATE_FILE).is_file() else {}
        study, host = _stored_plan(plan, state)
        stage_seconds, spent = dict(state.get("stage_seconds", {})), float(state.get("elapsed_s", 0.0))
    else:
        plan.check_budget()
        data = load_dataset(plan.dataset, data_dir, **plan.data_options())  # a bad source fails before writing
        plan = replace(plan, dataset=describe_source(plan.dataset), labelled=data.labelled)
        if plan.work == "budget":
            prepare_output_dir(out, overwrite=overwrite, kind="quickstart", inputs=data_source_inputs(plan.dataset),
                               check_only=True)  # refused before minutes of measuring, not after
        study, host = _plan(plan, data, data_dir, started)
        prepare_output_dir(out, overwrite=overwrite, kind="quickstart", inputs=data_source_inputs(plan.dataset))
        write_run_config(out, "quickstart", {**asdict(plan), "data_dir": data_dir},
                         outputs=["eda", "report", *(name for name, _, _ in plan.runs())])
        done, stage_seconds, spent, restart = [], {}, 0.0, set()
        if host is not None:
            stage_seconds["plan"] = round(host["probe_s"], 1)
    state = {"done": done, "plan": study.as_json(), "host": host, "stage_seconds": stage_seconds}
    atomic_write_json(out / STATE_FILE, {**state, "elapsed_s": round(spent + time.perf_counter() - started, 1)})
    stages = _stages(plan, study)
    for index, (name, description) in enumerate(stages, start=1):
        if name in done:
            continue
        elapsed = spent + time.perf_counter() - started
        description = describe_stage(name, description, plan)
        print(f"[{index}/{len(stages)}] {description}  (elapsed {_clock(elapsed)}" +
              (f", budget {_clock(plan.minutes * 60)}, about {_clock(max(0.0, plan.minutes * 60 - elapsed))} left)"
               if study.work == "budget" else ")"), flush=True)
        stage_started = time.perf_counter()
        continues = resume and name.partition(":")[2] not in restart  # a run to train again starts afresh
        _run_stage(name, plan, study, out, data_dir, continues, plan.minutes * 60 - elapsed, host)
        done.append(name)
        stage_seconds[name] = round(time.perf_counter() - stage_started, 1)
        atomic_write_json(out / STATE_FILE, {**state, "elapsed_s": round(spent + time.perf_counter() - started, 1)})
    return out / "report" / "report.md"


def _stored_plan(plan: QuickstartPlan, state: dict) -> tuple[StudyPlan, dict | None]:
    """The plan a study was started with (quickstart.json); a study from before plans were stored gets the
    fixed plan of its work mode."""
    stored = state.get("plan")
    if stored:
        curve_steps = stored["curve_steps"]
        if isinstance(curve_steps, list):  # a study planned before each family had its own points
            curve_steps = {m: curve_steps for m in plan.model_types()}
        return (StudyPlan(**{**stored, "curve_steps": {m: tuple(s) for m, s in curve_steps.items()}}),
                state.get("host"))
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    return fixed_plan(runs, plan.largest_samples(), plan.fixed_steps), None


def _resumed_study(out: Path) -> tuple[QuickstartPlan, str | None, list[str], set[str]]:
    """The plan, data directory and finished stages of the study in `out`, and the runs to train again from
    scratch; a stage whose output is gone (a run directory deleted since) is redone, and so is every stage
    that used it (a run started from its weights is trained again)."""
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
    started_from_lost = {name for name, model_type, seed in plan.runs() if plan.init_run(model_type, seed) in lost_runs}
    redo = (set(lost) | {f"evaluate:{run}" for run in lost_runs | started_from_lost}
            | {f"train:{run}" for run in started_from_lost} | ({"compare"} if lost else set()))
    return plan, settings.get("data_dir"), [name for name in done if name not in redo], started_from_lost


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
