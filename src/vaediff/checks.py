"""Checks of what a user gives, shared by the command line, the web demo and the library: counts with an
upper bound, and paths, whose operating-system errors become one line that names the path.

A count far too large must fail at once, not after an hour of sampling or when memory runs out; a path
that cannot be written must fail before any work is done, not at the end of it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path

from vaediff.constants import CONFIG_FILE, DATASETS
from vaediff.errors import ConfigError, RunError

MAX_GRID_IMAGES = 10_000         # one PNG grid: 100 x 100 images
MAX_EVAL_SAMPLES = 1_000_000     # samples drawn by `evaluate` (FID papers use 50,000)
# ... and at least: PRDC's k-th neighbours (k <= 5), a covariance, and a bootstrap whose resamples differ
# (at 10 samples a percentile interval for recall ran from 0.745 to 1.145 and missed its estimate)
MIN_EVAL_SAMPLES = 20
MAX_IW_SAMPLES = 100_000         # importance samples per test image for the VAE likelihood bound
MAX_SAMPLING_STEPS = 1000        # the noise schedule's length: no sampler can take more steps


def check_count(value: int, name: str, maximum: int, minimum: int = 1) -> int:
    """`value` if minimum <= value <= maximum, else one line naming the flag and its bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:,} and {maximum:,}, got {value:,}")
    return value


def check_sample_count(value: int, name: str) -> int:
    """A number of samples to score: enough for the metrics and their intervals, not hours of sampling."""
    if isinstance(value, int) and not isinstance(value, bool) and value < MIN_EVAL_SAMPLES:
        raise ConfigError(f"{name} must be at least {MIN_EVAL_SAMPLES} (precision and recall need neighbours, the "
                          f"Fréchet distance a covariance, the bootstrap intervals samples to resample), got {value}")
    return check_count(value, name, MAX_EVAL_SAMPLES, MIN_EVAL_SAMPLES)


def check_fits_in_memory(count: int, bytes_each: int, what: str, share: float = 0.5) -> None:
    """Refuse `count` items of `bytes_each` bytes when they would take over `share` of the free memory."""
    needed = count * bytes_each
    available = available_memory()
    if available is not None and needed > share * available:
        raise ConfigError(f"{what}: {count:,} would need {needed / 2**30:.1f} GiB of memory, more than "
                          f"{share:.0%} of the {available / 2**30:.1f} GiB available; ask for fewer")


def available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return None


# ---------------------------------------------------------------------------------------------------------
# Paths


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _first_existing(path: Path) -> Path:
    current = path.absolute()
    while not os.path.exists(current) and current != current.parent:  # os.path: False, not an error, for
        current = current.parent                                      # names too long to look up
    return current


def _check_names(path: Path, what: str) -> None:
    limit = _name_max(_first_existing(path))
    for part in path.absolute().parts:
        if len(part.encode()) > limit:
            shown = part if len(part) <= 40 else f"{part[:20]}...{part[-10:]}"
            raise RunError(f"{what}: the name {shown} is {len(part.encode())} bytes long; this file system "
                           f"allows {limit}")


def _check_writable_location(path: Path, what: str) -> None:
    """Every missing component of `path` can be created: the existing ancestor is a writable directory
    on a writable file system."""
    existing = _first_existing(path.parent if path.name else path)
    if not existing.is_dir():
        raise RunError(f"{what} {path}: {existing} is not a directory")
    if _read_only(existing):  # before access(): on a read-only mount it says "no permission" too
        raise RunError(f"{what} {path}: {existing} is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{what} {path}: no permission to write in {existing}")


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def data_source_inputs(dataset: str | None) -> list[tuple[str, Path]]:
    """The inputs (for check_apart) of a command that reads `dataset`: its path, unless a built-in name or a
    Hugging Face hub name (hf:NAME)."""
    if dataset is None or dataset in DATASETS or dataset.startswith("hf:"):
        return []
    return [("data set", Path(dataset))]


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file to write: its directory must exist (we do not guess where a typo meant to put it). A link is
    written through to its target; devices, sockets and directories are refused."""
    path = Path(path)
    _check_names(path, what)
    if path.is_dir():
        raise RunError(f"{what} {path}: is a directory; give a file name like {path / 'samples.png'}")
    target = writable_file_target(path, what)
    if not target.parent.absolute().is_dir():
        raise RunError(f"{what} {path}: the directory {target.parent} does not exist; create it first")
    _check_writable_location(target, what)
    return path


def writable_file_target(path: Path, what: str = "output") -> Path:
    """The file a write to `path` replaces: the target of a link, checked to be a regular file or absent."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file (a device, a socket or a pipe)"
        shown = f"{path} (a link to {target})" if target != path else str(path)
        raise RunError(f"{what} {shown} is {kind}; vaediff writes only regular files")
    return target


