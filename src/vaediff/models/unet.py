"""Class-conditional denoisers built on diffusers' UNet2DModel, from one frozen config.

Two ways to condition on the class, both from the seed project onwards:
* `concat` (the seed's): a learned 4-d class embedding is broadcast over the image and concatenated
  as extra input channels. No null class, so no classifier-free guidance.
* `class_embedding` (the fast preset's): the UNet's own `num_class_embeds` table, added to the time
  embedding of every residual block, with one extra "null" class (index num_classes) used for label
  dropout and classifier-free guidance. The saved UNet alone then draws any class in stock diffusers:
  `unet(x, t, class_labels=y).sample`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import UNet2DModel
from torch import nn

from vaediff.checks import MAX_SAMPLING_STEPS
from vaediff.errors import ConfigError
from vaediff.models.limits import (
    MAX_LAYERS_PER_BLOCK,
    MAX_LEVELS,
    MAX_TRAIN_TIMESTEPS,
    MAX_WIDTH,
    check_range,
    check_widths,
    dry_build,
    with_data_fields,
)
from vaediff.runs import config_from_dict, config_to_dict


@dataclass(frozen=True)
class DiffusionConfig:
    preset: Literal["fast", "seed", "latent"] = "fast"
    # network ------------------------------------------------------------------------------------------
    sample_size: int = 28
    channels: int = 1                                     # image (or latent) channels
    block_out_channels: tuple[int, ...] = (16, 32, 64)    # 28x28, 14x14, 7x7: few channels where pixels are many
    layers_per_block: int = 1
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "UpBlock2D")
    mid_block_attention: bool = False                     # self-attention at the lowest resolution
    norm_num_groups: int = 8
    attention_head_dim: int = 32
    conditioning: Literal["class_embedding", "concat"] = "class_embedding"
    class_embed_size: int = 4                             # concat only: channels of the label map
    num_classes: int = 10
    class_conditional: bool = True                        # False: trained on unlabelled data (one class, no guidance)
    # diffusion process ----------------------------------------------------------------------------------
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"  # every sampler's
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"
    data_range: Literal["zero_one", "minus_one_one", "unbounded"] = "minus_one_one"  # unbounded: latents
    label_dropout: float = 0.1                            # P(label -> null class) in training (CFG)
    min_snr_gamma: float | None = 5.0                     # Min-SNR loss weighting; None: plain MSE
    # sampling defaults ------------------------------------------------------------------------------------
    sampler: Literal["ddpm", "ddim", "dpm"] = "dpm"
    sampling_steps: int = 20  # DPM-Solver++ 20: FID within 0.94x of DDIM-100's; 10 steps gave 1.4x (docs/performance.md)
    guidance: float = 2.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # guided where lo <= t/T <= hi (diffusion.guidance_at)

    def __post_init__(self) -> None:
        _check_network(self)
        if self.conditioning == "concat" and self.label_dropout:
            raise ValueError("concat conditioning has no null class, so label_dropout must be 0")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.min_snr_gamma is not None and not 0 < self.min_snr_gamma < math.inf:
            raise ValueError(f"min_snr_gamma must be a positive number or null, got {self.min_snr_gamma}")
        check_range("num_train_timesteps", self.num_train_timesteps, 2, MAX_TRAIN_TIMESTEPS)
        # the samplers take at most one step per training timestep, and `sample --steps` at most MAX_SAMPLING_STEPS
        check_range("sampling_steps", self.sampling_steps, 1, min(self.num_train_timesteps, MAX_SAMPLING_STEPS))
        check_guidance(self.guidance, self.guidance_interval, self)

    @property
    def bounded(self) -> bool:
        """Pixels are bounded (samplers may clip predicted x_0); latents are not."""
        return self.data_range != "unbounded"

    @property
    def has_null_class(self) -> bool:
        return self.conditioning == "class_embedding"

    @property
    def null_label(self) -> int:
        return self.num_classes


def _check_network(config: DiffusionConfig) -> None:
    """What diffusers' UNet2DModel needs of its sizes, said by field name (the dry build in preset_config
    catches the rest)."""
    levels = len(config.block_out_channels)
    if levels != len(config.down_block_types) or levels != len(config.up_block_types):
        raise ValueError("block_out_channels, down_block_types and up_block_types must have equal lengths")
    check_range("the number of levels (block_out_channels)", levels, 1, MAX_LEVELS)
    for name in ("sample_size", "channels", "norm_num_groups", "attention_head_dim", "class_embed_size", "num_classes"):
        check_range(name, getattr(config, name), 1, MAX_WIDTH)
    check_range("layers_per_block", config.layers_per_block, 1, MAX_LAYERS_PER_BLOCK)
    check_widths("block_out_channels", config.block_out_channels, config.norm_num_groups)
    if config.sample_size % 2 ** (levels - 1):  # each level but the last halves the map; up-sampling doubles it
        raise ValueError(f"{levels} levels halve the {config.sample_size}-pixel input {levels - 1} times, so it must "
                         f"be a multiple of {2 ** (levels - 1)}: use fewer levels (block_out_channels)")
    attended = [width for width, kind in zip(config.block_out_channels, config.down_block_types, strict=True)
                if "Attn" in kind]
    attended += [width for width, kind in zip(reversed(config.block_out_channels), config.up_block_types, strict=True)
                 if "Attn" in kind]
    attended += [config.block_out_channels[-1]] if config.mid_block_attention else []
    if attended and config.attention_head_dim > min(attended):  # heads = channels // attention_head_dim
        raise ValueError(f"attention_head_dim ({config.attention_head_dim}) must be at most the channels of every "
                         f"block with attention ({min(attended)})")


def check_guidance(guidance: float, interval: tuple[float, float], network: DiffusionConfig) -> None:
    """Default guidance settings that `sample` will accept for a model of `network` (check_sampler_settings)."""
    if not 0 <= guidance < math.inf:
        raise ValueError(f"guidance must be a number >= 0, got {guidance}")
    check_guidance_interval(interval)
    if not network.class_conditional and guidance != 1.0:
        raise ValueError("an unconditional model (unlabelled data) has no class guidance: guidance must be 1")
    if not network.has_null_class and guidance != 1.0:
        raise ValueError("concat conditioning has no null class, so no classifier-free guidance: guidance must be 1")


def check_guidance_interval(interval: tuple[float, float]) -> None:
    if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
        raise ValueError(f"guidance_interval must be two numbers 0 <= lo <= hi <= 1 (shares of the noise schedule), "
                         f"got {tuple(interval)}")


def unet_kwargs(config: DiffusionConfig) -> dict:
    in_channels = config.channels + (config.class_embed_size if config.conditioning == "concat" else 0)
    kwargs = dict(
        sample_size=config.sample_size,
        in_channels=in_channels,
        out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=tuple(config.down_block_types),
        up_block_types=tuple(config.up_block_types),
        add_attention=config.mid_block_attention,
        norm_num_groups=config.norm_num_groups,
        attention_head_dim=config.attention_head_dim,
    )
    if config.conditioning == "class_embedding":
        kwargs["num_class_embeds"] = config.num_classes + 1  # + the null class
    return kwargs


class ClassConditionalUNet(nn.Module):
    """f(x_t, t, y) -> the network's prediction (noise, velocity or sample), same shape as x_t.

    `labels` are class indices; with `class_embedding` conditioning the index `num_classes` is the null
    (unconditional) class.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.unet = UNet2DModel(**unet_kwargs(config))
        self.class_embedding = (
            nn.Embedding(config.num_classes, config.class_embed_size) if config.conditioning == "concat" else None
        )

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = sample.shape
        if labels.shape != (batch,):
            raise ValueError(f"expected labels of shape ({batch},), got {tuple(labels.shape)}")
        if self.class_embedding is not None:
            label_maps = self.class_embedding(labels).view(batch, -1, 1, 1).expand(-1, -1, height, width)
            return self.unet(torch.cat([sample, label_maps], dim=1), timesteps).sample
        return self.unet(sample, timesteps, class_labels=labels).sample


