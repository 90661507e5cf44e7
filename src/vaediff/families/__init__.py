"""Model families behind one interface: build a config, train a run, load it back.

`FAMILIES` maps each model type (the `vaediff train TYPE` argument) to the functions of its family;
`train_run` and `load_run` are what the CLI, the quickstart, the notebook and the tests call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaediff.errors import AlreadyFinished, ConfigError, RunError
from vaediff.families import diffusion, latent, vae
from vaediff.runs import (
    CONFIG_FILE,
    atomic_write_bytes,
    config_from_dict,
    config_to_dict,
    prepare_output_dir,
    read_run_config,
    write_run_config,
)
from vaediff.train import TrainConfig, is_main_process, wait_for_everyone

LIMIT_KEYS = ("epochs", "minutes", "max_steps")


@dataclass(frozen=True)
class Family:
    config_class: type
    build_model_config: Callable[[str, dict], Any]
    default_train_options: Callable[[Any, dict], dict]
    train: Callable[..., Any]
    load: Callable[[Path, dict], Any]


_VAE_FAMILY = Family(vae.VAEConfig, vae.build_model_config, vae.default_train_options, vae.train_vae,
                     vae.VAERun.load)
FAMILIES: dict[str, Family] = {
    "vae": _VAE_FAMILY,
    "cvae": _VAE_FAMILY,  # the same family; the model type sets VAEConfig.conditional
    "diffusion": Family(diffusion.DiffusionConfig, diffusion.build_model_config, diffusion.default_train_options,
                        diffusion.train_diffusion, diffusion.DiffusionRun.load),
    "latent-diffusion": Family(latent.LatentDiffusionConfig, latent.build_model_config, latent.default_train_options,
                               latent.train_latent_diffusion, latent.LatentDiffusionRun.load),
}


def _family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def load_run(run_dir: str | Path):
    """Load any trained run from its directory alone (config.json + weights)."""
    config = read_run_config(run_dir)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise RunError(f"{run_dir}/config.json: unknown model type {model_type!r}")
    return FAMILIES[model_type].load(Path(run_dir), config)


def train_run(model_type: str, out: str | Path, dataset: str = "mnist-5k", data_dir: str | None = None,
              options: dict | None = None, train_options: dict | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True, figures: bool = True) -> Path:
    """Train a model of `model_type` into the run directory `out` (or continue it with `resume`).
    `figures=False` skips the sample grids drawn after training (sweeps and benchmarks).

    `options` are the family's settings (e.g. {"preset": "fast"}, {"binarize": True}); `train_options`
    override fields of TrainConfig (None values are ignored). On resume, the stored configuration is
    used and only the limits (epochs, minutes, max_steps) may be changed.
    """
    from vaediff.data import load_dataset

    family = _family(model_type)
    overrides = {k: v for k, v in (train_options or {}).items() if v is not None}
    run_dir = Path(out)
    if resume:
        stored = _stored_run_config(run_dir, model_type)
        changed = sorted(k for k in overrides if k not in LIMIT_KEYS and overrides[k] != stored["train"].get(k))
        if changed:
            raise ConfigError(f"--resume keeps the run's settings; only --epochs, --minutes and --max-steps "
                              f"may change (got --{changed[0].replace('_', '-')} {overrides[changed[0]]}, "
                              f"stored {stored['train'].get(changed[0])})")
        settings = stored["settings"]
        model_config = config_from_dict(family.config_class, stored["model"], f"{run_dir}/config.json 'model'")
        # limits given on the command line replace the stored ones, as they do for a new run
        given = {k: overrides[k] for k in LIMIT_KEYS if k in overrides}
        limits = {k: given.get(k) for k in LIMIT_KEYS} if given else {}
        train_config = config_from_dict(TrainConfig, {**stored["train"], **limits}, f"{run_dir}/config.json 'train'")
        data = load_dataset(settings["dataset"], settings.get("data_dir"))
        previous_config = (run_dir / CONFIG_FILE).read_bytes()
    else:
        options = dict(options or {})
        model_config = family.build_model_config(model_type, options)
        defaults = family.default_train_options(model_config, options)
        if any(k in overrides for k in LIMIT_KEYS):
            defaults = {k: v for k, v in defaults.items() if k not in LIMIT_KEYS}
        train_config = TrainConfig(**{**defaults, **overrides})
        settings = {"dataset": dataset, "data_dir": data_dir, **options}
        data = load_dataset(dataset, data_dir)  # before touching the output directory
        if is_main_process():
            prepare_output_dir(run_dir, overwrite=overwrite)
        wait_for_everyone()
        previous_config = None
    if is_main_process():
        write_run_config(run_dir, "train", settings, model_type=model_type, model=config_to_dict(model_config),
                         train=config_to_dict(train_config))
    try:
        family.train(run_dir, data, model_config, train_config, resume, settings, progress=progress, figures=figures)
    except AlreadyFinished:
        if previous_config is not None and is_main_process():  # nothing changed: not even config.json
            atomic_write_bytes(run_dir / CONFIG_FILE, previous_config)
        raise
    return run_dir


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
