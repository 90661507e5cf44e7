"""VAE objectives and likelihood bounds: negative ELBO, the importance-weighted bound (IWAE), the
training objective of a VAE, and the latent autoencoder's (with its adversarial terms).

All values are in nats per image. With the seed's Bernoulli decoder on continuous [0, 1] pixels the
"likelihood" is the binary cross-entropy, a valid training objective but not a normalised density: only
numbers on binarized pixels (`binarize`) compare with the literature, and they are another axis than
8-bit images. With the discretized-logistic decoder the bound is on 8-bit images: bits/dim comparable with
diffusion's and flows' (objectives/likelihood.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vaediff.console import progress_bar
from vaediff.data import ImageSplit
from vaediff.models.autoencoder import AutoencoderConfig
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives import BatchRandom
from vaediff.objectives.likelihood import UNIT_GRID, bits_per_dim_summary, discretized_logistic_log_prob


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, analytic (Kingma & Welling 2014, appendix B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def bernoulli_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: binary cross-entropy summed over pixels (the seed's reduction='sum')."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_pixel.flatten(1).sum(dim=1)


def reconstruction_nll(config: VAEConfig, outputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image (nats) for the decoder's outputs (VAE.decode_logits) and images in [0, 1]."""
    if config.decoder == "bernoulli":
        return bernoulli_nll(outputs, images)
    location, log_scale = outputs.chunk(2, dim=1)
    log_prob = discretized_logistic_log_prob(UNIT_GRID.from_unit(images), location, log_scale, UNIT_GRID)
    return -log_prob.flatten(1).sum(dim=1).to(images.dtype)


def negative_elbo(model: VAE, images: torch.Tensor, labels: torch.Tensor | None,
                  noise: torch.Tensor, config: VAEConfig | None = None) -> dict[str, torch.Tensor]:
    """Per-batch means of -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)), one-sample estimate.

    Returns {"loss", "recon", "kl"} in nats per image; `noise` is the reparameterisation N(0, I) draw.
    `config` says which decoder the outputs parametrise (default: the model's own; pass it when `model` is
    wrapped, e.g. by DistributedDataParallel).
    """
    logits, mu, logvar = model(images, labels, noise)
    recon = reconstruction_nll(config or model.config, logits, images)
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
    tightens towards log p(x) as K grows. Draws are made `chunk` at a time to bound memory. `images` and
    `labels` on the model's device; the weights come back there.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    mu, logvar = model.encode(images, labels)
    batch, latent = mu.shape
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        # drawn by the CPU's generator whatever the model's device: the same draws (and bound, to rounding) anywhere
        eps = torch.randn((k, batch, latent), generator=generator).to(mu.device, mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, batch, latent)
        repeated_labels = labels.repeat(k) if labels is not None else None
        logits = model.decode_logits(z.reshape(k * batch, latent), repeated_labels)
        log_px_z = -reconstruction_nll(model.config, logits, images.repeat(k, 1, 1, 1)).reshape(k, batch)
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


