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
class trains with w = 1 (its guided field is the unguided one). The guidance interval [lo, hi] (guidance
only where lo <= t <= hi, Kynkaanniemi et al. 2024) is an input too: the guided field is then w(s) v(z_s, s | y)
+ (1 - w(s)) v(z_s, s) with w(s) = w inside it and 1 outside, the identity above holds for it pointwise in t,
so the target takes w(t). Training draws [0, 1] on a share of the rows, else lo ~ U(0, 1/2), hi ~ U(1/2, 1);
sampling accepts any interval of that form. The network sees t * 1000 and r * 1000.
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
INTERVAL_SPLIT = 0.5   # trained guidance intervals: lo in [0, 1/2], hi in [1/2, 1]


def sample_guidance_intervals(draw: BatchRandom, full_share: float) -> torch.Tensor:
    """(rows, 2) guidance intervals [lo, hi]: [0, 1] on `full_share` of the rows, else lo ~ U(0, 1/2) and
    hi ~ U(1/2, 1) (every trained interval holds t = 1/2)."""
    full = draw.uniform() < full_share
    low = torch.where(full, torch.zeros_like(full, dtype=torch.float32), INTERVAL_SPLIT * draw.uniform())
    high = torch.where(full, torch.ones_like(low), INTERVAL_SPLIT + (1 - INTERVAL_SPLIT) * draw.uniform())
    return torch.stack([low, high], dim=1)


def guidance_in_interval(guidance: torch.Tensor, t: torch.Tensor, guidance_interval: torch.Tensor) -> torch.Tensor:
    """w(t): the scale where lo <= t <= hi, else 1 (objectives/diffusion.guidance_at, per row)."""
    inside = (guidance_interval[:, 0] <= t) & (t <= guidance_interval[:, 1])
    return torch.where(inside, guidance, torch.ones_like(guidance))


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
                           guidance: torch.Tensor, guidance_interval: torch.Tensor | None = None) -> torch.Tensor:
    """u(z_t, t, t | y, w, [lo, hi]): the network's velocity at r = t (MeanFlow's boundary condition), no gradient."""
    return net(z_t, t * TIMESTEP_SCALE, labels, t * TIMESTEP_SCALE, guidance, guidance_interval)


@torch.no_grad()
def interval_derivative(net: nn.Module, z_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, labels: torch.Tensor,
                        guidance: torch.Tensor, tangent: torch.Tensor,
                        guidance_interval: torch.Tensor | None = None) -> torch.Tensor:
    """du/dt along the path whose velocity is `tangent` (eq. 8), by forward-mode AD: the JVP of
    (z, t, r) -> u(z, r, t) with tangent (tangent, 1, 0). Under no_grad: the objectives stop its gradient."""
    def average_velocity(z, times, starts):
        return net.average_velocity(z, times * TIMESTEP_SCALE, labels, starts * TIMESTEP_SCALE, guidance,
                                    guidance_interval)

    # float32 whatever --mixed-precision says (MeanFlowNet.average_velocity): du/dt is a stop-gradient target
    with forward_ad_attention(), torch.autocast(z_t.device.type, enabled=False):
        _, derivative = torch.func.jvp(average_velocity, (z_t, t, r),
                                       (tangent.to(z_t.dtype), torch.ones_like(t), torch.zeros_like(r)))
    return derivative


