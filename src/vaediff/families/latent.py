"""Latent diffusion (Rombach et al. 2022): a convolutional VAE compresses 28x28 images to 4x7x7 latents,
and a class-conditional diffusion model learns the latents' distribution. Latent flow matching
(`latent-flow`, Esser et al. 2024) is the same two stages with flow matching's objective and sampler.

Stage one trains the autoencoder into RUN/autoencoder/ (diffusers' AutoencoderKL layout, with its
`scaling_factor` set so that scaled latents have unit variance); stage two trains the denoiser with the
same code as pixel diffusion (objective, class embedding with null class, guidance, EMA, samplers) and
saves it as RUN/unet/ and RUN/scheduler/.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from vaediff.constants import FLOW_SAMPLERS, SAMPLERS
from vaediff.data import MNIST_SHAPE, Dataset, DataShape, ImageSplit
from vaediff.errors import AlreadyFinished, ConfigError, RunError
from vaediff.families.base import Family, LikelihoodSettings, Option, TrainingPlan, TrainingRequest
from vaediff.families.diffusion import (
    STEPS_CURVE,
    TINY_UNET,
    DiffusionRun,
    load_denoiser,
    save_denoiser,
    write_run_figures,
)
from vaediff.families.flow import FlowConfig, FlowRun, make_flow_config, save_flow, write_flow_figures
from vaediff.models.autoencoder import (
    AdversarialAutoencoder,
    AutoencoderConfig,
    LatentAutoencoder,
    check_autoencoder,
)
from vaediff.models.limits import check_range, config_section, with_data_fields
from vaediff.models.unet import ClassConditionalUNet, DiffusionConfig, preset_config
from vaediff.objectives.diffusion import LatentDiffusionObjective
from vaediff.objectives.flow import LatentFlowObjective
from vaediff.objectives.vae import AutoencoderObjective
from vaediff.runs import (
    atomic_save_pretrained,
    atomic_write_bytes,
    atomic_write_json,
    config_from_dict,
    load_safetensors,
    load_state_strict,
    read_json,
)
from vaediff.training import TrainConfig, is_main_process, train, wait_for_everyone

AUTOENCODER_DIR = "autoencoder"
AUTOENCODER_WEIGHTS = "diffusion_pytorch_model.safetensors"
STAGE_ONE_DONE = "done.json"
LATENT_TYPES = ("latent-diffusion", "latent-flow")
MAX_BATCH_SIZE = 65_536  # stage one's images per step (the training split must hold a batch: TrainConfig.check_data)
NO_BITS_PER_DIM = ("its autoencoder's decoder is a Bernoulli on continuous pixels (trained with an adversarial loss), "
                   "not a density on 8-bit data, so the latent model's bound gives no bound on the images")


@dataclass(frozen=True)
class AutoencoderStage:
    """Stage one, shared by latent diffusion and latent flow matching: the autoencoder and how it is trained."""

    autoencoder: AutoencoderConfig = AutoencoderConfig()
    # Share of a --minutes budget spent on the autoencoder. Half: on Fashion-MNIST the denoiser's FID was the
    # same after 5 minutes as after 6 (1.46 against 1.46-1.53), while its autoencoder bounds it (docs/performance.md).
    autoencoder_share: float = 0.5
    autoencoder_lr: float = 2e-3    # stage one's recipe: constant learning rate, small batches (more steps)
    autoencoder_batch_size: int = 32
    # The autoencoder is exported as an exponential moving average of its weights: once the critic's verdict
    # enters, the live weights' reconstruction FID jumps from step to step (0.94 -> 2.17 -> 1.23 -> 0.74 at
    # steps 1600-1900 of 2,000 on Fashion-MNIST) while the average stays within 0.69-0.81 over the last 30%
    # (benchmarks/latent_autoencoder.py --trajectory). Averaging a GAN generator's weights steadies it
    # (Yazici et al. 2019). The decay warms up to this cap as the denoiser's does. None: the live weights.
    autoencoder_ema_decay: float | None = 0.995

    @property
    def network(self) -> DiffusionConfig:
        """Stage two's UNet (on the latent)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        if (self.network.channels != self.autoencoder.latent_channels
                or self.network.sample_size != self.autoencoder.latent_size):
            raise ValueError("the denoiser must work on the autoencoder's latent (latent channels x S/4 x S/4)")
        if not 0 < self.autoencoder_share < 1:
            raise ValueError(f"autoencoder_share must be in (0, 1), got {self.autoencoder_share}")
        if not 0 < self.autoencoder_lr < math.inf:
            raise ValueError(f"autoencoder_lr must be a positive number, got {self.autoencoder_lr}")
        check_range("autoencoder_batch_size", self.autoencoder_batch_size, 1, MAX_BATCH_SIZE)
        if self.autoencoder_ema_decay is not None and not 0 < self.autoencoder_ema_decay < 1:
            raise ValueError(f"autoencoder_ema_decay must be in (0, 1) or null, got {self.autoencoder_ema_decay}")


