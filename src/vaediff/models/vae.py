"""The seed's MLP VAE and its class-conditional twin (nn.Module only: no data, training or files).

Kingma & Welling 2014: encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), prior p(z) = N(0, I), decoder
p(x|z) = Bernoulli(sigmoid(logits(z))) (the seed's), or with `decoder="discretized-logistic"` a logistic per
pixel integrated over its 8-bit bin (PixelCNN++'s, one component), a density on 8-bit images: the decoder
then outputs a location and a log-scale per pixel. The conditional VAE (Sohn et al. 2015) feeds a one-hot
label to both encoder and decoder: q(z|x, y), p(x|z, y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from vaediff.models.limits import MAX_WIDTH, check_range


@dataclass(frozen=True)
class VAEConfig:
    conditional: bool = False  # True: cvae, the label is an input of encoder and decoder
    image_size: int = 28       # images are channels x image_size x image_size
    channels: int = 1
    hidden: int = 400          # the seed's hidden width
    latent: int = 20           # the seed's latent size
    num_classes: int = 10
    decoder: Literal["bernoulli", "discretized-logistic"] = "bernoulli"  # the seed's, or a density on 8-bit pixels

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "hidden", "latent", "num_classes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VAEConfig.{name} must be positive, got {getattr(self, name)}")
            check_range(f"VAEConfig.{name}", getattr(self, name), 1, MAX_WIDTH)

    @property
    def model_type(self) -> str:
        return "cvae" if self.conditional else "vae"

    @property
    def pixels(self) -> int:
        return self.channels * self.image_size * self.image_size

    @property
    def outputs_per_pixel(self) -> int:
        """Bernoulli: one logit; discretized logistic: a location and a log-scale."""
        return 1 if self.decoder == "bernoulli" else 2


MIN_LOG_SCALE = -8.0  # the logistic's scale stays above e^-8 (a sixth of the half-bin 1/510): finite gradients


class VAE(nn.Module):
    """784-400-(20, 20) encoder, 20-400-784 decoder (784 = the pixels of one 28x28 channel; C x S x S in
    general); with `conditional`, a one-hot label joins both inputs."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        label_width = config.num_classes if config.conditional else 0
        self.encoder = nn.Sequential(nn.Linear(config.pixels + label_width, config.hidden), nn.ReLU())
        self.fc_mu = nn.Linear(config.hidden, config.latent)
        self.fc_logvar = nn.Linear(config.hidden, config.latent)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent + label_width, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.pixels * config.outputs_per_pixel),
        )  # logits; the seed's final Sigmoid is applied in `decode`, and the loss uses the stabler logits

    def _with_label(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.config.conditional:
            return inputs
        if labels is None:
            raise ValueError("a conditional VAE needs class labels")
        if labels.ndim == 2 and labels.shape == (inputs.shape[0], self.config.num_classes):
            one_hot = labels.to(inputs.dtype)  # soft labels: blends of classes (interpolation between classes)
        elif labels.shape == (inputs.shape[0],):
            one_hot = F.one_hot(labels, self.config.num_classes).to(inputs.dtype)
        else:
            raise ValueError(f"expected labels of shape ({inputs.shape[0]},), got {tuple(labels.shape)}")
        return torch.cat([inputs, one_hot], dim=1)

    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) images in [0, 1] -> mean and log-variance of q(z|x[, y]), each (N, latent)."""
        flat = images.reshape(images.shape[0], -1)
        if flat.shape[1] != self.config.pixels:
            raise ValueError(f"expected {self.config.pixels} pixels per image, got {flat.shape[1]}")
        hidden = self.encoder(self._with_label(flat, labels))
        return self.fc_mu(hidden), self.fc_logvar(hidden)

    def decode_logits(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, latent) -> the parameters of p(x|z[, y]): Bernoulli logits (N, C, H, W), or for the discretized
        logistic its locations (in [0, 1] pixel units) and log-scales stacked as (N, 2C, H, W)."""
        outputs = self.decoder(self._with_label(latents, labels))
        config = self.config
        outputs = outputs.reshape(-1, config.channels * config.outputs_per_pixel, config.image_size, config.image_size)
        if config.decoder == "bernoulli":
            return outputs
        location, log_scale = outputs.chunk(2, dim=1)
        return torch.cat([location, log_scale.clamp(min=MIN_LOG_SCALE)], dim=1)

    def decode(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, latent) -> the image the decoder means, in [0, 1] (pixel probabilities, or the logistic's
        locations)."""
        outputs = self.decode_logits(latents, labels)
        if self.config.decoder == "bernoulli":
            return torch.sigmoid(outputs)
        return outputs[:, : self.config.channels].clamp(0, 1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass: returns (logits, mu, logvar). `noise` ~ N(0, I) of shape (N, latent)."""
        mu, logvar = self.encode(images, labels)
        if noise is None:
            noise = torch.randn_like(mu)
        latents = mu + torch.exp(0.5 * logvar) * noise
        return self.decode_logits(latents, labels), mu, logvar
