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
