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

import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vaediff.console import notice, progress_bar
from vaediff.data import Dataset, ImageSplit, batch_loader
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
from vaediff.training.precision import (
    ACCELERATE_NAMES,
    PrecisionChoice,
    check_precision,
    choose_precision,
    training_device,
)
from vaediff.training.processes import StopSignals, agree, force_cpu, is_main_process, wait_for_everyone
from vaediff.training.trackers import Tracking


def train(objective: Objective, build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig,
          run_dir: str | Path, resume: bool = False, export: Export | None = None,
          ema_factory: Callable[[nn.Module], object] | None = None, title: str = "training",
          plot_every_s: float = 10.0, progress: bool = True, extras: Extras | None = None) -> TrainState:
    """Train the model `build_model()` makes on `dataset.train` with `objective`, writing loss.csv/png and
    checkpoints into run_dir; `export(module, run_dir)` writes the weights at every checkpoint and at the
    end (the EMA average when `config.ema_decay` is set). The model is built after seeding, so its initial
    weights follow the seed. `extras`: the family's hook and state, the trackers (Extras). Returns the final state."""
    run_dir, extras = Path(run_dir), extras or Extras()
    config = settle_precision(config, objective, build_model, dataset, extras.on_precision)
    parts = prepare(build_model, dataset, config, ema_factory or default_ema(config), run_dir, extras.report_to)
    count_plan = plan_from_counts(len(dataset.train), config)  # the steps epochs or --max-steps give
    extra = extras.extra_state(parts.unwrapped).to(parts.accelerator.device) if extras.extra_state else None
    checkpoint = Checkpointer(run_dir, parts, export, extra, config)
    state = checkpoint.starting_state(resume, count_plan)
    clock = Clock(config, state, count_plan, parts.schedule)
    tracking = Tracking(parts.accelerator, extras.hyperparameters, extras.preview, clock.elapsed)
    log = LossLog(run_dir, objective, parts.unwrapped, dataset.test, config, parts.accelerator.device,
                  steps_per_epoch(len(dataset.train), config), clock.elapsed, title, plot_every_s, is_main_process(),
                  on_row=lambda state: tracking.log_row(state, parts.optimizer, parts.ema, config.batch_size),
                  before_row=lambda state: settle(parts, state))
    log.write_files(state, write_plot=True)  # rows a killed session wrote past its checkpoint go
    bar = LossBar(title, state, shown=is_main_process() and progress)
    parts.module.train()
    with StopSignals() as signals:
        stop = None
        while stop is None:
            for images, labels in epoch_batches(parts, state):
                loss = forward_backward(parts, objective, config, state, images, labels)
                if not parts.accelerator.sync_gradients:
                    continue  # a micro-batch of gradient accumulation: no optimizer step yet
                finish_optimizer_step(parts, state, extras.after_step, extra)
                bar.step(loss, state.epoch)
                clock.fix_horizon(state, bar.bar, parts.accelerator)  # --minutes: the schedule's length
                signalled, out_of_time, row_due, checkpoint_due = agreed_decisions(
                    parts, state, signals.received is not None, clock.out_of_time(), log.due(), checkpoint.due(state))
                stop = "signal" if signalled else "time" if out_of_time else "done" if reached_plan(state) else None
                if stop:
                    break
                if row_due:
                    log.record(state, write_plot=False)
                if checkpoint_due:
                    checkpoint.save(state, clock.elapsed())
                    if tracking.preview_due():  # a sample grid from the weights just exported
                        tracking.log_preview(state.step)
            else:  # the epoch ran to its end
                state.epoch += 1
                state.batch_in_epoch = 0
                if agreed_epoch_row(parts, state, log.cheap()):
                    log.record(state, write_plot=False)
        bar.bar.close()
        raise_if_any_diverged(parts, state)  # several processes end together, or stop together on a bad loss
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
    on_precision: Callable[[PrecisionChoice], None] | None = None  # records what --precision auto chose


