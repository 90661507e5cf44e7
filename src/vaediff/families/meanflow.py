"""Flow maps (objectives/meanflow.py): improved MeanFlow by default (`--objective mf`: the original), a UNet
that draws in 1, 2, 4 or more steps with diffusers' FlowMapEulerDiscreteScheduler, guidance an input.

A run directory holds RUN/unet/ (a stock UNet2DModel whose class input takes an added embedding, EMA
weights), RUN/conditioning.safetensors (that embedding of class, interval and guidance: models/meanflow.py)
and RUN/scheduler/ (a FlowMapEulerDiscreteScheduler). `--init FLOW_RUN` starts from a flow run's weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch

from vaediff.checks import MAX_SAMPLING_STEPS
from vaediff.console import notice
from vaediff.data import MNIST_SHAPE, DataShape
from vaediff.errors import ConfigError, VaediffError
from vaediff.families.base import Family, Option, TrainingPlan, TrainingRequest
from vaediff.families.diffusion import TINY_UNET, UNET_DIR, UNET_WEIGHTS
from vaediff.families.flow import FlowRun, recipe, write_flow_figures
from vaediff.models.limits import check_range, config_section
from vaediff.models.meanflow import MeanFlowNet, check_forward_ad
from vaediff.models.unet import DiffusionConfig, check_guidance, preset_config
from vaediff.objectives.diffusion import check_sampler_settings
from vaediff.objectives.meanflow import (
    INTERVAL_SPLIT,
    OBJECTIVES,
    MeanFlowObjective,
    flow_map_sample_loop,
    make_flow_map_scheduler,
)
from vaediff.runs import (
    atomic_save_pretrained,
    atomic_save_safetensors,
    config_from_dict,
    load_safetensors,
    load_state_strict,
    read_run_config,
)
from vaediff.training.processes import force_cpu

SCHEDULER_DIR, CONDITIONING_FILE = "scheduler", "conditioning.safetensors"
MEANFLOW_SAMPLERS = ("flowmap",)  # diffusers' FlowMapEulerDiscreteScheduler


@dataclass(frozen=True)
class MeanFlowConfig:
    # The network: the fast diffusion preset's UNet (as flow's), conditioned on class, t - r and guidance.
    denoiser: DiffusionConfig = dataclasses.field(default_factory=lambda: preset_config("fast"))
    objective: Literal["imf", "mf"] = "imf"
    logit_mean: float = -0.4        # t and r ~ logit-normal(-0.4, 1): MeanFlow's best (its table 1)
    logit_std: float = 1.0
    equal_share: float = 0.75       # share of draws with r = t (flow matching): MeanFlow's best, 25% r != t
    adaptive_p: float = 1.0         # adaptive weighting 1 / (err + c)^p; p = 0 is the plain squared error
    adaptive_c: float = 1e-3
    guidance_range: tuple[float, float] = (1.0, 6.0)  # w drawn uniformly here in training; sampling takes any in it
    full_interval_share: float = 0.5  # rows guided over the whole path; the rest lo ~ U(0, 1/2), hi ~ U(1/2, 1)
    sampler: Literal["flowmap"] = "flowmap"
    sampling_steps: int = 1
    guidance: float = 2.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # the default [lo, hi] at sampling time

    def __post_init__(self) -> None:
        if not math.isfinite(self.logit_mean) or not 0 < self.logit_std < math.inf:
            raise ValueError(f"logit_mean must be finite and logit_std positive, got {self.logit_mean}, {self.logit_std}")
        if not 0 <= self.equal_share <= 1:
            raise ValueError(f"equal_share must be in [0, 1], got {self.equal_share}")
        if not (0 <= self.adaptive_p < math.inf and 0 < self.adaptive_c < math.inf):
            raise ValueError(f"adaptive_p must be >= 0 and adaptive_c > 0, got {self.adaptive_p}, {self.adaptive_c}")
        check_range("sampling_steps", self.sampling_steps, 1, MAX_SAMPLING_STEPS)
        if self.denoiser.data_range == "zero_one" or self.denoiser.conditioning != "class_embedding":
            raise ValueError("meanflow runs on pixels in [-1, 1] with the class embedding's null class "
                             "(denoiser.data_range 'minus_one_one', conditioning 'class_embedding')")
        low, high = self.guidance_range
        if not 1 <= low <= self.guidance <= high < math.inf:
            raise ValueError(f"guidance_range must be two numbers 1 <= lo <= hi with the default guidance "
                             f"({self.guidance}) between them, got {tuple(self.guidance_range)}")
        if not self.denoiser.class_conditional and high != 1:
            raise ValueError("an unconditional model (unlabelled data) has no guidance: guidance_range must be [1, 1]")
        if not 0 <= self.full_interval_share <= 1:
            raise ValueError(f"full_interval_share must be in [0, 1], got {self.full_interval_share}")
        check_trained_interval(tuple(self.guidance_interval), "guidance_interval")
        check_guidance(self.guidance, (0.0, 1.0), self.denoiser)


def check_trained_interval(interval: tuple[float, ...], name: str = "--guidance-interval") -> None:
    """A guidance interval of the form training draws (lo <= 1/2 <= hi), else one line."""
    if not (len(interval) == 2 and 0 <= interval[0] <= INTERVAL_SPLIT <= interval[1] <= 1):
        shown = " ".join(f"{bound:g}" for bound in interval)
        raise ConfigError(f"{name} {shown}: a meanflow run is trained on guidance intervals lo <= {INTERVAL_SPLIT:g} "
                          f"<= hi within [0, 1] (an input of the network); choose one of that form, e.g. 0.1 0.7")


def save_meanflow(module: MeanFlowNet, run_dir: Path) -> None:
    """RUN/unet/ and RUN/scheduler/ in diffusers' layout, and RUN/conditioning.safetensors beside them."""
    atomic_save_pretrained(module.unet, run_dir / UNET_DIR)
    atomic_save_safetensors(module.conditioning.state_dict(), run_dir / CONDITIONING_FILE)
    atomic_save_pretrained(make_flow_map_scheduler(1), run_dir / SCHEDULER_DIR)


