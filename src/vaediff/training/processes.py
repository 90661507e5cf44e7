"""Processes and signals: under `accelerate launch` or `torchrun` every process runs the same code and
only the main one writes; SIGINT/SIGTERM are remembered so that the loop can finish its step and save."""

from __future__ import annotations

import os
import signal

import torch


def force_cpu() -> bool:
    """Several processes (torchrun, accelerate launch) on a machine without a GPU: Accelerate must be
    told `cpu=True` to join them over gloo; otherwise each process would train alone."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _process_state():
    from accelerate import PartialState  # a second to import; `vaediff --help` must not pay it

    return PartialState(cpu=force_cpu())


def is_main_process() -> bool:
    return _process_state().is_main_process


def wait_for_everyone() -> None:
    _process_state().wait_for_everyone()


def agree(accelerator, *flags: bool) -> tuple[bool, ...]:
    """Every process must take the same decision to stop, or the others would wait forever: a flag
    raised by any process is raised for all."""
    if accelerator.num_processes == 1:
        return flags
    tensor = torch.tensor(flags, dtype=torch.float32, device=accelerator.device)
    return tuple(bool(v > 0) for v in accelerator.reduce(tensor, reduction="sum").tolist())


class StopSignals:
    """Remember SIGINT/SIGTERM instead of dying mid-step; a second Ctrl-C exits at once."""

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
