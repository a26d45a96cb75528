"""Shared by the op test files (tests/test_op_*.py)."""
from __future__ import annotations

import os

import pytest

from d2c_fast.ops import backend_info, has_compiled_kernel

REQUIRE_EXT = os.environ.get("D2C_FAST_REQUIRE_EXT", "") == "1"


def require_cpu_kernel(op: str) -> None:
    """Skip the calling test when ``d2c_fast::<op>`` has no compiled CPU kernel; with
    ``D2C_FAST_REQUIRE_EXT=1`` (set by ``make test`` and CI) fail instead."""
    if not has_compiled_kernel(op, "cpu"):
        msg = f"no compiled CPU kernel for d2c_fast::{op}: {backend_info()[op]['reason']}"
        if REQUIRE_EXT:
            pytest.fail(msg + " (D2C_FAST_REQUIRE_EXT=1)")
        pytest.skip(msg)


def import_triton_or_skip():
    """``import triton`` for a test module: skipped without it, but with
    ``D2C_FAST_REQUIRE_EXT=1`` (``make test``, CI) a missing triton fails the run instead
    (``make venv`` installs the version the interpreter tests need)."""
    try:
        import triton
    except ImportError as exc:
        msg = (f"could not import 'triton' ({exc}); `make venv` installs it (the Triton "
               "interpreter tests run on the CPU)")
        if REQUIRE_EXT:
            pytest.fail(msg + " (D2C_FAST_REQUIRE_EXT=1)", pytrace=False)
        pytest.skip(msg, allow_module_level=True)
    return triton


def in_subprocess_only(condition: bool):
    """Mark tests that this process cannot run (``condition``) and that a subprocess test of
    the same file runs instead: tests/conftest.py deselects them, so they are neither run nor
    reported as skipped twice."""
    return pytest.mark.d2c_in_subprocess_only(condition)
