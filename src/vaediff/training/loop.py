"""The one training loop every model shares, on Hugging Face Accelerate.

`train` reads top to bottom, nanoGPT's train.py as the model: prepare (Accelerate: model, optimizer,
schedule, batches, EMA), the starting state (fresh or the checkpoint's), then epochs of steps, each step
`forward_backward` then `finish_optimizer_step`, with rows of the loss history and checkpoints in between.
The parts it calls are named after what they do: `Prepared`, `Clock` (time, budget, the schedule's
horizon), `Checkpointer` (where a run starts, when to save, saving). Three properties hold by construction:

* Reproducible and resumable without hidden RNG state: the data order of epoch e depends only on
  (seed, e), and every random draw of step s (noise, timesteps, label dropout) comes from a generator
  seeded with (seed, s). A checkpoint therefore only needs weights, optimizer, EMA, scheduler and
  counters; a resumed run sees exactly the batches and noise an unbroken run would have seen.
* The effective batch is what the user asked for, whatever the process count: Accelerate splits each
  global batch between processes (`split_batches=True`), and every process draws the randomness of the
  whole global batch and keeps its own rows, so N processes compute the same gradient as one.
* Nothing is lost: checkpoints are single safetensors files written atomically (checkpoint.py);
  SIGINT/SIGTERM save one and exit 130/143; a non-finite loss stops before the bad update, keeping the
  last good checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vaediff.console import notice, progress_bar
from vaediff.data import Dataset, batch_loader
from vaediff.errors import AlreadyFinished, ConfigError, Interrupted, TrainingDiverged
from vaediff.objectives import BatchRandom, Objective
from vaediff.training.checkpoint import (
    CHECKPOINT_FILE,
    Export,
    export_weights,
    load_checkpoint,
    remove_stale_files,
    save_checkpoint,
)
from vaediff.training.config import (
    TrainConfig,
    TrainState,
    WarmupCosine,
    describe_limits,
    plan_for_time_left,
    plan_from_counts,
    steps_per_epoch,
    training_limits,
)
from vaediff.training.history import LossLog
from vaediff.training.processes import StopSignals, agree, force_cpu, is_main_process, wait_for_everyone
from vaediff.training.trackers import Tracking


def train(objective: Objective, build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig,
          run_dir: str | Path, resume: bool = False, export: Export | None = None,
          ema_factory: Callable[[nn.Module], object] | None = None, title: str = "training",
          plot_every_s: float = 10.0, progress: bool = True, extras: Extras | None = None) -> TrainState:
    """Train the model `build_model()` makes on `dataset.train` with `objective`, writing loss.csv/png and
    checkpoints into run_dir; `export(module, run_dir)` writes the weights at every checkpoint and at the
    end (the EMA average when `config.ema_decay` is set). The model is built after seeding, so its initial
    weights follow the seed. `extras`: the family's hook and state, the trackers (Extras). Returns the
    final TrainState."""
    run_dir, extras = Path(run_dir), extras or Extras()
    parts = prepare(build_model, dataset, config, ema_factory or default_ema(config), run_dir, extras.report_to)
    count_plan = plan_from_counts(len(dataset.train), config)  # the steps epochs or --max-steps give
    extra = extras.extra_state(parts.unwrapped).to(parts.accelerator.device) if extras.extra_state else None
    checkpoint = Checkpointer(run_dir, parts, export, extra, config)
    state = checkpoint.starting_state(resume, count_plan)
    clock = Clock(config, state, count_plan, parts.schedule)
    tracking = Tracking(parts.accelerator, extras.hyperparameters, extras.preview, clock.elapsed)
    log = LossLog(run_dir, objective, parts.unwrapped, dataset.test, config, parts.accelerator.device,
                  steps_per_epoch(len(dataset.train), config), clock.elapsed, title, plot_every_s, is_main_process(),
                  on_row=lambda state: tracking.log_row(state, parts.optimizer, parts.ema, config.batch_size))
    log.write_files(state, write_plot=True)  # rows a killed session wrote past its checkpoint go
    bar = progress_bar(total=state.planned_steps, initial=state.step, desc=title, unit="step",
                       enabled=is_main_process() and progress)
    parts.module.train()
    with StopSignals() as signals:
        stop = None
        while stop is None:
            for images, labels in epoch_batches(parts, state):
                loss, signalled, out_of_time = forward_backward(parts, objective, config, state, images, labels,
                                                                signals.received is not None, clock)
                if not parts.accelerator.sync_gradients:
                    continue  # a micro-batch of gradient accumulation: no optimizer step yet
                finish_optimizer_step(parts, state, extras.after_step, extra)
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}", epoch=state.epoch + 1, refresh=False)
                clock.fix_horizon(state, bar)  # --minutes: the schedule's length, once the speed is measured
                done = state.planned_steps is not None and state.step >= state.planned_steps
                stop = "signal" if signalled else "time" if out_of_time else "done" if done else None
                if stop:
                    break
                if log.due():
                    log.record(state, write_plot=False)
                if checkpoint.due(state):
                    checkpoint.save(state, clock.elapsed())
                    if tracking.preview_due():  # a sample grid from the weights just exported
                        tracking.log_preview(state.step)
            else:  # the epoch ran to its end
                state.epoch += 1
                state.batch_in_epoch = 0
                if log.cheap():
                    log.record(state, write_plot=False)
        bar.close()
        if stop == "signal":
            raise checkpoint.interrupted(state, clock.elapsed(), signals.received)
        state.finished = True
        log.record(state, write_plot=True)
        checkpoint.save(state, clock.elapsed())
        tracking.log_preview(state.step)
    tracking.end()
    return state


@dataclass(frozen=True)
class Extras:
    """What a family and its caller add to the loop. `extra_state(model)` makes the family's own module from
    the freshly built model (moved to the training device, saved in every checkpoint, loaded back on
    resume); `after_step(model, extra, steps_done)` runs after each optimizer step (families.base.TrainingPlan);
    `report_to` names Accelerate's trackers, which log loss.csv's rows, `hyperparameters`, and `preview()`'s
    sample grid every few minutes and at the end (trackers.py)."""

    after_step: Callable[[nn.Module, nn.Module | None, int], None] | None = None
    extra_state: Callable[[nn.Module], nn.Module] | None = None
    report_to: str | None = None
    preview: Callable[[], object] | None = None
    hyperparameters: dict = field(default_factory=dict)


def finish_optimizer_step(parts: Prepared, state: TrainState, after_step, extra: nn.Module | None) -> None:
    """After each optimizer step: the learning-rate schedule, the moving average, the count, the family's hook."""
    parts.scheduler.step()
    if parts.ema is not None:
        parts.ema.step(parts.unwrapped.parameters())
    state.step += 1
    if after_step is not None:
        after_step(parts.unwrapped, extra, state.step)