@dataclass(frozen=True)
class LatentDiffusionConfig(AutoencoderStage):
    denoiser: DiffusionConfig = dataclasses.field(default_factory=lambda: preset_config("latent"))

    @property
    def network(self) -> DiffusionConfig:
        return self.denoiser

    @property
    def stage_two(self) -> DiffusionConfig:
        """What the run class of stage two's family is built from."""
        return self.denoiser


@dataclass(frozen=True)
class LatentFlowConfig(AutoencoderStage):
    # Flow matching on the latent (the recipe of Stable Diffusion 3, Esser et al. 2024): the latent preset's
    # UNet trained on the velocity target; sampler, steps and guidance as for pixel flow matching.
    flow: FlowConfig = dataclasses.field(
        default_factory=lambda: FlowConfig(denoiser=preset_config("latent")))

    @property
    def network(self) -> DiffusionConfig:
        return self.flow.denoiser

    @property
    def stage_two(self) -> FlowConfig:
        return self.flow


def save_autoencoder(module: nn.Module, directory: Path) -> None:
    """Stage one's export: the autoencoder alone (not its critic), in diffusers' AutoencoderKL layout."""
    atomic_save_pretrained(module.autoencoder.vae, Path(directory))


def load_autoencoder_weights(config: AutoencoderConfig, directory: Path) -> LatentAutoencoder:
    """The autoencoder written into `directory` (diffusers' layout), loaded strictly, in eval mode."""
    module = LatentAutoencoder(config)
    weights = directory / AUTOENCODER_WEIGHTS
    load_state_strict(module.vae, load_safetensors(weights), weights)
    return module.eval()


def load_autoencoder(config: AutoencoderConfig, directory: Path) -> tuple[LatentAutoencoder, float]:
    """A finished stage one: the autoencoder and its scaling factor."""
    module = load_autoencoder_weights(config, directory)
    done = directory / STAGE_ONE_DONE
    if not done.is_file():
        raise RunError(f"{directory}: the autoencoder stage has not finished (no {STAGE_ONE_DONE})")
    scaling_factor = read_json(done).get("scaling_factor")
    if not isinstance(scaling_factor, int | float) or not math.isfinite(scaling_factor) or scaling_factor <= 0:
        raise RunError(f"{done}: invalid scaling_factor {scaling_factor!r}")
    return module, float(scaling_factor)


class DecodesLatents:
    """What a run on latents adds to its stage two's run class: the autoencoder, loaded beside the network,
    decodes the sampler's output. `config_class` names the run's full config (an AutoencoderStage)."""

    config_class: type[AutoencoderStage]
    likelihood_options: tuple[str, ...] = ()  # no bits/dim (`likelihood` says why)

    def __init__(self, run_dir: Path, config: dict, stage_two: DiffusionConfig | FlowConfig,
                 model: ClassConditionalUNet, autoencoder: LatentAutoencoder, scaling_factor: float):
        super().__init__(run_dir, config, stage_two, model)
        self.autoencoder, self.scaling_factor = autoencoder, scaling_factor

    @classmethod
    def load(cls, run_dir: str | Path, config: dict):
        run_dir = Path(run_dir)
        full = config_from_dict(cls.config_class, config.get("model"), f"{run_dir}/config.json 'model'")
        autoencoder, scale = load_autoencoder(full.autoencoder, run_dir / AUTOENCODER_DIR)
        return cls(run_dir, config, full.stage_two, load_denoiser(full.network, run_dir), autoencoder, scale)

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.autoencoder.decode(samples / self.scaling_factor)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.reconstruct(images)

    def likelihood(self, split: ImageSplit, settings: LikelihoodSettings, seed: int, progress: bool) -> dict:
        # log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z)) with the latent model's bound for log p(z) needs
        # p(x|z) to be a density on 8-bit pixels; this autoencoder's is a Bernoulli on continuous pixels
        # (a cross-entropy), sharpened by an adversarial loss: no bits/dim to report.
        return {"bits_per_dim": None, "likelihood_axis": None, "no_bits_per_dim": NO_BITS_PER_DIM}


