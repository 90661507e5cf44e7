"""Diffusion math, no I/O: noise schedules, the training loss and objective, guidance, the sampling loop.

Notation of Ho et al. 2020 (DDPM): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. The network predicts
eps ("epsilon"), v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 ("v_prediction", Salimans & Ho 2022), or
x_0 ("sample"). Schedulers are diffusers' own; this module only wires them together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.training_utils import compute_snr
from torch import nn

from vaediff.constants import SAMPLERS
from vaediff.errors import ConfigError
from vaediff.models.autoencoder import LatentAutoencoder
from vaediff.models.unet import DiffusionConfig, check_guidance_interval
from vaediff.objectives import BatchRandom

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The forward (noising) process the model is trained on; saved with the run as RUN/scheduler/."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        # Pixel models clip predicted x_0 to [-1, 1] (diffusers' default, which the seed used); latents
        # are unbounded and must not be clipped.
        clip_sample=config.bounded,
        clip_sample_range=1.0,
        timestep_spacing="trailing",
    )


def to_model_range(images: torch.Tensor, config: DiffusionConfig) -> torch.Tensor:
    """Images in [0, 1] -> the range the model diffuses ([0, 1] for the seed, [-1, 1] otherwise)."""
    return images * 2 - 1 if config.data_range == "minus_one_one" else images


def from_model_range(samples: torch.Tensor, config: DiffusionConfig) -> torch.Tensor:
    """Inverse of to_model_range, clamped to [0, 1] (pixel models only)."""
    images = (samples + 1) / 2 if config.data_range == "minus_one_one" else samples
    return images.clamp(0, 1)


def min_snr_weight(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, eq. 8 and its v- and eps-forms).

    The x_0-loss weight min(SNR, gamma) expressed for the network's target: divide by SNR for
    epsilon prediction, by SNR + 1 for v prediction.
    """
    ratio = compute_snr(scheduler, timesteps)  # abar_t / (1 - abar_t)
    clipped = torch.clamp(ratio, max=gamma)
    if prediction_type == "epsilon":
        return clipped / ratio
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1)
    return clipped


def training_target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    return x0


def diffusion_loss(denoiser: Denoiser, scheduler: DDPMScheduler, config: DiffusionConfig, x0: torch.Tensor,
                   labels: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                   drop_label: torch.Tensor) -> dict[str, torch.Tensor]:
    """One Monte-Carlo estimate of the denoising loss (DDPM's L_simple, optionally Min-SNR weighted).

    x0: (N, C, H, W) in the model's range; noise ~ N(0, I) like x0; timesteps: (N,) ints; drop_label:
    (N,) bools, True where the label is replaced by the null class (classifier-free guidance training).
    Returns {"loss": weighted mean, "mse": unweighted mean squared error}.
    """
    if not (x0.shape == noise.shape and timesteps.shape == labels.shape == drop_label.shape == (x0.shape[0],)):
        raise ValueError(f"shape mismatch: x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}, "
                         f"t {tuple(timesteps.shape)}, labels {tuple(labels.shape)}")
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = training_target(scheduler, x0, noise, timesteps, config.prediction_type)
    if config.has_null_class:
        labels = torch.where(drop_label, torch.full_like(labels, config.null_label), labels)
    prediction = denoiser(noisy, timesteps, labels)
    per_image = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if config.min_snr_gamma is not None:
        weights = min_snr_weight(scheduler, timesteps, config.min_snr_gamma, config.prediction_type)
        loss = (weights * per_image).mean()
    else:
        loss = per_image.mean()
    return {"loss": loss, "mse": per_image.mean()}


class DiffusionObjective:
    """Denoising loss with random timesteps, noise and (for CFG) label dropout, all from `draw`."""

    loss_names = ("loss", "mse")

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.scheduler = make_train_scheduler(config)

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        x0 = self.encode(images, draw)
        noise = draw.normal(*x0.shape[1:])
        timesteps = draw.integers(0, self.config.num_train_timesteps)
        drop_label = draw.uniform() < self.config.label_dropout
        return diffusion_loss(module, self.scheduler, self.config, x0, labels, noise, timesteps, drop_label)

    def encode(self, images: torch.Tensor, draw: BatchRandom) -> torch.Tensor:
        """Images in [0, 1] -> what the model diffuses (here pixels in the model's range; latents in
        latent diffusion, which overrides this)."""
        return to_model_range(images, self.config)