def meanflow_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                  r: torch.Tensor, guidance: torch.Tensor, drop_label: torch.Tensor, null_label: int,
                  objective: str = "imf", adaptive_p: float = 1.0, adaptive_c: float = 1e-3,
                  guidance_interval: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One Monte-Carlo estimate of the (i)MF loss.

    x0, noise: (N, C, H, W), x0 in the model's range; t, r: (N,) with 0 <= r <= t <= 1; guidance: (N,) scales
    w; drop_label: (N,) bools, True where the label becomes the null class (and w becomes 1); guidance_interval:
    (N, 2) [lo, hi] rows (default [0, 1]: guidance over the whole path). `model` may be
    wrapped for several processes or compiled: the gradient flows through one plain forward of it (so
    the wrapper synchronises it), the passes without gradient and the JVP use the module inside.
    {"loss": adaptively weighted, "mse": plain mean squared error of V against the target}."""
    batch = x0.shape[0]
    if not (x0.shape == noise.shape and t.shape == r.shape == labels.shape == guidance.shape == drop_label.shape
            == (batch,)):
        raise ValueError(f"shape mismatch: x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}, t {tuple(t.shape)}, "
                         f"r {tuple(r.shape)}, labels {tuple(labels.shape)}, guidance {tuple(guidance.shape)}")
    if guidance_interval is None:
        guidance_interval = torch.tensor([[0.0, 1.0]], device=x0.device).expand(batch, 2)
    if guidance_interval.shape != (batch, 2):
        raise ValueError(f"guidance_interval must be ({batch}, 2), got {tuple(guidance_interval.shape)}")
    net = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: forward-mode AD runs on the module
    net = net.module if isinstance(net, DistributedDataParallel) else net
    path_t = t.view(-1, *([1] * (x0.ndim - 1)))
    z_t = (1 - path_t) * x0 + path_t * noise
    labels = torch.where(drop_label, torch.full_like(labels, null_label), labels)
    guidance = torch.where(drop_label, torch.ones_like(guidance), guidance)
    target = guided_target(net, z_t, t, noise - x0, guidance_in_interval(guidance, t, guidance_interval), null_label)
    derivative = torch.zeros_like(x0)
    moving = torch.nonzero(r < t).flatten()  # where r = t the term (t - r) du/dt is zero: no JVP needed
    if len(moving):
        z, times, starts, y, w = z_t[moving], t[moving], r[moving], labels[moving], guidance[moving]
        window = guidance_interval[moving]
        # the tangent (eq. 8): iMF the network's own marginal velocity, MeanFlow the (guided) target
        tangent = instantaneous_velocity(net, z, times, y, w, window) if objective == "imf" else target[moving]
        derivative[moving] = interval_derivative(net, z, times, starts, y, w, tangent, window).to(derivative.dtype)
    u = model(z_t, t * TIMESTEP_SCALE, labels, r * TIMESTEP_SCALE, guidance, guidance_interval)
    compound = u.float() + (path_t - r.view_as(path_t)) * derivative.float()  # iMF's V; the identity's right side
    error = (compound - target.float()).pow(2).flatten(1).mean(dim=1)
    # adaptive weighting, weight under stop-gradient; the per-pixel mean in place of MeanFlow's sum keeps the
    # scale of c the same across image sizes, and p = 0 is the plain (flow-matching) mean squared error
    weight = (error.detach() + adaptive_c) ** -adaptive_p
    return {"loss": (weight * error).mean(), "mse": error.mean()}


def guided_target(net: nn.Module, z_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor, guidance: torch.Tensor,
                  null_label: int) -> torch.Tensor:
    """v_tilde = w (e - x) + (1 - w) u(z_t, t, t | null) (MeanFlow eqs. 16-18); e - x where w = 1 (no pass).
    `guidance` is each row's w at its t (guidance_in_interval)."""
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
                 adaptive_p: float = 1.0, adaptive_c: float = 1e-3, full_interval_share: float = 0.5):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.config, self.objective = config, objective
        self.times = (logit_mean, logit_std, equal_share)
        self.guidance_range, self.adaptive = guidance_range, (adaptive_p, adaptive_c)
        self.full_interval_share = full_interval_share

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        x0 = to_model_range(images, self.config)
        noise = draw.normal(*x0.shape[1:])
        t, r = sample_intervals(draw, *self.times)
        drop_label = draw.uniform() < self.config.label_dropout
        low, high = self.guidance_range
        guidance = low + (high - low) * draw.uniform()  # iMF: w an input, drawn for each image
        guidance_interval = sample_guidance_intervals(draw, self.full_interval_share)
        return meanflow_loss(module, x0, labels, noise, t, r, guidance, drop_label, self.config.null_label,
                             self.objective, *self.adaptive, guidance_interval=guidance_interval)


def make_flow_map_scheduler(steps: int) -> FlowMapEulerDiscreteScheduler:
    """diffusers' flow-map Euler scheduler with `steps` equal intervals from t = 1 to t = 0."""
    scheduler = FlowMapEulerDiscreteScheduler(num_train_timesteps=TIMESTEP_SCALE, shift=1.0)
    scheduler.set_timesteps(steps)
    return scheduler


@torch.inference_mode()
def flow_map_sample_loop(net: nn.Module, scheduler: FlowMapEulerDiscreteScheduler, noise: torch.Tensor,
                         labels: torch.Tensor, guidance: float, trajectory: list[torch.Tensor] | None = None,
                         record_at: set[int] | None = None,
                         guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Noise (t = 1) -> data (t = 0) in the scheduler's steps, each z_r = z_t - (t - r) u(z_t, r, t | y, w)
    (MeanFlow eq. 12): for t, r in the schedule's consecutive sigmas, z = scheduler.step(u, t, z, r).
    One network pass a step, whatever w and [lo, hi]: guidance and its interval are inputs, not a second pass."""
    sample = noise
    scale = torch.tensor(float(guidance), device=noise.device)
    window = torch.tensor([float(bound) for bound in guidance_interval], device=noise.device)
    for index, t in enumerate(scheduler.timesteps):
        r = scheduler.sigmas[index + 1] * TIMESTEP_SCALE
        u = net(sample, t.to(sample.device).float(), labels, r.to(sample.device).float(), scale, window)
        sample = scheduler.step(u, t, sample, r_timestep=r).prev_sample
        if trajectory is not None and (record_at is None or index in record_at):
            trajectory.append(sample.clone())
    return sample
