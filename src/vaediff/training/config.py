"""What a training run is asked to do (TrainConfig), where it stands (TrainState), and the arithmetic of
its plan: steps per epoch, the horizon the limits give, and the learning-rate schedule over it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from vaediff.errors import ConfigError
from vaediff.training.precision import ACCELERATE_NAMES


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None            # stop after this many passes over the training split
    minutes: float | None = None         # ... or after this much wall-clock training time
    max_steps: int | None = None         # ... or after this many optimizer steps
    batch_size: int = 64                 # images per optimizer step, over all processes together
    lr: float = 1e-3                     # peak learning rate (Adam)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0                # linear warm-up before the schedule
    weight_decay: float = 0.0            # AdamW's decoupled weight decay; 0 is plain Adam
    grad_clip: float | None = None       # clip the global gradient norm to this value
    ema_decay: float | None = None       # keep an exponential moving average of the weights
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # the older flag: `precision` says the same
    # fp32, bf16 or fp16 autocast, or auto: bf16 where a probe of this model on this chip finds it clearly
    # faster (training/precision.py); config.json keeps the choice, so a resumed run does not probe again
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    grad_accum: int = 1                  # split each batch into this many sequential micro-batches
    compile: bool = False                # torch.compile the model's training forward (benchmarks/compile.py)
    checkpoint_every: int = 0            # steps between checkpoints; 0: every `checkpoint_minutes`
    checkpoint_minutes: float = 1.0
    eval_images: int = 1000              # test images for the test loss logged at each evaluation

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision {self.precision!r}: choose auto, fp32, bf16 or fp16")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"--mixed-precision {self.mixed_precision!r}: choose no, fp16 or bf16")
        if self.mixed_precision != "no" and self.precision == "fp32":  # --mixed-precision bf16: an alias
            object.__setattr__(self, "precision", self.mixed_precision)
        if self.precision in ("bf16", "fp16", "fp32"):  # the value Accelerate is given (auto: once chosen)
            object.__setattr__(self, "mixed_precision", ACCELERATE_NAMES[self.precision])
        if self.epochs is None and self.minutes is None and self.max_steps is None:
            raise ConfigError("give at least one of --epochs, --minutes, --max-steps")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ConfigError(f"--minutes must be a positive number, got {self.minutes}")
        if self.batch_size <= 0 or self.grad_accum <= 0:
            raise ConfigError(f"batch size and grad-accum must be positive, got {self.batch_size}, {self.grad_accum}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"--batch-size {self.batch_size} is not divisible by --grad-accum {self.grad_accum}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")

    def check_data(self, train_images: int) -> None:
        """One line, before anything is written, when a batch cannot be cut from `train_images` images."""
        if self.batch_size > train_images:
            raise ConfigError(f"--batch-size {self.batch_size} is larger than the {train_images:,} training "
                              f"images; give --batch-size {train_images} or less")


@dataclass
class TrainState:
    """Counters and history: everything of a checkpoint that is not a tensor."""

    step: int = 0                         # optimizer steps done
    micro_step: int = 0                   # micro-batches done (the random stream's position)
    epoch: int = 0                        # current epoch (0-based)
    batch_in_epoch: int = 0               # global batches of the current epoch already consumed
    elapsed_s: float = 0.0                # training wall-clock time so far, over all sessions
    planned_steps: int | None = None      # the LR schedule's horizon (estimated for --minutes)
    history: list[dict] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)  # sums of loss terms since the last row
    running_count: int = 0
    finished: bool = False
    limits: dict | None = None            # epochs/minutes/max_steps this state was trained towards


def training_limits(config: TrainConfig) -> dict:
    return {"epochs": config.epochs, "minutes": config.minutes, "max_steps": config.max_steps}


class WarmupCosine:
    """LR factor: linear warm-up, then constant or cosine decay to 0 over `total` steps.

    An object rather than a closure because its horizon `total` is set after construction: with --minutes
    it is known only once the speed of the first steps has been measured (and again on a resumed run).
    """

    def __init__(self, warmup: int, cosine: bool, total: int | None = None):
        self.warmup, self.cosine, self.total = warmup, cosine, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine or not self.total:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def describe_limits(limits: dict) -> str:
    given = [f"--{name.replace('_', '-')} {value:g}" for name, value in limits.items() if value is not None]
    return " and ".join(given) or "no limit"


def steps_per_epoch(train_images: int, config: TrainConfig) -> int:
    return train_images // config.batch_size


def plan_from_counts(train_images: int, config: TrainConfig) -> int | None:
    """The horizon --epochs and --max-steps give (the smaller), or None when only --minutes is set."""
    plans = []
    if config.max_steps is not None:
        plans.append(config.max_steps)
    if config.epochs is not None:
        plans.append(config.epochs * steps_per_epoch(train_images, config))
    return min(plans) if plans else None


def plan_for_time_left(step: int, elapsed_s: float, seconds_per_step: float, config: TrainConfig,
                       count_plan: int | None) -> int:
    """With --minutes: as many steps as the time left allows at the measured speed (5% kept in reserve
    for evaluation and checkpoints), capped by the count limits."""
    time_plan = step + int(0.95 * max(0.0, config.minutes * 60 - elapsed_s) / seconds_per_step)
    return min(time_plan, count_plan) if count_plan else time_plan
