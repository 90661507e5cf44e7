"""Model families behind one interface: a registry of descriptions, and the shared code that uses them.

`FAMILIES` maps each model type (the `vaediff train TYPE` argument) to its `Family` (families/base.py);
`train_run` trains any of them and `load_run` loads any run back. A new family is a file here that
defines a `Family` and a `Run`, and one line in `FAMILIES` (or a call to `register`, for a family that lives
outside vaediff). The CLI's flags and choices, the web demo's samplers, the quickstart's models and the
report's sentences are all read from the registry.
"""

from __future__ import annotations

import re
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path

from vaediff import devices
from vaediff.checks import data_source_inputs
from vaediff.data import (
    DIGIT_NAMES,
    FASHION_NAMES,
    MNIST_SHAPE,
    Dataset,
    DataShape,
    describe_source,
    load_dataset,
)
from vaediff.errors import AlreadyFinished, ConfigError, RunError
from vaediff.families import diffusion, flow, latent, meanflow, vae
from vaediff.families.base import Family, Run, TrainingRequest
from vaediff.generation import preview_grid
from vaediff.model_card import write_model_card, write_pipeline_index
from vaediff.runs import (
    CONFIG_FILE,
    atomic_write_bytes,
    atomic_write_json,
    config_from_dict,
    config_to_dict,
    prepare_output_dir,
    read_run_config,
    write_run_config,
)
from vaediff.training import TrainConfig, is_main_process, train, wait_for_everyone
from vaediff.training.loop import Extras
from vaediff.training.precision import ACCELERATE_NAMES, check_precision, training_device
from vaediff.training.trackers import check_report_to

LIMIT_KEYS = ("epochs", "minutes", "max_steps")
SPEED_KEYS = ("compile",)  # change how fast a run trains, not what it computes: a resume may change them

FAMILIES: dict[str, Family] = {
    "vae": vae.FAMILY,
    "cvae": vae.CVAE_FAMILY,  # the same family; the model type sets VAEConfig.conditional
    "diffusion": diffusion.FAMILY,
    "latent-diffusion": latent.FAMILY,
    "flow": flow.FAMILY,
    "latent-flow": latent.FLOW_FAMILY,  # latent diffusion's two stages with flow matching's objective
    "meanflow": meanflow.FAMILY,
}


