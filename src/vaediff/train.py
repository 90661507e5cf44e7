"""The one training loop every model shares, on Hugging Face Accelerate.

Setup, step, and checkpoint/evaluate are kept apart and flat. Three properties hold by construction:

* Reproducible and resumable without hidden RNG state: the data order of epoch e depends only on
  (seed, e), and every random draw of step s (noise, timesteps, label dropout) comes from a generator
  seeded with (seed, s). A checkpoint therefore only needs weights, optimizer, EMA, scheduler and
  counters; a resumed run sees exactly the batches and noise an unbroken run would have seen.
* The effective batch is what the user asked for, whatever the process count: Accelerate splits each
  global batch between processes (`split_batches=True`), and every process draws the randomness of the
  whole global batch and keeps its own rows, so N processes compute the same gradient as one.
* Nothing is lost: checkpoints are single safetensors files written atomically; SIGINT/SIGTERM save
  one and exit 130/143; a non-finite loss stops before the bad update, keeping the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import nn

from vaediff.console import notice, progress_bar
from vaediff.data import Dataset, ImageSplit, batch_loader
from vaediff.errors import AlreadyFinished, ConfigError, Interrupted, RunError, TrainingDiverged
from vaediff.runs import atomic_save_safetensors, atomic_write_text, load_safetensors

CHECKPOINT_FILE = "resume.safetensors"


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
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    grad_accum: int = 1                  # split each batch into this many sequential micro-batches
    checkpoint_every: int = 0            # steps between checkpoints; 0: every `checkpoint_minutes`
    checkpoint_minutes: float = 1.0
    eval_images: int = 1000              # test images for the test loss logged at each evaluation

    def __post_init__(self) -> None:
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


class Objective(Protocol):
    """What the loop needs to know about a model: its loss, and how to write its weights."""

    loss_names: tuple[str, ...]  # logged terms; "loss" (the optimised one) first

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        """Per-image means of each term over this process's rows of the batch."""
        ...

    def export(self, module: nn.Module, run_dir: Path) -> None:
        """Write the model's weights (EMA weights already copied in, where used) into run_dir."""
        ...


class BatchRandom:
    """The random draws of one global batch, identical on every process; each keeps its own rows.

    Seeded with (seed, optimizer step), so the draws are a pure function of where training is: that is
    what lets a resumed or multi-process run reproduce a single unbroken run.
    """

    def __init__(self, seed: int, step: int, global_batch: int, rows: slice, device: torch.device,
                 progress: float = 0.0):
        self.progress = progress  # share of the planned optimizer steps done (0 while the plan is unknown)
        mixed = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)
        self.generator = torch.Generator(device=device).manual_seed(mixed)
        self.global_batch, self.rows, self.device = global_batch, rows, device

    def normal(self, *shape: int) -> torch.Tensor:
        full = torch.randn((self.global_batch, *shape), generator=self.generator, device=self.device)
        return full[self.rows]

    def uniform(self, *shape: int) -> torch.Tensor:
        full = torch.rand((self.global_batch, *shape), generator=self.generator, device=self.device)
        return full[self.rows]

    def integers(self, low: int, high: int) -> torch.Tensor:
        full = torch.randint(low, high, (self.global_batch,), generator=self.generator, device=self.device)
        return full[self.rows]


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


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file with tensors for weights/optimizer/EMA and JSON for the rest.


def _optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, module: nn.Module, optimizer, scheduler, ema, state: TrainState) -> None:
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_to_flat(optimizer.state_dict())
    tensors.update(optim_tensors)
    ema_meta = None
    if ema is not None:
        ema_state = dict(ema.state_dict())
        for index, shadow in enumerate(ema_state.pop("shadow_params")):
            tensors[f"ema.{index}"] = shadow
        ema_meta = ema_state
    scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    metadata = {
        "state": json.dumps(asdict(state)),
        "optimizer": json.dumps(optim_meta),
        "scheduler": json.dumps(scheduler_state),
        "ema": json.dumps(ema_meta),
    }
    atomic_save_safetensors(tensors, path, metadata)


