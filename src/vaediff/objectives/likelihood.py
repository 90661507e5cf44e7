"""Likelihoods of 8-bit images, no I/O: one axis (bits per dimension) for VAEs, diffusion and flows.

An image's pixels are integers k in 0..255; a model works on real values x = low + (high - low) k / 255
(`PixelGrid`). A density model gives them probabilities in three ways:
- a decoder that is a distribution over the 256 bins: a logistic or Gaussian integrated over each bin,
  the outer bins stretched to -inf and +inf (PixelCNN++, Salimans et al. 2017, sec. 2.1; DDPM's decoder,
  Ho et al. 2020, eq. 13): `discretized_logistic_log_prob`, `discretized_gaussian_log_prob`;
- diffusion's variational bound (Ho et al. 2020, eq. 5): `diffusion_nll`, its sum over timesteps
  estimated by stratified Monte Carlo;
- a continuous density on dequantized pixels, x = (k + u) / 256 with u ~ U[0, 1): log P(k) >= E_u log p(x)
  + D log(bin width) (Theis et al. 2016; Ho et al. 2019); flows get log p(x) from the probability-flow
  ODE (`flow_log_density`).
Bits per dimension: -log P(image) / (D ln 2), D = C x H x W.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.special import log_ndtr


@dataclass(frozen=True)
class PixelGrid:
    """Where pixel values 0..255 sit in a model's range: k -> low + (high - low) * k / 255."""

    low: float
    high: float

    @property
    def half_bin(self) -> float:
        return (self.high - self.low) / 510

    def from_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (k / 255) -> the grid's values, rounded onto the grid."""
        return self.low + (self.high - self.low) * torch.round(images * 255) / 255

    def dequantize(self, images: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Images k / 255 and u ~ U[0, 1) -> (k + u) / 256 in the grid's range: one point of pixel k's bin."""
        return self.low + (self.high - self.low) * (torch.round(images * 255) + uniform) / 256

    @property
    def log_dequantized_bin(self) -> float:
        """log of one dequantization bin's width per dimension, in the grid's units."""
        return math.log((self.high - self.low) / 256)


UNIT_GRID = PixelGrid(0.0, 1.0)        # pixels in [0, 1]: VAEs, the seed's diffusion
SIGNED_GRID = PixelGrid(-1.0, 1.0)     # pixels in [-1, 1]: the fast preset, flow matching


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    return nll_nats / (dims * math.log(2))


def _log_minus(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) - exp(b)) for a > b, without forming exp(a); finite (and with finite gradients) at a = b."""
    return log_a + torch.log(-torch.expm1((log_b - log_a).clamp(max=-1e-12)))


def _discretized_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, grid: PixelGrid,
                          log_cdf: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """log P(pixel) per pixel for a location-scale density with standard log-CDF `log_cdf`, integrated over
    the pixel's bin [x - h, x + h]; the bins of 0 and 255 extend to -inf and +inf. In float64: the
    difference of two CDFs near 1 cancels in float32 (the side where it does not is used)."""
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    inverse_scale = torch.exp(-log_scale)
    upper = (x - mean + grid.half_bin) * inverse_scale
    lower = (x - mean - grid.half_bin) * inverse_scale
    # F(upper) - F(lower), or in the upper tail (1 - F(lower)) - (1 - F(upper)), where it does not cancel;
    # the pair is chosen before the subtraction so that no branch makes infinite gradients
    upper_tail = lower > 0
    inner = _log_minus(log_cdf(torch.where(upper_tail, -lower, upper)), log_cdf(torch.where(upper_tail, -upper, lower)))
    lowest = x <= grid.low + grid.half_bin
    highest = x >= grid.high - grid.half_bin
    return torch.where(lowest, log_cdf(upper), torch.where(highest, log_cdf(-lower), inner))


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  grid: PixelGrid) -> torch.Tensor:
    """log P(x) per pixel under N(mean, exp(log_scale)^2) integrated over x's bin (Ho et al. 2020, eq. 13)."""
    return _discretized_log_prob(x, mean, log_scale, grid, log_ndtr)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  grid: PixelGrid) -> torch.Tensor:
    """log P(x) per pixel under a logistic (mean, scale exp(log_scale)) integrated over x's bin
    (PixelCNN++, one component)."""
    return _discretized_log_prob(x, mean, log_scale, grid, F.logsigmoid)


# ---------------------------------------------------------------------------------------------------------
# Diffusion: the variational bound


def predicted_x0(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The network's output at noise level alpha_bar (broadcastable) -> its estimate of x_0."""
    if prediction_type == "epsilon":
        return (x_t - torch.sqrt(1 - alpha_bar) * output) / torch.sqrt(alpha_bar)
    if prediction_type == "v_prediction":
        return torch.sqrt(alpha_bar) * x_t - torch.sqrt(1 - alpha_bar) * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


@dataclass(frozen=True)
class DiffusionProcess:
    """What the bound needs of a trained model's forward process and parametrisation."""

    alphas_cumprod: torch.Tensor   # (T,) abar_t of diffusers' DDPMScheduler, t = 0..T-1
    prediction_type: str           # epsilon, v_prediction or sample
    grid: PixelGrid                # where the model puts pixel values
    clip: bool                     # clip predicted x_0 to the grid's range (pixel models)


Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t as (N,) ints) -> network output