def iw_variance(log_weights: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo variance of the IW bound log (1/K) sum_k w_k per image, by the delta method:
    Var(mean w) / mean(w)^2 = Var(w / mean w) / K."""
    normalised = torch.exp(log_weights - torch.logsumexp(log_weights, dim=0) + math.log(log_weights.shape[0]))
    return normalised.double().var(dim=0) / log_weights.shape[0]


@torch.no_grad()
def held_out_bounds(model: VAE, split: ImageSplit, iw_samples: int = 1000, binarize: bool = False, seed: int = 0,
                    batch_size: int = 100, progress: bool = True) -> dict:
    """Negative ELBO and importance-weighted NLL bound on a test split, in nats per image.

    Both come from the same K draws per image (so nll_nats <= elbo_nats always holds); the standard
    error is over test images. With `binarize`, each test pixel is one fixed Bernoulli draw
    (seeded), the protocol of the binarized-MNIST literature. Computed on the model's device, batch by batch.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    images = split.as_float()
    if binarize:
        images = torch.bernoulli(images, generator=torch.Generator().manual_seed(seed + 1))
    conditional = model.config.conditional
    elbos, nlls, variances = [], [], []
    starts = range(0, len(images), batch_size)
    for start in progress_bar(starts, desc=f"likelihood (K={iw_samples})", unit="batch", enabled=progress):
        batch = images[start : start + batch_size].to(device)
        labels = split.labels[start : start + batch_size].to(device) if conditional else None
        log_weights = log_importance_weights(model, batch, labels, iw_samples, generator).cpu()
        elbo, nll = elbo_and_iw_nll(log_weights)
        elbos.append(elbo)
        nlls.append(nll)
        variances.append(iw_variance(log_weights))
    elbo, nll = torch.cat(elbos).double(), torch.cat(nlls).double()
    summary = bits_per_dim_summary(nll, torch.cat(variances), images[0].numel())
    result = {
        "elbo_nats": float(elbo.mean()),
        "nll_nats": float(nll.mean()),
        "nll_stderr": float(nll.std() / math.sqrt(len(nll))),
        "iw_samples": iw_samples,
        "binarized": binarize,
        "conditional_on_label": conditional,
        "test_images": len(nll),
        "method": f"importance-weighted bound (Burda et al. 2016), K = {iw_samples}",
    }
    if binarize:
        return {**summary, **result, "likelihood_axis": "binarized"}
    if model.config.decoder == "bernoulli":
        return {**result, "bits_per_dim": None, "likelihood_axis": None,
                "no_bits_per_dim": "the Bernoulli decoder on continuous pixels gives a cross-entropy, not a density "
                                   "on 8-bit images (train with --decoder discretized-logistic, or evaluate "
                                   "with --binarize for the binarized axis)"}
    return {**summary, **result, "likelihood_axis": "8-bit"}


class VAEObjective:
    """Negative ELBO per image (nats), with optional dynamic binarization of the training pixels."""

    loss_names = ("loss", "recon", "kl")

    def __init__(self, config: VAEConfig, binarize: bool = False):
        self.config, self.binarize = config, binarize

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        if self.binarize:  # a fresh Bernoulli draw of every pixel at every step (dynamic binarization)
            images = (draw.uniform(*images.shape[1:]) < images).to(images.dtype)
        noise = draw.normal(self.config.latent)
        return negative_elbo(module, images, labels if self.config.conditional else None, noise, self.config)


# ---------------------------------------------------------------------------------------------------------
# The latent autoencoder of latent diffusion: a KL-regularised VAE with an optional adversarial critic


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """lambda = ||grad_L reconstruction|| / (||grad_L adversarial|| + 1e-4) at the decoder's last layer L
    (Esser et al. 2021, eq. 7): the adversarial term pulls as hard as the likelihood, whatever their scales."""
    (reconstruction_grad,) = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    (adversarial_grad,) = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    return (reconstruction_grad.norm() / (adversarial_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


def hinge_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss (Lim & Ye 2017): mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


class AutoencoderObjective:
    """-ELBO with a weighted KL term: Bernoulli reconstruction (nats) + kl_weight * KL, per image; when
    adversarial, plus the critic's hinge loss and the decoder's adaptively weighted adversarial loss, each
    entering at its share of training (the critic first, so that its first verdicts are not noise).
    The module is models.autoencoder.AdversarialAutoencoder."""

    def __init__(self, config: AutoencoderConfig):
        self.config = config
        self.loss_names = ("loss", "recon", "kl") + (("critic", "adversarial") if config.adversarial else ())

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        config = self.config
        noise = draw.normal(config.latent_channels, config.latent_size, config.latent_size)
        logits, mean, logvar, critic_scores, generator_scores = module(images, noise)
        recon = bernoulli_nll(logits, images).mean()
        kl = gaussian_kl(mean.flatten(1), logvar.flatten(1)).mean()
        terms = {"loss": recon + config.kl_weight * kl, "recon": recon, "kl": kl}
        if critic_scores is None:
            return terms
        critic = hinge_critic_loss(*critic_scores.chunk(2))
        adversarial = -generator_scores.mean()
        # Both terms are always in the graph (times 0 before their start), so that every parameter
        # gets a gradient at every step, as DistributedDataParallel requires.
        critic_factor = float(draw.progress >= config.discriminator_start)
        weight = torch.zeros(())
        if draw.progress >= config.adversarial_start:
            last_layer = getattr(module, "module", module).autoencoder.vae.decoder.conv_out.weight
            weight = config.adversarial_weight * adaptive_weight(recon, adversarial, last_layer)
        terms["loss"] = terms["loss"] + critic_factor * critic + weight * adversarial
        return {**terms, "critic": critic.detach(), "adversarial": adversarial.detach()}
