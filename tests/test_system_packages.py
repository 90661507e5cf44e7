"""The rule for tests that need a Debian package: a user without it sees a skip that says how to install
it; CI (CI=true) sees a failure, so a CI run can never pass with such a test silently skipped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.system_packages import require_system_package

HELPERS = Path(__file__).parent / "helpers"
NEEDS_A_MISSING_PACKAGE = """
import sys
sys.path.insert(0, {helpers!r})
from system_packages import require_system_package

def test_needs_it():
    require_system_package("no-such-package", present=False)

def test_has_it():
    require_system_package("chromium", present=True)
"""


def test_missing_package_skips_with_the_install_command_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no-such-package: `sudo apt-get install no-such-package`"):
        require_system_package("no-such-package", present=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true a missing package is a failure"):
        require_system_package("no-such-package", present=False)
    require_system_package("no-such-package", present=True)  # present: nothing happens, CI or not


@pytest.mark.parametrize("ci", [False, True])
def test_a_real_pytest_run_reports_the_skip_or_fails(tmp_path, ci):
    (tmp_path / "test_probe.py").write_text(NEEDS_A_MISSING_PACKAGE.format(helpers=str(HELPERS)))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    result = subprocess.run([sys.executable, "-m", "pytest", "-ra", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "basetemp"), str(tmp_path / "test_probe.py")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if ci:
        assert result.returncode == 1 and "1 failed, 1 passed" in result.stdout, result.stdout
        assert "FAILED" in result.stdout and "no-such-package" in result.stdout
    else:
        assert result.returncode == 0 and "1 passed, 1 skipped" in result.stdout, result.stdout
        assert "SKIPPED" in result.stdout and "sudo apt-get install no-such-package" in result.stdout