def load_checkpoint(path: Path, module: nn.Module, optimizer, scheduler, ema) -> TrainState:
    from safetensors import safe_open

    tensors = load_safetensors(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    try:
        state = TrainState(**json.loads(metadata["state"]))
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(_optimizer_from_flat(tensors, json.loads(metadata["optimizer"])))
        scheduler_state = json.loads(metadata["scheduler"])
        scheduler.load_state_dict({**scheduler.state_dict(), **scheduler_state})
        if ema is not None:
            ema_state = json.loads(metadata["ema"])
            count = sum(1 for k in tensors if k.startswith("ema."))
            ema_state["shadow_params"] = [tensors[f"ema.{i}"] for i in range(count)]
            ema.load_state_dict(ema_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"{path}: checkpoint does not match this model or is damaged ({first})") from None
    return state


# ---------------------------------------------------------------------------------------------------------
# Signals: remember SIGINT/SIGTERM, let the loop finish its step and save.


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.received is not None:  # a second Ctrl-C: the user really wants out
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread (e.g. a web server worker): leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------------------
# Processes: under `accelerate launch` or `torchrun` every process runs the same code; only one writes.


def _force_cpu() -> bool:
    """Several processes (torchrun, accelerate launch) on a machine without a GPU: Accelerate must be
    told `cpu=True` to join them over gloo; otherwise each process would train alone."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _process_state():
    from accelerate import PartialState

    return PartialState(cpu=_force_cpu())


def is_main_process() -> bool:
    return _process_state().is_main_process


def wait_for_everyone() -> None:
    _process_state().wait_for_everyone()


# ---------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Setup:
    accelerator: object
    module: nn.Module
    optimizer: object
    scheduler: object
    schedule: WarmupCosine
    ema: object
    loader: object
    sampler: object
    rows: slice


def _setup(build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig, ema_factory) -> _Setup:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    accelerator = Accelerator(
        cpu=_force_cpu(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        step_scheduler_with_optimizer=False,  # we step it ourselves, once per optimizer step
    )
    world = accelerator.num_processes
    micro_batch = config.batch_size // config.grad_accum
    if micro_batch % world:
        raise ConfigError(f"batch size {config.batch_size} / grad-accum {config.grad_accum} = {micro_batch} "
                          f"images per micro-batch cannot be split evenly between {world} processes")
    torch.manual_seed(config.seed)  # the initial weights are the only draws from the global generator
    module = build_model()
    loader = batch_loader(dataset.train, micro_batch, seed=config.seed, shuffle=True, drop_last=True)
    sampler = loader.batch_sampler
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  foreach=True)
    schedule = WarmupCosine(config.warmup_steps, config.lr_schedule == "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    ema = ema_factory(accelerator.unwrap_model(module)) if config.ema_decay else None
    shard = micro_batch // world
    rows = slice(shard * accelerator.process_index, shard * (accelerator.process_index + 1))
    return _Setup(accelerator, module, optimizer, scheduler, schedule, ema, loader, sampler, rows)


def _steps_per_epoch(dataset: Dataset, config: TrainConfig) -> int:
    return len(dataset.train) // config.batch_size


def _plan_from_counts(dataset: Dataset, config: TrainConfig) -> int | None:
    plans = []
    if config.max_steps is not None:
        plans.append(config.max_steps)
    if config.epochs is not None:
        plans.append(config.epochs * _steps_per_epoch(dataset, config))
    return min(plans) if plans else None


@torch.no_grad()
def evaluate_losses(objective: Objective, module: nn.Module, split: ImageSplit, config: TrainConfig,
                    device: torch.device) -> dict[str, float]:
    """Mean loss terms over the first `eval_images` of a split, with fixed randomness (comparable rows)."""
    count = min(len(split), config.eval_images)
    totals: dict[str, float] = {}
    was_training = module.training
    module.eval()
    for batch_index, start in enumerate(range(0, count, 250)):
        images = split.images[start : min(count, start + 250)].to(device)
        labels = split.labels[start : min(count, start + 250)].to(device)
        draw = BatchRandom(config.seed + 7919, batch_index, len(images), slice(None), device)
        terms = objective.losses(module, images, labels, draw)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(images)
    module.train(was_training)
    return {name: total / count for name, total in totals.items()}


def _write_history(run_dir: Path, state: TrainState, loss_names: tuple[str, ...]) -> None:
    columns = ["epoch", "step", "images_seen", "elapsed_s"]
    columns += [f"{split}_{name}" for split in ("train", "test") for name in loss_names]
    lines = [",".join(columns)]
    for row in state.history:
        lines.append(",".join(_csv_value(row.get(column)) for column in columns))
    atomic_write_text(run_dir / "loss.csv", "\n".join(lines) + "\n")


def _csv_value(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def train(objective: Objective, build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig,
          run_dir: str | Path, resume: bool = False, ema_factory: Callable[[nn.Module], object] | None = None,
          title: str = "training", plot_every_s: float = 10.0, progress: bool = True) -> TrainState:
    """Train the model `build_model()` makes on `dataset.train` with `objective`, writing loss.csv/png and
    checkpoints into run_dir. The model is built after seeding, so its initial weights follow the seed.

    Returns the final TrainState. The objective's `export` writes the weights at every checkpoint and
    at the end (from the EMA weights when `config.ema_decay` is set).
    """
    trainer = Trainer(objective, build_model, dataset, config, Path(run_dir), resume,
                      ema_factory or _default_ema(config), title, plot_every_s, progress)
    return trainer.run()


class Trainer:
    """One training session, split into setup (__init__), the step, and checkpoint/evaluate."""

    def __init__(self, objective: Objective, build_model: Callable[[], nn.Module], dataset: Dataset,
                 config: TrainConfig, run_dir: Path, resume: bool, ema_factory, title: str, plot_every_s: float,
                 progress: bool):
        self.objective, self.dataset, self.config, self.run_dir = objective, dataset, config, run_dir
        self.title, self.plot_every_s = title, plot_every_s
        self.checkpoint_path = run_dir / CHECKPOINT_FILE
        if is_main_process():
            run_dir.mkdir(parents=True, exist_ok=True)
            for stale in run_dir.glob(".*.tmp"):  # half-written files of a killed run: never read, now removed
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
        wait_for_everyone()
        self.setup = _setup(build_model, dataset, config, ema_factory)
        self.accel = self.setup.accelerator
        self.is_main = self.accel.is_main_process
        self.unwrapped = self.accel.unwrap_model(self.setup.module)
        self.state = self._initial_state(resume)
        self.budget_s = config.minutes * 60 if config.minutes is not None else math.inf
        self.steps_per_epoch = _steps_per_epoch(dataset, config)
        # Without epochs short enough to log each, a row every fifth of the budget (1 to 5 minutes apart):
        # a curve of five points, and the seed network's test loss costs under 3% of its training time.
        self.eval_interval_s = max(60.0, min(300.0, self.budget_s / 5)) if config.minutes else math.inf
        self.bar = progress_bar(total=self.state.planned_steps, initial=self.state.step, desc=title, unit="step",
                                enabled=self.is_main and progress)
        self.session_start, self.elapsed_at_start = time.perf_counter(), self.state.elapsed_s
        self.probe: tuple[int, float] | None = None
        self.last_checkpoint = (self.state.step, time.perf_counter())
        self.last_plot, self.last_eval, self.eval_cost = -math.inf, time.perf_counter(), 0.0
        if self.is_main:
            self._write_history_files(write_plot=True)  # rows a killed session wrote past its checkpoint go

    def _initial_state(self, resume: bool) -> TrainState:
        """A fresh state, or the checkpoint's. With --resume and no checkpoint yet (stopped before the
        first one), training starts from step 0; limits other than the checkpoint's give a new horizon."""
        state = TrainState()
        if resume and self.checkpoint_path.is_file():
            setup = self.setup
            state = load_checkpoint(self.checkpoint_path, self.unwrapped, setup.optimizer, setup.scheduler, setup.ema)
            state.finished = False
        elif resume and self.is_main:
            notice(f"{self.run_dir}: no checkpoint yet (the run stopped before its first one); starting from step 0")
        self.count_plan = _plan_from_counts(self.dataset, self.config)
        limits = training_limits(self.config)
        if state.limits is not None and state.limits != limits:
            state.planned_steps = self._replan(state)
        elif state.planned_steps is None or self.config.minutes is None:
            state.planned_steps = self.count_plan
        self.setup.schedule.total = state.planned_steps
        if state.planned_steps is not None and state.step >= state.planned_steps:
            raise AlreadyFinished(f"{self.run_dir} is already at step {state.step} ({_describe(limits)} is "
                                  f"{state.planned_steps} steps): nothing to do, nothing changed")
        if self.config.minutes is not None and state.elapsed_s >= self.config.minutes * 60:
            raise AlreadyFinished(f"{self.run_dir} has already trained {state.elapsed_s / 60:.2f} minutes "
                                  f"({_describe(limits)}): nothing to do, nothing changed")
        state.limits = limits
        return state

    def _replan(self, state: TrainState) -> int | None:
        """The horizon for new limits: the step counts', and for --minutes as many steps as the time left
        allows at the speed measured so far (the cosine schedule stretches to the new end)."""
        if self.config.minutes is None or state.step == 0 or state.elapsed_s <= 0:
            return self.count_plan
        seconds_per_step = state.elapsed_s / state.step
        time_plan = state.step + int(0.95 * max(0.0, self.config.minutes * 60 - state.elapsed_s) / seconds_per_step)
        return min(time_plan, self.count_plan) if self.count_plan else time_plan

    def elapsed(self) -> float:
        return self.elapsed_at_start + time.perf_counter() - self.session_start

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self) -> TrainState:
        self.setup.module.train()
        with StopSignals() as signals:
            stop = None
            while stop is None:
                stop = self._epoch(signals)
            self.bar.close()
            if stop == "signal":
                self.checkpoint()
                name = signal.Signals(signals.received).name
                raise Interrupted(f"{name} at step {self.state.step}: checkpoint saved in {self.checkpoint_path}; "
                                  f"continue with the same command plus --resume", signals.received)
            self.state.finished = True
            self.record_row(write_plot=True)
            self.checkpoint()
        return self.state

    def _epoch(self, signals: StopSignals) -> str | None:
        """One pass (or the rest of one) over the training split; returns why training stops, if it does."""
        state, setup = self.state, self.setup
        setup.loader.set_epoch(state.epoch)  # Accelerate's counter and our sampler agree on the epoch
        setup.sampler.set_epoch(state.epoch)
        setup.sampler.start_at(state.batch_in_epoch)
        for images, labels in setup.loader:
            flags, loss = self._step(images, labels, signals)
            if not self.accel.sync_gradients:
                continue  # a micro-batch of gradient accumulation: no optimizer step yet
            self._after_optimizer_step(loss)
            stop = "signal" if flags[1] else "time" if flags[2] else None
            if stop is None and state.planned_steps is not None and state.step >= state.planned_steps:
                stop = "done"
            if stop:
                return stop
            if time.perf_counter() - self.last_eval >= self.eval_interval_s:
                self.record_row(write_plot=False)
            if self._checkpoint_due():
                self.checkpoint()
        state.epoch += 1
        state.batch_in_epoch = 0
        # A row per epoch, unless epochs are so short that evaluating each would cost over 5% of the
        # training time (tiny data sets with big models); then rows come less often.
        if self.eval_cost <= 0.05 * (time.perf_counter() - self.last_eval):
            self.record_row(write_plot=False)
        return None

    def _step(self, images: torch.Tensor, labels: torch.Tensor, signals: StopSignals):
        """Forward, backward and (on the last micro-batch) the optimizer step; returns the agreed flags
        (not finite, signalled, out of time) and the loss."""
        accel, setup, state, config = self.accel, self.setup, self.state, self.config
        with accel.accumulate(setup.module):
            progress = state.step / state.planned_steps if state.planned_steps else 0.0
            # Drawn for the optimizer step's whole batch (every micro-batch, every process) from (seed, step);
            # each micro-batch of each process keeps its own rows, so N processes and K accumulation steps
            # draw exactly what one process taking the full batch at once would.
            micro = len(images) * accel.num_processes
            offset = (state.micro_step % config.grad_accum) * micro
            rows = slice(offset + setup.rows.start, offset + setup.rows.stop)
            draw = BatchRandom(config.seed, state.step, micro * config.grad_accum, rows, accel.device, progress)
            terms = self.objective.losses(setup.module, images, labels, draw)
            loss = terms["loss"]
            bad = not bool(torch.isfinite(loss.detach()))
            # Backward even when the loss is bad: in multi-process runs every process must join the
            # gradient all-reduce. A bad step is never applied (we raise below, before the update).
            accel.backward(loss)
            flags = _agree(accel, bad, signals.received is not None,
                           self.elapsed() >= self.budget_s and accel.sync_gradients)
            if flags[0]:
                raise _diverged(state, terms, self.checkpoint_path)
            if accel.sync_gradients and config.grad_clip:
                accel.clip_grad_norm_(setup.module.parameters(), config.grad_clip)
            setup.optimizer.step()
            setup.optimizer.zero_grad(set_to_none=True)
        state.micro_step += 1
        state.batch_in_epoch += 1
        for name, value in terms.items():
            state.running[name] = state.running.get(name, 0.0) + float(value.detach())
        state.running_count += 1
        return flags, loss

    def _after_optimizer_step(self, loss: torch.Tensor) -> None:
        setup, state = self.setup, self.state
        setup.scheduler.step()
        if setup.ema is not None:
            setup.ema.step(self.unwrapped.parameters())
        state.step += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{float(loss.detach()):.4g}", epoch=state.epoch + 1, refresh=False)
        self._fix_horizon()

    def _fix_horizon(self) -> None:
        """With --minutes, the cosine schedule needs a length: measure 15 steps (after 5 warm-up steps)
        and plan as many as fit in the budget. Done once; the plan is kept in the checkpoint."""
        state = self.state
        if self.config.minutes is None or state.planned_steps != self.count_plan:
            return
        if self.probe is None:
            if state.step >= 5:
                self.probe = (state.step, self.elapsed())
            return
        if state.step == self.probe[0] + 15:
            seconds_per_step = (self.elapsed() - self.probe[1]) / 15
            time_plan = state.step + int(0.95 * (self.budget_s - self.elapsed()) / seconds_per_step)
            state.planned_steps = min(time_plan, self.count_plan) if self.count_plan else time_plan
            self.setup.schedule.total = state.planned_steps
            self.bar.total = state.planned_steps
            self.bar.refresh()

    # -- evaluate and checkpoint ------------------------------------------------------------------------

    def record_row(self, write_plot: bool) -> None:
        """Append train (running mean) and test losses to the history; rewrite loss.csv (and loss.png).
        A step has at most one row (a resumed run that ended on an epoch boundary reaches it twice)."""
        began, state, config = time.perf_counter(), self.state, self.config
        if not state.history or state.history[-1]["step"] != state.step:
            row: dict = {"epoch": round(state.step / max(1, self.steps_per_epoch), 3), "step": state.step,
                         "images_seen": state.step * config.batch_size, "elapsed_s": round(self.elapsed(), 2)}
            if state.running_count:
                row.update({f"train_{k}": v / state.running_count for k, v in state.running.items()})
            test = evaluate_losses(self.objective, self.unwrapped, self.dataset.test, config, self.accel.device)
            row.update({f"test_{k}": v for k, v in test.items()})
            state.history.append(row)
            state.running, state.running_count = {}, 0
        self.last_eval = time.perf_counter()
        self.eval_cost = self.last_eval - began
        if self.is_main:
            self._write_history_files(write_plot or time.perf_counter() - self.last_plot > self.plot_every_s)

    def _write_history_files(self, write_plot: bool) -> None:
        """loss.csv (and loss.png) from the history: the files always say what the state says."""
        from vaediff.figures import save_loss_curves

        if not self.state.history:
            for name in ("loss.csv", "loss.png"):
                (self.run_dir / name).unlink(missing_ok=True)
            return
        _write_history(self.run_dir, self.state, self.objective.loss_names)
        if write_plot:
            save_loss_curves(self.state.history, self.run_dir / "loss.png", self.title, self.objective.loss_names)
            self.last_plot = time.perf_counter()

    def checkpoint(self) -> None:
        """Resume state and exported weights, both atomic, written by the main process only."""
        self.state.elapsed_s = self.elapsed()
        if self.is_main:
            setup = self.setup
            save_checkpoint(self.checkpoint_path, self.unwrapped, setup.optimizer, setup.scheduler, setup.ema,
                            self.state)
            export_weights(self.objective, self.unwrapped, setup.ema, self.run_dir)
        self.accel.wait_for_everyone()
        self.last_checkpoint = (self.state.step, time.perf_counter())

    def _checkpoint_due(self) -> bool:
        if self.config.checkpoint_every:
            return self.state.step - self.last_checkpoint[0] >= self.config.checkpoint_every
        return time.perf_counter() - self.last_checkpoint[1] >= self.config.checkpoint_minutes * 60


