"""The skip policy of tests/conftest.py: under CI=true only "needs a CUDA device" may skip
(a module-level skip too), and tests marked d2c_in_subprocess_only are deselected."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CASES = '''
import pytest

def test_passes():
    pass

def test_cuda():
    pytest.skip("needs a CUDA device")

def test_other_skip():
    pytest.skip("fixture not found")

@pytest.mark.d2c_in_subprocess_only(True)
def test_elsewhere():
    raise AssertionError("must be deselected")
'''
MODULE_SKIP = '''
import pytest
pytest.skip("could not import 'triton'", allow_module_level=True)

def test_hidden():
    pass
'''


def _run(tmp_path: Path, ci: str, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "test_cases.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", ""])
def test_only_cuda_skips_under_ci(tmp_path, ci):
    r = _run(tmp_path, ci, CASES)
    last = r.stdout.strip().splitlines()[-1]
    if ci:
        assert r.returncode == 1, r.stdout
        assert "1 failed, 1 passed, 1 skipped, 1 deselected" in last, r.stdout
        assert "only 'needs a CUDA device' may skip: Skipped: fixture not found" in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert "1 passed, 2 skipped, 1 deselected" in last, r.stdout


@pytest.mark.parametrize("ci", ["true", ""])
def test_module_level_skip_fails_under_ci(tmp_path, ci):
    r = _run(tmp_path, ci, MODULE_SKIP)
    if ci:
        assert r.returncode != 0, r.stdout
        assert "ERROR collecting test_cases.py" in r.stdout, r.stdout
        assert "may skip: Skipped: could not import 'triton'" in r.stdout, r.stdout
    else:
        assert r.returncode == 5, r.stdout    # pytest's "no tests ran"
        assert "1 skipped" in r.stdout.strip().splitlines()[-1], r.stdout
