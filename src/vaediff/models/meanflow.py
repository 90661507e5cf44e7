"""The network of a flow map u(z_t, r, t | y, w): stock diffusers' UNet2DModel plus a small embedding of what
it is conditioned on besides t.

MeanFlow (Geng et al. 2025) and improved MeanFlow (iMF, Geng, Lu et al. 2025) learn the average velocity
over an interval [r, t], so the network sees two times, and iMF makes the guidance scale w a conditioning
input too (one model, any scale at sampling time), and here the guidance interval [lo, hi] as well (the
stretch of the path where the scale applies, Kynkaanniemi et al. 2024), so that too is chosen when sampling.
The UNet keeps its own sinusoidal embedding of t (as in flow matching, t * 1000) and is built with
`class_embed_type="identity"`: its "class_labels" input is then a vector added to the time embedding of every
residual block. `MeanFlowConditioning` makes that vector: the class (a table with a null class for guidance),
the interval length t - r, w and the guidance interval, each summed. So RUN/unet/ is a stock UNet2DModel that
diffusers loads alone; RUN/conditioning.safetensors holds the embedding.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vaediff.errors import ConfigError
from vaediff.models.unet import DiffusionConfig, unet_kwargs

TIME_SCALE = 1000        # t in [0, 1] enters as t * 1000, diffusers' flow schedulers' timestep scale
GUIDANCE_SCALE = 100.0   # w - 1 in [0, ~10] enters as (w - 1) * 100: spread over the sinusoid's frequencies as t is


def meanflow_unet_kwargs(config: DiffusionConfig) -> dict:
    """UNet2DModel's arguments for the preset network with an added-embedding input instead of a class table."""
    kwargs = {key: value for key, value in unet_kwargs(config).items() if key != "num_class_embeds"}
    return {**kwargs, "class_embed_type": "identity"}


class MeanFlowConditioning(nn.Module):
    """(labels, t - r, w, [lo, hi]) -> one (N, D) vector that the UNet adds to its time embedding (D: its width).

    The interval's, the guidance's and the guidance interval's last layers start at zero: the untrained
    network is then a flow-matching UNet whatever r, w and [lo, hi] are, which is what `--init FLOW_RUN`
    starts from (the class table takes the flow run's, same shape and role)."""

    def __init__(self, num_labels: int, base_channels: int, width: int):
        super().__init__()
        self.class_embedding = nn.Embedding(num_labels, width)
        self.proj = Timesteps(base_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.interval_embedding = TimestepEmbedding(base_channels, width)
        self.guidance_embedding = TimestepEmbedding(base_channels, width)
        self.guidance_interval_embedding = TimestepEmbedding(2 * base_channels, width)
        for layer in (self.interval_embedding.linear_2, self.guidance_embedding.linear_2,
                      self.guidance_interval_embedding.linear_2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, labels: torch.Tensor, interval: torch.Tensor, guidance: torch.Tensor,
                guidance_interval: torch.Tensor) -> torch.Tensor:
        """labels (N,), interval = t - r (N,) in timestep units, guidance (N,), guidance_interval (N, 2) in [0, 1]."""
        dtype = self.class_embedding.weight.dtype
        interval_features = self.proj(interval).to(dtype)
        guidance_features = self.proj((guidance - 1) * GUIDANCE_SCALE).to(dtype)
        window_features = torch.cat([self.proj(guidance_interval[:, 0] * TIME_SCALE),
                                     self.proj(guidance_interval[:, 1] * TIME_SCALE)], dim=1).to(dtype)
        return (self.class_embedding(labels) + self.interval_embedding(interval_features)
                + self.guidance_embedding(guidance_features) + self.guidance_interval_embedding(window_features))


class MeanFlowNet(nn.Module):
    """u(z_t, r, t | y, w) -> the average velocity over [r, t], same shape as z_t.

    `timesteps` and `r_timesteps` are in diffusers' units (t * 1000); `guidance_interval` is [lo, hi] in [0, 1]
    ((2,) or (N, 2)); r defaults to t, w to 1 and the guidance interval to [0, 1], so
    `net(x, t, y)` is the instantaneous, unguided velocity: the flow-matching denoiser's signature (likelihood,
    stock loops). Label `num_classes` is the null class (classifier-free guidance)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        if config.conditioning != "class_embedding":
            raise ConfigError("meanflow conditions through an added embedding with a null class: "
                              "denoiser.conditioning must be 'class_embedding'")
        self.config = config
        self.unet = UNet2DModel(**meanflow_unet_kwargs(config))
        width = config.block_out_channels[0] * 4  # UNet2DModel's time-embedding width
        self.conditioning = MeanFlowConditioning(config.num_classes + 1, config.block_out_channels[0], width)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor,
                r_timesteps: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                guidance_interval: torch.Tensor | None = None) -> torch.Tensor:
        return self.average_velocity(sample, timesteps, labels, r_timesteps, guidance, guidance_interval)

    def average_velocity(self, sample: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor,
                         r_timesteps: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                         guidance_interval: torch.Tensor | None = None) -> torch.Tensor:
        """What `forward` computes. A method of its own because Accelerate's --mixed-precision wraps `forward`
        in autocast, whose casts forward-mode AD does not follow (a float32 tangent meets bfloat16 weights):
        the JVP calls this, in float32."""
        batch = sample.shape[0]
        if labels.shape != (batch,):
            raise ValueError(f"expected labels of shape ({batch},), got {tuple(labels.shape)}")
        timesteps = timesteps.expand(batch) if timesteps.ndim == 0 else timesteps
        r_timesteps = timesteps if r_timesteps is None else r_timesteps.expand(batch)
        guidance = torch.ones(batch, device=sample.device) if guidance is None else guidance.expand(batch)
        if guidance_interval is None:
            guidance_interval = torch.tensor([0.0, 1.0], device=sample.device)
        added = self.conditioning(labels, timesteps - r_timesteps, guidance, guidance_interval.expand(batch, 2))
        return self.unet(sample, timesteps, class_labels=added).sample


def has_attention(config: DiffusionConfig) -> bool:
    return config.mid_block_attention or any("Attn" in kind for kind in (*config.down_block_types,
                                                                         *config.up_block_types))


def forward_ad_attention():
    """The context a JVP through the network runs in: PyTorch's fused attention kernels (flash, memory-efficient,
    the CPU's flash) have no forward-mode derivative, the math kernel has one. No effect without attention."""
    return sdpa_kernel([SDPBackend.MATH])


def check_forward_ad(config: DiffusionConfig, device: torch.device) -> None:
    """One ConfigError line when the network cannot take a forward-mode derivative (torch.func.jvp) on
    `device`: the objective needs one each step. Convolutions, norms and activations all have one; attention
    kernels may not even in `forward_ad_attention`, so only a network with attention is tried, on a batch of one."""
    if not has_attention(config):
        return
    net = MeanFlowNet(config).to(device)
    size = (1, config.channels, config.sample_size, config.sample_size)
    sample, t = torch.zeros(size, device=device), torch.full((1,), 500.0, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    try:
        with torch.no_grad(), forward_ad_attention():
            torch.func.jvp(lambda x, s: net(x, s, labels), (sample, t), (torch.ones_like(sample), torch.ones_like(t)))
    except Exception as exc:  # noqa: BLE001 - whatever the kernel refuses, said in one line
        detail = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"this network has attention, and forward-mode differentiation (torch.func.jvp, which "
                          f"meanflow needs every step) fails for it on {device.type}: {detail}; use a network "
                          f"without attention (the fast preset)") from None