def _describe(limits: dict) -> str:
    given = [f"--{name.replace('_', '-')} {value:g}" for name, value in limits.items() if value is not None]
    return " and ".join(given) or "no limit"


def _agree(accel, bad: bool, signalled: bool, out_of_time: bool) -> tuple[bool, bool, bool]:
    """Every process must take the same decision to stop, or the others would wait forever."""
    if accel.num_processes == 1:
        return bad, signalled, out_of_time
    flags = torch.tensor([bad, signalled, out_of_time], dtype=torch.float32, device=accel.device)
    flags = accel.reduce(flags, reduction="sum")
    return tuple(bool(v > 0) for v in flags.tolist())  # type: ignore[return-value]


def _diverged(state: TrainState, terms: dict[str, torch.Tensor], checkpoint_path: Path) -> TrainingDiverged:
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    kept = (f"the last good checkpoint {checkpoint_path} is kept" if checkpoint_path.is_file()
            else "no checkpoint had been written yet")
    return TrainingDiverged(f"loss is not finite at step {state.step + 1} (epoch {state.epoch + 1}; {values}); "
                            f"{kept}; try a lower --lr")


def _default_ema(config: TrainConfig) -> Callable[[nn.Module], object]:
    def make(module: nn.Module):
        from diffusers.training_utils import EMAModel

        # EMA warm-up (decay grows as 1 - (1 + step)^-2/3) keeps short CPU runs from averaging in
        # their random initial weights; the cap is the configured decay.
        return EMAModel(module.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=2 / 3,
                        foreach=True)

    return make


def export_weights(objective: Objective, module: nn.Module, ema, run_dir: Path) -> None:
    """Let the objective write the weights: the EMA average when there is one, else the live weights."""
    if ema is None:
        objective.export(module, run_dir)
        return
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        objective.export(module, run_dir)
    finally:
        ema.restore(module.parameters())