class LatentDiffusionObjective(DiffusionObjective):
    """The pixel model's objective, on scaled latents of a frozen autoencoder (a posterior sample)."""

    def __init__(self, config: DiffusionConfig, autoencoder: LatentAutoencoder, scaling_factor: float):
        super().__init__(config)
        self.autoencoder, self.scaling_factor = autoencoder.eval().requires_grad_(False), scaling_factor

    def encode(self, images: torch.Tensor, draw: BatchRandom) -> torch.Tensor:
        return encode_latents(self.autoencoder, self.scaling_factor, images, draw)


def encode_latents(autoencoder: LatentAutoencoder, scaling_factor: float, images: torch.Tensor,
                   draw: BatchRandom) -> torch.Tensor:
    """Images in [0, 1] -> scaled latents, a sample of the frozen autoencoder's posterior: what latent
    diffusion and latent flow matching learn the distribution of."""
    with torch.no_grad():
        autoencoder.to(images.device)
        mean, logvar = autoencoder.encode(images)
        latents = mean + torch.exp(0.5 * logvar) * draw.normal(*mean.shape[1:])
    return latents * scaling_factor


# ---------------------------------------------------------------------------------------------------------
# Sampling


def make_sampling_scheduler(name: str, train_scheduler: DDPMScheduler, steps: int,
                            config: DiffusionConfig):
    """A diffusers scheduler for `name` (ddpm, ddim, dpm) with `steps` steps, from the training schedule.

    "trailing" spacing starts every sampler at the last training timestep (t = T - 1), where the
    image is pure noise; "leading" would start at T - T/steps, which with few steps leaves visible
    structure unexplained (Lin et al. 2024, "Common diffusion noise schedules and sample steps are
    flawed", table 2). DPM-Solver++ clips its x_0 predictions (dynamic thresholding) for models in
    [-1, 1]; without it few-step samples saturate.
    """
    base = dict(train_scheduler.config)
    if name == "ddpm":
        scheduler = DDPMScheduler.from_config(base, timestep_spacing="trailing")
    elif name == "ddim":
        # DDIM's step() assumes timesteps T/steps apart (diffusers #12633): exact when steps divides T,
        # otherwise off by at most one training timestep per step with trailing spacing.
        scheduler = DDIMScheduler.from_config(base, timestep_spacing="trailing", set_alpha_to_one=True)
    elif name == "dpm":
        scheduler = DPMSolverMultistepScheduler.from_config(
            base,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            lower_order_final=True,
            final_sigmas_type="zero",
            thresholding=config.data_range == "minus_one_one",
            sample_max_value=1.0,
        )
    else:
        raise ConfigError(f"unknown sampler {name!r}; choose {', '.join(SAMPLERS)}")
    scheduler.set_timesteps(steps)
    return scheduler


def default_steps(sampler: str) -> int:
    return {"ddpm": 1000, "ddim": 50, "dpm": 20}.get(sampler, 20)


