"""Training objectives: what a model's loss is, as small functions of tensors and explicit random draws.

`Objective` is what the training loop needs of a model family; `BatchRandom` is where every random draw
of a training step comes from (seeded by the step, so resumed and multi-process runs draw the same).
`vae` holds the VAE bounds and the latent autoencoder's loss, `diffusion` the denoising loss and the
sampling math.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn


class BatchRandom:
    """The random draws of one global batch, identical on every process; each keeps its own rows.

    Seeded with (seed, optimizer step), so the draws are a pure function of where training is: that is
    what lets a resumed or multi-process run reproduce a single unbroken run.
    """

    def __init__(self, seed: int, step: int, global_batch: int, rows: slice, device: torch.device,
                 progress: float = 0.0):
        self.progress = progress  # share of the planned optimizer steps done (0 while the plan is unknown)
        mixed = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)
        self.generator = torch.Generator(device=device).manual_seed(mixed)
        self.global_batch, self.rows, self.device = global_batch, rows, device

    def normal(self, *shape: int) -> torch.Tensor:
        full = torch.randn((self.global_batch, *shape), generator=self.generator, device=self.device)
        return full[self.rows]

    def uniform(self, *shape: int) -> torch.Tensor:
        full = torch.rand((self.global_batch, *shape), generator=self.generator, device=self.device)
        return full[self.rows]

    def logit_normal(self, mean: float, std: float) -> torch.Tensor:
        """(rows,) times in (0, 1) with logit(t) ~ N(mean, std) (SD3's density, by diffusers)."""
        from diffusers.training_utils import (
            compute_density_for_timestep_sampling,  # imports diffusers' training kit
        )

        full = compute_density_for_timestep_sampling("logit_normal", self.global_batch, logit_mean=mean,
                                                     logit_std=std, device=self.device, generator=self.generator)
        return full[self.rows]

    def integers(self, low: int, high: int) -> torch.Tensor:
        full = torch.randint(low, high, (self.global_batch,), generator=self.generator, device=self.device)
        return full[self.rows]


class Objective(Protocol):
    """What the loop needs to know about a model: its loss, and how to write its weights."""

    loss_names: tuple[str, ...]  # logged terms; "loss" (the optimised one) first

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        """Per-image means of each term over this process's rows of the batch."""
        ...

    def export(self, module: nn.Module, run_dir: Path) -> None:
        """Write the model's weights (EMA weights already copied in, where used) into run_dir."""
        ...
