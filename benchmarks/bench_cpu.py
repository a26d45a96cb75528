"""CPU end-to-end benchmarks on ARCH-256 (random weights): decoder, encoder, U-Net call, W-edit
(encode, step, noise to t0=50, 2 DDIM steps, decode, mixture sample) and W-gen (skip 100:
11 U-Net calls, decode).

    cd benchmarks && ../.venv/bin/python -m pytest -q bench_cpu.py --benchmark-only \
        --benchmark-group-by=group [-k "wedit and b1"]

One group per workload and batch; candidates B0 (impl="ref", fp32: the official cost model),
B1 (torch.compile of the reference modules, fp32, default mode; compile time is in the
fixture, not in the timings), ours fp32 and ours bf16. pytest-benchmark runs candidates one
after another; for the ratios quoted in RESULTS.md use the interleaved cpu_compare.py.
The accuracy gate (`test_accuracy_gate`, run without --benchmark-only) must pass first.
"""
from __future__ import annotations

import pytest
import torch

from cpu_compare import make_samplers, workload
from machine import machine_info

from d2c_fast.eval.metrics import rel_error

GFLOP = {"encoder": 70.0, "decoder": 60.1, "unet": 12.5, "wedit": 70.0 + 60.1 + 25.0,
         "wgen": 11 * 12.5 + 60.1}
CANDIDATES = ["B0", "B1", "fast", "fast-bf16"]


@pytest.fixture(scope="session")
def samplers(arch256):
    return make_samplers(arch256, CANDIDATES)


@pytest.fixture(scope="session")
def data(samplers):
    from d2c_fast import Attribute
    s = samplers["B0"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, s.resolution, s.resolution, generator=g)
    attr = Attribute(torch.randn(s.latent_shape, generator=g))
    z = s.encode(x)
    return x, z, attr


@pytest.mark.parametrize("cand,tol", [("fast", 1e-4), ("fast-bf16", 1e-2), ("B1", 1e-4)])
def test_accuracy_gate(samplers, data, cand, tol):
    x, z, attr = data
    ref, s = samplers["B0"], samplers[cand]
    noise = torch.randn(1, *ref.latent_shape, generator=torch.Generator().manual_seed(1))
    zr = ref.manipulate_latents(ref.encode(x[:1]), attr, step=1.0, noise=noise)
    zk = s.manipulate_latents(s.encode(x[:1]), attr, step=1.0, noise=noise)
    assert rel_error(zk, zr) <= tol
    lk, lr = s.decode_logits(zr), ref.decode_logits(zr)
    assert torch.isfinite(lk).all() and rel_error(lk, lr) <= tol


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("cand", CANDIDATES)
@pytest.mark.parametrize("name", ["decoder", "encoder", "unet", "wedit", "wgen"])
def test_cpu(benchmark, pedantic, quick, samplers, data, name, cand, batch):
    x, z, attr = data
    s = samplers[cand]
    fn = workload(name, s, x[:batch], z[:batch], attr)
    benchmark.group = f"{name}-b{batch}"
    benchmark.name = cand
    benchmark.extra_info.update(machine_info())
    dtype = "bfloat16" if cand.endswith("bf16") else "float32"
    benchmark.extra_info.update({"dtype": dtype, "batch": batch, "candidate": cand,
                                 "model": "tiny64" if quick else "ARCH-256"})
    pedantic(benchmark, fn, rounds=3, warmup_rounds=1)
    if not quick:   # the FLOP counts are ARCH-256's
        med = benchmark.stats.stats.median
        benchmark.extra_info["gflop"] = GFLOP[name] * batch
        benchmark.extra_info["gflops_per_s"] = GFLOP[name] * batch / med