def check_sampler_settings(settings: dict, config: DiffusionConfig, samplers: tuple[str, ...] = SAMPLERS) -> dict:
    """The one check of sampler, steps, guidance and guidance interval (command line and web demo alike;
    flow matching passes its own `samplers`)."""
    if settings["sampler"] not in samplers:
        raise ConfigError(f"unknown sampler {settings['sampler']!r} for this run; choose {', '.join(samplers)}")
    steps, guidance = settings["steps"], settings["guidance"]
    if not 0 < steps <= config.num_train_timesteps:
        raise ConfigError(f"--steps must be between 1 and the {config.num_train_timesteps} training timesteps, "
                          f"got {steps}")
    if not (guidance == guidance and guidance >= 0):  # NaN fails the first test
        raise ConfigError(f"--guidance must be a number >= 0, got {guidance}")
    if guidance != 1.0 and not config.class_conditional:
        raise ConfigError("this run was trained on unlabelled data: it has no classes to guide towards; "
                          "use --guidance 1")
    if guidance != 1.0 and not config.has_null_class:
        raise ConfigError("the seed preset has no null class, so classifier-free guidance is unavailable; "
                          "use --guidance 1 or train with --preset fast")
    try:
        check_guidance_interval(settings["guidance_interval"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--guidance-interval: {exc}") from None
    return settings


def guided_prediction(denoiser: Denoiser, sample: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor,
                      guidance: float, null_label: int | None) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): pred_u + w (pred_c - pred_u).

    w = 1 is the plain conditional prediction (one network pass); w = 0 the unconditional one. For
    other w both passes run in one batch of twice the size.
    """
    batch = sample.shape[0]
    t = timestep.expand(batch) if timestep.ndim == 0 else timestep
    if guidance == 1.0:
        return denoiser(sample, t, labels)
    if null_label is None:
        raise ValueError(f"guidance {guidance} needs a null class; check_sampler_settings rejects this earlier")
    null = torch.full_like(labels, null_label)
    if guidance == 0.0:
        return denoiser(sample, t, null)
    both = denoiser(torch.cat([sample, sample]), torch.cat([t, t]), torch.cat([labels, null]))
    conditional, unconditional = both.chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def guidance_at(timestep: int, num_train_timesteps: int, guidance: float, interval: tuple[float, float]) -> float:
    """The guidance weight at one step: `guidance` where lo <= t / T <= hi, else 1 (no guidance).

    Kynkaanniemi et al. (2024) apply guidance in a limited interval of noise levels: at high noise it
    pulls every sample of a class towards the same few modes (fewer distinct images, worse FID), at low
    noise it does little. Measured on a latent model (docs/performance.md): guidance 3 between t/T = 0.1
    and 0.7 gave FID 1.51 at class accuracy 0.913, against 2.04 at 0.917 for guidance 2 at every step.
    """
    low, high = interval
    return guidance if low <= timestep / num_train_timesteps <= high else 1.0


@torch.inference_mode()
def sample_loop(denoiser: Denoiser, scheduler, noise: torch.Tensor, labels: torch.Tensor, guidance: float,
                null_label: int | None, generator: torch.Generator | None = None,
                trajectory: list[torch.Tensor] | None = None, record_at: set[int] | None = None,
                guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """The reverse process, written out: for t in timesteps: x = scheduler.step(f(x, t, y), t, x).

    `noise` is x_T (already scaled by the scheduler's init_noise_sigma, 1 for these schedulers). If
    `trajectory` is given, x_t after the steps whose index is in `record_at` is appended to it. Guidance
    applies at the steps whose t / num_train_timesteps lies in `guidance_interval`; elsewhere w = 1.
    """
    sample = noise * scheduler.init_noise_sigma
    # DDIM (eq. 12 of Song et al. 2021) moves x_t along x_0 and eps. When x_0 is clipped, eps must be
    # re-derived from the clipped x_0 (as GLIDE does); diffusers' default keeps the unclipped eps, and with
    # guidance the two disagree: measured on a fast-preset model, DDIM-100 at guidance 2 fell from class
    # accuracy 0.945 to 0.195 (FID 1.80 -> 42). DDPM and DPM-Solver++ step from x_0 alone and need nothing.
    extra = {"use_clipped_model_output": True} if isinstance(scheduler, DDIMScheduler) else {}
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(sample, t)
        weight = guidance_at(int(t), scheduler.config.num_train_timesteps, guidance, guidance_interval)
        prediction = guided_prediction(denoiser, model_input, t.to(sample.device), labels, weight, null_label)
        sample = scheduler.step(prediction, t, sample, generator=generator, **extra).prev_sample
        if trajectory is not None and (record_at is None or index in record_at):
            trajectory.append(sample.clone())
    return sample
