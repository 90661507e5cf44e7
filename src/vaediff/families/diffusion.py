"""Class-conditional pixel-space diffusion runs: objective, saving in diffusers layout, loading, sampling.

A run directory holds RUN/unet/ and RUN/scheduler/ written by diffusers' `save_pretrained` (EMA weights),
so stock diffusers loads them; the seed preset's concatenated class embedding sits beside them in
RUN/class_embedding.safetensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from vaediff.data import Dataset
from vaediff.diffusion import (
    diffusion_loss,
    from_model_range,
    make_sampling_scheduler,
    make_train_scheduler,
    sample_loop,
    to_model_range,
)
from vaediff.errors import ConfigError, RunError
from vaediff.figures import save_grid
from vaediff.models.unet import PRESETS, ClassConditionalUNet, DiffusionConfig, check_guidance_interval
from vaediff.runs import (
    atomic_save_safetensors,
    config_from_dict,
    config_to_dict,
    load_safetensors,
    load_state_strict,
)
from vaediff.train import BatchRandom, is_main_process

UNET_DIR, SCHEDULER_DIR, CLASS_EMBEDDING_FILE = "unet", "scheduler", "class_embedding.safetensors"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


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

    def export(self, module: nn.Module, run_dir: Path) -> None:
        save_denoiser(module, self.scheduler, Path(run_dir))


def _save_pretrained_atomically(component, target: Path) -> None:
    """diffusers' save_pretrained into a scratch directory beside `target`, then each file flushed to disk
    and renamed into place: a kill leaves every file either old and complete or new and complete."""
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        component.save_pretrained(scratch)
        for path in scratch.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(path, target / path.name)
    except OSError as exc:
        raise RunError(f"could not write {target}: {exc.strerror or exc}; the previous files are intact") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_denoiser(module: ClassConditionalUNet, scheduler, run_dir: Path) -> None:
    """Write RUN/unet/, RUN/scheduler/ (and the seed's class embedding) in diffusers' layout."""
    _save_pretrained_atomically(module.unet, run_dir / UNET_DIR)
    _save_pretrained_atomically(scheduler, run_dir / SCHEDULER_DIR)
    if module.class_embedding is not None:
        atomic_save_safetensors(module.class_embedding.state_dict(), run_dir / CLASS_EMBEDDING_FILE)


def load_denoiser(config: DiffusionConfig, run_dir: Path) -> ClassConditionalUNet:
    """Build the network from its config and load the weights strictly (shapes and names must match)."""
    module = ClassConditionalUNet(config)
    weights = run_dir / UNET_DIR / UNET_WEIGHTS
    load_state_strict(module.unet, load_safetensors(weights), weights)
    if module.class_embedding is not None:
        path = run_dir / CLASS_EMBEDDING_FILE
        load_state_strict(module.class_embedding, load_safetensors(path), path)
    return module.eval()


@dataclass
class DiffusionRun:
    """A trained class-conditional diffusion model loaded from its run directory."""

    run_dir: Path
    config: dict
    model_config: DiffusionConfig
    model: ClassConditionalUNet
    model_type: str = "diffusion"
    conditional: bool = True

    @classmethod
    def load(cls, run_dir: str | Path, config: dict) -> DiffusionRun:
        run_dir = Path(run_dir)
        model_config = config_from_dict(DiffusionConfig, config.get("model"), f"{run_dir}/config.json 'model'")
        return cls(run_dir, config, model_config, load_denoiser(model_config, run_dir))

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None,
                         guidance: float | None = None,
                         guidance_interval: tuple[float, float] | None = None) -> dict:
        """The run's defaults, overridden by whatever is given; validated."""
        settings = {
            "sampler": sampler or self.model_config.sampler,
            "steps": steps if steps is not None else (
                self.model_config.sampling_steps if sampler in (None, self.model_config.sampler)
                else default_steps(sampler)),
            "guidance": guidance if guidance is not None else self.model_config.guidance,
            "guidance_interval": tuple(guidance_interval if guidance_interval is not None
                                       else self.model_config.guidance_interval),
        }
        return check_sampler_settings(settings, self.model_config)

    def generate(self, count: int, labels: torch.Tensor | None, generator: torch.Generator,
                 sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                 guidance_interval: tuple[float, float] | None = None,
                 trajectory: list | None = None, record_at: set[int] | None = None) -> torch.Tensor:
        settings = self.sampler_settings(sampler, steps, guidance, guidance_interval)
        if labels is None or labels.shape != (count,):
            raise ConfigError("diffusion runs are class-conditional: give one label per image")
        scheduler = make_sampling_scheduler(settings["sampler"], make_train_scheduler(self.model_config),
                                            settings["steps"], self.model_config)
        shape = (count, self.model_config.channels, self.model_config.sample_size, self.model_config.sample_size)
        noise = torch.randn(shape, generator=generator)
        null = self.model_config.null_label if self.model_config.has_null_class else None
        samples = sample_loop(self.model, scheduler, noise, labels, settings["guidance"], null, generator,
                              trajectory, record_at, settings["guidance_interval"])
        if trajectory is not None:
            trajectory[:] = [self.to_images(x) for x in trajectory]
        return self.to_images(samples)

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        """What the sampler returns -> images in [0, 1]."""
        return from_model_range(samples, self.model_config)


def default_steps(sampler: str) -> int:
    return {"ddpm": 1000, "ddim": 50, "dpm": 20}.get(sampler, 20)


def check_sampler_settings(settings: dict, config: DiffusionConfig) -> dict:
    guidance = settings["guidance"]
    if not (guidance == guidance and guidance >= 0):  # NaN fails the first test
        raise ConfigError(f"--guidance must be a number >= 0, got {guidance}")
    if guidance != 1.0 and not config.has_null_class:
        raise ConfigError("the seed preset has no null class, so classifier-free guidance is unavailable; "
                          "use --guidance 1 or train with --preset fast")
    if settings["steps"] <= 0:
        raise ConfigError(f"--steps must be positive, got {settings['steps']}")
    try:
        check_guidance_interval(settings["guidance_interval"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--guidance-interval: {exc}") from None
    return settings


# ---------------------------------------------------------------------------------------------------------
# Training a run


def build_model_config(model_type: str, options: dict) -> DiffusionConfig:
    """The preset's config, with `options["model"]` (a dict of DiffusionConfig fields) overriding it."""
    return preset_with_overrides(options.get("preset") or "fast", options.get("model") or {})


def preset_with_overrides(preset: str, overrides: dict) -> DiffusionConfig:
    """A preset's config with some fields replaced, every field checked by name and type."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        return config_from_dict(DiffusionConfig, {**config_to_dict(PRESETS[preset]), **overrides}, "--model-config")
    except ValueError as exc:
        raise ConfigError(f"--model-config: {exc}") from None


def default_train_options(model_config: DiffusionConfig, options: dict) -> dict:
    if model_config.preset == "seed":  # the seed project's recipe: Adam 1e-3, batch 64, nothing else
        return {"batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "minutes": 10.0, "eval_images": 500}
    # Batch 32 beat 64 and 128 at the same wall-clock budget (more, cheaper steps; docs/performance.md).
    return {"batch_size": 32, "lr": 1.5e-3, "lr_schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0,
            "ema_decay": 0.999, "minutes": 10.0, "eval_images": 500}


@torch.no_grad()
def write_denoising_figure(run: DiffusionRun, path: Path, class_names: tuple[str, ...], seed: int = 0,
                           columns: int = 8, **sampler: object) -> None:
    """x_t of one sample per class along the reverse process, noise on the left, image on the right."""
    settings = run.sampler_settings(**sampler)
    steps = settings["steps"]
    record = {round(i * (steps - 1) / (columns - 1)) for i in range(columns)}
    trajectory: list[torch.Tensor] = []
    labels = torch.arange(10)
    run.generate(10, labels, torch.Generator().manual_seed(seed), trajectory=trajectory, record_at=record,
                 **settings)
    frames = torch.stack(trajectory, dim=1).flatten(0, 1)  # (10 * columns, C, H, W), row = class
    save_grid(frames, path, f"{run.model_type}: reverse process, {settings['sampler']} {steps} steps, "
              f"guidance {settings['guidance']:g}", columns=len(trajectory), row_labels=list(class_names))


def train_diffusion(run_dir: Path, dataset: Dataset, model_config: DiffusionConfig, train_config, resume: bool,
                    options: dict, progress: bool = True, figures: bool = True):
    from vaediff.train import train

    objective = DiffusionObjective(model_config)
    state = train(objective, partial(ClassConditionalUNet, model_config), dataset, train_config, run_dir, resume=resume,
                  title=f"diffusion ({model_config.preset}) on {dataset.name}", progress=progress)
    if figures and is_main_process():
        run = DiffusionRun.load(run_dir, {"model": config_to_dict(model_config)})
        write_run_figures(run, dataset.class_names, train_config.seed)
    return state


def write_run_figures(run: DiffusionRun, class_names: tuple[str, ...], seed: int) -> None:
    """samples.png (10 x 10, a row per class) and denoising.png of a trained run."""
    from vaediff.sampling import write_sample_grid

    settings = _figure_sampler(run.model_config)
    write_sample_grid(run, run.run_dir / "samples.png", seed=seed, class_names=class_names, **settings)
    write_denoising_figure(run, run.run_dir / "denoising.png", class_names, seed=seed, **settings)


def _figure_sampler(config: DiffusionConfig) -> dict:
    # The seed's 1000-step DDPM would take ~20 CPU-minutes for a 10x10 grid; the training figure uses
    # DPM-Solver++ (20 steps) instead; `vaediff sample --sampler ddpm --steps 1000` draws the seed's way.
    if config.sampler == "ddpm" and config.sampling_steps > 100:
        return {"sampler": "dpm", "steps": 20, "guidance": 1.0} if not config.has_null_class else {}
    return {}