class LatentDiffusionRun(DecodesLatents, DiffusionRun):
    """A trained latent-diffusion model: denoiser + autoencoder, sampled like a pixel model."""

    model_type = "latent-diffusion"
    config_class = LatentDiffusionConfig


class LatentFlowRun(DecodesLatents, FlowRun):
    """A trained latent flow-matching model: velocity network + autoencoder, sampled like pixel flow."""

    model_type = "latent-flow"
    config_class = LatentFlowConfig


# ---------------------------------------------------------------------------------------------------------
# Training


def build_model_config(model_type: str, options: dict, shape: DataShape = MNIST_SHAPE) -> AutoencoderStage:
    """The autoencoder for the data's `shape` (or a reused run's), and stage two on its latent: the latent
    preset's UNet as a denoiser (latent-diffusion) or a velocity field (latent-flow). `options["model"]`
    overrides fields: {"autoencoder": {...}, "denoiser": {...}} or {"autoencoder": {...}, "flow": {...}}."""
    config_class = LatentFlowConfig if model_type == "latent-flow" else LatentDiffusionConfig
    overrides = dict(options.get("model") or {})
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ConfigError(f"--model-config: unknown key {unknown[0]!r} for {model_type}")
    autoencoder = _autoencoder_config(options, overrides, shape)
    latent_shape = DataShape(autoencoder.latent_channels, autoencoder.latent_size, shape.num_classes, shape.labelled)
    if config_class is LatentFlowConfig:
        flow = config_section(overrides, "flow", FlowConfig, "--model-config")
        stage_two = {"flow": make_flow_config("latent", flow, latent_shape, "--model-config: key 'flow'")}
    else:
        network = config_section(overrides, "denoiser", DiffusionConfig, "--model-config")
        stage_two = {"denoiser": preset_config("latent", network, "--model-config: key 'denoiser'", latent_shape)}
    stage_one = {k: v for k, v in overrides.items() if k not in ("autoencoder", "denoiser", "flow")}
    nested = {key: dataclasses.asdict(value) for key, value in {"autoencoder": autoencoder, **stage_two}.items()}
    return config_from_dict(config_class, {**stage_one, **nested}, "--model-config")


def _autoencoder_config(options: dict, overrides: dict, shape: DataShape) -> AutoencoderConfig:
    """Stage one's autoencoder for images of `shape`: a reused run's (its architecture comes from its run),
    or the default under overrides["autoencoder"]; checked by a dry build."""
    image = {"channels": shape.channels, "image_size": shape.image_size}
    if options.get("autoencoder"):
        autoencoder = _reused_autoencoder_config(Path(options["autoencoder"]))
        if (autoencoder.channels, autoencoder.image_size) != (shape.channels, shape.image_size):
            raise ConfigError(f"--autoencoder {options['autoencoder']}: made for {autoencoder.channels}x"
                              f"{autoencoder.image_size}x{autoencoder.image_size} images, the data are "
                              f"{shape.channels}x{shape.image_size}x{shape.image_size}")
        return autoencoder
    where = "--model-config: key 'autoencoder'"
    section = config_section(overrides, "autoencoder", AutoencoderConfig, "--model-config")
    autoencoder = config_from_dict(AutoencoderConfig, with_data_fields(section, image, where), where)
    check_autoencoder(autoencoder, where)
    return autoencoder


def recipe(model_config: AutoencoderStage) -> dict:
    # Batch 128 at 2e-3: FID 1.46 against 1.50-1.53 for batch 32 or 64 at 1e-3 or 2e-3, same 6 minutes.
    return {"batch_size": 128, "lr": 2e-3, "lr_schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0,
            "ema_decay": 0.999, "minutes": 10.0, "eval_images": 500}


