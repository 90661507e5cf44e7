"""Flow maps by MeanFlow and improved MeanFlow, no I/O: the interval draw, the loss, its objective, the sampler.

The path and velocity are flow matching's (objectives/flow.py): z_t = (1 - t) x + t e, v = e - x, t = 1 noise.
MeanFlow (Geng et al. 2025, arXiv 2505.13447) learns the average velocity over [r, t] (its eq. 3),
u(z_t, r, t) = 1/(t - r) int_r^t v(z_s, s) ds, so one step z_r = z_t - (t - r) u(z_t, r, t) (eq. 12) jumps
the whole interval. Differentiating (t - r) u in t gives the MeanFlow identity (eq. 6)

    v(z_t, t) = u(z_t, r, t) + (t - r) du/dt,    du/dt = v . d_z u + d_t u   (eq. 8: a JVP with tangent (v, 0, 1))

and both objectives regress it with du/dt under stop-gradient, with MeanFlow's adaptive weighting
1 / (||delta||^2 + c)^p (after Geng et al.'s ECT). As values the two losses are one: MeanFlow's
||u - sg(v - (t - r) du/dt)||^2 (eqs. 9-10) is improved MeanFlow's ||u + (t - r) sg(du/dt) - v||^2 (iMF, Geng,
Lu et al. 2025, arXiv 2512.02012: "v-loss", the compound V = u + (t - r) sg(du/dt) regressed on v). They differ
in the JVP's tangent: MeanFlow takes the conditional velocity e - x, a noisy stand-in for the marginal v; iMF
takes the network's own marginal prediction v_hat = u(z_t, t, t), so the target no longer carries that noise.

Guidance (MeanFlow sec. 4.2): the guided field v_cfg = w v(z_t, t | y) + (1 - w) v(z_t, t) (eq. 13) has its own
average velocity, learnt from the target v_tilde = w (e - x) + (1 - w) u(z_t, t, t | null) (eqs. 16-18: the
unconditional instantaneous velocity is the network's own at r = t, no gradient). iMF makes w an input drawn
from a range each step (`guidance_range`), so one network draws at any w in it; a label dropped to the null
class trains with w = 1 (its guided field is the unguided one). The network sees t * 1000 and r * 1000.
"""

from __future__ import annotations

import torch
from diffusers import FlowMapEulerDiscreteScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vaediff.models.meanflow import forward_ad_attention
from vaediff.models.unet import DiffusionConfig
from vaediff.objectives import BatchRandom
from vaediff.objectives.diffusion import to_model_range

TIMESTEP_SCALE = 1000  # the network's and the scheduler's time unit: t * 1000
OBJECTIVES = ("imf", "mf")


