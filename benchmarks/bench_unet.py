"""One ARCH-256 U-Net call: B0 (reference module, eager) vs ours (d2c_fast.gpu.FastUNet; on CUDA
bf16 + Triton GroupNorm+SiLU + channels-last in a CUDA graph, on CPU fp32 eager).

    pytest benchmarks/bench_unet.py --benchmark-only --benchmark-group-by=group

Group "unet-<device>-b<batch>". The accuracy gate runs first (ours vs ref, relative L2 <= 1e-4 in
fp32, <= 1e-2 in bf16). B1 (torch.compile) and the GPU-wide run live in benchmarks/gpu_check.py.
"""
from __future__ import annotations

import copy

import pytest
import torch

from machine import machine_info

from d2c_fast.eval.metrics import rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
BATCHES = [1, 64] if DEVICE == "cuda" else [1, 4]
UNET_GFLOP = 12.5


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def unets(arch256):
    from d2c_fast.gpu import FastUNet
    ref = copy.deepcopy(arch256.unet).to(DEVICE)
    ours = FastUNet(arch256.unet, dtype=DTYPE).to(DEVICE)
    return ref, ours


@torch.inference_mode()
def test_accuracy_gate(unets, arch256):
    ref, ours = unets
    x = torch.randn(2, *arch256.config.latent_shape, generator=torch.Generator().manual_seed(0))
    x = x.to(DEVICE)
    t = torch.tensor([10.0, 700.0], device=DEVICE)
    assert rel_error(ours(x, t).float(), ref(x, t)) <= (1e-4 if DTYPE == torch.float32 else 1e-2)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["ref", "ours"])
def test_unet_call(benchmark, pedantic, unets, arch256, impl, batch):
    from d2c_fast.gpu import UNetCallGraph
    ref, ours = unets
    x = torch.randn(batch, *arch256.config.latent_shape, device=DEVICE)
    t = torch.full((batch,), 500.0, device=DEVICE)
    if impl == "ref":
        def fn():
            with torch.inference_mode():
                ref(x, t)
            _sync()
    else:
        call = UNetCallGraph(ours, batch, arch256.config.unet.in_channels)
        call.load(x, 500.0)

        def fn():
            call()
            _sync()
    benchmark.group = f"unet-{DEVICE}-b{batch}"
    benchmark.name = {"ref": "B0 ref fp32", "ours": f"ours {str(DTYPE).replace('torch.', '')}"}[impl]
    benchmark.extra_info.update(machine_info(DEVICE))
    benchmark.extra_info.update({"batch": batch, "impl": impl, "gflop": UNET_GFLOP * batch,
                                 "dtype": str(DTYPE if impl == "ours" else torch.float32)})
    pedantic(benchmark, fn, rounds=5 if DEVICE == "cuda" else 2, warmup_rounds=1)
    benchmark.extra_info["gflops_per_s"] = UNET_GFLOP * batch / benchmark.stats.stats.median
