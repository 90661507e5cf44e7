"""Flow matching (objectives/flow.py): the fast preset's class-conditional UNet trained on a velocity target,
sampled with diffusers' flow-matching Euler (default) or Heun scheduler, with classifier-free guidance.

A run directory holds RUN/unet/ (diffusers' UNet2DModel, EMA weights) and RUN/scheduler/ (a
FlowMatchEulerDiscreteScheduler), so stock diffusers samples it (README, "Flow matching").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch

from vaediff.checks import MAX_SAMPLING_STEPS
from vaediff.constants import FLOW_SAMPLERS
from vaediff.data import MNIST_SHAPE, Dataset, DataShape, ImageSplit
from vaediff.families.base import Family, LikelihoodSettings, TrainingPlan, TrainingRequest
from vaediff.families.diffusion import (
    STEPS_CURVE,
    TINY_UNET,
    UNET_DIR,
    DiffusionRun,
    estimate_on_test_images,
    load_denoiser,
    pixel_grid,
    write_denoising_figure,
)
from vaediff.generation import write_sample_grid
from vaediff.models.limits import check_range, config_section
from vaediff.models.unet import ClassConditionalUNet, DiffusionConfig, check_guidance, preset_config
from vaediff.objectives.diffusion import check_sampler_settings
from vaediff.objectives.flow import TIMESTEP_SCALE, FlowObjective, flow_sample_loop, make_flow_scheduler
from vaediff.objectives.likelihood import dequantized_flow_nll
from vaediff.runs import atomic_save_pretrained, config_from_dict

SCHEDULER_DIR = "scheduler"


@dataclass(frozen=True)
class FlowConfig:
    # The network: the fast diffusion preset's UNet, class embedding with a null class and label dropout.
    # Its diffusion-process fields (beta schedule, prediction type, sampler) are not used by flow matching.
    denoiser: DiffusionConfig = dataclasses.field(default_factory=lambda: preset_config("fast"))
    logit_mean: float = 0.0       # logit(t) ~ N(logit_mean, logit_std): SD3's default density
    logit_std: float = 1.0
    sampler: Literal["euler", "heun"] = "euler"
    sampling_steps: int = 8       # a straight path needs few steps (benchmarks/flow.py measures 1-32)
    guidance: float = 2.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not math.isfinite(self.logit_mean):
            raise ValueError(f"logit_mean must be a finite number, got {self.logit_mean}")
        if not 0 < self.logit_std < math.inf:
            raise ValueError(f"logit_std must be positive, got {self.logit_std}")
        # `sample --steps` takes at most MAX_SAMPLING_STEPS, and check_sampler_settings the denoiser's timesteps
        check_range("sampling_steps", self.sampling_steps, 1, min(MAX_SAMPLING_STEPS, self.denoiser.num_train_timesteps))
        if self.denoiser.data_range == "zero_one":
            raise ValueError("flow matching runs on pixels in [-1, 1] or on latents (denoiser.data_range "
                             "'minus_one_one' or 'unbounded'): noise N(0, I) must match the data's scale")
        check_guidance(self.guidance, self.guidance_interval, self.denoiser)


def save_flow(module: ClassConditionalUNet, run_dir: Path) -> None:
    """RUN/unet/ and RUN/scheduler/ in diffusers' layout (the Euler scheduler: stock code's default)."""
    atomic_save_pretrained(module.unet, run_dir / UNET_DIR)
    atomic_save_pretrained(make_flow_scheduler("euler", 1), run_dir / SCHEDULER_DIR)


class FlowRun(DiffusionRun):
    """A trained flow-matching model: drawn like a diffusion run, with its own sampler settings and ODE loop."""

    model_type = "flow"
    likelihood_options = ("test_images", "ode_steps")
    samplers = FLOW_SAMPLERS

    def __init__(self, run_dir: Path, config: dict, flow_config: FlowConfig, model: ClassConditionalUNet):
        super().__init__(run_dir, config, flow_config.denoiser, model)
        self.flow_config = flow_config

    @classmethod
    def load(cls, run_dir: str | Path, config: dict) -> FlowRun:
        run_dir = Path(run_dir)
        flow_config = config_from_dict(FlowConfig, config.get("model"), f"{run_dir}/config.json 'model'")
        return cls(run_dir, config, flow_config, load_denoiser(flow_config.denoiser, run_dir))

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                         guidance_interval: tuple[float, float] | None = None) -> dict:
        """The run's defaults, overridden by whatever is given; validated."""
        config = self.flow_config
        settings = {"sampler": sampler or config.sampler,
                    "steps": steps if steps is not None else config.sampling_steps,
                    "guidance": guidance if guidance is not None else config.guidance,
                    "guidance_interval": tuple(guidance_interval or config.guidance_interval)}
        return check_sampler_settings(settings, config.denoiser, FLOW_SAMPLERS)

    def seed_sampler(self) -> None:
        return None  # the flow's sampler integrates an ODE; DDPM's stochastic steps are diffusion's process

    def integrate(self, noise: torch.Tensor, labels: torch.Tensor, settings: dict, generator: torch.Generator,
                  trajectory: list | None, record_at: set[int] | None) -> torch.Tensor:
        """Noise (t = 1) -> data (t = 0) along the learned velocity, with diffusers' flow-matching scheduler."""
        scheduler = make_flow_scheduler(settings["sampler"], settings["steps"])
        return flow_sample_loop(self.model, scheduler, noise, labels, settings["guidance"], self.model_config.null_label,
                                trajectory, record_at, settings["guidance_interval"])


    def likelihood(self, split: ImageSplit, settings: LikelihoodSettings, seed: int, progress: bool) -> dict:
        """Bits/dim of uniformly dequantized test images under the probability-flow ODE (FFJORD's estimator,
        objectives/likelihood.py): two independent draws (dequantization noise, Hutchinson probe) per image.
        The network computes on the run's device; the float64 bookkeeping and the draws stay on the CPU."""
        grid, device = pixel_grid(self.model_config), self.device

        def two_estimates(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # moves are differentiable: the trace's
                times = (t * TIMESTEP_SCALE).float().expand(len(x))        # vector-Jacobian products cross them
                return self.model(x.float().to(device), times.to(device), labels.to(device)).to(x.device)

            return torch.stack([dequantized_flow_nll(velocity, images.double(), grid, settings.ode_steps, generator)
                                for _ in range(2)])

        result = estimate_on_test_images(self, split, settings.test_images, two_estimates, seed, progress,
                                         batch_size=100, desc=f"bits/dim (ODE, {settings.ode_steps} RK4 steps)")
        return {**result, "ode_steps": settings.ode_steps,
                "method": "probability-flow ODE, instantaneous change of variables with Hutchinson's trace "
                          "estimator (FFJORD), torchdiffeq RK4, uniform dequantization; an estimate of a bound "
                          "on the negative log-likelihood (the solver's error is not in the interval)"}


def write_flow_figures(run: FlowRun, dataset: Dataset, seed: int, options: dict | None = None) -> None:
    """samples.png (a row per class) and denoising.png (noise to image along the path) of a trained run."""
    write_sample_grid(run, run.run_dir / "samples.png", seed=seed, class_names=dataset.class_names)
    write_denoising_figure(run, run.run_dir / "denoising.png", dataset.class_names, seed=seed)


def build_model_config(model_type: str, options: dict, shape: DataShape = MNIST_SHAPE) -> FlowConfig:
    """The fast preset's network for the data's `shape`; `options["model"]` overrides FlowConfig fields
    (and `denoiser` those of the network)."""
    return make_flow_config("fast", dict(options.get("model") or {}), shape, "--model-config")


def make_flow_config(preset: str, overrides: dict, shape: DataShape, where: str) -> FlowConfig:
    """FlowConfig over the `preset` network for data (pixels or latents) of `shape`; `overrides` are FlowConfig
    fields, with `denoiser` overriding the network's."""
    overrides = dict(overrides)
    network = config_section(overrides, "denoiser", DiffusionConfig, where)
    denoiser = preset_config(preset, network, f"{where}: key 'denoiser'", shape)
    unconditional = {} if shape.labelled else {"guidance": 1.0}
    return config_from_dict(FlowConfig, {**unconditional, **overrides, "denoiser": dataclasses.asdict(denoiser)}, where)


def recipe(model_config: FlowConfig) -> dict:
    # the fast diffusion preset's recipe: the comparison between the two objectives is then like for like
    return {"batch_size": 32, "lr": 1.5e-3, "lr_schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0,
            "ema_decay": 0.999, "minutes": 10.0, "eval_images": 500}


def training_plan(request: TrainingRequest) -> TrainingPlan:
    model_config = request.model_config
    objective = FlowObjective(model_config.denoiser, model_config.logit_mean, model_config.logit_std)
    return TrainingPlan(objective, partial(ClassConditionalUNet, model_config.denoiser), save_flow,
                        request.train_config, f"flow matching on {request.dataset.name}")


FAMILY = Family(config_class=FlowConfig, build_config=build_model_config, recipe=recipe, plan=training_plan,
                load=FlowRun.load, figures=write_flow_figures, samplers=FLOW_SAMPLERS, share=0.28, fixed_steps=996,
                curve_steps=STEPS_CURVE,
                summary={"en": "Flow matching learns the velocity of a straight path from noise to data, so a few "
                               "Euler steps follow it.",
                         "zh": "流匹配学习从噪声到数据的直线路径上的速度，几步欧拉积分即可沿路径生成。"},
                smallest={"denoiser": TINY_UNET, "sampling_steps": 3},
                model_config_help='{"sampling_steps": 8, "denoiser": {...}}')