_PRESETS: dict[str, DiffusionConfig] = {
    # The seed project's network and process, exactly (its README, "扩散模型").
    "seed": DiffusionConfig(
        preset="seed",
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        mid_block_attention=True,
        norm_num_groups=32,
        attention_head_dim=8,
        conditioning="concat",
        class_embed_size=4,
        prediction_type="epsilon",
        data_range="zero_one",
        label_dropout=0.0,
        min_snr_gamma=None,
        sampler="ddpm",
        sampling_steps=1000,
        guidance=1.0,
    ),
    "fast": DiffusionConfig(),
    # The denoiser of latent diffusion: one 7x7 level (a 7x7 map cannot be halved and doubled back).
    "latent": DiffusionConfig(
        preset="latent",
        sample_size=7,
        channels=4,
        block_out_channels=(64,),
        layers_per_block=2,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        mid_block_attention=True,
        norm_num_groups=32,
        attention_head_dim=32,
        data_range="unbounded",
        # Measured on Fashion-MNIST (docs/performance.md): 10 steps cost FID 2.04 against 20 steps' 1.97, at
        # the same class accuracy and twice the speed (77-98 images/s against 42). Guidance 3 only between
        # t/T = 0.1 and 0.7: FID 1.51 at class accuracy 0.913, against 2.04 at 0.917 for guidance 2 throughout.
        sampling_steps=10,
        guidance=3.0,
        guidance_interval=(0.1, 0.7),
    ),
}