def epoch_batches(parts: Prepared, state: TrainState):
    """The current epoch's batches, from where a resumed run stopped (the order depends on (seed, epoch))."""
    parts.loader.set_epoch(state.epoch)  # Accelerate's counter and our sampler agree on the epoch
    parts.sampler.set_epoch(state.epoch)
    parts.sampler.start_at(state.batch_in_epoch)
    return parts.loader


def forward_backward(parts: Prepared, objective: Objective, config: TrainConfig, state: TrainState,
                     images: torch.Tensor, labels: torch.Tensor, signalled: bool,
                     clock: Clock) -> tuple[torch.Tensor, bool, bool]:
    """Forward, backward and (on the last micro-batch) the clipped optimizer step; returns the loss and the
    flags every process agreed on: signalled, out of time. A non-finite loss raises before the update."""
    accelerator = parts.accelerator
    with accelerator.accumulate(parts.module):
        progress = state.step / state.planned_steps if state.planned_steps else 0.0
        # Drawn for the optimizer step's whole batch (every micro-batch, every process) from (seed, step);
        # each micro-batch of each process keeps its own rows, so N processes and K accumulation steps
        # draw exactly what one process taking the full batch at once would.
        micro = len(images) * accelerator.num_processes
        offset = (state.micro_step % config.grad_accum) * micro
        rows = slice(offset + parts.rows.start, offset + parts.rows.stop)
        draw = BatchRandom(config.seed, state.step, micro * config.grad_accum, rows, accelerator.device, progress)
        terms = objective.losses(parts.module, images, labels, draw)
        loss = terms["loss"]
        # Backward even when the loss is bad: in multi-process runs every process must join the
        # gradient all-reduce. A bad step is never applied (we raise below, before the update).
        accelerator.backward(loss)
        bad, signalled, out_of_time = agree(accelerator, not bool(torch.isfinite(loss.detach())), signalled,
                                            clock.out_of_time() and accelerator.sync_gradients)
        if bad:
            raise diverged(state, terms, parts.run_dir / CHECKPOINT_FILE)
        if accelerator.sync_gradients and config.grad_clip:
            accelerator.clip_grad_norm_(parts.module.parameters(), config.grad_clip)
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
    state.micro_step += 1
    state.batch_in_epoch += 1
    for name, value in terms.items():
        state.running[name] = state.running.get(name, 0.0) + float(value.detach())
    state.running_count += 1
    return loss, signalled, out_of_time