def autoencoder_train_config(config: TrainConfig, model: AutoencoderStage) -> TrainConfig:
    """Stage one's limits: its share of a --minutes budget, or the same epochs/steps as stage two."""
    return dataclasses.replace(
        config,
        minutes=config.minutes * model.autoencoder_share if config.minutes is not None else None,
        lr=model.autoencoder_lr, batch_size=model.autoencoder_batch_size, grad_accum=1, lr_schedule="constant",
        warmup_steps=0, ema_decay=model.autoencoder_ema_decay, grad_clip=1.0,
    )


@torch.no_grad()
def fit_scaling_factor(autoencoder: LatentAutoencoder, dataset: Dataset, limit: int = 10000) -> float:
    """1 / std of the training latents (posterior means), so the denoiser sees unit-variance data
    (Rombach et al. 2022, sec. 4.3.2: "rescale the latent ... to unit standard deviation")."""
    count = min(limit, len(dataset.train))
    means = torch.cat([autoencoder.encode(dataset.train.as_float(slice(s, s + 500)))[0] for s in range(0, count, 500)])
    return float(1.0 / means.std())


def _stage_one(run_dir: Path, dataset: Dataset, config: AutoencoderStage, train_config: TrainConfig,
               resume: bool, progress: bool, name: str) -> tuple[LatentAutoencoder, float]:
    directory = run_dir / AUTOENCODER_DIR
    if (directory / STAGE_ONE_DONE).is_file():
        return load_autoencoder(config.autoencoder, directory)
    try:
        train(AutoencoderObjective(config.autoencoder), partial(AdversarialAutoencoder, config.autoencoder),
              dataset, autoencoder_train_config(train_config, config), directory, resume=resume,
              export=save_autoencoder, title=f"{name} 1/2: autoencoder on {dataset.name}", progress=progress)
    except AlreadyFinished:
        pass  # stopped after its last checkpoint but before it was marked done: finish the stage below
    autoencoder = load_autoencoder_weights(config.autoencoder, directory)
    scale = fit_scaling_factor(autoencoder, dataset)
    if is_main_process():
        autoencoder.vae.register_to_config(scaling_factor=scale)  # stock diffusers reads it from config.json
        atomic_save_pretrained(autoencoder.vae, directory)
        atomic_write_json(directory / STAGE_ONE_DONE, {"scaling_factor": scale})
    wait_for_everyone()
    return autoencoder, scale


def prepare_autoencoder(request: TrainingRequest, name: str) -> tuple[LatentAutoencoder, float, TrainConfig]:
    """Stage one (trained here, or a reused run's autoencoder copied in): the autoencoder, its scaling
    factor, and stage two's train config (the rest of a --minutes budget)."""
    run_dir, dataset, model_config = request.run_dir, request.dataset, request.model_config
    train_config, resume, progress = request.train_config, request.resume, request.progress
    reuse = request.options.get("autoencoder")
    if reuse:
        source = _autoencoder_dir(Path(reuse))
        autoencoder, scale = load_autoencoder(model_config.autoencoder, source)
        if is_main_process():  # the run must stand alone: copy the reused autoencoder in
            _copy_autoencoder(source, run_dir / AUTOENCODER_DIR)
        wait_for_everyone()
        return autoencoder, scale, train_config
    share = model_config.autoencoder_share
    if progress and train_config.minutes is not None and is_main_process():
        print(f"--minutes {train_config.minutes:g}: {share * train_config.minutes:.2f} min for the autoencoder, "
              f"{(1 - share) * train_config.minutes:.2f} min for the {name} model")
    autoencoder, scale = _stage_one(run_dir, dataset, model_config, train_config, resume, progress, name)
    if train_config.minutes is not None:
        train_config = dataclasses.replace(train_config, minutes=train_config.minutes * (1 - share))
    return autoencoder, scale, train_config