def sample_intervals(draw: BatchRandom, logit_mean: float, logit_std: float,
                     equal_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r), each (rows,), t >= r: two logit-normal times sorted, and r = t on a share of the rows, as
    MeanFlow draws them (sec. 4.3; the rows with r = t are plain flow matching)."""
    first, second = draw.logit_normal(logit_mean, logit_std), draw.logit_normal(logit_mean, logit_std)
    t, r = torch.maximum(first, second), torch.minimum(first, second)
    equal = draw.uniform() < equal_share
    return t, torch.where(equal, t, r)


@torch.no_grad()
def instantaneous_velocity(net: nn.Module, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                           guidance: torch.Tensor) -> torch.Tensor:
    """u(z_t, t, t | y, w): the network's velocity at r = t (MeanFlow's boundary condition), no gradient."""
    return net(z_t, t * TIMESTEP_SCALE, labels, t * TIMESTEP_SCALE, guidance)


@torch.no_grad()
def interval_derivative(net: nn.Module, z_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, labels: torch.Tensor,
                        guidance: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """du/dt along the path whose velocity is `tangent` (eq. 8), by forward-mode AD: the JVP of
    (z, t, r) -> u(z, r, t) with tangent (tangent, 1, 0). Under no_grad: the objectives stop its gradient."""
    def average_velocity(z, times, starts):
        return net.average_velocity(z, times * TIMESTEP_SCALE, labels, starts * TIMESTEP_SCALE, guidance)

    # float32 whatever --mixed-precision says (MeanFlowNet.average_velocity): du/dt is a stop-gradient target
    with forward_ad_attention(), torch.autocast(z_t.device.type, enabled=False):
        _, derivative = torch.func.jvp(average_velocity, (z_t, t, r),
                                       (tangent.to(z_t.dtype), torch.ones_like(t), torch.zeros_like(r)))
    return derivative


def meanflow_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                  r: torch.Tensor, guidance: torch.Tensor, drop_label: torch.Tensor, null_label: int,
                  objective: str = "imf", adaptive_p: float = 1.0, adaptive_c: float = 1e-3) -> dict[str, torch.Tensor]:
    """One Monte-Carlo estimate of the (i)MF loss.

    x0, noise: (N, C, H, W), x0 in the model's range; t, r: (N,) with 0 <= r <= t <= 1; guidance: (N,) scales
    w; drop_label: (N,) bools, True where the label becomes the null class (and w becomes 1). `model` may be
    wrapped for several processes: the gradient flows through one plain forward of it (so the wrapper
    synchronises it), the passes without gradient use the module inside. {"loss": adaptively weighted,
    "mse": plain mean squared error of V against the target}."""
    batch = x0.shape[0]
    if not (x0.shape == noise.shape and t.shape == r.shape == labels.shape == guidance.shape == drop_label.shape
            == (batch,)):
        raise ValueError(f"shape mismatch: x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}, t {tuple(t.shape)}, "
                         f"r {tuple(r.shape)}, labels {tuple(labels.shape)}, guidance {tuple(guidance.shape)}")
    net = model.module if isinstance(model, DistributedDataParallel) else model
    path_t = t.view(-1, *([1] * (x0.ndim - 1)))
    z_t = (1 - path_t) * x0 + path_t * noise
    labels = torch.where(drop_label, torch.full_like(labels, null_label), labels)
    guidance = torch.where(drop_label, torch.ones_like(guidance), guidance)
    target = guided_target(net, z_t, t, noise - x0, guidance, null_label)
    derivative = torch.zeros_like(x0)
    moving = torch.nonzero(r < t).flatten()  # where r = t the term (t - r) du/dt is zero: no JVP needed
    if len(moving):
        z, times, starts, y, w = z_t[moving], t[moving], r[moving], labels[moving], guidance[moving]
        # the tangent (eq. 8): iMF the network's own marginal velocity, MeanFlow the (guided) target
        tangent = instantaneous_velocity(net, z, times, y, w) if objective == "imf" else target[moving]
        derivative[moving] = interval_derivative(net, z, times, starts, y, w, tangent).to(derivative.dtype)
    u = model(z_t, t * TIMESTEP_SCALE, labels, r * TIMESTEP_SCALE, guidance)
    compound = u.float() + (path_t - r.view_as(path_t)) * derivative.float()  # iMF's V; the identity's right side
    error = (compound - target.float()).pow(2).flatten(1).mean(dim=1)
    # adaptive weighting, weight under stop-gradient; the per-pixel mean in place of MeanFlow's sum keeps the
    # scale of c the same across image sizes, and p = 0 is the plain (flow-matching) mean squared error
    weight = (error.detach() + adaptive_c) ** -adaptive_p
    return {"loss": (weight * error).mean(), "mse": error.mean()}


def guided_target(net: nn.Module, z_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor, guidance: torch.Tensor,
                  null_label: int) -> torch.Tensor:
    """v_tilde = w (e - x) + (1 - w) u(z_t, t, t | null) (MeanFlow eqs. 16-18); e - x where w = 1 (no pass)."""
    guided = torch.nonzero(guidance != 1).flatten()
    if not len(guided):
        return velocity
    null = torch.full((len(guided),), null_label, dtype=torch.long, device=z_t.device)
    unconditional = instantaneous_velocity(net, z_t[guided], t[guided], null, torch.ones_like(guidance[guided]))
    w = guidance[guided].view(-1, *([1] * (velocity.ndim - 1)))
    target = velocity.clone()
    target[guided] = w * velocity[guided] + (1 - w) * unconditional.to(velocity.dtype)
    return target


class MeanFlowObjective:
    """The (i)MF loss with noise, intervals, label dropout and guidance scales all drawn from `draw`."""

    loss_names = ("loss", "mse")

    def __init__(self, config: DiffusionConfig, objective: str = "imf", logit_mean: float = -0.4,
                 logit_std: float = 1.0, equal_share: float = 0.75, guidance_range: tuple[float, float] = (1.0, 1.0),
                 adaptive_p: float = 1.0, adaptive_c: float = 1e-3):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.config, self.objective = config, objective
        self.times = (logit_mean, logit_std, equal_share)
        self.guidance_range, self.adaptive = guidance_range, (adaptive_p, adaptive_c)

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        x0 = to_model_range(images, self.config)
        noise = draw.normal(*x0.shape[1:])
        t, r = sample_intervals(draw, *self.times)
        drop_label = draw.uniform() < self.config.label_dropout
        low, high = self.guidance_range
        guidance = low + (high - low) * draw.uniform()  # iMF: w an input, drawn for each image
        return meanflow_loss(module, x0, labels, noise, t, r, guidance, drop_label, self.config.null_label,
                             self.objective, *self.adaptive)


def make_flow_map_scheduler(steps: int) -> FlowMapEulerDiscreteScheduler:
    """diffusers' flow-map Euler scheduler with `steps` equal intervals from t = 1 to t = 0."""
    scheduler = FlowMapEulerDiscreteScheduler(num_train_timesteps=TIMESTEP_SCALE, shift=1.0)
    scheduler.set_timesteps(steps)
    return scheduler


@torch.inference_mode()
def flow_map_sample_loop(net: nn.Module, scheduler: FlowMapEulerDiscreteScheduler, noise: torch.Tensor,
                         labels: torch.Tensor, guidance: float, trajectory: list[torch.Tensor] | None = None,
                         record_at: set[int] | None = None) -> torch.Tensor:
    """Noise (t = 1) -> data (t = 0) in the scheduler's steps, each z_r = z_t - (t - r) u(z_t, r, t | y, w)
    (MeanFlow eq. 12): for t, r in the schedule's consecutive sigmas, z = scheduler.step(u, t, z, r).
    One network pass a step, whatever w: guidance is an input, not a second pass."""
    sample = noise
    scale = torch.tensor(float(guidance), device=noise.device)
    for index, t in enumerate(scheduler.timesteps):
        r = scheduler.sigmas[index + 1] * TIMESTEP_SCALE
        u = net(sample, t.to(sample.device).float(), labels, r.to(sample.device).float(), scale)
        sample = scheduler.step(u, t, sample, r_timestep=r).prev_sample
        if trajectory is not None and (record_at is None or index in record_at):
            trajectory.append(sample.clone())
    return sample
