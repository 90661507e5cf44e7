"""Output directories and crash-safe files.

Every file vaediff writes goes to a temporary file in the same directory, is flushed to disk, and is
renamed into place, so a kill at any instant leaves either the previous complete file or the new one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaediff import __version__
from vaediff.checks import (
    check_apart,
    existing_directory,
    output_directory,
    writable_file_target,
    written_kind,
)
from vaediff.constants import CONFIG_FILE
from vaediff.errors import ConfigError, RunError

_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers only ever see the old or the new complete file.

    A symbolic link is written through (its target gets the new file, the link stays); a path that is
    not a regular file (a device, a socket, a directory) is refused: the rename would replace it."""
    path = writable_file_target(Path(path))
    existed = path.exists()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RunError(f"could not write {path}: {(exc.strerror or str(exc)).lower()}") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        detail = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        kept = "the previous version of the file is intact" if existed else "nothing was written"
        raise RunError(f"could not write {path}: {detail}; {kept}") from None
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (POSIX; a no-op elsewhere).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def default_cache_dir() -> Path:
    """vaediff's user cache (evaluators, real features, curves, precision decisions): $VAEDIFF_CACHE_DIR,
    else ~/.cache/vaediff."""
    return Path(os.environ.get("VAEDIFF_CACHE_DIR", Path.home() / ".cache" / "vaediff"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically. Tensors are made contiguous CPU copies first."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata=metadata))


def atomic_savefig(figure, path: str | Path, **kwargs) -> None:
    """Save a matplotlib figure atomically (rendered to memory first)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_pretrained(component, target: Path) -> None:
    """diffusers' save_pretrained into a scratch directory beside `target`, then each file flushed to disk
    and renamed into place: a kill leaves every file either old and complete or new and complete."""
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        component.save_pretrained(scratch)
        for path in scratch.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(path, target / path.name)
    except OSError as exc:
        raise RunError(f"could not write {target}: {exc.strerror or exc}; the previous files are intact") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing or truncated file into one clear RunError."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable weights file ({str(exc).splitlines()[0]}); is it truncated?") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------------------
# Output directories


def prepare_output_dir(path: str | Path, overwrite: bool = False, keep: bool = False, kind: str | None = None,
                       inputs: Iterable[tuple[str, Path]] = (), check_only: bool = False) -> Path:
    """Create an output directory, refusing to clobber one that is not empty (`check_only`: refuse, but
    change nothing yet: a command that measures before it writes says so at once).

    The seed project's rule: an existing, non-empty directory is an error unless `overwrite` is given.
    With `overwrite`, the old contents are deleted, but only if a vaediff config.json says that vaediff
    wrote them, and (given `kind`, the kind of directory this command writes: "train", "compare", ...)
    only a directory of that kind: `compare --overwrite` never deletes a training run or a study. With
    `keep` (used by --resume), the directory is used as it is. `inputs` are what the command reads,
    (description, path) pairs: the output may neither be, hold, nor lie inside any of them (check_apart).
    """
    path = output_directory(path)
    if path.is_symlink():  # replace what the link points to, and keep the link
        path = Path(os.path.realpath(path))
    check_apart(path, inputs)
    if path.is_dir() and any(path.iterdir()) and not keep:
        if not overwrite:
            raise RunError(f"{path} exists and is not empty; pass --overwrite to replace it")
        written = written_kind(path)
        if written is None:
            raise RunError(f"{path} is not empty and has no vaediff {CONFIG_FILE}; refusing to delete it")
        if kind is not None and written != kind:
            raise RunError(f"{path} holds a vaediff '{written}' directory; --overwrite replaces only what this "
                           f"command writes (a '{kind}' directory): choose another --out")
        check_nothing_foreign(path)
        if not check_only:
            shutil.rmtree(path)
    if not check_only:
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_nothing_foreign(path: Path) -> None:
    """Refuse to delete `path` when it holds another vaediff output that its own config.json does not list
    under "outputs" (a study lists its runs): a run trained into a study folder by hand is not the study's."""
    own = set(read_json(path / CONFIG_FILE).get("outputs", []))
    for config in sorted(path.rglob(CONFIG_FILE)):
        inner = config.parent
        if inner != path and written_kind(inner) and inner.relative_to(path).parts[0] not in own:
            raise RunError(f"{path} holds the vaediff '{written_kind(inner)}' directory {inner}, which is not its "
                           f"own: --overwrite would delete it; move it out first, or choose another --out")


def command_line() -> str:
    """The command as a shell would take it again (arguments quoted where they need it)."""
    return shlex.join(["vaediff", *sys.argv[1:]]) if sys.argv else "vaediff"


def write_run_config(directory: str | Path, kind: str, settings: dict[str, Any], **sections: Any) -> dict:
    """Write DIR/config.json: what made this directory, with the package version and the full settings."""
    config = {
        "vaediff_version": __version__,
        "kind": kind,
        "command": command_line(),
        "settings": settings,
        **sections,
    }
    atomic_write_json(Path(directory) / CONFIG_FILE, config)
    return config


# ---------------------------------------------------------------------------------------------------------
# Frozen config dataclasses <-> JSON, strictly


def config_to_dict(config: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    return value


def config_from_dict(cls: type, data: Any, source: str = "config") -> Any:
    """Build a frozen config dataclass from JSON data, refusing unknown keys, wrong types and the values its
    __post_init__ refuses, each in one line that names the key (and `source`, where the data came from)."""
    if not isinstance(data, dict):
        kind = {type(None): "null", bool: "true/false", int: "a number", float: "a number", str: "a string",
                list: "a list", tuple: "a list"}.get(type(data), type(data).__name__)
        raise ConfigError(f"{source} must be a JSON object of {cls.__name__} fields, got {kind}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _coerce(value, hints[name], f"{source}: key {name!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in args if option is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # `float | None`: what the float needs is the precise message
            raise errors[0] from None
        raise ConfigError(f"{where} has the wrong type ({type(value).__name__})")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item_hint = args[0] if args else Any
        return tuple(_coerce(v, item_hint, where) for v in value)
    if origin is typing.Literal:
        if not isinstance(value, str | int | float | bool | None) or value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        # JSON's NaN and Infinity parse in Python (and 1e999 is inf); a config.json must not hold them
        if not -sys.float_info.max <= value <= sys.float_info.max:
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")



# ---------------------------------------------------------------------------------------------------------
# Reading runs back


def read_run_config(run_dir: str | Path) -> dict:
    """config.json of a training run, with precise errors for every way a directory can fail to be one."""
    run_dir = existing_directory(run_dir, "run directory")
    if not any(run_dir.iterdir()):
        raise RunError(f"{run_dir}: empty directory, not a vaediff run")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: no {CONFIG_FILE}; not a vaediff run, or one that was never started")
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict) or "vaediff_version" not in config:
        raise RunError(f"{run_dir / CONFIG_FILE}: not written by vaediff")
    if config.get("kind") != "train":
        raise RunError(f"{run_dir}: a '{config.get('kind')}' output directory, not a training run")
    for key, kind in (("model_type", str), ("settings", dict), ("model", dict), ("train", dict)):
        if not isinstance(config.get(key), kind):
            found = "no" if key not in config else f"a {type(config[key]).__name__} for"
            raise RunError(f"{run_dir / CONFIG_FILE}: {found} '{key}' (expected a JSON "
                           f"{'object' if kind is dict else 'string'}); the file was edited or is not a run's")
    return config


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """load_state_dict that names the first mismatch between a weights file and the model its config builds."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise RunError(f"{source}: does not match its config: tensor {missing[0]!r} is missing "
                       f"({len(missing)} missing in all)")
    if unexpected:
        raise RunError(f"{source}: does not match its config: unexpected tensor {unexpected[0]!r}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise RunError(f"{source}: does not match its config: {name!r} has shape {tuple(tensor.shape)} "
                           f"in the file but {tuple(expected[name].shape)} in the model")
    module.load_state_dict(tensors)


def read_history(run_dir: Path) -> list[dict]:
    """The rows of a run's loss.csv (step, elapsed_s and the loss terms) as numbers; [] when there is none."""
    path = run_dir / "loss.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
