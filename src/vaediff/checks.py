"""Checks of what a user gives, shared by the command line, the web demo and the library: counts with an
upper bound, and paths, whose operating-system errors become one line that names the path.

A count far too large must fail at once, not after an hour of sampling or when memory runs out; a path
that cannot be written must fail before any work is done, not at the end of it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from vaediff.errors import ConfigError, RunError

MAX_GRID_IMAGES = 10_000         # one PNG grid: 100 x 100 images
MAX_EVAL_SAMPLES = 1_000_000     # samples drawn by `evaluate` (FID papers use 50,000)
MAX_IW_SAMPLES = 100_000         # importance samples per test image for the VAE likelihood bound
MAX_SAMPLING_STEPS = 1000        # the noise schedule's length: no sampler can take more steps


def check_count(value: int, name: str, maximum: int, minimum: int = 1) -> int:
    """`value` if minimum <= value <= maximum, else one line naming the flag and its bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:,} and {maximum:,}, got {value:,}")
    return value


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
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{what} {path}: no permission to write in {existing}")
    if _read_only(existing):
        raise RunError(f"{what} {path}: {existing} is on a read-only file system")


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file to write: its directory must exist (we do not guess where a typo meant to put it)."""
    path = Path(path)
    _check_names(path, what)
    if path.is_dir():
        raise RunError(f"{what} {path}: is a directory; give a file name like {path / 'samples.png'}")
    if not path.parent.absolute().is_dir():
        raise RunError(f"{what} {path}: the directory {path.parent} does not exist; create it first")
    _check_writable_location(path, what)
    return path


def output_directory(path: str | Path, what: str = "--out") -> Path:
    """A directory to create (with its parents) or reuse."""
    path = Path(path)
    _check_names(path, what)
    if path.exists() and not path.is_dir():
        raise RunError(f"{what} {path}: exists and is not a directory")
    _check_writable_location(path, what)
    return path


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
