"""The checkpoint format: one safetensors file with tensors for weights, optimizer and EMA, and JSON
metadata for everything else (counters, history, schedule), written atomically. Also the export of the
model's weights, from the EMA average when there is one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from vaediff.errors import RunError
from vaediff.runs import atomic_save_safetensors, load_safetensors
from vaediff.training.config import TrainState

CHECKPOINT_FILE = "resume.safetensors"
Export = Callable[[nn.Module, Path], None]  # writes a model's weights into a run directory


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


def save_checkpoint(path: Path, module: nn.Module, optimizer, scheduler, ema, state: TrainState,
                    extra_state: nn.Module | None = None) -> None:
    """`extra_state`: a family's own module (a target network, a cache), saved under "extra."."""
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if extra_state is not None:
        tensors.update({f"extra.{k}": v.detach().contiguous() for k, v in extra_state.state_dict().items()})
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


def load_checkpoint(path: Path, module: nn.Module, optimizer, scheduler, ema,
                    extra_state: nn.Module | None = None) -> TrainState:
    tensors = load_safetensors(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    try:
        state = TrainState(**json.loads(metadata["state"]))
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if extra_state is not None:
            extra_state.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
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


def export_weights(export: Export | None, module: nn.Module, ema, run_dir: Path) -> None:
    """Write the model's weights with `export`: the EMA average when there is one, else the live weights."""
    if export is None:
        return
    if ema is None:
        export(module, run_dir)
        return
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        export(module, run_dir)
    finally:
        ema.restore(module.parameters())


def remove_stale_files(run_dir: Path) -> None:
    """Half-written files of a killed run (`.NAME.tmp`) are never read; remove them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