def check_outside_outputs(path: Path, what: str = "--out") -> None:
    """Refuse a path inside a directory vaediff wrote (a training run, a report, an EDA): its files could be
    replaced, and an `--overwrite` of it would delete what was put there. A quickstart study is the one kind
    that holds other outputs (its own stages write inside it without this check)."""
    for ancestor in Path(os.path.realpath(path)).parents:
        kind = written_kind(ancestor)
        if kind not in (None, "quickstart"):
            holder = "the training run" if kind == "train" else f"the vaediff '{kind}' directory"
            raise RunError(f"{what} {path} lies inside {holder} {ancestor}; choose a place outside it")


def written_kind(path: Path) -> str | None:
    """The kind recorded in a vaediff config.json ("train", "compare", ...), or None if vaediff did not write
    the directory."""
    try:
        config = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(config, dict) or "vaediff_version" not in config:
        return None
    return str(config.get("kind"))



def check_apart(output: Path, inputs: Iterable[tuple[str, Path]], what: str = "--out") -> None:
    """Refuse an output that is one of the command's inputs, lies inside one, or holds one: writing there
    (or replacing it with --overwrite) would change or delete what the command was given to read.
    `inputs` are (description, path) pairs: ("run", RUN), ("data set", FOLDER)."""
    out = Path(os.path.realpath(output))
    for description, path in inputs:
        source = Path(os.path.realpath(path))
        place = ("is" if out == source else "would hold" if out in source.parents else
                 "lies inside" if source in out.parents else None)
        if place:
            raise RunError(f"{what} {output} {place} the {description} {path}, an input of this command; "
                           f"choose a place outside it")


def user_output_file(path: str | Path, inputs: Iterable[tuple[str, Path]] = (), what: str = "--out") -> Path:
    """A file the user named to write (`sample --out`): an output_file outside every training run (whose
    weights or config it could replace) and apart from the command's `inputs` (check_apart)."""
    output_file(path, what)
    target = writable_file_target(Path(path), what)
    check_outside_outputs(target, what)
    check_apart(target, inputs, what)
    return Path(path)


def output_directory(path: str | Path, what: str = "--out") -> Path:
    """A directory to create (with its parents) or reuse; not inside a training run (whose files it could
    replace)."""
    path = Path(path)
    _check_names(path, what)
    if path.exists() and not path.is_dir():
        raise RunError(f"{what} {path}: exists and is not a directory")
    check_outside_outputs(path, what)
    _check_writable_location(path, what)
    return path


def writable_directory(path: Path) -> str | None:
    """Why files cannot be written into the existing directory `path`, or None if they can."""
    if _read_only(path):
        return f"{path} is on a read-only file system"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"no permission to write in {path}"
    return None


def existing_directory(path: str | Path, what: str) -> Path:
    """A directory to read (a run, --data-dir): it exists and is one."""
    path = Path(path)
    _check_names(path, what)
    try:
        if not path.exists():
            raise RunError(f"{what} {path}: no such directory")
        if not path.is_dir():
            raise RunError(f"{what} {path}: not a directory")
    except OSError as exc:  # e.g. a name too long to even look up
        raise RunError(os_error_line(exc, path)) from None
    return path


def os_error_line(exc: OSError, path: str | Path | None = None) -> str:
    """One line for an operating-system error: the path, then what went wrong, in words."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc)
    return f"{where}: {reason[:1].lower()}{reason[1:]}"  # "Permission denied" -> "permission denied"
