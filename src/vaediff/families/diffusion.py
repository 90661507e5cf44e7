"""Class-conditional pixel-space diffusion: the family's description, saving in diffusers' layout, its run.

A run directory holds RUN/unet/ and RUN/scheduler/ written by diffusers' `save_pretrained` (EMA weights),
so stock diffusers loads them; the seed preset's concatenated class embedding sits beside them in
RUN/class_embedding.safetensors.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from vaediff.console import progress_bar
from vaediff.constants import DIFFUSION_PRESETS, SAMPLERS
from vaediff.data import MNIST_SHAPE, Dataset, DataShape, ImageSplit
from vaediff.errors import ConfigError
from vaediff.families.base import Family, LikelihoodSettings, Option, Run, TrainingPlan, TrainingRequest
from vaediff.figures import save_grid
from vaediff.generation import write_sample_grid
from vaediff.models.unet import ClassConditionalUNet, DiffusionConfig, preset_config
from vaediff.objectives.diffusion import (
    DiffusionObjective,
    check_sampler_settings,
    default_steps,
    from_model_range,
    make_sampling_scheduler,
    make_train_scheduler,
    sample_loop,
)
from vaediff.objectives.likelihood import (
    SIGNED_GRID,
    UNIT_GRID,
    DiffusionProcess,
    PixelGrid,
    bits_per_dim_summary,
    diffusion_nll,
    replicate_variance,
)
from vaediff.runs import (
    atomic_save_pretrained,
    atomic_save_safetensors,
    config_from_dict,
    load_safetensors,
    load_state_strict,
)

UNET_DIR, SCHEDULER_DIR, CLASS_EMBEDDING_FILE = "unet", "scheduler", "class_embedding.safetensors"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def save_denoiser(module: ClassConditionalUNet, run_dir: Path) -> None:
    """Write RUN/unet/, RUN/scheduler/ (and the seed's class embedding) in diffusers' layout."""
    atomic_save_pretrained(module.unet, run_dir / UNET_DIR)
    atomic_save_pretrained(make_train_scheduler(module.config), run_dir / SCHEDULER_DIR)
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


class DiffusionRun(Run):
    """A trained class-conditional diffusion model loaded from its run directory."""

    model_type = "diffusion"
    has_sampler = True
    likelihood_options = ("test_images", "bound_timesteps")
    samplers = SAMPLERS
    diffusers_folders = ("unet", "scheduler")

    def __init__(self, run_dir: Path, config: dict, model_config: DiffusionConfig, model: ClassConditionalUNet):
        self.run_dir, self.config, self.model_config, self.model = Path(run_dir), config, model_config, model
        self.conditional = model_config.class_conditional  # False when trained on unlabelled data
        self.num_classes = model_config.num_classes

    @classmethod
    def load(cls, run_dir: str | Path, config: dict) -> DiffusionRun:
        run_dir = Path(run_dir)
        model_config = config_from_dict(DiffusionConfig, config.get("model"), f"{run_dir}/config.json 'model'")
        return cls(run_dir, config, model_config, load_denoiser(model_config, run_dir))

    @property
    def supports_guidance(self) -> bool:
        return self.model_config.has_null_class and self.model_config.class_conditional

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                         guidance_interval: tuple[float, float] | None = None) -> dict:
        """The run's defaults, overridden by whatever is given; validated."""
        config = self.model_config
        settings = {
            "sampler": sampler or config.sampler,
            "steps": steps if steps is not None else (
                config.sampling_steps if sampler in (None, config.sampler) else default_steps(sampler)),
            "guidance": guidance if guidance is not None else config.guidance,
            "guidance_interval": tuple(guidance_interval if guidance_interval is not None else config.guidance_interval),
        }
        return check_sampler_settings(settings, config)

    def seed_sampler(self) -> dict:
        return self.sampler_settings("ddpm", self.model_config.num_train_timesteps, 1.0)

    def generate(self, count: int, labels: torch.Tensor | None, generator: torch.Generator,
                 sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                 guidance_interval: tuple[float, float] | None = None,
                 trajectory: list | None = None, record_at: set[int] | None = None) -> torch.Tensor:
        settings = self.sampler_settings(sampler, steps, guidance, guidance_interval)
        if not self.conditional:
            labels = torch.zeros(count, dtype=torch.long)  # the one class of unlabelled data
        if labels is None or labels.shape != (count,):
            raise ConfigError("this diffusion run is class-conditional: give one label per image")
        config = self.model_config
        # drawn on the CPU generator, then moved: the same seed draws the same images on any device
        noise = torch.randn((count, config.channels, config.sample_size, config.sample_size), generator=generator)
        samples = self.integrate(noise.to(self.device), labels.to(self.device), settings, generator, trajectory,
                                 record_at)
        if trajectory is not None:
            trajectory[:] = [self.to_images(x).cpu() for x in trajectory]
        return self.to_images(samples).cpu()

    def integrate(self, noise: torch.Tensor, labels: torch.Tensor, settings: dict, generator: torch.Generator,
                  trajectory: list | None, record_at: set[int] | None) -> torch.Tensor:
        """Noise -> the model's samples with the sampler of `settings` (the reverse diffusion process)."""
        config = self.model_config
        scheduler = make_sampling_scheduler(settings["sampler"], make_train_scheduler(config), settings["steps"], config)
        null = config.null_label if config.has_null_class else None
        return sample_loop(self.model, scheduler, noise, labels, settings["guidance"], null, generator,
                           trajectory, record_at, settings["guidance_interval"])

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        """What the sampler returns -> images in [0, 1]."""
        return from_model_range(samples, self.model_config)

    def likelihood(self, split: ImageSplit, settings: LikelihoodSettings, seed: int, progress: bool) -> dict:
        """Bits/dim from the variational bound of Ho et al. 2020 (objectives/likelihood.py), two independent
        stratified estimates per image (their spread is the Monte-Carlo error). The network computes on the
        run's device; the float64 bookkeeping and the draws stay on the CPU."""
        config, device = self.model_config, self.device
        grid = pixel_grid(config)
        process = DiffusionProcess(make_train_scheduler(config).alphas_cumprod.double(), config.prediction_type,
                                   grid, config.bounded)
        strata = min(max(1, settings.bound_timesteps // 2), config.num_train_timesteps - 1)

        @torch.no_grad()
        def two_estimates(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            x0 = grid.from_unit(images.double())
            denoise = lambda x_t, t: self.model(x_t.float().to(device), t.to(device), labels.to(device)).cpu()  # noqa: E731
            return torch.stack([diffusion_nll(denoise, process, x0, strata, generator) for _ in range(2)])

        result = estimate_on_test_images(self, split, settings.test_images, two_estimates, seed, progress,
                                         batch_size=250, desc=f"bits/dim ({2 * strata} timesteps)")
        return {**result, "bound_timesteps": 2 * strata,
                "method": "variational bound of Ho et al. 2020 (eq. 5): prior KL + KL terms with the posterior "
                          "variance, summed by stratified Monte Carlo over timesteps + discretized Gaussian decoder "
                          "(eq. 13); an upper bound on the negative log-likelihood"}


def pixel_grid(config: DiffusionConfig) -> PixelGrid:
    """Where a pixel model puts the 256 pixel values ([0, 1] for the seed preset, [-1, 1] otherwise)."""
    return UNIT_GRID if config.data_range == "zero_one" else SIGNED_GRID


def estimate_on_test_images(run: DiffusionRun, split: ImageSplit, count: int, estimates, seed: int, progress: bool,
                            batch_size: int, desc: str) -> dict:
    """Run `estimates(images, labels, generator) -> (R, batch)` nats over the first `count` test images and
    summarise them as bits/dim. Models with a null class are asked for their unconditional density
    log p(x) (the null label); the seed preset, which has none, for log p(x | y)."""
    count = min(count, len(split))
    if count < 2:
        raise ConfigError(f"bits/dim needs at least 2 test images, got {count}")
    config = run.model_config
    unconditional = config.has_null_class or not run.conditional
    generator = torch.Generator().manual_seed(seed)
    replicates = []
    starts = range(0, count, batch_size)
    for start in progress_bar(starts, desc=desc, unit="batch", enabled=progress):
        images = split.as_float(slice(start, min(start + batch_size, count)))
        if not run.conditional:
            labels = torch.zeros(len(images), dtype=torch.long)
        elif unconditional:
            labels = torch.full((len(images),), config.null_label, dtype=torch.long)
        else:
            labels = split.labels[start : start + len(images)]
        replicates.append(estimates(images, labels, generator))
    replicates = torch.cat(replicates, dim=1)
    summary = bits_per_dim_summary(replicates.mean(dim=0), replicate_variance(replicates), split.images[0].numel())
    return {**summary, "likelihood_axis": "8-bit", "conditional_on_label": not unconditional, "seed": seed}


@torch.no_grad()
def write_denoising_figure(run: DiffusionRun, path: Path, class_names: tuple[str, ...], seed: int = 0,
                           columns: int = 8, **sampler: object) -> None:
    """x_t of one sample per class along the reverse process, noise on the left, image on the right."""
    settings = run.sampler_settings(**sampler)
    steps = settings["steps"]
    record = {round(i * (steps - 1) / (columns - 1)) for i in range(columns)}
    trajectory: list[torch.Tensor] = []
    rows = min(run.num_classes, 10) if run.conditional else 10
    run.generate(rows, torch.arange(rows), torch.Generator().manual_seed(seed), trajectory=trajectory,
                 record_at=record, **settings)
    frames = torch.stack(trajectory, dim=1).flatten(0, 1)  # (rows * columns, C, H, W), row = class
    save_grid(frames, path, f"{run.model_type}: reverse process, {settings['sampler']} {steps} steps, "
              f"guidance {settings['guidance']:g}", columns=len(trajectory),
              row_labels=list(class_names[:rows]) if run.conditional else None)


def write_run_figures(run: DiffusionRun, dataset: Dataset, seed: int, options: dict | None = None) -> None:
    """samples.png (10 x 10, a row per class) and denoising.png of a trained run."""
    settings = _figure_sampler(run.model_config)
    write_sample_grid(run, run.run_dir / "samples.png", seed=seed, class_names=dataset.class_names, **settings)
    write_denoising_figure(run, run.run_dir / "denoising.png", dataset.class_names, seed=seed, **settings)


def _figure_sampler(config: DiffusionConfig) -> dict:
    # The seed's 1000-step DDPM would take ~20 CPU-minutes for a 10x10 grid; the training figure uses
    # DPM-Solver++ (20 steps) instead; `vaediff sample --sampler ddpm --steps 1000` draws the seed's way.
    if config.sampler == "ddpm" and config.sampling_steps > 100:
        return {"sampler": "dpm", "steps": 20, "guidance": 1.0} if not config.has_null_class else {}
    return {}


def build_model_config(model_type: str, options: dict, shape: DataShape = MNIST_SHAPE) -> DiffusionConfig:
    """The preset's config for the data's `shape`, with `options["model"]` (a dict of DiffusionConfig fields)
    overriding it."""
    return preset_config(options.get("preset") or "fast", options.get("model"), "--model-config", shape)


def recipe(model_config: DiffusionConfig) -> dict:
    if model_config.preset == "seed":  # the seed project's recipe: Adam 1e-3, batch 64, nothing else
        return {"batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "minutes": 10.0, "eval_images": 500}
    # Batch 32 beat 64 and 128 at the same wall-clock budget (more, cheaper steps; docs/performance.md).
    return {"batch_size": 32, "lr": 1.5e-3, "lr_schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0,
            "ema_decay": 0.999, "minutes": 10.0, "eval_images": 500}


def training_plan(request: TrainingRequest) -> TrainingPlan:
    model_config = request.model_config
    return TrainingPlan(DiffusionObjective(model_config), partial(ClassConditionalUNet, model_config),
                        save_denoiser, request.train_config, f"diffusion ({model_config.preset}) on {request.dataset.name}")


TINY_UNET = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8, "sampling_steps": 3}
# the smallest diffusion: a 100-step schedule, so that the seed's sampler (DDPM over every step) takes a second
TINY_DIFFUSION = {**TINY_UNET, "num_train_timesteps": 100}
STEPS_CURVE = (5, 10, 20, 50, 100)  # the report's steps curve (plus the seed's 1000-step DDPM point)
FAMILY = Family(config_class=DiffusionConfig, build_config=build_model_config, recipe=recipe, plan=training_plan,
                load=DiffusionRun.load, figures=write_run_figures,
                options=(Option("preset", "fast", "diffusion recipe: fast (default, for CPUs) or seed (the course "
                                "project's)", choices=DIFFUSION_PRESETS),),
                samplers=SAMPLERS, share=0.28, fixed_steps=962, curve_steps=STEPS_CURVE,
                summary={"en": "Diffusion learns to remove noise step by step: sharp, but many network passes per image.",
                         "zh": "扩散模型逐步去除噪声：清晰，但每张图需要多次网络计算。"},
                smallest=TINY_DIFFUSION, variants={"preset": DIFFUSION_PRESETS},
                model_config_help='{"block_out_channels": [16, 32, 64]}')
