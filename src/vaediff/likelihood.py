"""VAE objectives and likelihood bounds: negative ELBO and the importance-weighted bound (IWAE).

All values are in nats per image. Pixels are modelled as Bernoulli; on continuous [0, 1] pixels the
"likelihood" is the binary cross-entropy, which is a valid training objective but not a normalised
density, so only numbers computed on binarized pixels (`binarize`) compare with the literature.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from vaediff.models.vae import VAE


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, analytic (Kingma & Welling 2014, appendix B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def bernoulli_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: binary cross-entropy summed over pixels (the seed's reduction='sum')."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_pixel.flatten(1).sum(dim=1)


def negative_elbo(model: VAE, images: torch.Tensor, labels: torch.Tensor | None,
                  noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-batch means of -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)), one-sample estimate.

    Returns {"loss", "recon", "kl"} in nats per image; `noise` is the reparameterisation N(0, I) draw.
    """
    logits, mu, logvar = model(images, labels, noise)
    recon = bernoulli_nll(logits, images)
    kl = gaussian_kl(mu, logvar)
    return {"loss": (recon + kl).mean(), "recon": recon.mean(), "kl": kl.mean()}


def _log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mu).pow(2) / logvar.exp()).sum(dim=-1)


@torch.no_grad()
def log_importance_weights(model: VAE, images: torch.Tensor, labels: torch.Tensor | None, num_samples: int,
                           generator: torch.Generator, chunk: int = 250) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for K draws z_k ~ q(z|x): a (K, batch) tensor.

    Their mean over k estimates the ELBO; log (1/K) sum_k w_k is the importance-weighted bound of
    Burda et al. 2016 (eq. 8), which is never below the ELBO estimate from the same draws and
    tightens towards log p(x) as K grows. Draws are made `chunk` at a time to bound memory.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    mu, logvar = model.encode(images, labels)
    batch, latent = mu.shape
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = torch.randn((k, batch, latent), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, batch, latent)
        repeated_labels = labels.repeat(k) if labels is not None else None
        logits = model.decode_logits(z.reshape(k * batch, latent), repeated_labels)
        log_px_z = -bernoulli_nll(logits, images.repeat(k, 1, 1, 1)).reshape(k, batch)
        log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = _log_normal(z, mu, logvar)
        log_weights.append(log_px_z + log_pz - log_qz)
    return torch.cat(log_weights, dim=0)


def elbo_and_iw_nll(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (-ELBO, -IW bound) in nats from (K, batch) log importance weights."""
    num_samples = log_weights.shape[0]
    negative_elbo_estimate = -log_weights.mean(dim=0)
    iw_nll = -(torch.logsumexp(log_weights, dim=0) - math.log(num_samples))
    return negative_elbo_estimate, iw_nll


def bits_per_dim(nll_nats: float, dims: int) -> float:
    return nll_nats / (dims * math.log(2))