def register(model_type: str, family: Family) -> None:
    """Add a family under `model_type` (replacing one of that name): everything reads FAMILIES at call time.
    A package outside vaediff registers its families through the entry-point group `vaediff.families`
    (name: the model type, value: the Family), which `vaediff` loads at start."""
    if not isinstance(model_type, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", model_type):
        raise ConfigError(f"a model type is a lower-case word like 'flow' or 'latent-flow', got {model_type!r}")
    if not isinstance(family, Family):
        raise ConfigError(f"{model_type}: a family is a vaediff.families.base.Family, got {type(family).__name__}")
    FAMILIES[model_type] = family


def load_plugins() -> None:
    """Register the families other installed packages declare (entry-point group `vaediff.families`)."""
    for entry in entry_points(group="vaediff.families"):
        try:
            family = entry.load()
        except Exception as exc:  # a broken plugin is named, not a traceback
            raise ConfigError(f"the installed family {entry.name!r} ({entry.value}) does not load: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        register(entry.name, family)


load_plugins()


def quickstart_types(labelled: bool = True) -> list[str]:
    """The model types a quickstart trains, in registry order: those with a share, labelled ones only on
    labelled data."""
    return [m for m, f in FAMILIES.items()
            if f.share > 0 and "quickstart" in f.commands and (labelled or not f.labels_needed)]


def addable_types() -> list[str]:
    """The model types `quickstart --with` adds to the default study (Family.added_share)."""
    return [m for m, f in FAMILIES.items() if f.share == 0 < f.added_share and "quickstart" in f.commands]


def study_share(model_type: str) -> float:
    """A model type's share of a study's training time: its default-study share, else its added one."""
    family = FAMILIES[model_type]
    return family.share or family.added_share


def sampler_names() -> tuple[str, ...]:
    """Every sampler some family's runs take (the CLI's and the web demo's choices)."""
    return tuple(dict.fromkeys(s for family in FAMILIES.values() for s in family.samplers))


def check_command(model_type: str, command: str) -> None:
    """One line when a run of `model_type` does not take part in `command` (Family.commands)."""
    family = family_of(model_type)
    if command not in family.commands:
        raise ConfigError(f"{model_type} runs do not support {command}; they support {', '.join(family.commands)}")


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def load_run(run_dir: str | Path) -> Run:
    """Load any trained run from its directory alone (config.json + weights)."""
    config = read_run_config(run_dir)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise RunError(f"{run_dir}/config.json: unknown model type {model_type!r}")
    return FAMILIES[model_type].load(Path(run_dir), config).place(devices.compute_device())


def run_dataset(config: dict, where: str) -> Dataset:
    """The data a run was trained on, loaded again from its config.json settings; one line if the source now
    gives data of another shape than the run recorded (a model is built for one shape)."""
    settings = config.get("settings", {})
    dataset = load_dataset(settings["dataset"], settings.get("data_dir"), image_size=settings.get("image_size"),
                           image_column=settings.get("image_column"), label_column=settings.get("label_column"))
    recorded = DataShape(**settings["data_shape"]) if "data_shape" in settings else MNIST_SHAPE
    if dataset.shape != recorded:
        raise RunError(f"{where} was trained on {recorded.describe()} images but {settings['dataset']} now gives "
                       f"{dataset.shape.describe()}; a model works only on data of its own shape")
    return dataset


def class_names_of(config: dict) -> tuple[str, ...]:
    """A run's class names without loading its data (recorded in config.json; runs written before that
    were on the built-in 10-class sets)."""
    settings = config.get("settings", {})
    if settings.get("class_names"):
        return tuple(settings["class_names"])
    return FASHION_NAMES if settings.get("dataset") == "fashion-mnist" else DIGIT_NAMES


def train_run(model_type: str, out: str | Path, dataset: str | None = None, data_dir: str | None = None,
              options: dict | None = None, train_options: dict | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True, figures: bool = True,
              image_size: int | None = None, report_to: str = "tensorboard", image_column: str | None = None,
              label_column: str | None = None) -> Run:
    """Train a model of `model_type` into the run directory `out` (or continue it with `resume`) and
    return the trained run, loaded back from its directory. `figures=False` skips the sample grids drawn
    after training (sweeps and benchmarks). `report_to`: the experiment trackers (training/trackers.py).
    `options` are the family's settings (e.g. {"preset": "fast"}, {"binarize": True}); `train_options`
    override fields of TrainConfig (None values are ignored). On resume, the stored configuration is
    used and only the limits (epochs, minutes, max_steps) may be changed; a data source or option given
    that differs from the stored one is refused. `dataset` is a built-in name or a path (data.load_dataset;
    default mnist-5k); `image_size` resizes its images; `image_column`, `label_column` name the columns of a
    `datasets` source. The models are built for the data's shape.
    Everything is checked before the run directory is touched: a refused command writes nothing.
    """
    family, run_dir = family_of(model_type), Path(out)
    check_command(model_type, "train")
    log_with = check_report_to(report_to)  # a missing tracker package: one line, before anything is written
    overrides = {k: v for k, v in (train_options or {}).items() if v is not None}
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    data_options = {"image_size": image_size, "image_column": image_column, "label_column": label_column}
    data, model_config, train_config, settings, previous_config = _data_and_configs(
        family, model_type, run_dir, resume, dataset, data_dir, data_options, options, overrides)
    train_config.check_data(len(data.train))
    check_precision(train_config.precision, training_device())  # fp16 on a CPU: one line, nothing written
    if not resume and is_main_process():
        prepare_output_dir(run_dir, overwrite=overwrite, kind="train",
                           inputs=data_source_inputs(settings["dataset"]))
    wait_for_everyone()
    if is_main_process():
        write_run_config(run_dir, "train", settings, model_type=model_type, model=config_to_dict(model_config),
                         train=config_to_dict(train_config))
    try:
        plan = family.plan(TrainingRequest(run_dir, data, model_config, train_config, resume, settings, progress))
        train(plan.objective, plan.build_model, data, plan.train_config, run_dir, resume=resume, export=plan.export,
              title=plan.title, progress=progress,
              extras=_extras(plan, log_with, run_dir, model_type, settings, model_config))
    except AlreadyFinished:
        if previous_config is not None and is_main_process():  # nothing changed: not even config.json
            atomic_write_bytes(run_dir / CONFIG_FILE, previous_config)
        raise
    run = load_run(run_dir)
    if is_main_process():
        if figures:
            family.figures(run, data, train_config.seed, settings)  # sampled where the run computes
        write_pipeline_index(run)  # a diffusers pipeline folder (vaediff.pipelines) where the run has one
        write_model_card(run, family.summary.get("en", ""))  # evaluate writes it again with the metrics
    return run


def _data_and_configs(family, model_type: str, run_dir: Path, resume: bool, dataset: str | None,
                      data_dir: str | None, data_options: dict, options: dict | None, overrides: dict):
    """The data and the configurations of a new run, or those stored in a run that is resumed (a source or
    option that differs from the stored one is refused), and the stored config.json's bytes when resumed."""
    if resume:
        model_config, train_config, settings = _resumed_configs(family, run_dir, model_type, overrides)
        _check_same_source(run_dir, settings, dataset, data_dir, data_options, options)
        data = run_dataset({"settings": settings}, str(run_dir))
        if (options or {}).get("model") is not None:
            _check_same_model(family, model_type, run_dir, model_config, options, data)
        return data, model_config, train_config, settings, (run_dir / CONFIG_FILE).read_bytes()
    dataset = dataset or "mnist-5k"
    data = load_dataset(dataset, data_dir, **data_options)
    model_config, train_config, settings = _new_configs(family, model_type, data, options, overrides)
    columns = {k: data_options[k] for k in ("image_column", "label_column") if data_options.get(k)}
    settings = {"dataset": describe_source(dataset), "data_dir": data_dir, "image_size": data_options["image_size"],
                **columns, "data_shape": data.shape.to_dict(), "data_source": data.source,
                "class_names": list(data.class_names), **settings}
    return data, model_config, train_config, settings, None


def _extras(plan, log_with: str | None, run_dir: Path, model_type: str, settings: dict, model_config) -> Extras:
    """The family's hook and state, and the trackers: the run's configuration, and a preview grid drawn from
    the weights each checkpoint exports."""
    hyperparameters = {"model_type": model_type, "settings": settings, "model": config_to_dict(model_config),
                       "train": config_to_dict(plan.train_config)}
    return Extras(plan.after_step, plan.extra_state, log_with,
                  lambda: preview_grid(load_run(run_dir), plan.train_config.seed or 0), hyperparameters,
                  on_precision=partial(_record_precision, run_dir))


def _record_precision(run_dir: Path, choice) -> None:
    """config.json gets what --precision auto chose (and why), so a resumed run trains on in it unprobed."""
    config = read_run_config(run_dir)
    config["train"].update(precision=choice.chosen, mixed_precision=ACCELERATE_NAMES[choice.chosen])
    config["settings"]["precision"] = choice.to_dict()
    atomic_write_json(run_dir / CONFIG_FILE, config)


def _check_same_source(run_dir: Path, settings: dict, dataset: str | None, data_dir: str | None,
                       data_options: dict, options: dict | None) -> None:
    """--resume continues on the run's own data and options: one given that differs is refused, not ignored."""
    given = {"--dataset": (dataset and describe_source(dataset), settings.get("dataset")),
             "--data-dir": (data_dir, settings.get("data_dir")),
             **{f"--{k.replace('_', '-')}": (v, settings.get(k)) for k, v in data_options.items()}}
    for name, value in (options or {}).items():  # a switch left off (False) is not a value given
        if name != "model" and value is not False:
            given[f"--{name.replace('_', '-')}"] = (value, settings.get(name))
    for flag, (value, stored) in given.items():
        if value is not None and value != stored:
            trained = f"{flag} {stored}" if stored is not None else f"without {flag}"
            raise ConfigError(f"--resume continues {run_dir} as it was trained ({trained}); drop {flag} "
                              f"{value}, or train a new run without --resume")


def _check_same_model(family: Family, model_type: str, run_dir: Path, stored, options: dict, data: Dataset) -> None:
    """A --model-config given with --resume must describe the stored model (the quickstart repeats its own)."""
    given, _, _ = _new_configs(family, model_type, data, options, {"max_steps": 1})
    if config_to_dict(given) != config_to_dict(stored):
        raise ConfigError(f"--resume continues {run_dir} with its stored model; this --model-config describes "
                          f"another: drop it, or train a new run without --resume")


def _new_configs(family: Family, model_type: str, data: Dataset, options: dict | None, overrides: dict):
    """A new run's model config (for the data's shape), TrainConfig (the family's recipe under the given
    fields) and the family's settings."""
    options = {**family.defaults(), **{k: v for k, v in (options or {}).items() if v is not None}}
    model_config = family.build_config(model_type, options, data.shape)
    defaults = family.recipe(model_config)
    if any(k in overrides for k in LIMIT_KEYS):  # limits given replace the recipe's, not add to them
        defaults = {k: v for k, v in defaults.items() if k not in LIMIT_KEYS}
    return model_config, TrainConfig(**{**defaults, **overrides}), options


def _resumed_configs(family: Family, run_dir: Path, model_type: str, overrides: dict):
    """The stored configs of a run to resume, with new limits where given (nothing else may change)."""
    stored = _stored_run_config(run_dir, model_type)
    if overrides.get("precision") == (stored["settings"].get("precision") or {}).get("asked"):
        overrides = {k: v for k, v in overrides.items() if k != "precision"}  # auto, as first asked: its choice stands
    changed = sorted(k for k in overrides
                     if k not in LIMIT_KEYS + SPEED_KEYS and overrides[k] != stored["train"].get(k))
    if changed:
        raise ConfigError(f"--resume keeps the run's settings; only --epochs, --minutes, --max-steps and --compile "
                          f"may change (got --{changed[0].replace('_', '-')} {overrides[changed[0]]}, "
                          f"stored {stored['train'].get(changed[0])})")
    model_config = config_from_dict(family.config_class, stored["model"], f"{run_dir}/config.json 'model'")
    # limits given on the command line replace the stored ones, as they do for a new run
    given = {k: overrides[k] for k in LIMIT_KEYS if k in overrides}
    limits = {k: given.get(k) for k in LIMIT_KEYS} if given else {}
    speed = {k: overrides[k] for k in SPEED_KEYS if k in overrides}
    train_config = config_from_dict(TrainConfig, {**stored["train"], **limits, **speed},
                                    f"{run_dir}/config.json 'train'")
    return model_config, train_config, stored["settings"]


def _stored_run_config(run_dir: Path, model_type: str) -> dict:
    """The config.json of a run to resume, or one line that says what to do instead."""
    if run_dir.is_dir() and not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"nothing to resume in {run_dir}: it has no {CONFIG_FILE} (the run never started); run "
                       f"the command without --resume (with --overwrite if the directory is not empty)")
    if not run_dir.exists():
        raise RunError(f"nothing to resume: {run_dir} does not exist; run the command without --resume")
    stored = read_run_config(run_dir)
    if stored.get("model_type") != model_type:
        raise RunError(f"{run_dir} is a {stored.get('model_type')} run, not {model_type}")
    return stored