def _x0_estimate(denoise: Denoise, process: DiffusionProcess, x0: torch.Tensor, t: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x_t ~ q(x_t | x_0) at per-image timesteps t and return (estimate of x_0, abar_t)."""
    alpha_bar = process.alphas_cumprod[t].view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    x_t = torch.sqrt(alpha_bar) * x0 + torch.sqrt(1 - alpha_bar) * noise
    estimate = predicted_x0(denoise(x_t, t).to(x0.dtype), x_t, alpha_bar, process.prediction_type)
    if process.clip:
        estimate = estimate.clamp(process.grid.low, process.grid.high)
    return estimate, alpha_bar


def diffusion_bound_term(denoise: Denoise, process: DiffusionProcess, x0: torch.Tensor, t: torch.Tensor,
                         generator: torch.Generator) -> torch.Tensor:
    """L_{t-1} per image (nats), t >= 1 in diffusers' 0-based indexing, one draw of x_t:
    KL(q(x_{t-1} | x_t, x_0) || N(mu_theta(x_t, t), sigma_t^2)) with sigma_t^2 the posterior variance
    beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. 2020, eqs. 6-7). Both means are the
    posterior mean with x_0 or its estimate put in, so the KL is
    abar_{t-1} beta_t^2 / (1 - abar_t)^2 ||x_0 - x0_hat||^2 / (2 beta~_t)
    = abar_{t-1} beta_t / (2 (1 - abar_t)(1 - abar_{t-1})) ||x_0 - x0_hat||^2."""
    if int(t.min()) < 1:
        raise ValueError("the KL terms start at t = 1; t = 0 is the decoder's")
    estimate, alpha_bar = _x0_estimate(denoise, process, x0, t, generator)
    previous = process.alphas_cumprod[t - 1].view_as(alpha_bar).to(x0.dtype)
    beta = 1 - alpha_bar / previous
    weight = previous * beta / (2 * (1 - alpha_bar) * (1 - previous))
    return (weight * (x0 - estimate).pow(2)).flatten(1).sum(dim=1)


def diffusion_decoder_nll(denoise: Denoise, process: DiffusionProcess, x0: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """L_0 per image (nats): -log p(x_0 | x_1), a Gaussian with the model's estimate of x_0 as its mean and
    variance beta_1 (diffusers' t = 0) integrated over each pixel's bin (Ho et al. 2020, eq. 13)."""
    t = torch.zeros(x0.shape[0], dtype=torch.long)
    estimate, alpha_bar = _x0_estimate(denoise, process, x0, t, generator)
    log_scale = 0.5 * torch.log(1 - alpha_bar).expand_as(x0)  # beta_1 = 1 - abar_1
    return -discretized_gaussian_log_prob(x0, estimate, log_scale, process.grid).flatten(1).sum(dim=1)


def diffusion_prior_kl(process: DiffusionProcess, x0: torch.Tensor) -> torch.Tensor:
    """L_T per image (nats): KL(q(x_T | x_0) || N(0, I)), in closed form (no network)."""
    alpha_bar = process.alphas_cumprod[-1].to(x0.dtype)
    per_pixel = 0.5 * (alpha_bar * x0.pow(2) + (1 - alpha_bar) - 1 - torch.log(1 - alpha_bar))
    return per_pixel.flatten(1).sum(dim=1)


def diffusion_nll(denoise: Denoise, process: DiffusionProcess, x0: torch.Tensor, strata: int,
                  generator: torch.Generator) -> torch.Tensor:
    """One unbiased estimate per image (nats) of the negative variational bound
    L = L_T + sum_{t=1}^{T-1} L_{t-1} + L_0 (Ho et al. 2020, eq. 5), an upper bound on -log P(x_0).

    x0: (N, C, H, W) on the model's pixel grid. The T - 1 KL terms are split into at most `strata` runs of
    consecutive timesteps; one timestep is drawn per run and image and weighted by the run's length
    (stratified sampling). The runs grow geometrically with t (`timestep_strata`): the terms fall by orders
    of magnitude from t = 1 to t = T - 1, so the first few are computed exactly and each later run holds
    terms of one size. `strata` = T - 1 computes every term once. The network is called at most
    strata + 1 times.
    """
    steps = len(process.alphas_cumprod)
    total = diffusion_prior_kl(process, x0) + diffusion_decoder_nll(denoise, process, x0, generator)
    edges = timestep_strata(steps, strata)
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        offsets = torch.randint(0, stop - start, (x0.shape[0],), generator=generator)
        total = total + (stop - start) * diffusion_bound_term(denoise, process, x0, start + offsets, generator)
    return total


def timestep_strata(steps: int, strata: int) -> list[int]:
    """Edges e_0 = 1 < e_1 < ... = T of runs [e_j, e_{j+1}) of timesteps, geometrically spaced (at most
    `strata` runs; single timesteps where the spacing is below one); every timestep when strata >= T - 1."""
    if not 1 <= strata:
        raise ValueError(f"strata must be positive, got {strata}")
    if strata >= steps - 1:
        return list(range(1, steps + 1))
    edges = torch.logspace(0, math.log10(steps), strata + 1, dtype=torch.float64).round().long().unique().tolist()
    return [1, *edges[1:-1], steps]


# ---------------------------------------------------------------------------------------------------------
# Flow matching: the probability-flow ODE


Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t scalar in [0, 1]) -> dx/dt


def flow_log_density(velocity: Velocity, x0: torch.Tensor, steps: int, generator: torch.Generator,
                     method: str = "rk4") -> torch.Tensor:
    """log p(x_0) per image (nats) of the density that the ODE dx/dt = v(x, t) carries from N(0, I) at t = 1
    to the data at t = 0: integrating from t = 0 to 1, log p_0(x_0) = log N(x_1; 0, I) + int_0^1 div v dt
    (instantaneous change of variables, Chen et al. 2018, thm. 1). div v = E[e^T (dv/dx) e] by Hutchinson's
    estimator with one Rademacher probe e per image held along the path (FFJORD, Grathwohl et al. 2019);
    e^T (dv/dx) is one vector-Jacobian product. torchdiffeq's fixed-step `method` with `steps` steps."""
    from torchdiffeq import odeint  # imported here: only the flow likelihood needs it

    probe = torch.randint(0, 2, x0.shape, generator=generator).to(x0.dtype) * 2 - 1

    def dynamics(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = state[0].detach().requires_grad_(True)
        with torch.enable_grad():
            v = velocity(x, t)
            (probe_jacobian,) = torch.autograd.grad(v, x, probe)
        return v.detach(), (probe_jacobian * probe).flatten(1).sum(dim=1)

    times = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    start = (x0, torch.zeros(x0.shape[0], dtype=x0.dtype))
    with torch.no_grad():
        path, divergence = odeint(dynamics, start, times, method=method, options={"step_size": 1.0 / steps})
    x1 = path[-1]
    log_prior = -0.5 * (x1.pow(2) + math.log(2 * math.pi)).flatten(1).sum(dim=1)
    return log_prior + divergence[-1]


def dequantized_flow_nll(velocity: Velocity, images: torch.Tensor, grid: PixelGrid, steps: int,
                         generator: torch.Generator, method: str = "rk4") -> torch.Tensor:
    """An upper bound on -log P(image) (nats) for 8-bit images in [0, 1], one uniform dequantization draw:
    -log p((k + u) / 256) - D log(bin width) (Theis et al. 2016)."""
    uniform = torch.rand(images.shape, generator=generator, dtype=images.dtype)
    x = grid.dequantize(images, uniform)
    dims = images[0].numel()
    return -(flow_log_density(velocity, x, steps, generator, method) + dims * grid.log_dequantized_bin)


# ---------------------------------------------------------------------------------------------------------
# The number and its intervals


def bits_per_dim_summary(nll_nats: torch.Tensor, mc_variance: torch.Tensor, dims: int) -> dict:
    """Bits per dimension of N test images from per-image estimates of -log P (nats) and the Monte-Carlo
    variance of each estimate.

    Two 95% intervals (normal approximation): `ci95` over test images (the spread of images and of the
    estimates together: what a new test set would give; the report ranks by it) and `estimate_ci95`, the
    Monte-Carlo error alone (how precisely this estimate pins down the bound on these very images).
    """
    nll, variance = nll_nats.double(), mc_variance.double()
    count = len(nll)
    mean = float(nll.mean())
    over_images = float(nll.std()) / math.sqrt(count) if count > 1 else float("inf")
    monte_carlo = math.sqrt(float(variance.sum())) / count
    to_bits = 1 / (dims * math.log(2))
    value = mean * to_bits
    return {"bits_per_dim": value, "nll_nats": mean,
            "ci95": [value - 1.96 * over_images * to_bits, value + 1.96 * over_images * to_bits],
            "estimate_ci95": [value - 1.96 * monte_carlo * to_bits, value + 1.96 * monte_carlo * to_bits],
            "test_images": count}


def replicate_variance(replicates: torch.Tensor) -> torch.Tensor:
    """(R, N) independent estimates per image -> the variance of their mean, per image (unbiased)."""
    count = replicates.shape[0]
    if count < 2:
        raise ValueError("the Monte-Carlo variance needs at least two replicates")
    return replicates.double().var(dim=0) / count