def load_meanflow_net(config: DiffusionConfig, run_dir: Path) -> MeanFlowNet:
    """Build the network from its config and load both weight files strictly. A run trained before the
    guidance interval was an input has no weights for its embedding: it gets the embedding's zero start, which
    leaves the network's output as it was trained (and says so)."""
    net = MeanFlowNet(config)
    load_state_strict(net.unet, load_safetensors(run_dir / UNET_DIR / UNET_WEIGHTS), run_dir / UNET_DIR / UNET_WEIGHTS)
    conditioning = load_safetensors(run_dir / CONDITIONING_FILE)
    fresh = {k: v for k, v in net.conditioning.state_dict().items() if k.startswith("guidance_interval_embedding.")}
    if fresh and not any(k in conditioning for k in fresh):
        notice(f"{run_dir}: trained before the guidance interval was an input; --guidance-interval has no "
               f"effect on it")
        conditioning = {**conditioning, **fresh}
    load_state_strict(net.conditioning, conditioning, run_dir / CONDITIONING_FILE)
    return net.eval()


class MeanFlowRun(FlowRun):
    """A trained flow map: drawn like a flow run, in fewer steps, with guidance as an input. Its likelihood is
    flow's (the ODE of the instantaneous velocity u(z, t, t), unguided): `self.model(x, t, y)` is that."""

    model_type = "meanflow"
    samplers = MEANFLOW_SAMPLERS

    @classmethod
    def load(cls, run_dir: str | Path, config: dict) -> MeanFlowRun:
        run_dir = Path(run_dir)
        meanflow_config = config_from_dict(MeanFlowConfig, config.get("model"), f"{run_dir}/config.json 'model'")
        return cls(run_dir, config, meanflow_config, load_meanflow_net(meanflow_config.denoiser, run_dir))

    def sampler_settings(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                         guidance_interval: tuple[float, float] | None = None) -> dict:
        """The run's defaults, overridden by whatever is given; a guidance outside the trained range refused."""
        config = self.flow_config
        guidance = guidance if guidance is not None else config.guidance
        low, high = config.guidance_range
        if guidance == guidance and not low <= guidance <= high:  # NaN is left to check_sampler_settings
            raise ConfigError(f"--guidance {guidance:g} is outside the range this meanflow run was trained on "
                              f"({low:g} to {high:g}): guidance is one of its inputs; choose a value in that range")
        interval = tuple(guidance_interval if guidance_interval is not None else config.guidance_interval)
        check_trained_interval(interval)
        settings = {"sampler": sampler or config.sampler, "steps": steps if steps is not None else config.sampling_steps,
                    "guidance": guidance, "guidance_interval": interval}
        return check_sampler_settings(settings, config.denoiser, MEANFLOW_SAMPLERS)

    def integrate(self, noise: torch.Tensor, labels: torch.Tensor, settings: dict, generator: torch.Generator,
                  trajectory: list | None, record_at: set[int] | None) -> torch.Tensor:
        """Noise (t = 1) -> data (t = 0) in `steps` jumps along the learned average velocity."""
        scheduler = make_flow_map_scheduler(settings["steps"])
        return flow_map_sample_loop(self.model, scheduler, noise, labels, settings["guidance"], trajectory, record_at,
                                    settings["guidance_interval"])


