"""Which precision a model trains in on this chip: measured, not guessed from CPU flags.

bf16 autocast pays on one model and costs on another on the same CPU (the fast UNet trained 1.36-1.47x
faster with it on a Zen 4 EPYC, the seed UNet 0.80x), so `--precision auto` times a few training steps of
this model in fp32 and in bf16 before training, and keeps fp32 unless bf16 is clearly faster. Only a chip
that computes bf16 at all (AMX or AVX512-BF16 on a CPU, a CUDA device that supports it) is probed; elsewhere
auto is fp32 and costs nothing. A decision is cached per host and model, so later runs reuse it.
Weights, the moving average and the optimizer state stay fp32 whatever is chosen: autocast only changes
the precision of the matrix products inside the step.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vaediff import devices
from vaediff.errors import ConfigError
from vaediff.runs import atomic_write_json, default_cache_dir

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # Accelerate's mixed_precision values
CLEARLY_FASTER = 1.10  # bf16 is taken when its steps take at most 1/1.10 of fp32's (timing noise is ~5%)
CACHE_FILE = "precision.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """What was asked, what was chosen, the measured fp32/bf16 step-time ratio (None without a probe) and why."""

    asked: str
    chosen: str
    ratio: float | None
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def training_device() -> torch.device:
    """The device training runs on (devices.compute_device: --device, else the GPU where there is one)."""
    return devices.compute_device()


def check_precision(precision: str, device: torch.device) -> None:
    """One line for a precision this device cannot train in."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 needs a GPU (fp16 autocast with loss scaling is a CUDA feature); on "
                          "a CPU use bf16 or auto")


def bf16_capability(device: torch.device) -> str | None:
    """What lets this device compute bf16 fast (a phrase for the record), or None."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} supports bf16" if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return "the CPU has AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return "the CPU has AVX512-BF16"
    return None


def decide(capability: str | None, fp32_s: float | None, bf16_s: float | None) -> PrecisionChoice:
    """`auto`'s rule, from the chip's capability and the measured seconds per step (pure: tests fake both)."""
    if capability is None:
        return PrecisionChoice("auto", "fp32", None, "this device has no fast bf16: fp32, not probed")
    ratio = fp32_s / bf16_s
    if ratio >= CLEARLY_FASTER:
        return PrecisionChoice("auto", "bf16", ratio, f"{capability}; bf16 steps measured {ratio:.2f}x faster")
    return PrecisionChoice("auto", "fp32", ratio, f"{capability}, but bf16 steps measured {ratio:.2f}x fp32's "
                                                  f"(under {CLEARLY_FASTER:.2f}x): fp32 kept")


def time_steps(step: Callable[[], None], device: torch.device, precision: str, steps: int = 3,
               warmup: int = 1) -> float:
    """Seconds per call of `step` under `precision` autocast (fp32: none): `warmup` untimed calls first."""
    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            step()

    for _ in range(warmup):
        run()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_key(device: torch.device) -> str:
    """The host as the timing depends on it: the chip, its threads and torch."""
    chip = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return f"{chip}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_precision(asked: str, device: torch.device, model_key: str, step: Callable[[], None] | None,
                     cache_dir: Path | None) -> PrecisionChoice:
    """The precision to train (or sample) in: `asked` itself unless it is `auto`; for `auto`, the cached
    decision for this host and `model_key` (the model's configuration and batch, or what is sampled), else
    `decide` on timings of `step` (one training step of the model, or a small draw; fp32 and bf16 in
    alternate rounds so a slow spell hits both)."""
    check_precision(asked, device)
    if asked != "auto":
        return PrecisionChoice(asked, asked, None, "as asked")
    capability = bf16_capability(device)
    if capability is None or step is None:
        return decide(None, None, None)
    key = hashlib.sha1(f"{host_key(device)}|{model_key}".encode()).hexdigest()
    cache = _read_cache(cache_dir)
    if key in cache:
        return PrecisionChoice(**{**cache[key], "why": cache[key]["why"] + " (cached for this host and model)"})
    fp32_s, bf16_s = [], []
    for _ in range(2):
        fp32_s.append(time_steps(step, device, "fp32"))
        bf16_s.append(time_steps(step, device, "bf16"))
    choice = decide(capability, min(fp32_s), min(bf16_s))
    _write_cache(cache_dir, {**cache, key: choice.to_dict()})
    return choice


def _cache_path(cache_dir: Path | None) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / CACHE_FILE


def _read_cache(cache_dir: Path | None) -> dict:
    try:
        return dict(json.loads(_cache_path(cache_dir).read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or damaged: measured again
        return {}


def _write_cache(cache_dir: Path | None, cache: dict) -> None:
    path = _cache_path(cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache)
    except OSError:  # a read-only cache costs a probe next time, nothing else
        pass
