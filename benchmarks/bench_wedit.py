"""W-edit on ARCH-256 (random weights), CPU: encode, boundary step, noise to t0=50, DDIM over
[0, 50] (2 U-Net calls), decode, mixture sample.

    pytest benchmarks/bench_wedit.py --benchmark-only --benchmark-group-by=group

Candidates in one run (group "wedit-b<batch>-<dtype>"): B0 = impl="ref" (the official cost
model), ours = impl="fast". B1 (torch.compile of the reference) joins in the CPU fast-path issue.
Before timing, the accuracy gate: fast vs ref latents and logits, relative L2 <= 1e-4 (fp32).
"""
from __future__ import annotations

import pytest
import torch

from machine import machine_info

ENC_GFLOP, DEC_GFLOP, UNET_GFLOP = 70.0, 60.0, 12.5  # per image, BENCHMARKING.md
WEDIT_GFLOP = ENC_GFLOP + DEC_GFLOP + 2 * UNET_GFLOP


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def samplers(arch256):
    from d2c_fast import Sampler
    return {"ref": Sampler(arch256, impl="ref"), "fast": Sampler(arch256, impl="fast")}


@pytest.fixture(scope="module")
def inputs(samplers):
    from d2c_fast import Attribute
    g = torch.Generator().manual_seed(0)
    s = samplers["ref"]
    x = torch.rand(4, 3, s.resolution, s.resolution, generator=g)
    attr = Attribute(torch.randn(s.latent_shape, generator=g), name="random")
    return x, attr


def test_accuracy_gate(samplers, inputs):
    x, attr = inputs
    ref, fast = samplers["ref"], samplers["fast"]
    noise = torch.randn(1, *ref.latent_shape, generator=torch.Generator().manual_seed(1))
    zr = ref.manipulate_latents(ref.encode(x[:1]), attr, step=1.0, noise=noise)
    zf = fast.manipulate_latents(fast.encode(x[:1]), attr, step=1.0, noise=noise)
    assert _rel(zf, zr) <= 1e-4
    assert _rel(fast.decode_logits(zr), ref.decode_logits(zr)) <= 1e-4


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_wedit(benchmark, samplers, inputs, impl, batch):
    x, attr = inputs
    s = samplers[impl]
    xb = x[:batch]
    benchmark.group = f"wedit-b{batch}-fp32"
    benchmark.name = {"ref": "B0 ref", "fast": "ours fast"}[impl]
    benchmark.extra_info.update(machine_info())
    benchmark.extra_info.update({"dtype": "float32", "batch": batch, "impl": impl,
                                 "gflop": WEDIT_GFLOP * batch})
    out = benchmark.pedantic(lambda: s.manipulate(xb, attr, step=1.0, seed=0), rounds=3,
                             warmup_rounds=1, iterations=1)
    assert out.shape == (batch, 3, s.resolution, s.resolution)
    benchmark.extra_info["gflops_per_s"] = WEDIT_GFLOP * batch / benchmark.stats.stats.median