def training_plan(request: TrainingRequest) -> TrainingPlan:
    model_config = request.model_config
    autoencoder, scale, denoiser_config = prepare_autoencoder(request, "latent diffusion")
    return TrainingPlan(LatentDiffusionObjective(model_config.denoiser, autoencoder, scale),
                        partial(ClassConditionalUNet, model_config.denoiser), save_denoiser, denoiser_config,
                        f"latent diffusion 2/2: denoiser on {request.dataset.name}")


def flow_training_plan(request: TrainingRequest) -> TrainingPlan:
    autoencoder, scale, flow_config = prepare_autoencoder(request, "latent flow")
    flow = request.model_config.flow
    return TrainingPlan(LatentFlowObjective(flow.denoiser, autoencoder, scale, flow.logit_mean, flow.logit_std),
                        partial(ClassConditionalUNet, flow.denoiser), save_flow, flow_config,
                        f"latent flow 2/2: velocity field on {request.dataset.name}")


def _reused_autoencoder_config(path: Path) -> AutoencoderConfig:
    directory = _autoencoder_dir(path)
    run_config = read_json(directory.parent / "config.json")
    if run_config.get("model_type") not in LATENT_TYPES:
        raise RunError(f"--autoencoder {path}: not part of a {' or '.join(LATENT_TYPES)} run")
    return config_from_dict(AutoencoderConfig, run_config["model"]["autoencoder"], f"{directory.parent}/config.json")


def _autoencoder_dir(path: Path) -> Path:
    """--autoencoder accepts a latent-diffusion run or its autoencoder/ directory."""
    if (path / AUTOENCODER_DIR / AUTOENCODER_WEIGHTS).is_file():
        return path / AUTOENCODER_DIR
    if (path / AUTOENCODER_WEIGHTS).is_file():
        return path
    raise RunError(f"--autoencoder {path}: no trained autoencoder there (expected a latent-diffusion or latent-flow run "
                   f"with {AUTOENCODER_DIR}/{AUTOENCODER_WEIGHTS})")


def _copy_autoencoder(source: Path, target: Path) -> None:
    if source.resolve() == target.resolve():
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in (AUTOENCODER_WEIGHTS, "config.json", STAGE_ONE_DONE):
        atomic_write_bytes(target / name, (source / name).read_bytes())


TINY_AUTOENCODER = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4}
TINY_DENOISER = {**TINY_UNET, "block_out_channels": [16]}
REUSE = Option("autoencoder", None, "reuse the autoencoder of this latent-diffusion or latent-flow run instead of "
               "training one", metavar="RUN")
FAMILY = Family(config_class=LatentDiffusionConfig, build_config=build_model_config, recipe=recipe, plan=training_plan,
                load=LatentDiffusionRun.load, figures=write_run_figures, options=(REUSE,), samplers=SAMPLERS,
                share=0.32, fixed_steps=334, curve_steps=STEPS_CURVE,  # fixed_steps: each of its two stages
                summary={"en": "Latent diffusion runs the same process on a latent a quarter of the image's side, so "
                               "each pass is cheaper, and its quality is bounded by its autoencoder (reconstruction "
                               "FID {recon}).",
                         "zh": "潜空间扩散在边长为图像四分之一的潜变量上运行同样的过程，每次计算更便宜，其质量受自编码器限制"
                               "（重建 FID {recon}）。"},
                smallest={"autoencoder": TINY_AUTOENCODER, "denoiser": {**TINY_DENOISER, "num_train_timesteps": 100}},
                model_config_help='{"autoencoder": {...}, "denoiser": {...}}')
FLOW_FAMILY = Family(config_class=LatentFlowConfig, build_config=build_model_config, recipe=recipe,
                     plan=flow_training_plan, load=LatentFlowRun.load, figures=write_flow_figures, options=(REUSE,),
                     samplers=FLOW_SAMPLERS, curve_steps=STEPS_CURVE,
                     summary={"en": "Latent flow follows flow matching's straight path on the same kind of latent "
                                    "(reconstruction FID {recon}).",
                              "zh": "潜空间流匹配在同样的潜变量上沿流匹配的直线路径生成（重建 FID {recon}）。"},
                     smallest={"autoencoder": TINY_AUTOENCODER, "flow": {"denoiser": TINY_DENOISER, "sampling_steps": 3}},
                     model_config_help='{"autoencoder": {...}, "flow": {...}}')
