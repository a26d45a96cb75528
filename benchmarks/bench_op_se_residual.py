"""Benchmark of d2c_fast::se_residual: ours vs the eager composition of the decoder's SE tail.

    pytest benchmarks/bench_op_se_residual.py --benchmark-only -q

One benchmark group per (shape, dtype): the inputs of the squeeze-excitation of the ARCH-256
decoder's MBConv cells (batch 1, channels-last). Entries:
  eager   skip + 0.1 * s * torch.sigmoid(fc2(relu(fc1(s.mean((2, 3))))))[:, :, None, None]
          (nn.Linear modules in s's dtype, as the model runs it)
  ref     se_residual_ref (the same in float32)
  fast    torch.ops.d2c_fast.se_residual (the C++ kernel when d2c_fast._C is built)
  clone   s.clone(), the bandwidth yardstick (one read + one write)
extra_info: bytes moved by the fused kernel (s twice, skip once, out once), GB/s, and
`frac_of_clone_bw` (2 clones move as many bytes as the fused kernel: 2 * clone_median / median).
"""
from __future__ import annotations


import pytest
import torch

from d2c_fast.ops import backend_info, se_residual, se_residual_ref

from machine import clone_median, machine_info

SHAPES = [(1, 48, 128, 128), (1, 96, 64, 64), (1, 192, 32, 32), (1, 24, 256, 256)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
@pytest.mark.parametrize("impl", ["eager", "ref", "fast", "clone"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_se_residual(benchmark, pedantic, shape, dtype_name, impl):
    dtype = DTYPES[dtype_name]
    C = shape[1]
    torch.manual_seed(0)
    s = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    fc1, fc2 = torch.nn.Linear(C, max(C // 16, 4)).to(dtype), torch.nn.Linear(max(C // 16, 4), C).to(dtype)
    w1, b1, w2, b2 = (p.detach().float() for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias))

    if impl == "eager":
        def run():
            return skip + 0.1 * s * torch.sigmoid(fc2(torch.relu(fc1(s.mean((2, 3))))))[:, :, None, None]
    elif impl == "ref":
        def run():
            return se_residual_ref(s, skip, w1, b1, w2, b2, 0.1)
    elif impl == "fast":
        def run():
            return se_residual(s, skip, w1, b1, w2, b2, 0.1)
    else:
        def run():
            return s.clone()

    benchmark.group = f"se_residual {'x'.join(map(str, shape))} {dtype_name} cl"
    with torch.inference_mode():
        pedantic(benchmark, run, rounds=30, warmup_rounds=3)
        clone_s = clone_median(s)
    nbytes = 4 * s.numel() * s.element_size()
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "impl": impl,
        "kernel": backend_info("cpu")["se_residual"]["kernel"] if impl == "fast" else impl,
        "dtype": str(dtype),
        "shape": list(shape),
        "layout": "channels_last",
        "bytes_moved": nbytes,
        "GB_per_s": nbytes / median_s / 1e9,
        "frac_of_clone_bw": 2 * clone_s / median_s,
        **machine_info("cpu"),
    })
