"""What a family is to the shared code: a `Family` entry (how its config is made, what it trains, how its
run loads) and the `Run` every loaded run is, with the defaults a family overrides for what it can do."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaediff.data import Dataset, DataShape, ImageSplit
from vaediff.errors import ConfigError
from vaediff.objectives import Objective
from vaediff.training import Export, TrainConfig


@dataclass(frozen=True)
class LikelihoodSettings:
    """How `Run.likelihood` estimates bits per dimension (each family reads its own fields)."""

    iw_samples: int = 1000          # VAEs: importance samples per test image (all test images)
    binarize: bool = False          # VAEs: binarized test pixels, another axis than 8-bit
    test_images: int = 1000         # diffusion and flows: the first test images
    bound_timesteps: int = 32       # diffusion: network calls per image for the KL terms (two halves)
    ode_steps: int = 8              # flows: RK4 steps of the probability-flow ODE (per half)


@dataclass(frozen=True)
class TrainingRequest:
    """What `Family.plan` is given: where and what to train (families read the fields they need)."""

    run_dir: Path
    dataset: Dataset
    model_config: Any            # the family's config_class
    train_config: TrainConfig
    resume: bool
    options: dict                # the family's options (Family.options' names) as given or defaulted
    progress: bool


@dataclass(frozen=True)
class TrainingPlan:
    """What the shared loop trains for a family: one session (a family with stages runs the earlier
    ones itself while making this plan).

    `extra_state(model)` makes a module the family owns (a target network, a cache held in buffers) from the
    freshly built model (so a target can start as its copy); the loop moves it to the training device,
    puts it into every checkpoint and loads it back on --resume, so a resumed run continues exactly as an
    unbroken one. `after_step(model, extra, step)` runs after every optimizer step with the unwrapped
    model, that module (None without one) and the number of steps done (a target's moving average, a
    teacher's refresh)."""

    objective: Objective
    build_model: Callable[[], nn.Module]
    export: Export
    train_config: TrainConfig
    title: str
    after_step: Callable[[nn.Module, nn.Module | None, int], None] | None = None
    extra_state: Callable[[nn.Module], nn.Module] | None = None


COMMANDS = ("train", "sample", "evaluate", "compare", "serve", "quickstart")
LANGUAGES = ("en", "zh")  # the report's (report.text.LANGUAGES): a family's sentence in each
# names `vaediff train` already gives a meaning (its own flags, its parser's fields): no option may take one
RESERVED_OPTIONS = frozenset({"dataset", "data_dir", "image_size", "out", "overwrite", "epochs", "minutes", "max_steps",
                              "batch_size", "lr", "seed", "resume", "model", "model_config", "checkpoint_every",
                              "mixed_precision", "precision", "grad_accum", "compile", "handler", "model_type",
                              "help", "device", "report_to"})


@dataclass(frozen=True)
class Option:
    """One of a family's own training options: its default, and the `vaediff train` flag made of it."""

    name: str                       # the key in `options` and config.json's settings
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    switch: bool = False            # a flag without a value: on when given
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # what argparse makes of the value (default: the default's type)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name) or self.name in RESERVED_OPTIONS:
            raise ValueError(f"option name {self.name!r}: a lower-case word (letters, digits, _) that `vaediff "
                             f"train` does not use already ({', '.join(sorted(RESERVED_OPTIONS))})")
        if self.switch and self.default not in (False, None):
            raise ValueError(f"option {self.name!r}: a switch is off unless given; its default must be False")
        if self.type is None and isinstance(self.default, int | float) and not isinstance(self.default, bool):
            object.__setattr__(self, "type", type(self.default))  # `--steps 8` is 8, not "8"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class Family:
    """One model family, described: the shared code (train_run, load_run, the CLI, the web demo, the
    quickstart and the report) reads everything it needs to know of a family from here."""

    config_class: type                                   # the frozen model config saved in config.json
    build_config: Callable[[str, dict, DataShape], Any]  # (model type, options, data shape) -> model config
    recipe: Callable[[Any], dict]                        # model config -> its TrainConfig defaults
    plan: Callable[[TrainingRequest], TrainingPlan]      # the session to train (earlier stages run inside)
    load: Callable[[Path, dict], Run]                    # (run_dir, config.json) -> the loaded run
    figures: Callable[[Run, Dataset, int, dict], None]   # (run, dataset, seed, options): after training
    options: tuple[Option, ...] = ()                     # its own options, each a `vaediff train` flag
    samplers: tuple[str, ...] = ()                       # its runs' --sampler choices (none: one decoder pass)
    # a budgeted quickstart's share of training time, and a fixed-work quickstart's optimizer steps
    # (0: not in the quickstart); labels_needed: left out of a study of unlabelled data
    share: float = 0.0
    fixed_steps: int = 0
    labels_needed: bool = False
    # a family outside the default study that `quickstart --with` adds: its share there, and the model type
    # of the study's run (same seed) whose weights it starts from, as its `init` option (None: from scratch)
    added_share: float = 0.0
    study_init: str | None = None
    # the report's sentence on what the family is, {"en": ..., "zh": ...} ({recon}: the run's reconstruction FID)
    summary: dict = field(default_factory=dict)
    commands: tuple[str, ...] = COMMANDS                 # the commands its runs take part in
    curve_steps: tuple[int, ...] = ()                    # the report's steps-curve points (none: no curve)
    # the --model-config of the smallest network that still runs every part of the family: the test matrix
    # (tests/test_matrix.py) and smoke runs train it in seconds
    smallest: dict = field(default_factory=dict)
    # options whose values are distinct recipes, each covered by the test matrix ({"preset": ("fast", "seed")})
    variants: dict = field(default_factory=dict)
    model_config_help: str = ""                          # what --model-config takes, for `train --help`

    def __post_init__(self) -> None:
        """A family that cannot work is refused when it is defined, naming what is wrong."""
        unknown = sorted(set(self.commands) - set(COMMANDS))
        names = [option.name for option in self.options]
        problems = [f"unknown commands {unknown} (known: {', '.join(COMMANDS)})" if unknown else "",
                    f"summary needs a sentence in each of {', '.join(LANGUAGES)}"
                    if self.summary and set(self.summary) != set(LANGUAGES) else "",
                    "a share of the quickstart needs fixed_steps for --work fixed"
                    if max(self.share, self.added_share) > 0 >= self.fixed_steps else "",
                    f"options named twice: {sorted({n for n in names if names.count(n) > 1})}"
                    if len(set(names)) < len(names) else ""]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError(f"family of {self.config_class.__name__}: " + "; ".join(problems))

    def defaults(self) -> dict:
        return {option.name: option.default for option in self.options}


class Run:
    """A trained run loaded from its directory. Families subclass it and set what they can do."""

    run_dir: Path
    config: dict                # its config.json
    model_type: str
    conditional: bool
    num_classes: int            # classes of its data (1 for an unlabelled set)
    has_sampler = False         # takes sampler options (sampler, steps, guidance, guidance interval)
    has_latent_space = False    # encode_means/decode: the web demo's latent sliders
    likelihood_options: tuple[str, ...] = ()  # the LikelihoodSettings fields `likelihood` reads
    samplers: tuple[str, ...] = ()           # the --sampler choices (the first is not the default: see the config)
    diffusers_folders: tuple[str, ...] = ()  # sub-folders that stock diffusers loads with from_pretrained
    device = torch.device("cpu")             # where its networks compute (place); images come back on the CPU
    sampling_precision = None                # generation.choose_sampling_precision's choice; None: fp32

    def place(self, device: torch.device) -> Run:
        """Move every network the run holds to `device` (devices.compute_device chooses it); returns the run."""
        for value in vars(self).values():
            if isinstance(value, nn.Module):
                value.to(device)
        self.device = device
        return self

    def generate(self, count: int, labels: torch.Tensor | None, generator: torch.Generator,
                 **sampler_options: Any) -> torch.Tensor:
        """`count` images (count, C, S, S) in [0, 1], of the given labels when conditional."""
        raise NotImplementedError

    def sampler_settings(self, **options: Any) -> dict:
        """The sampler options `generate` will use, validated: the run's defaults where none is given."""
        if any(value is not None for value in options.values()):
            raise ConfigError(f"{self.model_type} runs draw in one decoder pass; --sampler, --steps and "
                              f"--guidance(-interval) are for diffusion runs")
        return {}

    @property
    def supports_guidance(self) -> bool:
        return False

    def seed_sampler(self) -> dict | None:
        """The course project's sampler for this run (DDPM over every training timestep, unguided) as
        sampler settings: the rightmost point of the report's steps curve. None where that process is not the
        family's own (a VAE's decoder, a flow's ODE)."""
        return None

    def likelihood(self, split: ImageSplit, settings: LikelihoodSettings, seed: int, progress: bool) -> dict | None:
        """Bits per dimension of the test split ({"bits_per_dim", "ci95", "likelihood_axis", ...}), or a
        dict with "bits_per_dim": None and "no_bits_per_dim" (why), or None for a model without any."""
        return None

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor | None:
        """What the run's autoencoder makes of real images (the quality it can reach), or None."""
        return None
