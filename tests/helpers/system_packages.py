"""Tests that need a system (Debian) package: skipped with the install command on a user's machine,
failed under CI=true, so a CI run can never pass without them. One rule, used by every such test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# what each package provides that the tests look for, and the command that installs it
SYSTEM_PACKAGES = {
    "chromium": "sudo apt-get install chromium",
    "dataset-fashion-mnist": "sudo apt-get install dataset-fashion-mnist",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_system_package(package: str, present: bool) -> None:
    """Skip the calling test (fail it under CI=true) when `package` is not `present`."""
    if present:
        return
    install = SYSTEM_PACKAGES.get(package, f"sudo apt-get install {package}")
    reason = f"needs the Debian package {package}: `{install}` (.ci/run installs it)"
    if in_ci():
        pytest.fail(f"{reason}; under CI=true a missing package is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> Path | None:
    found = shutil.which("chromium")
    return Path(found) if found else None
