"""The convolutional VAE of latent diffusion: diffusers' AutoencoderKL, 28x28x1 -> 4x7x7 (C x S x S ->
4 x S/4 x S/4 in general), Bernoulli decoder, and the patch discriminator that trains it adversarially.

It is a VAE (Kingma & Welling 2014) with a spatial latent and a small KL weight, as in Rombach et al.
2022 (KL-regularised autoencoder, sec. 3 and appendix G): the latent stays smooth enough to diffuse.
Decoder outputs are Bernoulli logits, like the MLP VAE's. A likelihood alone makes the decoder average
what the latent leaves uncertain (blur); Rombach et al. add a patch-based adversarial loss (Esser et al.
2021) so that reconstructions stay sharp. On Fashion-MNIST, 1,500 steps, it takes the reconstructions'
Frechet distance from 3.6 to 0.85 (benchmarks/latent_autoencoder.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL
from torch import nn

from vaediff.models.limits import MAX_LAYERS_PER_BLOCK, MAX_WIDTH, check_range, check_widths, dry_build


@dataclass(frozen=True)
class AutoencoderConfig:
    channels: int = 1                                 # image channels (1 or 3)
    image_size: int = 28                              # images are image_size square; latents a quarter of it
    latent_channels: int = 4                          # latent is latent_channels x 7 x 7 for 28-pixel images
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # 28 -> 14 -> 7: three blocks, two downsamplings
    layers_per_block: int = 1
    norm_num_groups: int = 8
    mid_block_attention: bool = False                 # attention at 7x7 buys little for digits
    kl_weight: float = 1e-3                           # beta of the KL term (1 would be a plain VAE)
    # adversarial training (Esser et al. 2021, eq. 7, as Rombach et al. use it): 0 turns it off
    adversarial_weight: float = 0.5                   # times the adaptive weight ||grad nll|| / ||grad adv||
    discriminator_start: float = 0.3                  # share of training before the discriminator learns
    adversarial_start: float = 0.5                    # ... and before its verdict enters the decoder's loss
    discriminator_channels: int = 32

    def __post_init__(self) -> None:
        if len(self.block_out_channels) != 3:
            raise ValueError("the autoencoder needs three blocks (28 -> 14 -> 7)")
        for name in ("channels", "image_size", "latent_channels", "norm_num_groups"):
            check_range(name, getattr(self, name), 1, MAX_WIDTH)
        check_range("layers_per_block", self.layers_per_block, 1, MAX_LAYERS_PER_BLOCK)
        check_widths("block_out_channels", self.block_out_channels, self.norm_num_groups)
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two halvings), got {self.image_size}")
        for name in ("kl_weight", "adversarial_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if not 0 <= self.discriminator_start <= self.adversarial_start <= 1:
            raise ValueError("need 0 <= discriminator_start <= adversarial_start <= 1, got "
                             f"{self.discriminator_start} and {self.adversarial_start}")
        if self.discriminator_channels % 4:  # the critic's GroupNorm(8) is over twice its channels
            raise ValueError(f"discriminator_channels must be a positive multiple of 4, got "
                             f"{self.discriminator_channels}")
        check_range("discriminator_channels", self.discriminator_channels, 4, MAX_WIDTH)

    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0

    @property
    def latent_size(self) -> int:
        return self.image_size // 4


def check_autoencoder(config: AutoencoderConfig, source: str) -> int:
    """Build the autoencoder and its critic on the meta device and pass a batch of two through them (shapes
    only); one ConfigError line for anything diffusers refuses or networks too large. Returns the parameters."""
    def forward(module: AdversarialAutoencoder) -> None:
        size = config.image_size
        module(torch.zeros(2, config.channels, size, size), torch.zeros(2, config.latent_channels, size // 4, size // 4))

    return dry_build(lambda: AdversarialAutoencoder(config), source, forward)


def build_autoencoder_kl(config: AutoencoderConfig):
    return AutoencoderKL(
        in_channels=config.channels,
        out_channels=config.channels,
        latent_channels=config.latent_channels,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size,
        mid_block_add_attention=config.mid_block_attention,
    )


class LatentAutoencoder(nn.Module):
    """Wraps AutoencoderKL so that training goes through `forward` (as DistributedDataParallel needs)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.vae = build_autoencoder_kl(config)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) in [0, 1] -> mean and log-variance of q(z|x), each (N, latent channels, S/4, S/4)."""
        moments = self.vae.encode(images * 2 - 1).latent_dist  # the encoder sees [-1, 1], diffusers' convention
        return moments.mean, moments.logvar

    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (unscaled) -> images in [0, 1] (the decoder's mean)."""
        return torch.sigmoid(self.decode_logits(latents))

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Decoded posterior means: the best the autoencoder can do, an upper bound on sample quality. Computed
        where the autoencoder is; returned where `images` are."""
        device = next(self.parameters()).device
        return torch.cat([self.decode(self.encode(chunk.to(device))[0]).to(images.device)
                          for chunk in images.split(batch_size)])

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass: (logits, mean, logvar)."""
        mean, logvar = self.encode(images)
        return self.decode_logits(mean + torch.exp(0.5 * logvar) * noise), mean, logvar


class PatchDiscriminator(nn.Module):
    """PatchGAN critic (Isola et al. 2017): one real/fake score per overlapping 22x22 patch, 7x7 of them.

    Two strided 4x4 convolutions (28 -> 14 -> 7) and a 3x3 scoring layer; group norm, not batch norm,
    so that a score does not depend on the rest of the batch (real and fake images share one pass).
    """

    def __init__(self, channels: int = 32, image_channels: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(image_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.GroupNorm(8, 2 * channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) in [0, 1] -> (N, 1, S/4, S/4) scores (logits: > 0 means "real")."""
        return self.layers(images * 2 - 1)


class AdversarialAutoencoder(nn.Module):
    """Stage one's training module: the autoencoder and (when adversarial) its critic, in one forward pass
    as DistributedDataParallel needs. Evaluation (eval mode) runs the autoencoder alone."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.autoencoder = LatentAutoencoder(config)
        self.discriminator = PatchDiscriminator(config.discriminator_channels, config.channels) if config.adversarial else None

    def forward(self, images: torch.Tensor, noise: torch.Tensor):
        """(logits, mean, logvar, critic_scores, generator_scores); the scores are None in eval mode.

        critic_scores: the critic on real images, then on detached reconstructions (trains the critic only).
        generator_scores: a critic with detached weights on the reconstructions (trains the autoencoder
        only). So one backward pass trains both players, each on its own loss.
        """
        logits, mean, logvar = self.autoencoder(images, noise)
        if self.discriminator is None or not self.training:
            return logits, mean, logvar, None, None
        fakes = torch.sigmoid(logits)
        critic_scores = self.discriminator(torch.cat([images, fakes.detach()]))
        frozen = {name: weight.detach() for name, weight in self.discriminator.named_parameters()}
        generator_scores = torch.func.functional_call(self.discriminator, frozen, (fakes,))
        return logits, mean, logvar, critic_scores, generator_scores