def data_fields(name: str, shape) -> dict:
    """The fields of preset `name` that follow the data (a data.DataShape): channels, size, classes. The fast
    preset gains a fourth level at 64 pixels (64 -> 32 -> 16 -> 8), so its lowest map stays about 7x7;
    on unlabelled data a model has one class and no guidance."""
    fields = {"sample_size": shape.image_size, "channels": shape.channels, "num_classes": shape.num_classes}
    if name == "fast" and shape.image_size >= 64:
        fields.update(block_out_channels=(16, 32, 64, 64), down_block_types=("DownBlock2D",) * 4,
                      up_block_types=("UpBlock2D",) * 4)
    if not shape.labelled:
        fields.update(class_conditional=False, guidance=1.0, label_dropout=0.0)
    return fields


def preset_config(name: str, overrides: dict | None = None, source: str = "--model-config",
                  shape=None) -> DiffusionConfig:
    """A preset's config with some fields replaced, every field checked by name and type: the one way a
    DiffusionConfig is made from a preset. Given the data's `shape` (a data.DataShape), the fields that follow
    the data are set (data_fields) and an override that contradicts them is refused. The network is then
    built on the meta device, so whatever diffusers refuses is one line here, not a traceback in training."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}")
    overrides = dict(overrides or {})
    if shape is not None:
        fields = data_fields(name, shape)
        fixed = {key: fields.pop(key) for key in ("sample_size", "channels", "num_classes")}
        overrides = {**fields, **with_data_fields(overrides, fixed, source)}
    config = config_from_dict(DiffusionConfig, {**config_to_dict(_PRESETS[name]), **overrides}, source)
    check_network(config, source)
    return config


def check_network(config: DiffusionConfig, source: str) -> int:
    """Build the network of `config` on the meta device and pass a batch of two through it (shapes only);
    one ConfigError line for anything diffusers refuses or a network too large. Returns its parameter count."""
    def forward(module: ClassConditionalUNet) -> None:
        sample = torch.zeros(2, config.channels, config.sample_size, config.sample_size)
        module(sample, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))

    return dry_build(lambda: ClassConditionalUNet(config), source, forward)