def settle_precision(config: TrainConfig, objective: Objective, build_model: Callable[[], nn.Module],
                     dataset: Dataset, record: Callable[[PrecisionChoice], None] | None) -> TrainConfig:
    """The configuration with `--precision auto` resolved (precision.choose_precision: a probe of this
    model's training step on this device, cached per host and model) and the choice recorded; a concrete
    precision is only checked. Several processes do not probe (each would time its own share of the
    chip): auto is then fp32 unless this host's cache holds a decision for the model."""
    device = training_device()
    if config.precision != "auto":
        check_precision(config.precision, device)  # fp16 on a CPU: one line
        return config
    batch = min(config.batch_size // config.grad_accum, len(dataset.train))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's draws untouched
        module = build_model()
        model_key = f"{type(objective).__name__}|batch={batch}|{module!r}"
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        step = None if several else _probe_step(objective, module, dataset, batch, device)
        choice = choose_precision("auto", device, model_key, step, None)
    if record is not None and is_main_process():
        record(choice)
    return dataclasses.replace(config, precision=choice.chosen, mixed_precision=ACCELERATE_NAMES[choice.chosen])


def _probe_step(objective: Objective, module: nn.Module, dataset: Dataset, batch: int,
                device: torch.device) -> Callable[[], None]:
    """One training step (forward, backward, AdamW) of a fresh copy of the model on the first `batch`
    training images: what precision.time_steps times."""
    module = module.to(device).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, foreach=True)
    images = dataset.train.as_float(slice(0, batch)).to(device)
    labels = dataset.train.labels[:batch].to(device)

    def step() -> None:
        draw = BatchRandom(0, 0, batch, slice(0, batch), device)
        objective.losses(module, images, labels, draw)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


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
                     images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward, backward and (on the last micro-batch) the clipped optimizer step; returns the loss. Nothing
    here waits for the device: loss sums and a non-finite loss are kept on it until the next row or
    checkpoint (settle), and what to do after the step is decided by agreed_decisions."""
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
        # gradient all-reduce. Whether it was finite is checked at the next row or checkpoint (settle),
        # not here: reading it now would make the host wait for the device at every step.
        accelerator.backward(loss)
        if accelerator.sync_gradients and config.grad_clip:
            accelerator.clip_grad_norm_(parts.module.parameters(), config.grad_clip)
        parts.optimizer.step()  # a bad step's weights are never saved: settle raises before any checkpoint
        parts.optimizer.zero_grad(set_to_none=True)
    parts.pending.add(terms, state.step)
    state.micro_step += 1
    state.batch_in_epoch += 1
    return loss


class LossBar:
    """The progress bar, with the loss read from the device at most once a second (each read is a host
    sync) and only where the bar is shown."""

    def __init__(self, title: str, state: TrainState, shown: bool):
        self.bar = progress_bar(total=state.planned_steps, initial=state.step, desc=title, unit="step", enabled=shown)
        self.shown, self.last = shown, -math.inf

    def step(self, loss: torch.Tensor, epoch: int) -> None:
        self.bar.update(1)
        if self.shown and time.perf_counter() - self.last >= 1.0:
            self.bar.set_postfix(loss=f"{float(loss.detach()):.4g}", epoch=epoch + 1, refresh=False)
            self.last = time.perf_counter()


class PendingLosses:
    """Loss sums, their count and the first non-finite loss since the last `settle`, kept on the device: the
    training step never waits for the device to read them. Sums are float64, added in step order, as the
    host's Python floats added them before (a resumed run's loss.csv matches an unbroken one's)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.first_bad: torch.Tensor | None = None   # (1 + the step, its loss terms) of the first bad loss
        self.bad_terms: torch.Tensor | None = None
        self.names: list[str] = []

    def add(self, terms: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([value.detach().double() for value in terms.values()])
        for name, value in zip(terms, values, strict=True):
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.long, device=values.device)
            self.bad_terms = torch.zeros_like(values)
        newly_bad = (self.first_bad == 0) & ~torch.isfinite(values[0])  # terms["loss"] comes first
        self.first_bad = torch.where(newly_bad, step + 1, self.first_bad)
        self.bad_terms = torch.where(newly_bad, values, self.bad_terms)
        self.names = list(terms)

    def bad_step(self) -> int:
        """The step whose loss was not finite first (0: none). Reads the device: a host sync."""
        return int(self.first_bad) if self.first_bad is not None else 0