def build_model_config(model_type: str, options: dict, shape: DataShape = MNIST_SHAPE) -> MeanFlowConfig:
    """The fast preset's network for the data's `shape` (or, with --init, the flow run's network);
    `options["model"]` overrides MeanFlowConfig fields (and `denoiser` those of the network)."""
    where = "--model-config"
    overrides = dict(options.get("model") or {})
    if overrides.get("objective", options["objective"]) != options["objective"]:
        raise ConfigError(f"{where}: give the objective with --objective, not in the model config")
    network = config_section(overrides, "denoiser", DiffusionConfig, where)
    if options.get("init"):
        network = {**init_network(options["init"]), **network}
    denoiser = preset_config("fast", network, f"{where}: key 'denoiser'", shape)
    unconditional = {} if shape.labelled else {"guidance": 1.0, "guidance_range": (1.0, 1.0)}
    config = config_from_dict(MeanFlowConfig, {**unconditional, **overrides, "objective": options["objective"],
                                               "denoiser": dataclasses.asdict(denoiser)}, where)
    check_forward_ad(config.denoiser, torch.device("cuda" if torch.cuda.is_available() and not force_cpu() else "cpu"))
    return config


def init_network(flow_dir: str) -> dict:
    """The network fields of the flow run `flow_dir` (meanflow's network then matches it), or one line why not."""
    try:
        stored = read_run_config(flow_dir)
    except VaediffError as exc:
        raise ConfigError(f"--init {flow_dir}: not a flow run ({exc})") from None
    if stored["model_type"] != "flow":
        raise ConfigError(f"--init {flow_dir}: a {stored['model_type']} run; --init takes a flow run's directory")
    network = stored["model"].get("denoiser") or {}
    sampling = {"sampler", "sampling_steps", "guidance", "guidance_interval"}  # diffusion's, not the network's
    return {key: value for key, value in network.items() if key not in sampling}


def start_from_flow(net: MeanFlowNet, flow_dir: str) -> MeanFlowNet:
    """Copy the flow run's UNet weights into `net` where names and shapes match; its class table becomes
    the conditioning's (the same (classes + 1, width) table, added to the time embedding in both)."""
    weights = load_safetensors(Path(flow_dir) / UNET_DIR / UNET_WEIGHTS)
    targets = {**{f"unet.{k}": v for k, v in net.unet.state_dict().items()},
               "conditioning.class_embedding.weight": net.conditioning.class_embedding.weight}
    renamed = {("conditioning." if k == "class_embedding.weight" else "unet.") + k: v for k, v in weights.items()}
    matched = {k: v for k, v in renamed.items() if k in targets and targets[k].shape == v.shape}
    if len(matched) < len(renamed):
        raise ConfigError(f"--init {flow_dir}: {len(renamed) - len(matched)} of the flow run's tensors do not fit "
                          f"this network (e.g. {next(k for k in renamed if k not in matched)!r})")
    net.load_state_dict(matched, strict=False)
    return net


def build_net(config: MeanFlowConfig, init: str | None) -> MeanFlowNet:
    net = MeanFlowNet(config.denoiser)
    return start_from_flow(net, init) if init else net


def training_plan(request: TrainingRequest) -> TrainingPlan:
    config = request.model_config
    objective = MeanFlowObjective(config.denoiser, config.objective, config.logit_mean, config.logit_std,
                                  config.equal_share, config.guidance_range, config.adaptive_p, config.adaptive_c,
                                  config.full_interval_share)
    # a resumed run loads its checkpoint over the fresh weights: the flow run need not exist any more
    init = None if request.resume else request.options.get("init")
    return TrainingPlan(objective, partial(build_net, config, init), save_meanflow, request.train_config,
                        f"meanflow ({config.objective}) on {request.dataset.name}")


FAMILY = Family(config_class=MeanFlowConfig, build_config=build_model_config, recipe=recipe, plan=training_plan,
                load=MeanFlowRun.load, figures=write_flow_figures, samplers=MEANFLOW_SAMPLERS, share=0.0,
                added_share=0.2, study_init="flow", fixed_steps=380, curve_steps=(1, 2, 4, 8),
                options=(Option("objective", "imf", "imf (improved MeanFlow, default) or mf (the original MeanFlow "
                                "objective)", choices=OBJECTIVES),
                         Option("init", None, "start from the weights of this flow run (its directory)",
                                metavar="FLOW_RUN", type=str)),
                summary={"en": "A flow map (improved MeanFlow) learns the average velocity over an interval, so one "
                               "to four network passes draw an image, with guidance as an input.",
                         "zh": "流映射（改进的 MeanFlow）学习区间上的平均速度，一到四次网络计算即可生成图像，引导强度作为输入。"},
                smallest={"denoiser": TINY_UNET, "sampling_steps": 2},
                model_config_help='{"sampling_steps": 1, "guidance_range": [1, 6], "denoiser": {...}}')
