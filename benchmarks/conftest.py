"""Shared benchmark fixtures: the ARCH-256 model with random weights (speed does not depend on
training; see ../shared/docs/BENCHMARKING.md) and machine facts for extra_info."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def arch256():
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    return random_model(arch256_config_path(), seed=0)