def settle(parts: Prepared, state: TrainState) -> None:
    """Move the device's loss sums into the state (one host sync) and raise for a non-finite loss, before a
    row, a checkpoint or the end: the weights of a bad step are never written."""
    pending = parts.pending
    bad = pending.bad_step()
    if bad:
        raise diverged(state, dict(zip(pending.names, pending.bad_terms, strict=True)),
                       parts.run_dir / CHECKPOINT_FILE, bad)
    for name, total in pending.sums.items():
        state.running[name] = state.running.get(name, 0.0) + float(total)
    state.running_count += pending.count
    parts.pending = PendingLosses()


AGREE_EVERY = 8  # several processes agree on what their clocks decide every 8 optimizer steps


def reached_plan(state: TrainState) -> bool:
    return state.planned_steps is not None and state.step >= state.planned_steps


def agreed_decisions(parts: Prepared, state: TrainState, signalled: bool, out_of_time: bool, row_due: bool,
                     checkpoint_due: bool) -> tuple[bool, bool, bool, bool]:
    """What to do after this optimizer step: (stop for a signal, stop for time, write a row, checkpoint).

    One process decides alone, from its clock and signals, reading nothing from the device. Several must
    decide alike (a checkpoint waits for every process; one that stops leaves the others waiting for its
    gradients), yet their clocks and signals differ: every AGREE_EVERY optimizer steps, one all-reduce of the
    flags and of a non-finite loss on any process (then all stop on it together) is the only host sync;
    between those steps only what the step count decides happens (--checkpoint-every, the planned end)."""
    if parts.accelerator.num_processes == 1:
        return signalled, out_of_time, row_due, checkpoint_due
    by_steps = checkpoint_due and bool(parts.checkpoint_every)  # the same on every process
    if state.step % AGREE_EVERY and not by_steps:  # a checkpoint counted in steps agrees on a bad loss first
        return False, False, False, False
    bad, signalled, out_of_time, row_due, checkpoint_due = agree(
        parts.accelerator, parts.pending.bad_step() > 0, signalled, out_of_time, row_due, checkpoint_due)
    if bad:
        _raise_diverged(parts, state)
    return signalled, out_of_time, row_due, checkpoint_due or by_steps


def agreed_epoch_row(parts: Prepared, state: TrainState, cheap: bool) -> bool:
    """Whether to write a row at the end of an epoch (history.LossLog.cheap). Several processes end their
    epochs at the same step but time them apart: one all-reduce of the flag and of a non-finite loss."""
    if parts.accelerator.num_processes == 1:
        return cheap
    bad, cheap = agree(parts.accelerator, parts.pending.bad_step() > 0, cheap)
    if bad:
        _raise_diverged(parts, state)
    return cheap


def raise_if_any_diverged(parts: Prepared, state: TrainState) -> None:
    """Several processes: a non-finite loss on any of them since the last agreement stops them all (one
    all-reduce), before the last row and checkpoint. One process: settle checks it there."""
    if parts.accelerator.num_processes > 1 and agree(parts.accelerator, parts.pending.bad_step() > 0)[0]:
        _raise_diverged(parts, state)


def _raise_diverged(parts: Prepared, state: TrainState) -> None:
    settle(parts, state)  # raises, with the step and the terms, on a process that saw the bad loss
    raise diverged(state, {}, parts.run_dir / CHECKPOINT_FILE, state.step, elsewhere=True)


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
    pending: PendingLosses = field(default_factory=PendingLosses)
    checkpoint_every: int = 0  # --checkpoint-every: checkpoints the step count decides, alike on every process