@dataclass
class Prepared:
    """What Accelerate prepared for training: the model (wrapped for several processes, and not), the
    optimizer and its schedule, the moving average, the batches and this process's rows of each."""

    accelerator: object
    module: nn.Module
    unwrapped: nn.Module
    optimizer: object
    scheduler: object          # torch's LambdaLR over `schedule`
    schedule: WarmupCosine
    ema: object
    loader: object
    sampler: object
    rows: slice
    run_dir: Path


def prepare(build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig,
            ema_factory: Callable[[nn.Module], object], run_dir: Path, report_to: str | None = None) -> Prepared:
    from accelerate import Accelerator  # a second to import; `vaediff --help` must not pay it
    from accelerate.utils import DataLoaderConfiguration

    accelerator = Accelerator(
        cpu=force_cpu(), mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        step_scheduler_with_optimizer=False,  # we step it ourselves, once per optimizer step
        log_with=report_to, project_dir=str(run_dir / "logs") if report_to else None,
    )
    world, micro_batch = accelerator.num_processes, config.batch_size // config.grad_accum
    if micro_batch % world:
        raise ConfigError(f"batch size {config.batch_size} / grad-accum {config.grad_accum} = {micro_batch} "
                          f"images per micro-batch cannot be split evenly between {world} processes")
    torch.manual_seed(config.seed)  # the initial weights are the only draws from the global generator
    module = build_model()
    loader = batch_loader(dataset.train, micro_batch, seed=config.seed, shuffle=True, drop_last=True)
    sampler = loader.batch_sampler
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    schedule = WarmupCosine(config.warmup_steps, config.lr_schedule == "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(module)
    ema = ema_factory(unwrapped) if config.ema_decay else None
    shard = micro_batch // world
    rows = slice(shard * accelerator.process_index, shard * (accelerator.process_index + 1))
    return Prepared(accelerator, module, unwrapped, optimizer, scheduler, schedule, ema, loader, sampler, rows, run_dir)


class Clock:
    """Training time over all sessions of a run, the --minutes budget, and the schedule's horizon."""

    def __init__(self, config: TrainConfig, state: TrainState, count_plan: int | None, schedule: WarmupCosine):
        self.config, self.count_plan, self.schedule = config, count_plan, schedule
        self.budget_s = config.minutes * 60 if config.minutes is not None else math.inf
        self.started, self.elapsed_before = time.perf_counter(), state.elapsed_s
        self.probe: tuple[int, float] | None = None

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.budget_s

    def fix_horizon(self, state: TrainState, bar) -> None:
        """With --minutes, the cosine schedule needs a length: measure 15 steps (after 5 warm-up steps)
        and plan as many as fit in the budget. Done once; the plan is kept in the checkpoint."""
        if self.config.minutes is None or state.planned_steps != self.count_plan:
            return
        if self.probe is None:
            if state.step >= 5:
                self.probe = (state.step, self.elapsed())
            return
        if state.step == self.probe[0] + 15:
            seconds_per_step = (self.elapsed() - self.probe[1]) / 15
            state.planned_steps = plan_for_time_left(state.step, self.elapsed(), seconds_per_step, self.config,
                                                     self.count_plan)
            self.schedule.total = state.planned_steps
            bar.total = state.planned_steps
            bar.refresh()


class Checkpointer:
    """The run's checkpoint: the state a run starts from (fresh, or the checkpoint's), when the next is due,
    and writing one (resume state and exported weights, both atomic, by the main process only)."""

    def __init__(self, run_dir: Path, parts: Prepared, export: Export | None, extra_state: nn.Module | None,
                 config: TrainConfig):
        self.run_dir, self.parts, self.export, self.extra_state, self.config = run_dir, parts, export, extra_state, config
        self.path = run_dir / CHECKPOINT_FILE
        if is_main_process():
            remove_stale_files(run_dir)  # half-written files of a killed session are never read
        wait_for_everyone()
        self.last = (0, time.perf_counter())

    def starting_state(self, resume: bool, count_plan: int | None) -> TrainState:
        """A fresh state, or the checkpoint's. With --resume and no checkpoint yet (stopped before the
        first one), training starts from step 0; limits other than the checkpoint's give a new horizon."""
        state, config, parts = TrainState(), self.config, self.parts
        if resume and self.path.is_file():
            state = load_checkpoint(self.path, parts.unwrapped, parts.optimizer, parts.scheduler, parts.ema,
                                    self.extra_state)
            state.finished = False
        elif resume and is_main_process():
            notice(f"{self.run_dir}: no checkpoint yet (the run stopped before its first one); starting from step 0")
        limits = training_limits(config)
        if state.limits is not None and state.limits != limits:
            state.planned_steps = count_plan
            if config.minutes is not None and state.step > 0 and state.elapsed_s > 0:
                state.planned_steps = plan_for_time_left(state.step, state.elapsed_s, state.elapsed_s / state.step,
                                                         config, count_plan)
        elif state.planned_steps is None or config.minutes is None:
            state.planned_steps = count_plan
        parts.schedule.total = state.planned_steps
        if state.planned_steps is not None and state.step >= state.planned_steps:
            raise AlreadyFinished(f"{self.run_dir} is already at step {state.step} ({describe_limits(limits)} is "
                                  f"{state.planned_steps} steps): nothing to do, nothing changed")
        if config.minutes is not None and state.elapsed_s >= config.minutes * 60:
            raise AlreadyFinished(f"{self.run_dir} has already trained {state.elapsed_s / 60:.2f} minutes "
                                  f"({describe_limits(limits)}): nothing to do, nothing changed")
        state.limits = limits
        self.last = (state.step, time.perf_counter())
        return state

    def due(self, state: TrainState) -> bool:
        if self.config.checkpoint_every:
            return state.step - self.last[0] >= self.config.checkpoint_every
        return time.perf_counter() - self.last[1] >= self.config.checkpoint_minutes * 60

    def interrupted(self, state: TrainState, elapsed_s: float, received: int) -> Interrupted:
        """Save a checkpoint for a stop signal, and the exception that says how to continue."""
        self.save(state, elapsed_s)
        return Interrupted(f"{signal.Signals(received).name} at step {state.step}: checkpoint saved in {self.path}; "
                           f"continue with the same command plus --resume", received)

    def save(self, state: TrainState, elapsed_s: float) -> None:
        parts = self.parts
        state.elapsed_s = elapsed_s
        if is_main_process():
            save_checkpoint(self.path, parts.unwrapped, parts.optimizer, parts.scheduler, parts.ema, state,
                            self.extra_state)
            export_weights(self.export, parts.unwrapped, parts.ema, self.run_dir)
        parts.accelerator.wait_for_everyone()
        self.last = (state.step, time.perf_counter())


def diverged(state: TrainState, terms: dict[str, torch.Tensor], checkpoint_path: Path) -> TrainingDiverged:
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    kept = (f"the last good checkpoint {checkpoint_path} is kept" if checkpoint_path.is_file()
            else "no checkpoint had been written yet")
    return TrainingDiverged(f"loss is not finite at step {state.step + 1} (epoch {state.epoch + 1}; {values}); "
                            f"{kept}; try a lower --lr")


def default_ema(config: TrainConfig) -> Callable[[nn.Module], object]:
    def make(module: nn.Module):
        from diffusers.training_utils import EMAModel  # diffusers' import is slow; only runs with EMA pay it

        # EMA warm-up (decay grows as 1 - (1 + step)^-2/3) keeps short CPU runs from averaging in
        # their random initial weights; the cap is the configured decay.
        return EMAModel(module.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=2 / 3,
                        foreach=True)

    return make
