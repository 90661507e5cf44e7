"""Bits per dimension on one axis: discretized decoders that are distributions over the 256 pixel values,
diffusion's variational bound (stratified estimate against the full sum; the exact denoiser of Gaussian
pixels), the flow ODE's density (the exact velocity of Gaussian data), and every family through
`vaediff evaluate`."""

import json
import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from vaediff.objectives.likelihood import (
    SIGNED_GRID,
    UNIT_GRID,
    DiffusionProcess,
    bits_per_dim_summary,
    dequantized_flow_nll,
    diffusion_nll,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
    flow_log_density,
    predicted_x0,
    replicate_variance,
)

COSINE = DDPMScheduler(1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()


@pytest.mark.parametrize("log_prob", [discretized_gaussian_log_prob, discretized_logistic_log_prob])
@pytest.mark.parametrize("grid", [UNIT_GRID, SIGNED_GRID])
def test_discretized_decoders_are_distributions_over_the_256_values(log_prob, grid):
    values = grid.from_unit(torch.arange(256, dtype=torch.float64) / 255)
    for mean, log_scale in ((grid.low, -8.0), (grid.high, -8.0), (0.5 * (grid.low + grid.high), 0.5),
                            (grid.low + 0.3, -3.0), (grid.high + 2.0, -1.0)):
        probabilities = log_prob(values, torch.full_like(values, mean), torch.full_like(values, log_scale), grid).exp()
        assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-9)
    # gradients stay finite where a bin's probability is 1 or tiny (the training of the logistic VAE)
    mean = torch.tensor([grid.low, grid.high, 0.0, 5.0], dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor([-8.0, -8.0, -8.0, -8.0], dtype=torch.float64, requires_grad=True)
    log_prob(values[[0, 255, 128, 3]], mean, log_scale, grid).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


class TinyDenoiser(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x, t):
        level = (t.float() / 1000).view(-1, 1, 1, 1).expand_as(x)
        return torch.tanh(self.conv(torch.cat([x, level], dim=1)))


def _images(count: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, size, size), generator=torch.Generator().manual_seed(seed)) / 255


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_every_parametrisation_gives_back_x0_from_its_exact_target(prediction_type):
    x0, noise = torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    alpha_bar = COSINE[torch.tensor([0, 10, 500, 999])].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    target = {"epsilon": noise, "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0,
              "sample": x0}[prediction_type]
    assert torch.allclose(predicted_x0(target, x_t, alpha_bar, prediction_type), x0, atol=1e-6)


def test_stratified_bound_agrees_with_the_full_sum_over_1000_timesteps():
    net = TinyDenoiser()
    process = DiffusionProcess(COSINE, "epsilon", SIGNED_GRID, clip=True)
    x0 = SIGNED_GRID.from_unit(_images(6, 8, 0).double())
    denoise = lambda x, t: net(x.float(), t).double()  # noqa: E731
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        full = torch.stack([diffusion_nll(denoise, process, x0, 999, generator) for _ in range(2)])
        stratified = torch.stack([diffusion_nll(denoise, process, x0, 12, generator) for _ in range(30)])
    spread = math.sqrt(float(replicate_variance(full).mean() + replicate_variance(stratified).mean()) / len(x0))
    assert abs(float(full.mean() - stratified.mean())) < 4 * spread
    assert spread < 0.1 * float(full.mean())  # the test has power: a term weighted wrongly would show


def _gaussian_pixels(mean: float, std: float) -> torch.Tensor:
    """Probabilities of the 256 values of a pixel that is N(mean, std) on the [-1, 1] grid, rounded to a bin."""
    values = SIGNED_GRID.from_unit(torch.arange(256, dtype=torch.float64) / 255)
    edges = torch.cat([torch.tensor([-math.inf]), (values[:-1] + values[1:]) / 2, torch.tensor([math.inf])])
    return torch.special.ndtr((edges[1:] - mean) / std) - torch.special.ndtr((edges[:-1] - mean) / std)


def test_exact_denoiser_of_gaussian_pixels_bounds_their_true_bits_per_dim():
    """Pixels i.i.d. from a rounded Gaussian: E[x_0 | x_t] is a softmax over the 256 values. Plugged in, the
    bound lies above the data's true entropy, by what the fixed reverse variances cost (Ho et al.'s
    sigma_t^2 = beta~_t; 0.61 bits/dim at T = 1000 on the cosine schedule, measured by quadrature-free
    simulation in the closing note), and a worse denoiser gives a clearly worse bound."""
    probabilities = _gaussian_pixels(0.1, 0.3)
    true_bits = float(-(probabilities * probabilities.log()).sum() / math.log(2))
    values = SIGNED_GRID.from_unit(torch.arange(256, dtype=torch.float64) / 255)
    index = torch.multinomial(probabilities.float(), 64 * 16, replacement=True, generator=torch.Generator().manual_seed(0))
    x0 = values[index].view(64, 1, 4, 4)
    process = DiffusionProcess(COSINE, "sample", SIGNED_GRID, clip=True)

    def exact(x_t, t, shrink=1.0):
        alpha_bar = COSINE[t].view(-1, 1, 1, 1, 1)
        log_weights = probabilities.log() - (x_t.unsqueeze(-1) - alpha_bar.sqrt() * values) ** 2 / (2 * (1 - alpha_bar))
        return shrink * (torch.softmax(log_weights, dim=-1) * values).sum(dim=-1)

    def bits(denoise):
        generator = torch.Generator().manual_seed(1)
        replicates = torch.stack([diffusion_nll(denoise, process, x0, 100, generator) for _ in range(2)])
        return bits_per_dim_summary(replicates.mean(0), replicate_variance(replicates), 16)

    best = bits(exact)
    assert best["estimate_ci95"][0] > true_bits  # a bound: never below the truth
    assert best["bits_per_dim"] - true_bits < 0.7
    worse = bits(lambda x_t, t: exact(x_t, t, shrink=0.9))
    assert worse["estimate_ci95"][0] > best["estimate_ci95"][1]


