"""What a family is to the shared code: a `Family` entry (how its config is made, what it trains, how its
run loads) and the `Run` every loaded run is, with the defaults a family overrides for what it can do."""

from __future__ import annotations

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
class TrainingPlan:
    """What the shared loop trains for a family: one session (a family with stages runs the earlier
    ones itself while making this plan)."""

    objective: Objective
    build_model: Callable[[], nn.Module]
    export: Export
    train_config: TrainConfig
    title: str


@dataclass(frozen=True)
class Family:
    """One model family, described: the shared code (families.train_run, load_run) does the rest."""

    config_class: type                                   # the frozen model config saved in config.json
    build_config: Callable[[str, dict, DataShape], Any]  # (model type, options, data shape) -> model config
    recipe: Callable[[Any], dict]                        # model config -> its TrainConfig defaults
    # (run_dir, dataset, model config, train config, resume, options, progress) -> the session to train
    plan: Callable[..., TrainingPlan]
    load: Callable[[Path, dict], Run]                    # (run_dir, config.json) -> the loaded run
    figures: Callable[[Run, Dataset, int, dict], None]   # (run, dataset, seed, options): after training
    options: dict = field(default_factory=dict)          # the family's own options and their defaults
    # the --model-config of the smallest network that still runs every part of the family: the test matrix
    # (tests/test_matrix.py) and smoke runs train it in seconds
    smallest: dict = field(default_factory=dict)
    # options whose values are distinct recipes, each covered by the test matrix ({"preset": ("fast", "seed")})
    variants: dict = field(default_factory=dict)


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
