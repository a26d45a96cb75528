"""Shared benchmark fixtures: the ARCH-256 model with random weights (speed does not depend on
training; see ../shared/docs/BENCHMARKING.md), the round counts, and machine facts for
extra_info.

``--quick`` (``make bench-quick``): the small tiny64 config instead of ARCH-256, one timed
round of every workload at batch 1 and of every op at its smallest shape, no torch.compile
candidate (B1: its compile alone takes minutes), so the whole entry point runs in a few minutes;
its numbers say that the benchmarks work, not how fast anything is.

Candidates that call oneDNN directly in bf16 are left out on CPUs where oneDNN has no bf16.
"""
from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="small model (tiny64), one round of each workload (make bench-quick)")


def pytest_configure(config):
    # --benchmark-json into a folder that does not exist yet: create it rather than crash at
    # the end of the run
    path = config.getoption("benchmark_json", default=None)
    name = getattr(path, "name", path)
    if name:
        os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)


def _param(item, name):
    spec = getattr(item, "callspec", None)
    return spec.params.get(name) if spec is not None else None


def _numel(shape) -> int:
    n = 1
    for v in shape:
        n *= v
    return n


def pytest_collection_modifyitems(config, items):
    from machine import onednn_bf16
    quick = config.getoption("quick")
    smallest: dict[str, int] = {}
    if quick:
        for item in items:
            shape = _param(item, "shape")
            if shape is not None:
                key = item.nodeid.split("[")[0]
                smallest[key] = min(smallest.get(key, _numel(shape)), _numel(shape))
    keep, dropped = [], []
    for item in items:
        drop = (_param(item, "dtype_name") == "bf16"
                and _param(item, "impl") in ("onednn", "unfused") and not onednn_bf16())
        if quick:
            shape = _param(item, "shape")
            drop = drop or _param(item, "cand") == "B1" or (_param(item, "batch") or 1) > 1
            drop = drop or (shape is not None
                            and _numel(shape) != smallest[item.nodeid.split("[")[0]])
        (dropped if drop else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return bool(request.config.getoption("quick"))


@pytest.fixture(scope="session")
def arch256(quick):
    """ARCH-256 with random weights (``--quick``: the tiny64 config)."""
    from d2c_fast.checkpoint.random_init import arch256_config_path, random_model
    path = arch256_config_path()
    if quick:
        path = os.path.join(os.path.dirname(path), "tiny64.json")
    return random_model(path, seed=0)


@pytest.fixture(scope="session")
def pedantic(quick):
    """``pedantic(benchmark, fn, rounds=, warmup_rounds=)``: ``benchmark.pedantic`` with the
    given rounds, or one round and no warm-up under ``--quick``."""
    def run(benchmark, fn, *, rounds: int, warmup_rounds: int):
        if quick:
            rounds, warmup_rounds = 1, 0
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    return run