def gaussian_velocity(m: float, s: float):
    """The marginal velocity E[eps - x_0 | x_t] of x_t = (1 - t) x_0 + t eps for x_0 ~ N(m, s^2): linear in x_t."""
    def velocity(x, t):
        t = float(t)
        variance = (1 - t) ** 2 * s * s + t * t
        centred = x - (1 - t) * m
        return t * centred / variance - m - (1 - t) * s * s * centred / variance
    return velocity


def test_flow_density_of_gaussian_data_under_its_exact_velocity():
    """The exact velocity's Jacobian is diagonal (Hutchinson's estimate is exact): the ODE must return
    log N(x_0; m, s^2)."""
    m, s = 0.3, 0.5
    x0 = m + s * torch.randn(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    true = (-0.5 * ((x0 - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    estimate = flow_log_density(gaussian_velocity(m, s), x0, 32, torch.Generator().manual_seed(1))
    assert torch.allclose(estimate, true, atol=1e-4)
    coarse = flow_log_density(gaussian_velocity(m, s), x0, 2, torch.Generator().manual_seed(1))
    assert (coarse - true).abs().max() > 1e-4  # the solver's steps matter: the check above has power


def test_dequantized_flow_bound_of_gaussian_pixels_is_their_true_bits_per_dim():
    """8-bit pixels from a rounded Gaussian: the dequantized bound of the continuous density is at least
    their entropy and, for a density this smooth, within a hundredth of a bit of it."""
    mean, std = 0.1, 0.3
    probabilities = _gaussian_pixels(mean, std)
    true_bits = float(-(probabilities * probabilities.log()).sum() / math.log(2))
    index = torch.multinomial(probabilities.float(), 256 * 16, replacement=True,
                              generator=torch.Generator().manual_seed(2))
    images = (index / 255).double().view(256, 1, 4, 4)
    generator = torch.Generator().manual_seed(3)
    replicates = torch.stack([dequantized_flow_nll(gaussian_velocity(mean, std), images, SIGNED_GRID, 16, generator)
                              for _ in range(2)])
    summary = bits_per_dim_summary(replicates.mean(0), replicate_variance(replicates), 16)
    assert summary["ci95"][0] - 0.01 < true_bits < summary["ci95"][1] + 0.01
    assert summary["ci95"][1] - summary["ci95"][0] < 0.2


@pytest.mark.slow
def test_every_family_reports_bits_per_dim_on_its_axis(cli, tmp_path, evaluator_cache):
    tiny_unet = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8}
    trainings = {
        "logistic": ["vae", "--epochs", "1", "--decoder", "discretized-logistic"],
        "bernoulli": ["vae", "--max-steps", "20"],
        "diffusion": ["diffusion", "--max-steps", "6", "--model-config", json.dumps(tiny_unet)],
        "flow": ["flow", "--max-steps", "6", "--model-config", json.dumps({"denoiser": tiny_unet, "sampling_steps": 2})],
    }
    metrics = {}
    for name, arguments in trainings.items():
        code, _, err = cli("train", *arguments, "--out", tmp_path / name)
        assert code == 0, err
        own = {"logistic": ["--iw-samples", "4"], "bernoulli": ["--iw-samples", "4"],  # each family's flags
               "diffusion": ["--steps", "2", "--likelihood-images", "12", "--bound-timesteps", "8"],
               "flow": ["--steps", "2", "--likelihood-images", "12", "--ode-steps", "2"]}[name]
        code, out, err = cli("evaluate", tmp_path / name, "--n-samples", "20", *own)
        assert code == 0, err
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for name in ("logistic", "diffusion", "flow"):
        got = metrics[name]
        assert got["likelihood_axis"] == "8-bit", name
        low, high = got["ci95"]["bits_per_dim"]
        assert low < got["bits_per_dim"] < high and 0 < got["bits_per_dim"] < 16, name
        estimate_low, estimate_high = got["likelihood"]["estimate_ci95"]
        assert estimate_low <= got["bits_per_dim"] <= estimate_high
    logistic = metrics["logistic"]
    assert logistic["nll_nats"] <= logistic["elbo_nats"]
    assert logistic["bits_per_dim"] == pytest.approx(logistic["nll_nats"] / (784 * math.log(2)))
    assert metrics["diffusion"]["likelihood"]["test_images"] == 12 and "nll_nats" not in metrics["diffusion"]
    bernoulli = metrics["bernoulli"]
    assert "bits_per_dim" not in bernoulli and bernoulli["likelihood_axis"] is None
    assert "Bernoulli" in bernoulli["no_bits_per_dim"] and math.isfinite(bernoulli["nll_nats"])
    # a binarized likelihood is the Bernoulli decoder's axis: refused, one line, for the logistic decoder
    code, _, err = cli("train", "vae", "--binarize", "--decoder", "discretized-logistic", "--out", tmp_path / "both")
    assert code == 2 and "--binarize" in err and not (tmp_path / "both").exists()
    code, _, err = cli("evaluate", tmp_path / "logistic", "--n-samples", "20", "--binarize")
    assert code == 2 and "--binarize" in err
    code, _, err = cli("evaluate", tmp_path / "diffusion", "--n-samples", "20", "--likelihood-images", "9999999")
    assert code == 2 and "--likelihood-images" in err
