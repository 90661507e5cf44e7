"""Conditional flow matching, no I/O: the loss, its objective, and the sampling loop.

The linear (rectified-flow) path of Lipman et al. 2023 and Liu et al. 2023, as Stable Diffusion 3 trains it
(Esser et al. 2024, sec. 2-3): x_t = (1 - t) x_0 + t eps for t in [0, 1], eps ~ N(0, I). Along it
dx_t/dt = eps - x_0, the velocity the network f(x_t, t, y) learns by regression (their eq. 3, with the
conditional target): L = E ||f(x_t, t, y) - (eps - x_0)||^2. t is drawn from a logit-normal density,
logit(t) ~ N(m, s) (SD3 sec. 3.1: it puts the work at the middle of the path, where it is hardest), by
diffusers' `compute_density_for_timestep_sampling`. The network sees t * 1000, the timestep scale of
diffusers' flow-matching schedulers, which integrate dx/dt = f from t = 1 (noise) to t = 0 (data).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from torch import nn

from vaediff.constants import FLOW_SAMPLERS
from vaediff.errors import ConfigError
from vaediff.models.autoencoder import LatentAutoencoder
from vaediff.models.unet import DiffusionConfig
from vaediff.objectives import BatchRandom
from vaediff.objectives.diffusion import (
    Denoiser,
    encode_latents,
    guidance_at,
    guided_prediction,
    to_model_range,
)

TIMESTEP_SCALE = 1000  # the schedulers' num_train_timesteps: the network's time input is t * 1000


def flow_loss(denoiser: Denoiser, config: DiffusionConfig, x0: torch.Tensor, labels: torch.Tensor,
              noise: torch.Tensor, t: torch.Tensor, drop_label: torch.Tensor) -> dict[str, torch.Tensor]:
    """One Monte-Carlo estimate of the flow-matching loss.

    x0: (N, C, H, W) in the model's range; noise like x0; t: (N,) in [0, 1]; drop_label: (N,) bools, True
    where the label becomes the null class (classifier-free guidance training). {"loss": mean squared error}.
    """
    if not (x0.shape == noise.shape and t.shape == labels.shape == drop_label.shape == (x0.shape[0],)):
        raise ValueError(f"shape mismatch: x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}, t {tuple(t.shape)}, "
                         f"labels {tuple(labels.shape)}")
    path_t = t.view(-1, *([1] * (x0.ndim - 1)))
    noisy = (1 - path_t) * x0 + path_t * noise
    velocity = noise - x0
    if config.has_null_class:
        labels = torch.where(drop_label, torch.full_like(labels, config.null_label), labels)
    prediction = denoiser(noisy, t * TIMESTEP_SCALE, labels)
    return {"loss": (prediction.float() - velocity.float()).pow(2).flatten(1).mean(dim=1).mean()}


class FlowObjective:
    """Flow-matching loss with logit-normal times, noise and label dropout, all from `draw`."""

    loss_names = ("loss",)

    def __init__(self, config: DiffusionConfig, logit_mean: float = 0.0, logit_std: float = 1.0):
        self.config, self.logit_mean, self.logit_std = config, logit_mean, logit_std

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        x0 = self.encode(images, draw)
        noise = draw.normal(*x0.shape[1:])
        t = draw.logit_normal(self.logit_mean, self.logit_std)
        drop_label = draw.uniform() < self.config.label_dropout
        return flow_loss(module, self.config, x0, labels, noise, t, drop_label)

    def encode(self, images: torch.Tensor, draw: BatchRandom) -> torch.Tensor:
        """Images in [0, 1] -> the data the flow carries noise to (pixels in [-1, 1]; latents for latent flow)."""
        return to_model_range(images, self.config)


class LatentFlowObjective(FlowObjective):
    """The same flow-matching loss on scaled latents of a frozen autoencoder (latent diffusion's stage one)."""

    def __init__(self, config: DiffusionConfig, autoencoder: LatentAutoencoder, scaling_factor: float,
                 logit_mean: float = 0.0, logit_std: float = 1.0):
        super().__init__(config, logit_mean, logit_std)
        self.autoencoder, self.scaling_factor = autoencoder.eval().requires_grad_(False), scaling_factor

    def encode(self, images: torch.Tensor, draw: BatchRandom) -> torch.Tensor:
        return encode_latents(self.autoencoder, self.scaling_factor, images, draw)


def make_flow_scheduler(name: str, steps: int):
    """diffusers' Euler or Heun flow-matching scheduler with `steps` steps from t = 1 to t = 0.

    Euler gets the sigmas 1, 1 - 1/N, ..., 1/N (then 0), as diffusers' own flow pipelines pass them: N equal
    steps. Its default grid ends at sigma_min = 1/1000 instead, so the last of N steps goes from 0.001 to 0
    and does nothing (2 steps drew what 1 step draws: FID 17.9 both, benchmarks.run --sections flow, flow.py).
    The Heun scheduler takes no sigmas in this diffusers and keeps its default grid."""
    if name == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=TIMESTEP_SCALE, shift=1.0)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps).tolist())
    elif name == "heun":
        scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=TIMESTEP_SCALE, shift=1.0)
        scheduler.set_timesteps(steps)
    else:
        raise ConfigError(f"unknown flow sampler {name!r}; choose {', '.join(FLOW_SAMPLERS)}")
    return scheduler


@torch.inference_mode()
def flow_sample_loop(denoiser: Denoiser, scheduler, noise: torch.Tensor, labels: torch.Tensor, guidance: float,
                     null_label: int | None, trajectory: list[torch.Tensor] | None = None,
                     record_at: set[int] | None = None,
                     guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Integrate dx/dt = f(x, t, y) from noise (t = 1) to data (t = 0): for t in timesteps,
    x = scheduler.step(f(x, t, y), t, x) (Heun's steps call f twice, the scheduler pairing them). Guidance
    applies where t lies in `guidance_interval` (t = 1 is pure noise, as for diffusion's t/T)."""
    sample = noise
    for index, t in enumerate(scheduler.timesteps):
        weight = guidance_at(float(t), TIMESTEP_SCALE, guidance, guidance_interval)
        velocity = guided_prediction(denoiser, sample, t.to(sample.device).float(), labels, weight, null_label)
        sample = scheduler.step(velocity, t, sample).prev_sample
        if trajectory is not None and (record_at is None or index in record_at):
            trajectory.append(sample.clone())
    return sample
