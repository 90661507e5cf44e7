"""What every model config is checked against before a network is built or a run is written: sizes within
sane bounds, the fields that follow the data, and a dry build on PyTorch's meta device (shapes only, no
memory) that turns whatever the network library refuses into one line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from vaediff.checks import check_fits_in_memory
from vaediff.errors import ConfigError
from vaediff.runs import config_from_dict

MAX_WIDTH = 8192                 # units or channels of one layer (the seed's VAE has 400, the fast UNet 64)
MAX_LEVELS = 6                   # resolutions of a UNet: a 64-pixel image halved 5 times is 2 pixels
MAX_LAYERS_PER_BLOCK = 8         # the presets use 1 or 2
MAX_TRAIN_TIMESTEPS = 10_000     # the noise schedule's length (DDPM's 1,000, ten times over)
MAX_PARAMETERS = 1_000_000_000   # 4 GB of float32 weights, 16 GB with gradients and Adam's moments


def check_range(name: str, value: float, low: float, high: float) -> None:
    """ValueError naming `name` unless low <= value <= high (NaN fails too)."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:,} and {high:,}, got {value:,}")


def check_widths(name: str, values: tuple[int, ...], groups: int) -> None:
    """Channel counts of GroupNorm'd blocks: each in 1..MAX_WIDTH and divisible by `groups` (torch's
    GroupNorm refuses anything else)."""
    for value in values:
        check_range(f"each of {name}", value, 1, MAX_WIDTH)
        if value % groups:
            raise ValueError(f"{name} must be multiples of norm_num_groups ({groups}), got {list(values)}")


def config_section(overrides: dict, key: str, cls: type, where: str) -> dict:
    """overrides[key], a JSON object of `cls` fields ({} when absent); anything else is refused in one line
    that names the key and what it got (config_from_dict words it, as for every nested config)."""
    value = overrides.get(key, {})
    if not isinstance(value, dict):
        config_from_dict(cls, value, f"{where}: key {key!r}")  # raises
    return value


def with_data_fields(overrides: dict, data: dict, where: str) -> dict:
    """`overrides` with the fields that follow the data (image size, channels, classes): a model is built
    for its data, so another value given for one of them is refused rather than trained into a crash."""
    for key, value in data.items():
        if key in overrides and overrides[key] != value:
            raise ConfigError(f"{where}: {key!r} follows the data and model type ({value!r} here); leave it "
                              f"out (got {overrides[key]!r})")
    return {**overrides, **data}


def dry_build(build: Callable[[], nn.Module], where: str, run: Callable[[nn.Module], object] | None = None) -> int:
    """Build a network on the meta device and (with `run`) pass a dummy batch through it: any error of the
    network library becomes one ConfigError line. A network too large to train is refused before it runs.
    Returns its number of parameters."""
    try:
        with warnings.catch_warnings(), torch.device("meta"), torch.no_grad():
            warnings.simplefilter("ignore")
            module = build()
            count = sum(p.numel() for p in module.parameters())
            check_parameters(count, where)
            if run is not None:
                run(module)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the library refuses, said in one line
        detail = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"{where}: the network cannot be built: {detail}") from None
    return count


def check_parameters(count: int, where: str) -> None:
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{where}: the network would have {count:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} allowed; make it smaller")
    check_fits_in_memory(count, 4, f"{where}: the network's float32 parameters")
