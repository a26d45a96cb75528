"""Benchmark of d2c_fast::bn_swish: compiled kernel ("fast") vs the PyTorch reference ("ref").

    pytest benchmarks/bench_op_bn_swish.py --benchmark-only -q

One benchmark group per (shape, dtype, layout); the shapes are the encoder activations of the
ARCH-256 model that run through res_bnswish cells. extra_info records dtype, shape, layout,
bytes moved (one read of x + one write of y; scale/shift are negligible) and the achieved GB/s.
On CPU, "fast" is the C++ kernel when d2c_fast._C is built (backend_info() says which).
"""
from __future__ import annotations

import pytest
import torch

from d2c_fast.ops import backend_info, bn_swish

SHAPES = [(1, 48, 128, 128), (1, 96, 64, 64), (4, 48, 128, 128)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bn_swish(benchmark, pedantic, shape, dtype_name, layout, impl):
    dtype = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device=DEVICE, dtype=dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    scale = (torch.rand(shape[1], generator=g) + 0.5).to(DEVICE)
    shift = torch.randn(shape[1], generator=g).to(DEVICE)

    def run():
        y = bn_swish(x, scale, shift, impl=impl)
        _sync()
        return y

    benchmark.group = f"bn_swish {'x'.join(map(str, shape))} {dtype_name} {layout}"
    with torch.inference_mode():
        pedantic(benchmark, run, rounds=30, warmup_rounds=3)
    nbytes = 2 * x.numel() * x.element_size()
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "impl": impl,
        "kernel": backend_info(DEVICE)["bn_swish"]["kernel"] if impl == "fast" else "ref",
        "device": DEVICE,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype),
        "shape": list(shape),
        "layout": layout,
        "bytes_moved": nbytes,
        "GB_per_s": nbytes / mean_s / 1e9,
    })