def prepare(build_model: Callable[[], nn.Module], dataset: Dataset, config: TrainConfig,
            ema_factory: Callable[[nn.Module], object], run_dir: Path, report_to: str | None = None) -> Prepared:
    from accelerate import Accelerator  # a second to import; `vaediff --help` must not pay it
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    # Accelerate keeps one precision per process; runs trained one after another in one process (a study,
    # where auto may choose differently per model) each need their own. The process group is kept.
    if AcceleratorState._shared_state.get("_mixed_precision", config.mixed_precision) != config.mixed_precision:
        AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=force_cpu() or training_device().type == "cpu", mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        step_scheduler_with_optimizer=False,  # we step it ourselves, once per optimizer step
        log_with=report_to, project_dir=str(run_dir / "logs") if report_to else None,
    )
    if accelerator.device.type == "cuda":  # fp32 matrix products in TF32 on tensor cores (torch's "high")
        torch.set_float32_matmul_precision("high")
    world, micro_batch = accelerator.num_processes, config.batch_size // config.grad_accum
    if micro_batch % world:
        raise ConfigError(f"batch size {config.batch_size} / grad-accum {config.grad_accum} = {micro_batch} "
                          f"images per micro-batch cannot be split evenly between {world} processes")
    torch.manual_seed(config.seed)  # the initial weights are the only draws from the global generator
    module = build_model()
    loader = batch_loader(training_images(dataset.train, accelerator.device), micro_batch, seed=config.seed,
                          shuffle=True, drop_last=True)
    sampler = loader.batch_sampler
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    schedule = WarmupCosine(config.warmup_steps, config.lr_schedule == "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(module)
    if config.compile:  # compiled on its first steps; the checkpoint and the EMA keep the plain module's names
        module = torch.compile(module)
    ema = ema_factory(unwrapped) if config.ema_decay else None
    shard = micro_batch // world
    rows = slice(shard * accelerator.process_index, shard * (accelerator.process_index + 1))
    return Prepared(accelerator, module, unwrapped, optimizer, scheduler, schedule, ema, loader, sampler, rows, run_dir,
                    checkpoint_every=config.checkpoint_every)


DEVICE_DATA_SHARE = 0.25  # the training images move to a GPU when they take at most this share of its free memory


def training_images(split: ImageSplit, device: torch.device, free_bytes: int | None = None) -> ImageSplit:
    """The training split where its batches are cut: on a GPU, the uint8 images themselves when they fit
    (DEVICE_DATA_SHARE of the free memory; `free_bytes` overrides the measurement, for tests), so no step
    copies a batch from the host; elsewhere, and when they do not fit, where they are."""
    if device.type != "cuda":
        return split
    free = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
    return split.to(device) if split.nbytes <= DEVICE_DATA_SHARE * free else split


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

    def fix_horizon(self, state: TrainState, bar, accelerator) -> None:
        """With --minutes, the cosine schedule needs a length: measure 15 steps (after 5 warm-up steps)
        and plan as many as fit in the budget. Done once; the plan is kept in the checkpoint. Several
        processes take the first process's plan (one broadcast): their clocks differ, and a schedule of
        another length would give each process another learning rate."""
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
            if accelerator.num_processes > 1:
                from accelerate.utils import broadcast

                planned = torch.tensor([state.planned_steps], device=accelerator.device)
                state.planned_steps = int(broadcast(planned, from_process=0).item())
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
        settle(parts, state)  # the device's loss sums into the state; a non-finite loss raises, unsaved
        state.elapsed_s = elapsed_s
        if is_main_process():
            save_checkpoint(self.path, parts.unwrapped, parts.optimizer, parts.scheduler, parts.ema, state,
                            self.extra_state)
            export_weights(self.export, parts.unwrapped, parts.ema, self.run_dir)
        parts.accelerator.wait_for_everyone()
        self.last = (state.step, time.perf_counter())


def diverged(state: TrainState, terms: dict[str, torch.Tensor], checkpoint_path: Path, step: int,
             elsewhere: bool = False) -> TrainingDiverged:
    """`elsewhere`: another process saw the bad loss, at `step` or a few steps before."""
    values = "; " + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items()) if terms else ""
    kept = (f"the last good checkpoint {checkpoint_path} is kept" if checkpoint_path.is_file()
            else "no checkpoint had been written yet")
    where = f"on another process by step {step}" if elsewhere else f"at step {step}"
    return TrainingDiverged(f"loss is not finite {where}{values}; {kept}; try a lower --lr")


def default_ema(config: TrainConfig) -> Callable[[nn.Module], object]:
    def make(module: nn.Module):
        from diffusers.training_utils import EMAModel  # diffusers' import is slow; only runs with EMA pay it

        # EMA warm-up (decay grows as 1 - (1 + step)^-2/3) keeps short CPU runs from averaging in
        # their random initial weights; the cap is the configured decay.
        return EMAModel(module.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=2 / 3,
                        foreach=True)

    return make
