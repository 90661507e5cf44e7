"""The one place every stage asks which device to compute on: training (Accelerate's device), sampling,
the evaluator's and Inception's features, the web demo.

The choice is, in order: the command's `--device` (or `use_device` from Python), the environment variable
VAEDIFF_DEVICE, else the GPU where there is one, else the CPU. A device that is not there is one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vaediff.errors import ConfigError

ENVIRONMENT = "VAEDIFF_DEVICE"
_chosen: list[str | None] = [None]  # --device of the command that runs (use_device)


def compute_device(requested: str | None = None) -> torch.device:
    """The device to compute on: `requested`, else the one `use_device` set, else $VAEDIFF_DEVICE, else
    cuda when available, else cpu; checked (one line for a device this machine does not have)."""
    name = requested or _chosen[0] or os.environ.get(ENVIRONMENT)
    if not name:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r}: not a device name; give cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count or (device.index or 0) >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''}; "
                              "give cpu" + (f" or cuda:0..{count - 1}" if count else ""))
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: Apple's MPS is not available here; give cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: vaediff computes on cpu, cuda or mps")
    return device


@contextmanager
def use_device(name: str | None) -> Iterator[torch.device]:
    """Within the block, every stage computes on `name` (None: the default choice); checked first."""
    device = compute_device(name)
    previous, _chosen[0] = _chosen[0], name
    try:
        yield device
    finally:
        _chosen[0] = previous


def describe(device: torch.device) -> str:
    """What metrics.json says measured its speeds: the GPU's name, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
